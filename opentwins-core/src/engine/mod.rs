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
mod config;
mod policy_cmd;
mod precondition;
mod search;
mod subscribe;
mod thing_cmd;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;

pub use config::EngineConfig;
pub use search::SearchResult;
pub use subscribe::{RecvError, Subscription};

use crate::error::{Error, Result};
use crate::model::{PolicyId, Thing, ThingId};
use crate::policy::Policy;
use crate::protocol::{PolicyResponse, ThingEvent, ThingResponse};
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

/// One thing's slot: the lock that orders its commands. `None` when absent or deleted.
type Slot = Arc<Mutex<Option<Thing>>>;

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
        write(self.shard(id)).entry(id.clone()).or_default().clone()
    }

    /// Drops the slot of `id` if it holds no thing and nobody else holds it (after a failed
    /// create or a delete), so ids that come and go do not pile up.
    fn remove_if_vacant(&self, id: &ThingId) {
        let mut shard = write(self.shard(id));
        let vacant = shard.get(id).is_some_and(|slot| {
            Arc::strong_count(slot) == 1 && slot.try_lock().is_ok_and(|thing| thing.is_none())
        });
        if vacant {
            shard.remove(id);
        }
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
    policies: RwLock<HashMap<PolicyId, Arc<Policy>>>,
    /// Serialises policy writes (rare) so read-modify-write of a policy is atomic; holds the
    /// last default policy created, whose entries the next one shares when they are equal.
    policy_write: Mutex<Option<Arc<Policy>>>,
    events: broadcast::Sender<Arc<subscribe::Published>>,
    sinks: RwLock<Vec<Arc<dyn Sink>>>,
    /// Set when the store failed a write: the engine then refuses writes (503) until restarted,
    /// because its memory may hold changes the store does not.
    store_failed: AtomicBool,
}

impl Twins {
    /// Opens the engine on `store`, loading every policy and thing it holds.
    pub fn open(config: EngineConfig, store: Arc<dyn Store>) -> Result<Twins> {
        let mut policies = HashMap::new();
        // Policies with equal entries (typically default policies) share them in memory.
        let mut shared: HashMap<String, Arc<Policy>> = HashMap::new();
        for record in store.scan(Kind::Policy)? {
            let value = serde_json::from_slice(&record.json).map_err(Error::json_invalid)?;
            let mut policy = Policy::from_full_json(value)?;
            let key = policy
                .get_at(&crate::model::Pointer::parse("/entries")?)?
                .to_string();
            if let Some(first) = shared.get(&key) {
                policy.share_entries_with(first);
            }
            let policy = Arc::new(policy);
            shared.entry(key).or_insert_with(|| policy.clone());
            policies.insert(policy.id().clone(), policy);
        }
        let things = ThingMap::new();
        for record in store.scan(Kind::Thing)? {
            let value = serde_json::from_slice(&record.json).map_err(Error::json_invalid)?;
            let thing = Thing::from_full_json(value)?;
            let slot = things.get_or_insert(thing.id());
            *lock(&slot) = Some(thing);
        }
        let (events, _) = broadcast::channel(config.event_buffer.max(1));
        Ok(Twins {
            inner: Arc::new(Inner {
                config,
                store,
                things,
                policies: RwLock::new(policies),
                policy_write: Mutex::new(None),
                events,
                sinks: RwLock::new(Vec::new()),
                store_failed: AtomicBool::new(false),
            }),
        })
    }

    /// An engine on a fresh in-memory store (tests, examples, embedding).
    pub fn in_memory(config: EngineConfig) -> Twins {
        Twins::open(config, Arc::new(crate::store::MemoryStore::new()))
            .expect("an empty memory store always loads")
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
        self.inner
            .things
            .get(id)
            .and_then(|slot| lock(&slot).clone())
    }

    /// A snapshot of one policy, unfiltered.
    pub fn get_policy(&self, id: &PolicyId) -> Option<Arc<Policy>> {
        read(&self.inner.policies).get(id).cloned()
    }

    /// Number of things held.
    pub fn thing_count(&self) -> usize {
        self.inner
            .things
            .all()
            .iter()
            .filter(|s| lock(s).is_some())
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
    async fn settle(self: &Arc<Self>, durable: Durable, wait: bool) -> Result<()> {
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
                tokio::spawn(async move {
                    if let Err(e) = durable.await {
                        inner.store_write_failed(&e);
                    }
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
