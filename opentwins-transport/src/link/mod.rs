//! Links between twin instances: the distributed twin of the paper (section 3.4), made correct
//! for any number of instances (docs/distribution.md).
//!
//! A link is configuration ([`LinkConfig`]): a peer (in-process, MQTT broker, HTTP API), a
//! direction, a selection of things and paths, and ownership rules. [`Links`] runs them:
//!
//! - outbound, an engine sink turns every event that carries changes ([`Provenance`]) into an
//!   [`Update`] for each sending link whose peer has not applied it yet, and queues it in the
//!   link's persistent [`outbox::Outbox`] (in the engine's own sled database, so the engine's
//!   group commit makes it durable with the write), where updates of a thing that wait merge
//!   into one; a sender task per link drains the outbox to the peer in order, with a window of
//!   messages in flight and several updates per message, and acknowledges only what the peer
//!   took;
//! - inbound, [`Links::receive`] applies a peer's update through the engine under the link's
//!   subject ([`Twins::apply_update`]: per-path last-writer-wins on hybrid logical clocks), and
//!   re-asserts paths this instance owns on that link.
//!
//! Topologies (P2P, star, tree, hybrids) are only configurations of links: an update carries the
//! instances it crossed, so none loops and none echoes back, and an instance forwards only what
//! changed its own state, so each update crosses each link at most once per direction.

mod config;
mod digest;
mod http;
mod mqtt;
mod network;
pub mod outbox;
mod topology;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentwins_core::Twins;
use opentwins_core::engine::Applied;
use opentwins_core::error::Error;
use opentwins_core::model::{Pointer, PolicyId, Thing, ThingId};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Message, ThingCommand, ThingEvent};
use opentwins_core::query::Filter;
use opentwins_core::replica::{
    Cell, Provenance, Update, decode_batch, encode_batch, is_binary_batch,
};
use serde::Serialize;
use tokio::sync::watch;

pub use config::{Direction, LinkConfig, MAX_BATCH, PeerConfig, Wire};
use config::{Pattern, Selected, Selection, covered, parse_pattern};
pub use network::{Faults, Network};
use outbox::{Coalesce, Outbox, OutboxConfig};
pub use topology::{InstanceSpec, Topology};

/// The media type of a binary batch (`opentwins_core::replica::encode_batch`) over HTTP.
pub const BINARY_CONTENT_TYPE: &str = "application/vnd.opentwins.batch";

/// Errors of link management (a peer's bad update is a Ditto [`Error`] instead).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The configuration is invalid.
    #[error("link '{name}': {detail}")]
    Config {
        /// The link.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
}

/// What a status page shows of one link.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkStatus {
    /// The link's name.
    pub name: String,
    /// The peer (no secrets).
    pub peer: String,
    /// Which way updates flow.
    pub direction: Direction,
    /// Whether the last attempt to reach the peer succeeded.
    pub connected: bool,
    /// Updates waiting in the outbox.
    pub backlog: u64,
    /// Bytes waiting in the outbox.
    pub backlog_bytes: u64,
    /// Age of the oldest waiting update, in milliseconds (0 when none waits).
    pub lag_ms: u64,
    /// Updates delivered to the peer.
    pub messages_out: u64,
    /// Updates received from the peer.
    pub messages_in: u64,
    /// Received updates refused here (bad input, no permission); see `last_error`.
    pub rejected: u64,
    /// Sent updates the peer refused (they are not retried); see `last_error`.
    pub refused_by_peer: u64,
    /// Updates merged into a pending update of the same thing while it waited.
    pub coalesced: u64,
    /// Updates dropped because the outbox was full (their things are re-sent whole later).
    pub dropped: u64,
    /// How updates cross now: `binary` or `json` (`auto` turns `binary` once the peer said
    /// it reads it).
    pub wire: Wire,
    /// Anti-entropy rounds completed with the peer.
    pub anti_entropy_rounds: u64,
    /// Things anti-entropy found the peer behind on and queued changes of.
    pub repaired: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// The links of one instance. Cheap to clone.
#[derive(Clone)]
pub struct Links {
    inner: Arc<Shared>,
}

struct Shared {
    twins: Twins,
    db: sled::Db,
    network: Option<Network>,
    links: RwLock<BTreeMap<String, Arc<Link>>>,
    /// Where per-link metrics are exported, once [`Links::export_metrics`] was called.
    registry: std::sync::OnceLock<crate::metrics::Registry>,
}

struct Link {
    config: LinkConfig,
    selection: Selection,
    owned: Vec<Pattern>,
    filter: Option<Filter>,
    auth: AuthContext,
    policy: Option<PolicyId>,
    outbox: Option<Outbox>,
    transport: Arc<dyn Transport>,
    stats: Stats,
    stop: watch::Sender<bool>,
    /// Signalled when a send succeeds after failing (the peer is back: time to compare).
    peer_back: tokio::sync::Notify,
    /// The sender and anti-entropy tasks, awaited when the link stops (its outbox may then be
    /// opened again).
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct Stats {
    connected: AtomicBool,
    out: AtomicU64,
    received: AtomicU64,
    rejected: AtomicU64,
    refused: AtomicU64,
    /// Whether the peer said it reads binary batches.
    peer_binary: AtomicBool,
    rounds: AtomicU64,
    repaired: AtomicU64,
    /// Enqueue time (ms) of the oldest update being sent, 0 when idle.
    sending_since: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    fn error(&self, e: impl ToString) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }
}

