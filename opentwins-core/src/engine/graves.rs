//! Graves: the clocks of things this instance does not hold (deleted here or by a peer, or only
//! removals arrived), so a change older than the deletion that arrives late does not bring the
//! thing back, and a removal newer than a later create still wins.
//!
//! A grave is stored (`Kind::Grave`) in the same store batch as the deletion that makes it, and
//! removed in the batch of the creation that lifts it, so it survives restarts exactly as the
//! deletion does. It lives `EngineConfig::grave_lifetime_ms`: an expired grave is forgotten
//! (at start, and when it is looked up or more graves are dug), and a late change older than
//! the deletion may then create the thing again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::model::ThingId;
use crate::replica::Replica;
use crate::store::{Expect, Kind, Record, Store, WriteOp};

use super::lock;

/// Graves by thing, with the time (ms since the epoch) each was dug.
pub(super) struct Graves {
    map: Mutex<HashMap<ThingId, (Replica, u64)>>,
    lifetime_ms: u64,
}

/// Sweep expired graves whenever this many more were dug.
const SWEEP_EVERY: usize = 1024;

impl Graves {
    /// The graves in `store` that have not expired; expired ones are deleted from it. Graves
    /// that do not decode are reported and skipped (a grave only protects against late
    /// changes; losing one is never worse than not having kept it).
    pub(super) fn load(store: &dyn Store, lifetime_ms: u64) -> Result<Graves> {
        let now = now_ms();
        let mut map = HashMap::new();
        let mut expired = Vec::new();
        for record in store.scan(Kind::Grave)? {
            match decode(&record) {
                Ok((id, replica, dug)) if now.saturating_sub(dug) < lifetime_ms => {
                    map.insert(id, (replica, dug));
                }
                Ok(_) => expired.push(delete(&record.id)),
                Err(e) => {
                    tracing::warn!(grave = %record.id, error = %e, "skipping a grave that does not decode");
                }
            }
        }
        if !expired.is_empty() {
            tracing::info!(count = expired.len(), "forgetting expired graves");
            // Queued now and not awaited: if it fails, they are forgotten at the next start.
            drop(store.write(expired));
        }
        Ok(Graves {
            map: Mutex::new(map),
            lifetime_ms,
        })
    }

    /// The grave of `id`, unless there is none or it expired.
    pub(super) fn get(&self, id: &ThingId) -> Option<Replica> {
        let now = now_ms();
        let mut map = lock(&self.map);
        match map.get(id) {
            Some((replica, dug)) if now.saturating_sub(*dug) < self.lifetime_ms => {
                Some(replica.clone())
            }
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Keeps `replica` as the grave of `id`; returns the store write that makes it durable
    /// (to go in the batch of the deletion).
    pub(super) fn dig(&self, id: &ThingId, replica: Replica) -> WriteOp {
        let now = now_ms();
        let op = WriteOp::Put {
            record: encode(id, &replica, now),
            expect: Expect::Any,
        };
        let mut map = lock(&self.map);
        map.insert(id.clone(), (replica, now));
        if map.len().is_multiple_of(SWEEP_EVERY) {
            map.retain(|_, (_, dug)| now.saturating_sub(*dug) < self.lifetime_ms);
        }
        op
    }

    /// Forgets the grave of `id` (the thing exists again); returns the store write that
    /// removes it, if there was one.
    pub(super) fn lift(&self, id: &ThingId) -> Option<WriteOp> {
        lock(&self.map).remove(id).map(|_| delete(id.as_str()))
    }
}

fn delete(id: &str) -> WriteOp {
    WriteOp::Delete {
        kind: Kind::Grave,
        id: id.to_owned(),
        expect: Expect::Any,
    }
}

/// `{"dugAt": ms, "clocks": …, "patch": …, "extra": {…}}`: the replica as a link sends it.
fn encode(id: &ThingId, replica: &Replica, dug_ms: u64) -> Record {
    let (patch, extra) = replica.patch();
    let json = json!({
        "dugAt": dug_ms,
        "clocks": replica.clocks_json(),
        "patch": patch,
        "extra": extra,
    });
    Record {
        kind: Kind::Grave,
        id: id.to_string(),
        revision: 1,
        json: serde_json::to_vec(&json)
            .expect("JSON values serialise")
            .into(),
    }
}

fn decode(record: &Record) -> Result<(ThingId, Replica, u64)> {
    let id = ThingId::new(&record.id)?;
    let v: Value = serde_json::from_slice(&record.json).map_err(Error::json_invalid)?;
    let dug = v["dugAt"]
        .as_u64()
        .ok_or_else(|| Error::field_invalid("A grave needs 'dugAt'."))?;
    let empty = Map::new();
    let extra = v["extra"].as_object().unwrap_or(&empty);
    let replica = Replica::from_clocks(&v["clocks"], &v["patch"], extra)?;
    Ok((id, replica, dug))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Pointer;
    use crate::replica::{Stamp, change_for_delete};
    use crate::store::MemoryStore;

    fn grave() -> Replica {
        let stamp = Stamp {
            wall_ms: 5,
            counter: 1,
            origin: Arc::from("hub"),
        };
        Replica::from(vec![change_for_delete(&Pointer::root(), &stamp)])
    }

    #[test]
    fn graves_round_trip_through_the_store_and_expire() {
        let store = MemoryStore::default();
        let id = ThingId::new("a:b").unwrap();
        let graves = Graves::load(&store, 60_000).unwrap();
        drop(store.write(vec![graves.dig(&id, grave())]));
        // After a restart: the same grave.
        let again = Graves::load(&store, 60_000).unwrap();
        assert_eq!(again.get(&id), Some(grave()));
        // Lifted: gone from the store too.
        drop(store.write(vec![again.lift(&id).unwrap()]));
        assert!(again.lift(&id).is_none());
        assert!(store.scan(Kind::Grave).unwrap().is_empty());
        // Expired: forgotten at load, and deleted from the store.
        drop(store.write(vec![graves.dig(&id, grave())]));
        let none = Graves::load(&store, 0).unwrap();
        assert_eq!(none.get(&id), None);
        assert!(store.scan(Kind::Grave).unwrap().is_empty());
    }
}
