//! Clocks in the engine: every local write is stamped by the instance's hybrid logical clock
//! and recorded per path in the thing's clocks; [`Twins::apply_update`] applies a peer's
//! changes with per-path last-writer-wins (see [`crate::replica`] and docs/distribution.md).
//!
//! `thingId` and `policyId` are not replicated: they are the thing's identity and its local
//! access control. Everything else in the body is.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::access::Access;
use super::commit::Written;
use super::thing_cmd::{NewPolicy, too_large};
use super::{Inner, Twins, lock};
use crate::error::{Error, Level, Result};
use crate::model::schema::{self, Mode, json_size};
use crate::model::{Pointer, Thing, Timestamp};
use crate::policy::AuthContext;
use crate::protocol::{Action, EventAction, Headers, ThingCommand, ThingEvent};
use crate::replica::{
    Cell, Change, Provenance, Replica, Stamp, Update, change_for_delete, changes_for_merge,
    changes_for_modify,
};
use crate::store::{Durable, WriteOp};

/// What [`Twins::apply_update`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Changes that took effect (0: the update was old news, a duplicate, or came back to its
    /// origin).
    pub changes: usize,
    /// The thing's revision afterwards (`None` when it does not exist).
    pub revision: Option<u64>,
    /// Paths refused because this instance owns them (see [`Twins::apply_update`]); the caller
    /// re-asserts them with [`Twins::reassert`].
    pub refused: Vec<Pointer>,
}

impl Twins {
    /// This instance's id (stamps its changes; links never send an update back here).
    pub fn instance_id(&self) -> &str {
        self.inner.clock.origin()
    }