/// How a link reaches its peer. `send` returns once the peer (or its broker) has the update:
/// `Ok(None)` when taken, `Ok(Some(why))` when the peer refused it for good (retrying would not
/// help: it is counted and skipped), `Err` when it may work later (it is retried).
/// Several sends may be pending at once (a window); each resolves in the order sent.
trait Transport: Send + Sync {
    fn send(&self, message: Vec<u8>) -> SendFuture<'_>;
    fn close(&self) {}
    /// Messages the peer takes unacknowledged (an MQTT broker's receive maximum); the link's
    /// window is no larger.
    fn max_in_flight(&self) -> usize {
        usize::MAX
    }
    /// True while the transport can take and deliver updates both ways (an MQTT peer:
    /// connected and subscribed; false again when the connection is lost); `None`: always
    /// ready.
    fn ready(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
    /// The transport's own view of its connection, when it keeps one (an MQTT peer): `Ok`
    /// while connected, `Err(why)` while not (a wrong password, an unknown CA, a lost broker).
    fn connection(&self) -> Option<Result<(), String>> {
        None
    }
    /// Sends an anti-entropy request and returns the peer's answer (`digest.rs`); `None`
    /// when the transport has no way back for one (MQTT).
    fn request(&self, _body: Vec<u8>) -> Option<RequestFuture<'_>> {
        None
    }
}

type SendFuture<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>>;
type RequestFuture<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Vec<u8>, digest::Asked>> + Send + 'a>>;

impl Links {
    /// Links for `twins`, with outboxes in `db` (pass the engine's own sled database when the
    /// store is sled: an acknowledged write is then in the outbox as durably as in the store),
    /// and `network` for in-process peers.
    pub fn new(twins: Twins, db: sled::Db, network: Option<Network>) -> Links {
        twins.enable_clocks();
        let inner = Arc::new(Shared {
            twins: twins.clone(),
            db,
            network: network.clone(),
            links: RwLock::new(BTreeMap::new()),
            registry: std::sync::OnceLock::new(),
        });
        let weak: Weak<Shared> = Arc::downgrade(&inner);
        twins.add_sink(Arc::new(
            move |event: &ThingEvent, thing: Option<&Thing>| {
                if let Some(shared) = weak.upgrade() {
                    shared.enqueue(event, thing);
                }
            },
        ));
        let links = Links { inner };
        if let Some(n) = network {
            n.register(links.instance_id(), &links);
        }
        links
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        self.inner.twins.instance_id()
    }

    /// The engine.
    pub fn twins(&self) -> &Twins {
        &self.inner.twins
    }

