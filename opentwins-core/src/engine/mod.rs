//! The engine: [`Twins`] applies commands for a subject and returns the response plus the events
//! the command caused, keeps every thing and policy in memory, hands each change to the
//! [`Store`](crate::store::Store) in order, and fans events out to subscribers and sinks.
//!
//! Concurrency: each thing has its own lock, held only for the synchronous part of a command
//! (check, apply, enqueue the store write, emit events). Commands on one thing therefore apply
//! in order and events leave in revision order; different things proceed in parallel. Waiting
//! for durability (`requested-acks: twin-persisted`) happens after the lock is released, so
//! concurrent writers share one flush (group commit).

mod access;
mod commit;
mod config;
mod graves;
mod hot;
mod policy_cmd;
mod precondition;
mod replicate;
mod ring;
mod seal;
mod search;
mod subscribe;
mod thing_cmd;
mod transient;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use config::EngineConfig;
pub use replicate::{Applied, replicated};
pub use search::SearchResult;
pub use subscribe::{RecvError, Subscription};

use crate::error::{Error, Result};
use crate::model::{PolicyId, Thing, ThingId};
use crate::policy::Policy;
use crate::protocol::{PolicyResponse, ThingEvent, ThingResponse};
use crate::query::{Path, SearchIndex};
use crate::replica::Clock;
use crate::sink::Sink;
use crate::store::{Durable, Kind, Store};

/// The result of a thing command: the response and the events it caused (filtered to what the
/// caller may read).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The response to send back.
    pub response: ThingResponse,
    /// The events the command emitted (none for a retrieve).
    pub events: Vec<ThingEvent>,
}

/// The result of a policy command.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyOutcome {
    /// The response to send back.
    pub response: PolicyResponse,
}

use hot::{Entry, HotSet, Slot, SlotRef};

const SHARDS: usize = 32;

/// A sharded map of thing slots.
struct ThingMap {
    hasher: RandomState,
    shards: Vec<RwLock<HashMap<ThingId, Slot>>>,
}