    /// Makes every write from now on record per-path clocks (links call it: an instance that
    /// is never linked keeps no clocks and pays nothing for them). Things written before get
    /// clocks for their whole body, stamped with their last modification, when next touched.
    pub fn enable_clocks(&self) {
        self.inner
            .clocks_on
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Resolves once every write handed to the store so far is durable (an empty store batch
    /// queued behind them), or with the error of a write that failed meanwhile. A receiver of
    /// several updates applies them with `wait_durable = false` and waits here once.
    pub async fn settled(&self) -> Result<()> {
        self.inner.store.write(Vec::new()).await?;
        self.inner.check_store()
    }

    /// Applies a peer's changes of one thing for `auth` (the link's subject): per path, the
    /// change with the newest clock wins; older and duplicate changes are ignored, so any order
    /// and any number of deliveries give the same state.
    ///
    /// The update is refused as a whole (Ditto error, nothing changes) if `auth` may not write a
    /// path it replaces, or if the result would not be a valid thing. An update that creates
    /// the thing uses the policy it names if this instance has it, else `fallback_policy`
    /// if given and present, else a new default policy for `auth`. With `wait_durable` the
    /// call returns once the change is durable (a link acknowledges its peer only then).
    ///
    /// Ownership: a change to a path `owned` accepts, whose current value was written by this
    /// instance, is refused and listed in [`Applied::refused`] (the caller re-asserts it, so
    /// every instance converges to the owner's value). Paths this instance never wrote there
    /// are not owned: an instance owns its own reported state, not every copy it holds.
    pub async fn apply_update(
        &self,
        auth: &AuthContext,
        update: &Update,
        fallback_policy: Option<&crate::model::PolicyId>,
        owned: &(dyn Fn(&Pointer) -> bool + Sync),
        wait_durable: bool,
    ) -> Result<Applied> {
        if update.hops.iter().any(|h| **h == *self.instance_id()) {
            return Ok(Applied::default());
        }
        self.enable_clocks();
        let permit = self
            .inner
            .pending
            .clone()
            .acquire_owned()
            .await
            .map_err(Error::unavailable)?;
        let result = self
            .inner
            .apply_update_sync(auth, update, fallback_policy, owned);
        if result.as_ref().is_ok_and(|(a, _)| a.revision.is_none()) || result.is_err() {
            self.inner.things.remove_if_vacant(&update.thing_id);
        }
        self.inner.hot.cool();
        let (applied, durable) = result?;
        if let Some(durable) = durable {
            self.inner
                .settle(durable, wait_durable, Some(permit))
                .await?;
        }
        Ok(applied)
    }
}

impl Twins {
    /// Re-stamps the current values at `paths` of a thing as a new local change (or their
    /// absence as a removal), so they win over the peer changes a link refused there: how an
    /// owner makes every instance converge to its value. Nothing visible changes here.
    pub async fn reassert(&self, id: &crate::model::ThingId, paths: &[Pointer]) -> Result<()> {
        let Some(thing) = self.get_thing(id) else {
            return Ok(());
        };
        // The stamp is taken with the values: a local write after this has a newer stamp and
        // wins, so re-asserting a value that just changed cannot undo the change.
        let stamp = self.inner.clock.now();
        let mut changes = Vec::new();
        for path in paths {
            match path.get(thing.body()) {
                Some(v) => changes.extend(changes_for_modify(path, v, &stamp)),
                None => changes.push(change_for_delete(path, &stamp)),
            }
        }
        let me: Arc<str> = Arc::from(self.instance_id());
        let update = Update {
            thing_id: id.clone(),
            origin: me,
            hops: Vec::new(),
            policy_id: None,
            changes: Replica::from(changes),
        };
        self.apply_update(&AuthContext::system(), &update, None, &|_| false, false)
            .await
            .map(|_| ())
    }
}

impl Inner {
    fn apply_update_sync(
        &self,
        auth: &AuthContext,
        update: &Update,
        fallback_policy: Option<&crate::model::PolicyId>,
        owned: &(dyn Fn(&Pointer) -> bool + Sync),
    ) -> Result<(Applied, Option<Durable>)> {
        self.check_store()?;
        let latest = update.changes.latest();
        if let Some(stamp) = latest
            && self
                .clock
                .too_far_ahead(stamp, self.config.max_clock_skew_ms)
        {
            return Err(Error::field_invalid(format!(
                "The update's clock stamp {stamp} is more than {} ms ahead of this instance's clock.",
                self.config.max_clock_skew_ms
            ))
            .with_description("Synchronise the peers' clocks (NTP), or raise max_clock_skew_ms."));
        }
        let result = self.apply_checked_update(auth, update, fallback_policy, owned);
        // Only changes that were authorised and taken move this instance's clock.
        if let (Ok((applied, _)), Some(stamp)) = (&result, latest)
            && applied.changes > 0
        {
            self.clock.observe(stamp);
        }
        result
    }

    fn apply_checked_update(
        &self,
        auth: &AuthContext,
        update: &Update,
        fallback_policy: Option<&crate::model::PolicyId>,
        owned: &(dyn Fn(&Pointer) -> bool + Sync),
    ) -> Result<(Applied, Option<Durable>)> {
        let id = &update.thing_id;
        let slot = self.things.get_or_insert(id);
        let mut guard = lock(&slot);
        let Some(thing) = guard.heat(&slot, &self.hot)? else {
            // A thing this instance does not hold (or deleted): the changes may create it.
            let mut replica = self.graves.get(id).unwrap_or_default();
            let effective = apply_all(&mut replica, &update.changes);
            let view = replica.materialize();
            if !view.is_object() {
                // Nothing to hold, but the clocks are kept (a later, older change must not
                // bring the thing back; a removal newer than a later create must still win)
                // and passed on: peers beyond this one may hold the thing.
                let changes = effective.len();
                let mut durable = None;
                if changes > 0 {
                    let grave = self.graves.dig(id, replica);
                    // Sinks first: what they write (a link's outbox) is flushed with the grave.
                    self.forward_absent(id, update, effective);
                    durable = Some(self.store.write(vec![grave]));
                }
                let applied = Applied {
                    changes,
                    ..Applied::default()
                };
                return Ok((applied, durable));
            }
            let now = Timestamp::now();
            let mut thing = Thing::new(id.clone(), view, now)?;
            schema::check_depth(0, thing.body())?;
            let size = json_size(thing.body());
            if size > self.config.max_thing_bytes {
                return Err(too_large("Thing", size, self.config.max_thing_bytes));
            }
            let choice = NewPolicy::Peer {
                named: update.policy_id.as_ref(),
                fallback: fallback_policy,
            };
            let (new_policy, policy_op) =
                self.policy_for_new_thing(auth, &mut thing, choice, now)?;
            let policy = new_policy.policy.clone();
            replica.strip_values();
            *thing.clocks_mut() = replica;
            let lifted = self.graves.lift(id);
            let event = ThingEvent {
                thing_id: id.clone(),
                action: EventAction::Created,
                path: Pointer::root(),
                value: Some(thing.body().clone()),
                revision: thing.revision(),
                timestamp: now,
                headers: Headers::default(),
                provenance: Some(self.forwarded(update, effective)),
            };
            let applied = Applied {
                changes: 1,
                revision: Some(thing.revision()),
                refused: Vec::new(),
            };
            let created = Written::Create {
                slot: &slot,
                entry: &mut guard,
                thing: Box::new(thing),
                policy: new_policy,
                policy_op,
                lifted,
            };
            let (_, durable) = self.commit(event, None, Some(policy), created);
            return Ok((applied, Some(durable)));
        };

        self.ensure_clocks(thing);
        let policy = self.policy(thing.policy_id());
        let access = Access::new(auth, policy.as_deref());
        for change in update.changes.changes() {
            if change.cell != Cell::Object && !access.write_all(&change.path) {
                let level = Level::of(&change.path).unwrap_or(Level::Thing);
                return Err(if access.read_partial(&change.path) {
                    Error::not_modifiable(level, id.as_str(), &change.path.to_string())
                } else {
                    Error::not_found(level, id.as_str(), &change.path.to_string())
                });
            }
        }
        let old_view = replicated(thing.body());
        let mut replica = thing.clocks().clone();
        replica.fill_values(&old_view);
        let me = self.clock.origin();
        let mut refused = Vec::new();
        let mut effective = Vec::new();
        for change in update.changes.changes() {
            if change.cell != Cell::Object
                && owned(&change.path)
                && replica.written_by(&change.path, me)
            {
                if replica.would_take(&change) {
                    refused.push(change.path);
                }
                continue;
            }
            if replica.apply(change.clone()) {
                effective.push(change);
            }
        }
        if effective.is_empty() {
            let applied = Applied {
                changes: 0,
                revision: Some(thing.revision()),
                refused,
            };
            return Ok((applied, None));
        }
        let new_view = replica.materialize();
        // The marks ("this path is an object") are not checked above; what they and every
        // other change do to the visible state is: each difference needs WRITE there.
        if let Some(path) =
            forbidden_change(&Pointer::root(), Some(&old_view), Some(&new_view), &|p| {
                access.write_all(p)
            })
        {
            let level = Level::of(&path).unwrap_or(Level::Thing);
            return Err(if access.read_partial(&path) {
                Error::not_modifiable(level, id.as_str(), &path.to_string())
            } else {
                Error::not_found(level, id.as_str(), &path.to_string())
            });
        }
        let old_revision = thing.revision();
        let now = Timestamp::now();
        if !new_view.is_object() {
            // The thing was deleted by a newer change; its clocks stay as its grave.
            let grave = self.graves.dig(id, replica.clone());
            let event = ThingEvent {
                thing_id: id.clone(),
                action: EventAction::Deleted,
                path: Pointer::root(),
                value: None,
                revision: old_revision + 1,
                timestamp: now,
                headers: Headers::default(),
                provenance: Some(self.forwarded(update, effective)),
            };
            let deleted = Written::Delete {
                entry: &mut guard,
                old_revision,
                grave: Some(grave),
            };
            let (_, durable) = self.commit(event, None, policy, deleted);
            let applied = Applied {
                changes: 1,
                revision: None,
                refused,
            };
            return Ok((applied, Some(durable)));
        }
        let mut body = Map::with_capacity(new_view.as_object().map_or(0, Map::len) + 2);
        body.insert("thingId".into(), Value::String(id.to_string()));
        body.insert(
            "policyId".into(),
            Value::String(thing.policy_id().to_string()),
        );
        if let Value::Object(m) = new_view.clone() {
            body.extend(m);
        }
        let body = Value::Object(body);
        schema::validate(id, Level::Thing, &body, Mode::Full)?;
        schema::check_depth(0, &body)?;
        let size = json_size(&body);
        if size > self.config.max_thing_bytes {
            return Err(too_large("Thing", size, self.config.max_thing_bytes));
        }
        let patch = diff(&old_view, &new_view);
        sync(thing.body_mut(), body);
        replica.strip_values();
        *thing.clocks_mut() = replica;
        thing.touch(now);
        let event = ThingEvent {
            thing_id: id.clone(),
            action: EventAction::Merged,
            path: Pointer::root(),
            value: Some(patch),
            revision: thing.revision(),
            timestamp: now,
            headers: Headers::default(),
            provenance: Some(self.forwarded(update, effective)),
        };
        let updated = Written::Update {
            thing,
            old_revision,
        };
        let (_, durable) = self.commit(event, None, policy, updated);
        let applied = Applied {
            changes: 1,
            revision: Some(thing.revision()),
            refused,
        };
        Ok((applied, Some(durable)))
    }

    /// Hands changes of a thing this instance does not hold to the sinks (links pass them on;
    /// subscribers see nothing): an event at `/` with revision 0 and no value.
    fn forward_absent(&self, id: &crate::model::ThingId, update: &Update, effective: Vec<Change>) {
        let event = ThingEvent {
            thing_id: id.clone(),
            action: EventAction::Merged,
            path: Pointer::root(),
            value: None,
            revision: 0,
            timestamp: Timestamp::now(),
            headers: Headers::default(),
            provenance: Some(self.forwarded(update, effective)),
        };
        for sink in super::read(&self.sinks).iter() {
            sink.on_event(&event, None);
        }
    }

    /// The provenance of changes received in `update` that took effect here.
    fn forwarded(&self, update: &Update, effective: Vec<Change>) -> Arc<Provenance> {
        let mut hops = update.hops.clone();
        hops.push(Arc::from(self.clock.origin()));
        Arc::new(Provenance {
            origin: update.origin.clone(),
            hops,
            changes: Replica::from(effective),
        })
    }

    /// Gives a thing without clocks (stored before clocks existed) clocks for its whole body,
    /// older than any change made since.
    pub(super) fn ensure_clocks(&self, thing: &mut Thing) {
        if !self.clocks_on() {
            // Clocks that are not kept up to date would be wrong later: drop them (they are
            // made again from the last modification when clocks are turned on).
            if !thing.clocks().is_empty() {
                *thing.clocks_mut() = Replica::new();
            }
            return;
        }
        if !thing.clocks().is_empty() {
            return;
        }
        let view = replicated(thing.body());
        let stamp = Stamp {
            wall_ms: thing.modified().as_micros() / 1000,
            counter: 0,
            origin: Arc::from(self.clock.origin()),
        };
        let clocks = thing.clocks_mut();
        for change in changes_for_modify(&Pointer::root(), &view, &stamp) {
            clocks.apply(stripped(change));
        }
    }

    /// Stamps a local write that has just changed `thing`'s body (`cmd` at `cmd.path`), records
    /// the clocks, and returns what sinks need to forward it (`None` without sinks).
    pub(super) fn stamp_local(
        &self,
        thing: &mut Thing,
        cmd: &ThingCommand,
    ) -> Option<Arc<Provenance>> {
        if !self.clocks_on() {
            return None;
        }
        let stamp = self.clock.now();
        let changes = local_changes(cmd, thing.body(), &stamp);
        let forward = !super::read(&self.sinks).is_empty();
        let clocks = thing.clocks_mut();
        let mut effective = Vec::new();
        for change in changes {
            if forward {
                if clocks.apply(stripped(change.clone())) {
                    effective.push(change);
                }
            } else {
                clocks.apply(stripped(change));
            }
        }
        forward.then(|| self.local_provenance(Replica::from(effective)))
    }

    fn clocks_on(&self) -> bool {
        self.clocks_on.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn local_provenance(&self, changes: Replica) -> Arc<Provenance> {
        let me: Arc<str> = Arc::from(self.clock.origin());
        Arc::new(Provenance {
            origin: me.clone(),
            hops: vec![me],
            changes,
        })
    }

    /// A stamp for a local deletion of a whole thing, remembered as its grave: the provenance
    /// to forward (when anything forwards) and the store write of the grave (to go in the
    /// deletion's batch); nothing while clocks are off.
    pub(super) fn bury(&self, thing: &Thing) -> (Option<Arc<Provenance>>, Option<WriteOp>) {
        if !self.clocks_on() {
            return (None, None);
        }
        let stamp = self.clock.now();
        let grave = Replica::from(vec![change_for_delete(&Pointer::root(), &stamp)]);
        let op = self.graves.dig(thing.id(), grave.clone());
        let forward = !super::read(&self.sinks).is_empty();
        (forward.then(|| self.local_provenance(grave)), Some(op))
    }
}

/// The changes a local command made (the body is the one after the command).
fn local_changes(cmd: &ThingCommand, body: &Value, stamp: &Stamp) -> Vec<Change> {
    let path = &cmd.path;
    if matches!(
        path.segments().first().map(String::as_str),
        Some("thingId" | "policyId")
    ) {
        return Vec::new();
    }
    match cmd.action {
        Action::Create => changes_for_modify(path, &replicated(body), stamp),
        Action::Modify if path.is_root() => changes_for_modify(path, &replicated(body), stamp),
        Action::Modify => match path.get(body) {
            Some(v) => changes_for_modify(path, v, stamp),
            None => Vec::new(),
        },
        Action::Merge => {
            let patch = cmd.value.clone().unwrap_or(Value::Null);
            let patch = if path.is_root() {
                replicated(&patch)
            } else {
                patch
            };
            changes_for_merge(path, &patch, stamp)
        }
        Action::Delete => vec![change_for_delete(path, stamp)],
        Action::Retrieve => Vec::new(),
    }
}

/// The replicated part of a body (or of a root patch): all but `thingId` and `policyId`.
pub fn replicated(body: &Value) -> Value {
    match body {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| *k != "thingId" && *k != "policyId")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The change without its value (a thing's clocks read values from its body).
fn stripped(change: Change) -> Change {
    match change.cell {
        Cell::Value(_) => Change {
            cell: Cell::Value(Value::Null),
            ..change
        },
        _ => change,
    }
}

/// Applies every change of `changes` to `replica`; returns those that took effect.
fn apply_all(replica: &mut Replica, changes: &Replica) -> Vec<Change> {
    changes
        .changes()
        .filter(|c| replica.apply(c.clone()))
        .collect()
}

/// A merge patch from `old` to `new` (what a `merged` event says changed). A value set to
/// `null` shows as a removal, as merge patches cannot say otherwise.
fn diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = Map::new();
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            for (k, v) in b {
                match a.get(k) {
                    Some(old) if old == v => {}
                    Some(old @ Value::Object(_)) if v.is_object() => {
                        out.insert(k.clone(), diff(old, v));
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

/// Makes `old` equal to `new`, keeping the order of the keys `old` already has.
fn sync(old: &mut Value, new: Value) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            a.retain(|k, _| b.contains_key(k));
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => sync(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (old, new) => *old = new,
    }
}

/// The first path below `at` where the state changes from `old` to `new` and `may_write`
/// refuses it. Where both are objects, and where an object appears, the walk descends (an
/// object that appears around written values needs no permission of its own); any other
/// difference (a value set, replaced or removed, an empty object created) needs `may_write`
/// for the whole path. Recursion follows the values, whose depth the engine bounds.
fn forbidden_change(
    at: &Pointer,
    old: Option<&Value>,
    new: Option<&Value>,
    may_write: &dyn Fn(&Pointer) -> bool,
) -> Option<Pointer> {
    let empty = Map::new();
    let (old_map, new_map) = match (old, new) {
        (Some(Value::Object(o)), Some(Value::Object(n))) => (o, n),
        (None, Some(Value::Object(n))) if !n.is_empty() => (&empty, n),
        (o, n) if o == n => return None,
        _ => return (!may_write(at)).then(|| at.clone()),
    };
    let added = new_map.keys().filter(|k| !old_map.contains_key(*k));
    old_map.keys().chain(added).find_map(|key| {
        let (o, n) = (old_map.get(key), new_map.get(key));
        if o == n {
            return None;
        }
        forbidden_change(&at.child(key), o, n, may_write)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn diff_and_sync_keep_order_and_say_what_changed() {
        let old = json!({"a": 1, "b": {"x": 1, "y": 2}, "c": 3});
        let new = json!({"c": 3, "b": {"y": 5, "x": 1}, "d": 4});
        assert_eq!(diff(&old, &new), json!({"a": null, "b": {"y": 5}, "d": 4}));
        let mut synced = old.clone();
        sync(&mut synced, new.clone());
        assert_eq!(synced, new);
        assert_eq!(
            serde_json::to_string(&synced).unwrap(),
            r#"{"b":{"x":1,"y":5},"c":3,"d":4}"#
        );
    }
}

#[cfg(test)]
mod engine_tests {
    use serde_json::json;

    use super::*;
    use crate::engine::EngineConfig;
    use crate::model::ThingId;
    use crate::store::{MemoryStore, Store};

    #[tokio::test]
    async fn writes_are_stamped_and_clocks_survive_a_reopen() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let config = EngineConfig {
            instance_id: "e1".into(),
            ..EngineConfig::default()
        };
        let id = ThingId::new("ns:c").unwrap();
        let auth = AuthContext::new(["test:a"]);
        let tw = Twins::open(config.clone(), store.clone()).unwrap();
        tw.enable_clocks();
        let body = json!({"attributes": {"a": 1}, "features": {"f": {"properties": {"x": 1}}}});
        let cmd = ThingCommand::new(id.clone(), Action::Create, Pointer::root(), Some(body));
        tw.apply(&auth, cmd).await.unwrap();
        let path = Pointer::parse("/features/f/properties").unwrap();
        let merge = ThingCommand::new(id.clone(), Action::Merge, path, Some(json!({"x": 2})));
        tw.apply(&auth, merge).await.unwrap();
        let clocks = tw.get_thing(&id).unwrap().clocks().clone().clocks_json();
        let x = clocks["/features/f/properties/x"].as_str().unwrap();
        let a = clocks["/attributes/a"].as_str().unwrap();
        assert!(x.starts_with('v') && x.ends_with("@e1"), "{x}");
        assert!(Stamp::parse(&x[1..]).unwrap() > Stamp::parse(&a[1..]).unwrap());
        assert!(clocks.get("/thingId").is_none() && clocks.get("/policyId").is_none());
        drop(tw);
        let again = Twins::open(config, store).unwrap();
        again.enable_clocks();
        assert_eq!(again.get_thing(&id).unwrap().clocks().clocks_json(), clocks);
        // A peer's older change loses, a newer one wins.
        let older = Update {
            thing_id: id.clone(),
            origin: Arc::from("e2"),
            hops: vec![Arc::from("e2")],
            policy_id: None,
            changes: Replica::from(changes_for_merge(
                &Pointer::parse("/features/f/properties/x").unwrap(),
                &json!(99),
                &Stamp::parse(&a[1..]).unwrap(),
            )),
        };
        let system = AuthContext::system();
        let applied = again
            .apply_update(&system, &older, None, &|_| false, true)
            .await
            .unwrap();
        assert_eq!(applied.changes, 0);
        let mut newer = older.clone();
        newer.changes = Replica::from(changes_for_merge(
            &Pointer::parse("/features/f/properties/x").unwrap(),
            &json!(99),
            &Stamp {
                wall_ms: Stamp::parse(&a[1..]).unwrap().wall_ms + 1_000,
                counter: 0,
                origin: Arc::from("e2"),
            },
        ));
        let applied = again
            .apply_update(&system, &newer, None, &|_| false, true)
            .await
            .unwrap();
        assert_eq!(applied.changes, 1);
        let t = again.get_thing(&id).unwrap();
        assert_eq!(t.body()["features"]["f"]["properties"]["x"], 99);
        assert_eq!(t.body()["attributes"]["a"], 1);
        // Ownership: x was last written by e2 now, so e1 does not own it; a is e1's own.
        let mine = Update {
            changes: Replica::from(changes_for_merge(
                &Pointer::parse("/attributes/a").unwrap(),
                &json!(5),
                &Stamp {
                    wall_ms: Stamp::parse(&a[1..]).unwrap().wall_ms + 2_000,
                    counter: 0,
                    origin: Arc::from("e2"),
                },
            )),
            ..older
        };
        let owned = |p: &Pointer| p.segments().first().is_some_and(|s| s == "attributes");
        let applied = again
            .apply_update(&system, &mine, None, &owned, true)
            .await
            .unwrap();
        assert_eq!(
            applied.refused,
            vec![Pointer::parse("/attributes/a").unwrap()]
        );
        assert_eq!(again.get_thing(&id).unwrap().body()["attributes"]["a"], 1);
    }
}