    /// Starts a link (replacing a running link of the same name, whose outbox it keeps).
    pub async fn add(&self, config: LinkConfig) -> Result<(), LinkError> {
        let bad = |detail: String| LinkError::Config {
            name: config.name.clone(),
            detail,
        };
        if !opentwins_core::replica::valid_instance(&config.name) || config.name.contains(':') {
            return Err(bad(
                "the name must be 1 to 64 of letters, digits, '.', '_', '-'".into(),
            ));
        }
        let selection = Selection::new(&config.include, &config.exclude).map_err(&bad)?;
        let owned = config
            .owned
            .iter()
            .map(|s| parse_pattern(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(&bad)?;
        let filter = match &config.filter {
            Some(f) => Some(Filter::parse(f).map_err(|e| bad(e.to_string()))?),
            None => None,
        };
        let policy = match &config.policy {
            Some(p) => Some(PolicyId::new(p).map_err(|e| bad(e.to_string()))?),
            None => None,
        };
        if matches!(config.peer, PeerConfig::Inbox {}) && config.direction.sends() {
            return Err(bad(
                "an inbox peer cannot be sent to: set direction to \"in\"".into(),
            ));
        }
        if config.subject.contains(mqtt::PEER)
            && !matches!(&config.peer, PeerConfig::Mqtt { subscribe: Some(f), .. } if f.split('/').any(|l| l == "+"))
        {
            return Err(bad(format!(
                "the subject '{}' names {} but only an MQTT peer whose subscribe filter has a '+' names peers",
                config.subject,
                mqtt::PEER
            )));
        }
        if config.window == 0 || config.window_bytes == 0 {
            return Err(bad("window and window_bytes must be at least 1".into()));
        }
        if !(1..=MAX_BATCH).contains(&config.batch) || !(1..=1 << 20).contains(&config.batch_bytes)
        {
            // A peer refuses a message above its body limit (2 MiB by default over HTTP) for
            // good: batches stay well below it.
            return Err(bad(format!(
                "batch must be 1 to {MAX_BATCH} and batch_bytes 1 to 1048576"
            )));
        }
        let auth = AuthContext::new([config.subject.as_str()]);
        self.remove(&config.name).await?;
        // A link without an outbox of its own yet is new: it starts by sending every thing
        // it selects (an existing outbox already holds what the peer has not got).
        let new = config.direction.sends() && !Outbox::exists(&self.inner.db, &config.name);
        let outbox = if config.direction.sends() {
            Some(Outbox::open(
                &self.inner.db,
                &config.name,
                OutboxConfig {
                    max_bytes: config.outbox_bytes,
                    // Updates of a thing that wait merge into one.
                    coalesce_pending: true,
                },
                coalesce(),
            )?)
        } else {
            None
        };
        let transport = self.transport(&config).map_err(bad)?;
        let (stop, stopped) = watch::channel(false);
        let link = Arc::new(Link {
            selection,
            owned,
            filter,
            auth,
            policy,
            outbox,
            transport,
            stats: Stats::default(),
            stop,
            peer_back: tokio::sync::Notify::new(),
            tasks: Mutex::new(Vec::new()),
            config,
        });
        if link.outbox.is_some() {
            let weak = Arc::downgrade(&self.inner);
            let tasks = [
                tokio::spawn(send_loop(weak.clone(), link.clone(), stopped.clone())),
                tokio::spawn(digest::anti_entropy_loop(weak, link.clone(), stopped)),
            ];
            link.tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(tasks);
        }
        let name = link.config.name.clone();
        write(&self.inner.links).insert(name.clone(), link.clone());
        if new {
            let ids = self.inner.twins.thing_ids();
            let count = ids.len();
            let ids = ids.into_iter().map(|id| id.as_str().as_bytes().to_vec());
            self.resync(&link, ids.collect());
            tracing::info!(link = %name, things = count, "new link: initial sync queued");
        }
        if let Some(registry) = self.inner.registry.get() {
            self.register_metrics(registry, &name);
        }
        Ok(())
    }

    /// Exports every link's status in `registry` (`opentwins_link_*{link="…"}`), also for
    /// links added later.
    pub fn export_metrics(&self, registry: &crate::metrics::Registry) {
        if self.inner.registry.set(registry.clone()).is_err() {
            return;
        }
        for name in read(&self.inner.links).keys() {
            self.register_metrics(registry, name);
        }
    }

    fn register_metrics(&self, registry: &crate::metrics::Registry, name: &str) {
        type Field = fn(&LinkStatus) -> u64;
        let series: [(&str, &str, bool, Field); 11] = [
            (
                "opentwins_link_connected",
                "Whether the link's last attempt to reach its peer succeeded (1) or not (0).",
                false,
                |s| u64::from(s.connected),
            ),
            (
                "opentwins_link_backlog",
                "Updates waiting in the link's outbox.",
                false,
                |s| s.backlog,
            ),
            (
                "opentwins_link_backlog_bytes",
                "Bytes waiting in the link's outbox.",
                false,
                |s| s.backlog_bytes,
            ),
            (
                "opentwins_link_lag_milliseconds",
                "Age of the oldest update the link is sending.",
                false,
                |s| s.lag_ms,
            ),
            (
                "opentwins_link_messages_out_total",
                "Updates the link delivered to its peer.",
                true,
                |s| s.messages_out,
            ),
            (
                "opentwins_link_messages_in_total",
                "Updates received from the peer.",
                true,
                |s| s.messages_in,
            ),
            (
                "opentwins_link_rejected_total",
                "Received updates refused here.",
                true,
                |s| s.rejected,
            ),
            (
                "opentwins_link_coalesced_total",
                "Updates merged into a pending update of the same thing while it waited.",
                true,
                |s| s.coalesced,
            ),
            (
                "opentwins_link_dropped_total",
                "Updates dropped because the outbox was full (their things are re-sent whole).",
                true,
                |s| s.dropped,
            ),
            (
                "opentwins_link_anti_entropy_rounds_total",
                "Anti-entropy rounds completed with the peer.",
                true,
                |s| s.anti_entropy_rounds,
            ),
            (
                "opentwins_link_repaired_total",
                "Things anti-entropy found the peer behind on.",
                true,
                |s| s.repaired,
            ),
        ];
        for (metric, help, counter, field) in series {
            let weak = Arc::downgrade(&self.inner);
            let link = name.to_owned();
            let read_status = move || {
                weak.upgrade()
                    .and_then(|shared| read(&shared.links).get(&link).map(|l| l.status()))
                    .map_or(0, |s| field(&s))
            };
            let labels = [("link", name)];
            if counter {
                registry.counter_fn(metric, help, &labels, read_status);
            } else {
                registry.gauge_fn(metric, help, &labels, move || {
                    i64::try_from(read_status()).unwrap_or(i64::MAX)
                });
            }
        }
    }

    fn transport(&self, config: &LinkConfig) -> Result<Arc<dyn Transport>, String> {
        Ok(match &config.peer {
            PeerConfig::InProcess { instance } => {
                let network = self
                    .inner
                    .network
                    .clone()
                    .ok_or("an in-process peer needs an in-process network")?;
                Arc::new(network.transport(self.instance_id(), instance))
            }
            PeerConfig::Mqtt { .. } => mqtt::connect(self, config)?,
            PeerConfig::Http { .. } => Arc::new(http::HttpPeer::new(&config.peer)?),
            PeerConfig::Inbox {} => Arc::new(http::InboxOnly),
        })
    }

    /// Stops a link and deletes its outbox. `false` if there was no such link.
    pub async fn remove(&self, name: &str) -> Result<bool, LinkError> {
        let Some(link) = write(&self.inner.links).remove(name) else {
            return Ok(false);
        };
        let _ = link.stop.send(true);
        link.transport.close();
        let tasks = std::mem::take(&mut *link.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            // It stops at its next await; a send in progress is abandoned (and redone later).
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        Ok(true)
    }

    /// Stops a link and deletes its outbox (pending updates are lost).
    pub async fn delete(&self, name: &str) -> Result<bool, LinkError> {
        let existed = self.remove(name).await?;
        Outbox::remove(&self.inner.db, name)?;
        Ok(existed)
    }

    /// The configuration of every link.
    pub fn configs(&self) -> Vec<LinkConfig> {
        read(&self.inner.links)
            .values()
            .map(|l| l.config.clone())
            .collect()
    }

    /// The status of every link, by name.
    pub fn status(&self) -> Vec<LinkStatus> {
        read(&self.inner.links)
            .values()
            .map(|l| l.status())
            .collect()
    }

    /// Whether nothing waits in any outbox (tests wait for quiescence with it).
    pub fn is_idle(&self) -> bool {
        read(&self.inner.links)
            .values()
            .all(|l| l.outbox.as_ref().is_none_or(|o| o.stats().entries == 0))
    }

    /// Waits until every link's transport is ready (an MQTT peer connected and subscribed, so
    /// the broker keeps the peer's updates for it from then on), at most `timeout`. Returns
    /// whether all were.
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let waits: Vec<_> = read(&self.inner.links)
            .values()
            .filter_map(|l| l.transport.ready())
            .collect();
        let all = async {
            for mut ready in waits {
                if ready.wait_for(|r| *r).await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(timeout, all).await.unwrap_or(false)
    }

    /// Stops every link; outboxes stay for the next start.
    pub async fn shutdown(&self) {
        let names: Vec<String> = read(&self.inner.links).keys().cloned().collect();
        for name in names {
            let _ = self.remove(&name).await;
        }
    }

    /// Applies what a peer sent over link `name`: an encoded Ditto merge command with
    /// replication headers, a plain Ditto command, a JSON array of up to [`MAX_BATCH`] such
    /// commands, or a binary batch of up to [`MAX_BATCH`] updates (applied in order). `auth` replaces the link's subject when the transport
    /// authenticated the peer itself (HTTP). Returns once durable. In a batch, a refused
    /// command does not stop the others: the first refusal is returned after all were tried,
    /// unless one failed in a way worth retrying (5xx), which is returned instead.
    pub async fn receive(
        &self,
        name: &str,
        auth: Option<&AuthContext>,
        message: &[u8],
    ) -> Result<Applied, Error> {
        let link = self.receiving(name)?;
        let messages = match parse_messages(message) {
            Ok(messages) => messages,
            Err(e) => {
                link.stats.received.fetch_add(1, Ordering::Relaxed);
                link.refused(&e);
                return Err(e);
            }
        };
        link.stats
            .received
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        // One after the other, in order, without waiting for each to be durable; then one
        // wait for all (a batch costs about one group commit, not one per update).
        let many = messages.len() > 1;
        let mut results = Vec::with_capacity(messages.len());
        for m in messages {
            results.push(self.apply(&link, auth, m, !many).await);
        }
        if many && let Err(e) = self.inner.twins.settled().await {
            link.refused(&e);
            return Err(e);
        }
        let mut total = Applied::default();
        let mut refusal = None;
        for result in results {
            match result {
                Ok(applied) => {
                    total.changes += applied.changes;
                    total.revision = applied.revision.or(total.revision);
                    total.refused.extend(applied.refused);
                }
                Err(e) => {
                    link.refused(&e);
                    if e.status() >= 500 {
                        return Err(e);
                    }
                    refusal.get_or_insert(e);
                }
            }
        }
        refusal.map_or(Ok(total), Err)
    }

    /// The link `name` if it receives updates.
    fn receiving(&self, name: &str) -> Result<Arc<Link>, Error> {
        read(&self.inner.links)
            .get(name)
            .filter(|l| l.config.direction.receives())
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    opentwins_core::error::ErrorKind::NotFound(opentwins_core::error::Level::Thing),
                    format!("There is no link '{name}' that receives updates."),
                )
            })
    }

    async fn apply(
        &self,
        link: &Link,
        auth: Option<&AuthContext>,
        incoming: Result<Incoming, Error>,
        wait_durable: bool,
    ) -> Result<Applied, Error> {
        let auth = auth.unwrap_or(&link.auth);
        let update = match incoming? {
            Incoming::Update(update) => update,
            Incoming::Command(cmd) => {
                // A plain Ditto command (a peer without clocks): applied as it is.
                let outcome = self.inner.twins.apply(auth, *cmd).await?;
                return Ok(Applied {
                    changes: usize::from(!outcome.events.is_empty()),
                    ..Applied::default()
                });
            }
        };
        if !link.config.create && self.inner.twins.get_thing(&update.thing_id).is_none() {
            // Not ours: a broadcast meant for another instance.
            return Ok(Applied::default());
        }
        let Some(selected) = link.select(update) else {
            return Ok(Applied::default());
        };
        let owned = |p: &Pointer| covered(&link.owned, p);
        let applied = self
            .inner
            .twins
            .apply_update(auth, &selected, link.policy.as_ref(), &owned, wait_durable)
            .await?;
        if !applied.refused.is_empty() {
            self.inner
                .twins
                .reassert(&selected.thing_id, &applied.refused)
                .await?;
        }
        Ok(applied)
    }

    /// Re-sends the whole replicated state of things (a new link's initial sync, or after the
    /// outbox dropped updates).
    fn resync(&self, link: &Link, ids: Vec<Vec<u8>>) {
        for id in ids {
            let Some(thing) = std::str::from_utf8(&id)
                .ok()
                .and_then(|s| ThingId::new(s).ok())
                .and_then(|id| self.inner.twins.get_thing(&id))
            else {
                continue;
            };
            self.send_missing(link, &thing, None);
        }
    }
}

impl Shared {
    fn enqueue(&self, event: &ThingEvent, thing: Option<&Thing>) {
        let Some(provenance) = &event.provenance else {
            return;
        };
        for link in read(&self.links).values() {
            link.enqueue(provenance, &event.thing_id, thing);
        }
    }
}

impl Link {
    /// Counts a refused incoming update.
    fn refused(&self, e: &Error) {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        self.stats.error(format!("refused an update: {e}"));
    }