impl ThingMap {
    fn new() -> Self {
        ThingMap {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, id: &ThingId) -> &RwLock<HashMap<ThingId, Slot>> {
        let mut h = self.hasher.build_hasher();
        id.hash(&mut h);
        &self.shards[(std::hash::Hasher::finish(&h) as usize) % SHARDS]
    }

    fn get(&self, id: &ThingId) -> Option<Slot> {
        read(self.shard(id)).get(id).cloned()
    }

    fn get_or_insert(&self, id: &ThingId) -> Slot {
        if let Some(slot) = self.get(id) {
            return slot;
        }
        write(self.shard(id))
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Entry::Absent)))
            .clone()
    }

    /// Drops the slot of `id` if it holds no thing and nobody else holds it (after a failed
    /// create or a delete), so ids that come and go do not pile up.
    fn remove_if_vacant(&self, id: &ThingId) {
        let mut shard = write(self.shard(id));
        let vacant = shard.get(id).is_some_and(|slot| {
            Arc::strong_count(slot) == 1 && slot.try_lock().is_ok_and(|e| !e.is_present())
        });
        if vacant {
            shard.remove(id);
        }
    }

    /// Every id with its slot (a snapshot of the map; slots may change afterwards).
    fn entries(&self) -> Vec<(ThingId, Slot)> {
        self.shards
            .iter()
            .flat_map(|s| {
                read(s)
                    .iter()
                    .map(|(id, slot)| (id.clone(), slot.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every slot (a snapshot of the map; slots may change afterwards).
    fn all(&self) -> Vec<Slot> {
        self.shards
            .iter()
            .flat_map(|s| read(s).values().cloned().collect::<Vec<_>>())
            .collect()
    }
}

/// The twin engine handle. Cheap to clone; all clones share the same state.
#[derive(Clone)]
pub struct Twins {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    store: Arc<dyn Store>,
    things: ThingMap,
    hot: HotSet,
    policies: RwLock<HashMap<PolicyId, Arc<Policy>>>,
    /// Serialises policy writes (rare) so read-modify-write of a policy is atomic; holds the
    /// last default policy created, whose entries the next one shares when they are equal.
    policy_write: Mutex<Option<Arc<Policy>>>,
    /// Recent events for subscribers, bounded in events and bytes.
    events: Arc<ring::Ring>,
    sinks: RwLock<Vec<Arc<dyn Sink>>>,
    /// Writes handed to the store and not yet durable (`max_pending_writes` permits).
    pending: Arc<tokio::sync::Semaphore>,
    /// Background tasks watching a write become durable (each holds the engine until then).
    watching: Arc<tokio::sync::watch::Sender<usize>>,
    /// Stamps this instance's changes.
    clock: Clock,
    /// Whether writes record clocks (set once links exist: [`Twins::enable_clocks`]).
    clocks_on: AtomicBool,
    /// Clocks of things not held here (deleted, or only removals arrived): older changes
    /// arriving later do not bring them back, and newer ones are not lost.
    graves: graves::Graves,
    /// Set when the store failed a write: the engine then refuses writes (503) until restarted,
    /// because its memory may hold changes the store does not.
    store_failed: AtomicBool,
    /// Paths whose values reach subscribers only (`EngineConfig::transient`).
    transient: transient::Transient,
    /// Records that did not load at start (see [`Twins::quarantined`]).
    quarantined: Vec<Quarantined>,
    /// Set by [`Twins::enable_composition`]: reserved attributes are the composer's.
    composition: AtomicBool,
    /// Makes search cursors opaque ([`EngineConfig::cursor_key`]).
    cursors: seal::CursorSeal,
    /// Every thing's id and the values at the indexed paths, updated by every commit while the
    /// thing is locked (lock order: a slot, then the index).
    index: RwLock<SearchIndex<SlotRef>>,
}

/// A stored record that did not load when the engine opened: the engine starts without it
/// (a policy) or answers 503 for it (a thing), and leaves the record in the store untouched so
/// an operator can repair or remove it. One bad record never keeps an instance from starting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// What the record holds.
    pub kind: Kind,
    /// Its id as stored.
    pub id: String,
    /// Why it did not load.
    pub reason: String,
}

impl Quarantined {
    fn new(kind: Kind, id: String, error: &Error) -> Self {
        tracing::error!(?kind, %id, %error, "a stored record does not load; quarantined");
        Quarantined {
            kind,
            id,
            reason: error.to_string(),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Subscribers read what is buffered, then learn that the engine is gone.
        self.events.close();
    }
}

impl Twins {
    /// Opens the engine on `store`, loading every policy and thing it holds.
    pub fn open(config: EngineConfig, store: Arc<dyn Store>) -> Result<Twins> {
        if !crate::replica::valid_instance(&config.instance_id) {
            return Err(Error::field_invalid(format!(
                "The instance id '{}' must be 1 to 64 of letters, digits, '.', '_', '-', ':'.",
                config.instance_id
            )));
        }
        let clock = Clock::new(&config.instance_id);
        let cursors = seal::CursorSeal::new(config.cursor_key.as_deref())?;
        let transient = transient::Transient::parse(&config.transient)?;
        let indexed = config
            .search_index
            .iter()
            .map(|p| match Path::parse(p) {
                Ok(path) if path.has_wildcard() => Err(Error::field_invalid(format!(
                    "The search index path '{p}' has a wildcard; index plain paths."
                ))),
                other => other,
            })
            .collect::<Result<Vec<_>>>()?;
        let mut index = SearchIndex::new();
        let mut policies = HashMap::new();
        // Policies with equal entries (typically default policies) share them in memory.
        let mut shared: HashMap<Vec<u8>, Arc<Policy>> = HashMap::new();
        let mut quarantined = Vec::new();
        for record in store.scan(Kind::Policy)? {
            let parsed = serde_json::from_slice(&record.json)
                .map_err(Error::json_invalid)
                .and_then(Policy::from_full_json);
            let mut policy = match parsed {
                Ok(p) => p,
                Err(e) => {
                    quarantined.push(Quarantined::new(Kind::Policy, record.id, &e));
                    continue;
                }
            };
            let key = policy.entries_json_bytes();
            if let Some(first) = shared.get(&key) {
                policy.share_entries_with(first);
            }
            let policy = Arc::new(policy);
            shared.entry(key).or_insert_with(|| policy.clone());
            policies.insert(policy.id().clone(), policy);
        }
        let things = ThingMap::new();
        let hot = HotSet::new(config.max_hot_things);
        for (n, record) in store.scan(Kind::Thing)?.into_iter().enumerate() {
            let id = match ThingId::new(&record.id) {
                Ok(id) => id,
                Err(e) => {
                    quarantined.push(Quarantined::new(Kind::Thing, record.id, &e));
                    continue;
                }
            };
            let slot = things.get_or_insert(&id);
            index.insert_id(&id, &SlotRef(slot.clone()));
            if hot.limited() && n >= config.max_hot_things {
                // Beyond the hot set, keep the stored bytes; they are parsed when used.
                *lock(&slot) = Entry::Cold(record.json);
                continue;
            }
            let parsed = serde_json::from_slice(&record.json)
                .map_err(Error::json_invalid)
                .and_then(Thing::from_full_json);
            match parsed {
                Ok(thing) => {
                    *lock(&slot) = Entry::Hot(thing);
                    hot.became_hot(&slot);
                }
                Err(e) => {
                    // Kept as stored bytes: every command on it answers 503 with the reason,
                    // the record stays in the store for an operator, the others load.
                    *lock(&slot) = Entry::Cold(record.json);
                    quarantined.push(Quarantined::new(Kind::Thing, record.id, &e));
                }
            }
        }
        let events = ring::Ring::new(config.event_buffer, config.event_buffer_bytes);
        let graves = graves::Graves::load(&*store, config.grave_lifetime_ms)?;
        let pending = Arc::new(tokio::sync::Semaphore::new(
            config.max_pending_writes.max(1),
        ));
        let twins = Twins {
            inner: Arc::new(Inner {
                config,
                store,
                things,
                hot,
                policies: RwLock::new(policies),
                policy_write: Mutex::new(None),
                events,
                sinks: RwLock::new(Vec::new()),
                pending,
                watching: Arc::new(tokio::sync::watch::Sender::new(0)),
                clock,
                clocks_on: AtomicBool::new(false),
                graves,
                store_failed: AtomicBool::new(false),
                transient,
                quarantined,
                composition: AtomicBool::new(false),
                cursors,
                index: RwLock::new(index),
            }),
        };
        for path in indexed {
            twins.build_index(path);
        }
        Ok(twins)
    }

    /// An engine on a fresh in-memory store (tests, examples, embedding).
    pub fn in_memory(config: EngineConfig) -> Twins {
        Twins::open(config, Arc::new(crate::store::MemoryStore::new()))
            .expect("an empty memory store always loads")
    }

    /// Keeps the reserved attributes of composition ([`crate::compose::RESERVED`]) to the
    /// composition operations from now on, for every command whatever its transport: a command
    /// that writes one is refused, replacing the whole thing or `/attributes` carries them over,
    /// and removing every attribute of a thing that has them is refused.
    pub fn enable_composition(&self) {
        self.inner.composition.store(true, Ordering::Relaxed);
    }

    /// The stored records that did not load at start (empty when all did).
    pub fn quarantined(&self) -> &[Quarantined] {
        &self.inner.quarantined
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Registers a sink; it receives every event from now on.
    pub fn add_sink(&self, sink: Arc<dyn Sink>) {
        write(&self.inner.sinks).push(sink);
    }

    /// A snapshot of one thing, unfiltered (for trusted in-process callers).
    pub fn get_thing(&self, id: &ThingId) -> Option<Thing> {
        let slot = self.inner.things.get(id)?;
        let entry = lock(&slot);
        match entry.peek() {
            Ok(thing) => thing.map(std::borrow::Cow::into_owned),
            Err(e) => {
                tracing::error!(thing = %id, error = %e, "a stored thing does not parse");
                None
            }
        }
    }

    /// A snapshot of one policy, unfiltered.
    pub fn get_policy(&self, id: &PolicyId) -> Option<Arc<Policy>> {
        read(&self.inner.policies).get(id).cloned()
    }

    /// Waits until no write is pending and no task of the engine's holds it any more: a
    /// shutdown waits for this before closing the store, so that the store's files are
    /// released when the last handle is dropped, not some time later.
    pub async fn quiesce(&self) {
        let mut watching = self.inner.watching.subscribe();
        let _ = watching.wait_for(|n| *n == 0).await;
    }

    /// The ids of the things held (a snapshot), in no particular order.
    pub fn thing_ids(&self) -> Vec<ThingId> {
        self.inner
            .things
            .entries()
            .into_iter()
            .filter(|(_, slot)| lock(slot).is_present())
            .map(|(id, _)| id)
            .collect()
    }

    /// The paths the search index answers from (configured, or indexed when first searched),
    /// besides `thingId`.
    pub fn search_indexes(&self) -> Vec<String> {
        read(&self.inner.index)
            .paths()
            .filter(|(_, ready)| *ready)
            .map(|(path, _)| path.to_string())
            .collect()
    }

    /// Number of things held.
    pub fn thing_count(&self) -> usize {
        self.inner
            .things
            .all()
            .iter()
            .filter(|s| lock(s).is_present())
            .count()
    }
}

impl Inner {
    fn policy(&self, id: &PolicyId) -> Option<Arc<Policy>> {
        read(&self.policies).get(id).cloned()
    }

    fn check_store(&self) -> Result<()> {
        if self.store_failed.load(Ordering::Relaxed) {
            return Err(Error::unavailable(
                "an earlier write failed; restart the instance to reload the durable state",
            ));
        }
        Ok(())
    }

    /// Waits for durability when the caller asked for it; otherwise watches the write in the
    /// background so a failure is noticed either way.
    ///
    /// `permit` is the caller's place among the writes in flight; it is released when the write
    /// is durable, so a store that falls behind slows writers down instead of queueing without
    /// bound.
    async fn settle(
        self: &Arc<Self>,
        durable: Durable,
        wait: bool,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<()> {
        if wait {
            let result = durable.await;
            if let Err(e) = &result {
                self.store_write_failed(e);
            }
            return result;
        }
        let inner = self.clone();
        // Memory stores resolve at once; only pending writes cost a task.
        let mut durable = durable;
        let waker = std::task::Waker::noop();
        match std::pin::Pin::new(&mut durable).poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(Ok(())) => {}
            std::task::Poll::Ready(Err(e)) => inner.store_write_failed(&e),
            std::task::Poll::Pending => {
                let watching = inner.watching.clone();
                watching.send_modify(|n| *n += 1);
                tokio::spawn(async move {
                    if let Err(e) = durable.await {
                        inner.store_write_failed(&e);
                    }
                    drop(permit);
                    // The engine is released before the count drops: at zero
                    // (`Twins::quiesce`) no such task holds it (nor its store).
                    drop(inner);
                    watching.send_modify(|n| *n -= 1);
                });
            }
        }
        Ok(())
    }

    fn store_write_failed(&self, e: &Error) {
        if !self.store_failed.swap(true, Ordering::Relaxed) {
            tracing::error!(error = %e, "store write failed; refusing writes until restart");
        }
    }
}

use std::future::Future as _;

// Lock helpers: a poisoned lock means a panic happened while holding it; the data is still
// consistent at the granularity we mutate it (each command validates before it writes), so we
// keep going rather than cascade the panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::Pointer;
    use crate::policy::AuthContext;
    use crate::protocol::{Action, ThingCommand};

    #[tokio::test]
    async fn failed_creates_and_deletes_leave_no_slots() {
        let tw = Twins::in_memory(EngineConfig::default());
        let auth = AuthContext::new(["test:a"]);
        let id = ThingId::new("ns:gone").unwrap();
        let create = |v| ThingCommand::new(id.clone(), Action::Create, Pointer::root(), Some(v));
        // Invalid body: refused, and the slot made for it is dropped again.
        assert!(tw.apply(&auth, create(json!({"bad": 1}))).await.is_err());
        assert!(tw.inner.things.get(&id).is_none());
        tw.apply(&auth, create(json!({}))).await.unwrap();
        assert!(tw.inner.things.get(&id).is_some());
        let delete = ThingCommand::new(id.clone(), Action::Delete, Pointer::root(), None);
        tw.apply(&auth, delete).await.unwrap();
        assert!(tw.inner.things.get(&id).is_none());
        assert_eq!(tw.thing_count(), 0);
    }
}

#[cfg(test)]
mod hot_tests {
    use serde_json::json;

    use super::*;
    use crate::model::Pointer;
    use crate::policy::AuthContext;
    use crate::protocol::{Action, ThingCommand};

    /// An engine that keeps 2 things hot answers a random workload over 20 things exactly as one
    /// that keeps everything hot.
    #[tokio::test]
    async fn a_small_hot_set_changes_no_answer() {
        let all = Twins::in_memory(EngineConfig::default());
        let few = Twins::in_memory(EngineConfig {
            max_hot_things: 2,
            ..EngineConfig::default()
        });
        let auth = AuthContext::new(["test:a"]);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for _ in 0..600 {
            let id = ThingId::new(&format!("ns:t{}", next(20))).unwrap();
            let (action, path, value) = match next(6) {
                0 => (
                    Action::Create,
                    "/",
                    Some(json!({"attributes": {"n": next(100)}})),
                ),
                1 => (
                    Action::Merge,
                    "/attributes",
                    Some(json!({"m": next(100), "n": null})),
                ),
                2 => (
                    Action::Modify,
                    "/features/f/properties/p",
                    Some(json!(next(100))),
                ),
                3 => (
                    Action::Modify,
                    "/features/f",
                    Some(json!({"properties": {}})),
                ),
                4 => (Action::Retrieve, "/", None),
                _ => (
                    Action::Delete,
                    if next(4) == 0 { "/" } else { "/attributes/m" },
                    None,
                ),
            };
            let cmd = ThingCommand::new(id, action, Pointer::parse(path).unwrap(), value);
            let a = all
                .apply(&auth, cmd.clone())
                .await
                .map(|o| (o.response.status, o.response.value));
            let b = few
                .apply(&auth, cmd)
                .await
                .map(|o| (o.response.status, o.response.value));
            assert_eq!(a.map_err(|e| e.code()), b.map_err(|e| e.code()));
            assert!(few.inner.hot.count() <= 2, "hot: {}", few.inner.hot.count());
        }
        for i in 0..20 {
            let id = ThingId::new(&format!("ns:t{i}")).unwrap();
            assert_eq!(
                all.get_thing(&id).map(|t| (t.body().clone(), t.revision())),
                few.get_thing(&id).map(|t| (t.body().clone(), t.revision()))
            );
        }
        assert_eq!(
            all.count(&auth, Some("exists(attributes/m)")).unwrap(),
            few.count(&auth, Some("exists(attributes/m)")).unwrap()
        );
        assert_eq!(all.thing_count(), few.thing_count());
    }

    #[tokio::test]
    async fn reopening_keeps_cold_things_as_bytes_until_used() {
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let auth = AuthContext::new(["test:a"]);
        {
            let tw = Twins::open(EngineConfig::default(), store.clone()).unwrap();
            for i in 0..5 {
                let c = ThingCommand::new(
                    ThingId::new(&format!("ns:c{i}")).unwrap(),
                    Action::Create,
                    Pointer::root(),
                    Some(json!({"attributes": {"i": i}})),
                );
                tw.apply(&auth, c).await.unwrap();
            }
        }
        let tw = Twins::open(
            EngineConfig {
                max_hot_things: 1,
                ..EngineConfig::default()
            },
            store,
        )
        .unwrap();
        assert_eq!(tw.inner.hot.count(), 1);
        let id = ThingId::new("ns:c4").unwrap();
        let c = ThingCommand::new(
            id.clone(),
            Action::Merge,
            Pointer::parse("/attributes").unwrap(),
            Some(json!({"j": 1})),
        );
        tw.apply(&auth, c).await.unwrap();
        let t = tw.get_thing(&id).unwrap();
        assert_eq!(
            (t.revision(), &t.body()["attributes"]),
            (2, &json!({"i": 4, "j": 1}))
        );
        assert_eq!(tw.inner.hot.count(), 1);
        assert_eq!(tw.count(&auth, None).unwrap(), 5);
    }
}

#[cfg(test)]
mod backpressure_tests {
    use std::time::Duration;

    use serde_json::json;
    use tokio::sync::watch;

    use super::*;
    use crate::model::Pointer;
    use crate::policy::AuthContext;
    use crate::protocol::{Action, ThingCommand};
    use crate::store::{MemoryStore, Record, WriteOp};

    /// A store whose writes apply at once but become durable only when the gate opens.
    struct GatedStore {
        inner: MemoryStore,
        gate: watch::Receiver<bool>,
    }

    impl Store for GatedStore {
        fn write(&self, batch: Vec<WriteOp>) -> Durable {
            let applied = self.inner.write(batch);
            let mut gate = self.gate.clone();
            Durable::new(async move {
                gate.wait_for(|open| *open)
                    .await
                    .map_err(Error::unavailable)?;
                applied.await
            })
        }
        fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>> {
            self.inner.get(kind, id)
        }
        fn scan(&self, kind: Kind) -> Result<Vec<Record>> {
            self.inner.scan(kind)
        }
    }

    #[tokio::test]
    async fn writers_wait_when_the_store_falls_behind() {
        let (open, gate) = watch::channel(false);
        let store = Arc::new(GatedStore {
            inner: MemoryStore::new(),
            gate,
        });
        let config = EngineConfig {
            max_pending_writes: 3,
            ..EngineConfig::default()
        };
        let tw = Twins::open(config, store).unwrap();
        let auth = AuthContext::new(["test:a"]);
        let merge = |i: u64| {
            let id = ThingId::new("ns:bp").unwrap();
            let path = Pointer::parse("/attributes").unwrap();
            ThingCommand::new(id, Action::Merge, path, Some(json!({"i": i})))
        };
        let create = ThingCommand::new(
            ThingId::new("ns:bp").unwrap(),
            Action::Create,
            Pointer::root(),
            Some(json!({})),
        );
        tw.apply(&auth, create).await.unwrap();
        tw.apply(&auth, merge(1)).await.unwrap();
        tw.apply(&auth, merge(2)).await.unwrap();
        // Three writes are in flight: the fourth waits for a place.
        let blocked =
            tokio::time::timeout(Duration::from_millis(100), tw.apply(&auth, merge(3))).await;
        assert!(
            blocked.is_err(),
            "a fourth write went through while three were pending"
        );
        // Reads are not held back.
        let read = ThingCommand::new(
            ThingId::new("ns:bp").unwrap(),
            Action::Retrieve,
            Pointer::root(),
            None,
        );
        tokio::time::timeout(Duration::from_secs(5), tw.apply(&auth, read))
            .await
            .unwrap()
            .unwrap();
        open.send(true).unwrap();
        let out = tokio::time::timeout(Duration::from_secs(5), tw.apply(&auth, merge(4)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.response.status, 204);
        assert_eq!(
            tw.get_thing(&ThingId::new("ns:bp").unwrap())
                .unwrap()
                .revision(),
            4
        );
    }
}