    /// Queues the part of a change this link carries; returns whether anything was queued.
    fn enqueue(&self, provenance: &Provenance, id: &ThingId, thing: Option<&Thing>) -> bool {
        let Some(outbox) = &self.outbox else {
            return false;
        };
        if let Some(peer) = &self.config.peer_instance
            && provenance.crossed(peer)
        {
            return false;
        }
        if let (Some(filter), Some(thing)) = (&self.filter, thing)
            && !filter.matches(thing)
        {
            return false;
        }
        let Some(update) = self.select(Update {
            thing_id: id.clone(),
            origin: provenance.origin.clone(),
            hops: provenance.hops.clone(),
            policy_id: thing.map(|t| t.policy_id().clone()),
            changes: provenance.changes.clone(),
        }) else {
            return false;
        };
        if update.changes.is_empty() {
            return false;
        }
        match outbox.push(id.as_str().as_bytes(), &encode(&update, now_ms())) {
            Ok(outbox::Pushed::Dropped) => {
                tracing::warn!(link = %self.config.name, thing = %id, "outbox full: update dropped, the thing will be re-sent whole");
                false
            }
            Ok(_) => true,
            Err(e) => {
                tracing::error!(link = %self.config.name, error = %e, "outbox write failed");
                self.stats.error(e);
                false
            }
        }
    }

    /// Whether the link sends binary batches now (its `wire`, and what the peer said).
    fn sends_binary(&self) -> bool {
        self.config
            .sends_binary(self.stats.peer_binary.load(Ordering::Relaxed))
    }

    /// The part of an update this link carries; `None` when it carries nothing of it: only the
    /// "is an object" marks above selected paths would be left, and the update neither removes
    /// nor writes the whole thing.
    fn select(&self, update: Update) -> Option<Update> {
        if self.selection.is_everything() {
            return Some(update);
        }
        let carries =
            update
                .changes
                .changes()
                .any(|change| match self.selection.select(&change.path) {
                    Selected::Yes => true,
                    // Removing, or writing the whole thing (creating it), still crosses.
                    Selected::AncestorOnly => {
                        change.cell == Cell::Removed
                            || (change.path.is_root() && matches!(change.cell, Cell::Value(_)))
                    }
                    Selected::No => false,
                });
        if !carries {
            return None;
        }
        Some(update.map_changes(|change| self.selection.carry(change)))
    }

    fn status(&self) -> LinkStatus {
        let o = self.outbox.as_ref().map(Outbox::stats).unwrap_or_default();
        let sending = self.stats.sending_since.load(Ordering::Relaxed);
        let lag_ms = if sending == 0 || o.entries == 0 {
            0
        } else {
            now_ms().saturating_sub(sending)
        };
        let last_error = self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // A transport that keeps a connection knows better than the last send.
        let (connected, last_error) = match self.transport.connection() {
            Some(Ok(())) => (true, last_error),
            Some(Err(why)) => (false, Some(why)),
            None => (self.stats.connected.load(Ordering::Relaxed), last_error),
        };
        LinkStatus {
            name: self.config.name.clone(),
            peer: self.config.peer.describe(),
            direction: self.config.direction,
            connected,
            backlog: o.entries,
            backlog_bytes: o.bytes,
            lag_ms,
            messages_out: self.stats.out.load(Ordering::Relaxed),
            messages_in: self.stats.received.load(Ordering::Relaxed),
            rejected: self.stats.rejected.load(Ordering::Relaxed),
            refused_by_peer: self.stats.refused.load(Ordering::Relaxed),
            coalesced: o.coalesced_total,
            dropped: o.dropped_total,
            wire: if self.sends_binary() {
                Wire::Binary
            } else {
                Wire::Json
            },
            anti_entropy_rounds: self.stats.rounds.load(Ordering::Relaxed),
            repaired: self.stats.repaired.load(Ordering::Relaxed),
            last_error,
        }
    }
}

/// One message in flight: the updates of outbox entries up to `through`.
struct InFlight<'a> {
    through: u64,
    updates: u64,
    bytes: u64,
    /// Enqueue time of its oldest update (ms since the epoch).
    oldest: u64,
    sent: SendFuture<'a>,
}

/// Drains a link's outbox to its peer: up to `window` messages of up to `batch` updates each in
/// flight, acknowledged in order; on a failure everything from the first unacknowledged entry
/// is sent again after a capped backoff (the peer's clocks apply each change once).
async fn send_loop(links: Weak<Shared>, link: Arc<Link>, mut stopped: watch::Receiver<bool>) {
    let Some(outbox) = link.outbox.clone() else {
        return;
    };
    let config = &link.config;
    let max_bytes = config.window_bytes;
    let transport = &*link.transport;
    let mut backoff = Duration::from_millis(50);
    let mut ready = transport.ready();
    let mut window: VecDeque<InFlight<'_>> = VecDeque::new();
    let mut window_bytes = 0u64;
    // The last outbox entry in the window (0: none, the next peek starts at the first pending).
    let mut after = 0u64;
    // Whether the last send failed.
    let mut failed = false;
    loop {
        if *stopped.borrow() {
            return;
        }
        let max_messages = config.window.min(transport.max_in_flight()).max(1);
        while window.len() < max_messages && (window.is_empty() || window_bytes < max_bytes) {
            let entries = match outbox.peek_after(after, config.batch.max(1), config.batch_bytes) {
                Ok(entries) => entries,
                Err(e) => {
                    link.stats.error(&e);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopped.changed() => return,
                    }
                    break;
                }
            };
            let Some(last) = entries.last() else {
                break;
            };
            after = last.seq;
            let message = batch_message(&entries, link.sends_binary());
            let bytes = message.len() as u64;
            window_bytes += bytes;
            window.push_back(InFlight {
                through: after,
                updates: entries.len() as u64,
                bytes,
                oldest: enqueued_at(&entries[0].payload),
                sent: transport.send(message),
            });
        }
        let room = window.len() < max_messages && window_bytes < max_bytes;
        let Some(front) = window.front_mut() else {
            link.stats.sending_since.store(0, Ordering::Relaxed);
            // Things whose updates the full outbox dropped are sent again whole.
            match outbox.take_dropped_keys() {
                Ok(ids) if !ids.is_empty() => {
                    if let Some(shared) = links.upgrade() {
                        Links { inner: shared }.resync(&link, ids);
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => link.stats.error(e),
            }
            tokio::select! {
                () = outbox.ready_after(after) => {}
                _ = stopped.changed() => return,
            }
            continue;
        };
        link.stats
            .sending_since
            .store(front.oldest, Ordering::Relaxed);
        let sent = tokio::select! {
            r = &mut front.sent => r,
            // More to send while the window has room.
            () = outbox.ready_after(after), if room => continue,
            _ = stopped.changed() => return,
        };
        match sent {
            Ok(refused) => {
                let done = window.pop_front().expect("the front was just polled");
                window_bytes -= done.bytes;
                link.stats.connected.store(true, Ordering::Relaxed);
                if std::mem::take(&mut failed) {
                    link.peer_back.notify_one();
                }
                link.stats.out.fetch_add(done.updates, Ordering::Relaxed);
                if let Some(why) = refused {
                    tracing::warn!(link = %config.name, %why, "the peer refused an update");
                    link.stats.refused.fetch_add(1, Ordering::Relaxed);
                    link.stats
                        .error(format!("the peer refused an update: {why}"));
                }
                backoff = Duration::from_millis(50);
                if let Err(e) = outbox.ack(done.through) {
                    link.stats.error(e);
                }
            }
            Err(e) => {
                // Everything in flight is sent again, from the first unacknowledged entry
                // (and may take more changes until then).
                window.clear();
                window_bytes = 0;
                after = 0;
                failed = true;
                outbox.rewind();
                if link.stats.connected.swap(false, Ordering::Relaxed) {
                    tracing::warn!(link = %config.name, error = %e, "peer unreachable; updates wait in the outbox");
                }
                link.stats.error(e);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                    // Back at once when the peer is (the broker came back).
                    () = reconnected(&mut ready) => backoff = Duration::from_millis(50),
                    _ = stopped.changed() => return,
                }
            }
        }
    }
}

/// The message that carries `entries` (at least one): a binary batch of their updates when
/// `binary`, else the entry's Ditto command alone or a JSON array of them.
fn batch_message(entries: &[outbox::OutboxEntry], binary: bool) -> Vec<u8> {
    if binary {
        // The outbox holds JSON commands (what coalescing reads); one that does not decode
        // (none should) sends the batch as JSON.
        if let Some(updates) = entries
            .iter()
            .map(|e| decode(&e.payload))
            .collect::<Option<Vec<_>>>()
        {
            return encode_batch(&updates);
        }
    }
    if let [one] = entries {
        return message_of(&one.payload).to_vec();
    }
    let len = entries
        .iter()
        .map(|e| e.payload.len().saturating_sub(7))
        .sum::<usize>()
        + 1;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(message_of(&e.payload));
    }
    out.push(b']');
    out
}

/// Resolves when `ready` turns true after having been false (a reconnect); never for a
/// transport without the signal or while it stays as it is. A loss and a reconnect quicker
/// than this task looks may show as no change: the sender's backoff (at most 1 s) covers it.
async fn reconnected(ready: &mut Option<watch::Receiver<bool>>) {
    let Some(rx) = ready else {
        return std::future::pending().await;
    };
    let mut was = *rx.borrow_and_update();
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        let now = *rx.borrow_and_update();
        if now && !was {
            return;
        }
        was = now;
    }
}

/// The commands of a link message: a binary batch (read whole or refused whole), one
/// envelope, or a JSON array of up to [`MAX_BATCH`] (each parsed on its own, so one bad
/// command does not spoil the rest).
fn parse_messages(bytes: &[u8]) -> Result<Vec<Result<Incoming, Error>>, Error> {
    if is_binary_batch(bytes) {
        return Ok(decode_batch(bytes, MAX_BATCH)?
            .into_iter()
            .map(|u| Ok(Incoming::Update(u)))
            .collect());
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        return Ok(vec![incoming(Message::from_slice(bytes))]);
    }
    use opentwins_core::protocol::Envelope;
    let count = |n: usize| {
        if n == 0 || n > MAX_BATCH {
            return Err(Error::field_invalid(format!(
                "A batch carries 1 to {MAX_BATCH} commands, not {n}."
            )));
        }
        Ok(())
    };
    // Every element an envelope (the usual case): parsed in one pass.
    if let Ok(envelopes) = serde_json::from_slice::<Vec<Envelope>>(bytes) {
        count(envelopes.len())?;
        return Ok(envelopes
            .into_iter()
            .map(|e| incoming(Message::from_envelope(e)))
            .collect());
    }
    let items: Vec<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(Error::json_invalid)?;
    count(items.len())?;
    Ok(items
        .into_iter()
        .map(|item| incoming(Envelope::from_value(item).and_then(Message::from_envelope)))
        .collect())
}

/// What one command of a link message is.
#[derive(Debug)]
enum Incoming {
    /// Changes with their clocks.
    Update(Update),
    /// A plain Ditto command (a peer without clocks; rare).
    Command(Box<ThingCommand>),
}

fn incoming(message: Result<Message, Error>) -> Result<Incoming, Error> {
    let Message::ThingCommand(cmd) = message? else {
        return Err(Error::field_invalid(
            "A link carries twin commands (merge commands with clocks).",
        ));
    };
    Ok(match Update::from_command(&cmd)? {
        Some(update) => Incoming::Update(update),
        None => Incoming::Command(Box::new(cmd)),
    })
}

/// Outbox payload: 8 bytes of enqueue time (ms since the epoch), then the encoded command.
fn encode(update: &Update, enqueued_ms: u64) -> Vec<u8> {
    let message = Message::ThingCommand(update.to_command()).to_vec();
    let mut out = Vec::with_capacity(8 + message.len());
    out.extend_from_slice(&enqueued_ms.to_be_bytes());
    out.extend_from_slice(&message);
    out
}

fn enqueued_at(payload: &[u8]) -> u64 {
    payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn message_of(payload: &[u8]) -> &[u8] {
    payload.get(8..).unwrap_or_default()
}

fn decode(payload: &[u8]) -> Option<Update> {
    match Message::from_slice(message_of(payload)).ok()? {
        Message::ThingCommand(cmd) => Update::from_command(&cmd).ok().flatten(),
        _ => None,
    }
}

/// Joins two pending updates of one thing (same route): per path the newest change wins.
fn coalesce() -> Coalesce {
    Arc::new(|older: &[u8], newer: &[u8]| {
        let mut a = decode(older)?;
        let b = decode(newer)?;
        a.absorb(&b).then(|| encode(&a, enqueued_at(older)))
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio::sync::watch;

    use std::sync::Arc;

    use opentwins_core::model::{Pointer, ThingId};
    use opentwins_core::replica::{Clock, Replica, Update, changes_for_merge};
    use serde_json::json;

    use super::outbox::OutboxEntry;
    use super::{Incoming, MAX_BATCH, batch_message, encode, parse_messages, reconnected};

    /// A 1-property update of `thing` from `edge-1`.
    fn update(thing: &str, value: f64) -> Update {
        let clock = Clock::new("edge-1");
        let mut changes = Replica::new();
        let at = Pointer::parse("/features/lane/properties").unwrap();
        for c in changes_for_merge(&at, &json!({ "offset": value }), &clock.now()) {
            changes.apply(c);
        }
        let origin: Arc<str> = Arc::from("edge-1");
        Update {
            thing_id: ThingId::new(thing).unwrap(),
            origin: origin.clone(),
            hops: vec![origin],
            policy_id: None,
            changes,
        }
    }

    #[test]
    fn a_binary_batch_is_sent_for_the_outbox_entries_and_read_whole_or_refused_whole() {
        let updates = [update("t:a", 0.12), update("t:b", 7.0)];
        let entries: Vec<OutboxEntry> = updates
            .iter()
            .enumerate()
            .map(|(i, u)| OutboxEntry {
                seq: i as u64 + 1,
                key: u.thing_id.as_str().as_bytes().to_vec(),
                payload: encode(u, 0),
            })
            .collect();
        let json = batch_message(&entries, false);
        let binary = batch_message(&entries, true);
        assert_eq!(json[0], b'[');
        assert!(
            binary.len() * 3 < json.len(),
            "{} vs {}",
            binary.len(),
            json.len()
        );
        for message in [&json, &binary] {
            let parsed = parse_messages(message).unwrap();
            assert_eq!(parsed.len(), 2);
            for (got, want) in parsed.into_iter().zip(&updates) {
                let Ok(Incoming::Update(got)) = got else {
                    panic!("not an update")
                };
                assert_eq!(&got, want);
            }
        }
        // A damaged binary batch is refused as a whole, with a Ditto error.
        let cut = parse_messages(&binary[..binary.len() - 1]).map(|_| ());
        assert_eq!(cut.unwrap_err().status(), 400);
    }

    const MERGE: &str = r#"{"topic":"t/a/things/twin/commands/merge","path":"/","value":{"x":1},"headers":{"content-type":"application/merge-patch+json"}}"#;

    /// One element of a batch: a valid merge, or something that is not one.
    fn element() -> impl Strategy<Value = (String, bool)> {
        prop_oneof![
            Just((MERGE.to_owned(), true)),
            Just((r#"{"topic":"nonsense"}"#.to_owned(), false)),
            Just(("42".to_owned(), false)),
            Just(("[]".to_owned(), false)),
            "[a-z]{0,8}".prop_map(|s| (format!("{s:?}"), false)),
        ]
    }

    proptest! {
        /// A batch of good and bad commands: each is parsed on its own, so a bad one spoils
        /// nothing else; a batch that is not a JSON array of 1 to MAX_BATCH is refused whole.
        #[test]
        fn each_command_of_a_batch_is_parsed_on_its_own(
            items in prop::collection::vec(element(), 0..20),
            tail in "[\\[\\]{},\"a-z0-9 ]{0,12}",
        ) {
            let text = format!("[{}]", items.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(","));
            match parse_messages(text.as_bytes()) {
                Ok(parsed) => {
                    prop_assert_eq!(parsed.len(), items.len());
                    for (got, (_, good)) in parsed.iter().zip(&items) {
                        prop_assert_eq!(got.is_ok(), *good);
                    }
                }
                Err(e) => prop_assert!(items.is_empty(), "{e}"),
            }
            // Garbage never panics: an error, or one (failed) message.
            let garbage = format!("[{}{tail}", MERGE);
            let _ = parse_messages(garbage.as_bytes());
        }
    }

    #[test]
    fn a_batch_larger_than_the_limit_is_refused_whole() {
        let many = format!("[{}]", vec![MERGE; MAX_BATCH + 1].join(","));
        assert_eq!(parse_messages(many.as_bytes()).unwrap_err().status(), 400);
        let most = format!("[{}]", vec![MERGE; MAX_BATCH].join(","));
        assert_eq!(parse_messages(most.as_bytes()).unwrap().len(), MAX_BATCH);
        // A single command is not a batch.
        assert_eq!(parse_messages(MERGE.as_bytes()).unwrap().len(), 1);
    }

    async fn resolves(ready: &mut Option<watch::Receiver<bool>>) -> bool {
        tokio::time::timeout(Duration::from_millis(100), reconnected(ready))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_sender_wakes_when_its_peer_comes_back_not_before() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (tx, rx) = watch::channel(false);
            let mut ready = Some(rx);
            // Down: wakes when the peer turns ready.
            let wake = tokio::spawn(async move {
                reconnected(&mut ready).await;
                ready
            });
            tokio::task::yield_now().await;
            tx.send_replace(true);
            let mut ready = wake.await.unwrap();
            // Up (a send failed anyway): a repeated "ready" is no reconnect; down then up is.
            let waiting = tokio::spawn(async move {
                reconnected(&mut ready).await;
                ready
            });
            tokio::task::yield_now().await;
            tx.send_replace(true);
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished());
            tx.send_replace(false);
            tokio::task::yield_now().await;
            tx.send_replace(true);
            let mut ready = waiting.await.unwrap();
            // Nothing changes: no wake; a transport without the signal never wakes.
            assert!(!resolves(&mut ready).await);
            assert!(!resolves(&mut None).await);
        })
        .await
        .expect("timed out");
    }
}
