//! The persistent outbox of an outbound link: a bounded FIFO of opaque updates in sled.
//!
//! The link pushes one payload per update (synchronously, from the engine's sink), and one sender
//! task drains the outbox: [`Outbox::ready_after`], [`Outbox::peek_after`], send, [`Outbox::ack`].
//! The sender may keep a window of peeked entries in flight (peeking after the last one it
//! peeked) and acks in order. Delivery is at least once and in order: what was peeked but not
//! acked is peeked again (from the first pending entry), also after a restart; what was acked
//! never comes back.
//!
//! Layout in the given [`sled::Db`] (for an outbox named `N`):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `outbox/entries/N` | seq, `u64` big-endian | `[1u8][key length u32 BE][key][payload]` |
//! | `outbox/meta/N` | `acked_through` | highest acked seq, `u64` BE |
//! | `outbox/dropped/N` | key of a dropped update | a drop token (`u64` BE, from `Db::generate_id`) |
//!
//! Durability: the outbox never flushes by itself. An entry is durable once the database is
//! flushed: by the store's group commit when the outbox shares the engine's database, or by
//! [`Outbox::flush`]. What was not flushed when the process dies is lost; sled recovers a prefix
//! of its log, so what survives is the oldest part, in order.
//!
//! Coalescing: with [`OutboxConfig::coalesce_pending`], a push is merged into the newest pending
//! entry of the same key that is not in flight, so a backlog holds one entry per key with
//! pending changes however long the peer is away.
//!
//! Bounds: the outbox holds at most [`OutboxConfig::max_bytes`] of key + payload bytes. A push
//! that does not fit is coalesced into the newest pending entry of the same key that is not in
//! flight, or else dropped and its key remembered for a resync (see [`Outbox::push`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Default bound of an outbox: 64 MiB of keys and payloads.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Format version of an entry value (its first byte).
const ENTRY_VERSION: u8 = 1;
/// Entry header: version byte and key length.
const ENTRY_HEADER: usize = 1 + 4;
/// Key of the acknowledged high-water mark in the meta tree.
const ACKED_THROUGH: &[u8] = b"acked_through";

/// Configuration of one outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Upper bound of the key + payload bytes of all pending entries (must be > 0). When the
    /// outbox is full, updates are coalesced or dropped; it never blocks and never grows past
    /// this bound (except after a restart with a smaller bound: then nothing new is queued until
    /// acks bring it back under).
    pub max_bytes: u64,
    /// Merge a push into the newest pending entry of its key that is not in flight also when
    /// the outbox is not full (a link's outbox does; off by default, when the payloads are
    /// not mergeable in general).
    pub coalesce_pending: bool,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: DEFAULT_MAX_BYTES,
            coalesce_pending: false,
        }
    }
}

/// Joins two updates of the same key: `coalesce(older, newer)` returns the merged payload, or
/// `None` when the two cannot be merged (the newer update is then dropped). It runs while the
/// outbox is locked, so it must be quick and must not call back into the outbox.
pub type Coalesce = Arc<dyn Fn(&[u8], &[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// What became of a pushed update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Appended as a new entry with this sequence number.
    Queued {
        /// The new entry's sequence number.
        seq: u64,
    },
    /// The outbox was full; the update was merged into the pending entry `seq`.
    Coalesced {
        /// The sequence number of the entry that now holds the merged update.
        seq: u64,
    },
    /// The outbox was full and the update could not be coalesced: it is lost, and its key is
    /// returned by the next [`Outbox::take_dropped_keys`].
    Dropped,
}

/// One pending update, as returned by [`Outbox::peek`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Sequence number: increasing in push order, never reused (also across restarts).
    pub seq: u64,
    /// The key given to [`Outbox::push`].
    pub key: Vec<u8>,
    /// The payload (possibly the result of coalescing several pushes).
    pub payload: Vec<u8>,
}

/// Counters and gauges of an outbox. The `_total` counters count since [`Outbox::open`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Pending (not acked) entries.
    pub entries: u64,
    /// Key + payload bytes of the pending entries.
    pub bytes: u64,
    /// Pending entries returned by a peek and not acked yet (never coalesced into).
    pub in_flight: u64,
    /// Updates appended as new entries.
    pub queued_total: u64,
    /// Updates merged into a pending entry (while waiting, or because the outbox was full).
    pub coalesced_total: u64,
    /// Updates dropped because the outbox was full and they could not be coalesced.
    pub dropped_total: u64,
    /// Sequence number of the oldest pending entry.
    pub oldest_seq: Option<u64>,
}

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// sled failed.
    #[error("outbox '{name}': {context}: {source}")]
    Storage {
        /// The outbox name.
        name: String,
        /// What the outbox was doing.
        context: &'static str,
        /// The sled error.
        #[source]
        source: sled::Error,
    },
    /// A stored record cannot be decoded (found at open, or when reading an entry).
    #[error("outbox '{name}': corrupt record in tree '{tree}' at key {key:02x?}: {detail}")]
    Corrupt {
        /// The outbox name.
        name: String,
        /// The sled tree holding the record.
        tree: String,
        /// The record's sled key.
        key: Vec<u8>,
        /// What is wrong with it.
        detail: String,
    },
    /// The configuration is invalid.
    #[error("outbox '{name}': invalid configuration: {detail}")]
    Config {
        /// The outbox name.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// The outbox was destroyed through another handle.
    #[error("outbox '{name}' was destroyed")]
    Destroyed {
        /// The outbox name.
        name: String,
    },
}

/// The persistent, bounded outbox of one outbound link. A cheap handle: clones share the outbox.
///
/// Pushes may come from many threads at once; peek and ack are meant for one sender task.
/// Open each name at most once per database at a time: two open outboxes with the same name
/// would each keep their own in-memory index of the same trees.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("name", &self.inner.name)
            .field("max_bytes", &self.inner.max_bytes)
            .finish_non_exhaustive()
    }
}

struct Inner {
    name: String,
    db: sled::Db,
    entries: sled::Tree,
    meta: sled::Tree,
    dropped: sled::Tree,
    max_bytes: u64,
    coalesce_pending: bool,
    coalesce: Coalesce,
    state: Mutex<State>,
    notify: Notify,
}

/// In-memory mirror of the pending entries' metadata, rebuilt at open.
#[derive(Default)]
struct State {
    /// Sequence number of the next queued entry.
    next_seq: u64,
    /// Highest acknowledged sequence number (persisted in the meta tree).
    acked_through: u64,
    /// Highest sequence number returned by a peek: entries up to it are in flight.
    in_flight_through: u64,
    /// Key + payload bytes of the pending entries.
    bytes: u64,
    /// Pending entries by sequence number.
    pending: BTreeMap<u64, Pending>,
    /// Key → sequence number of its newest pending entry.
    newest: HashMap<Arc<[u8]>, u64>,
    queued_total: u64,
    coalesced_total: u64,
    dropped_total: u64,
    /// Whether the "outbox full" warning was logged since acks last brought the outbox under
    /// half of its bound.
    full_logged: bool,
    destroyed: bool,
}

struct Pending {
    key: Arc<[u8]>,
    size: u64,
}

fn tree_names(name: &str) -> [String; 3] {
    [
        format!("outbox/entries/{name}"),
        format!("outbox/meta/{name}"),
        format!("outbox/dropped/{name}"),
    ]
}

fn encode_entry(key: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    let key_len = u32::try_from(key.len()).ok()?;
    let mut v = Vec::with_capacity(ENTRY_HEADER + key.len() + payload.len());
    v.push(ENTRY_VERSION);
    v.extend_from_slice(&key_len.to_be_bytes());
    v.extend_from_slice(key);
    v.extend_from_slice(payload);
    Some(v)
}

/// Splits an entry value into key and payload.
fn decode_entry(value: &[u8]) -> Result<(&[u8], &[u8]), String> {
    if value.len() < ENTRY_HEADER {
        return Err(format!(
            "entry of {} bytes is shorter than its header",
            value.len()
        ));
    }
    if value[0] != ENTRY_VERSION {
        return Err(format!("unknown entry format version {}", value[0]));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&value[1..ENTRY_HEADER]);
    let key_len = u32::from_be_bytes(len) as usize;
    let rest = &value[ENTRY_HEADER..];
    if key_len > rest.len() {
        return Err(format!(
            "key length {key_len} exceeds the {} bytes after the header",
            rest.len()
        ));
    }
    Ok(rest.split_at(key_len))
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

impl Outbox {
    /// Whether `db` holds an outbox named `name` (from an earlier start or an earlier add).
    pub fn exists(db: &sled::Db, name: &str) -> bool {
        let [entries, ..] = tree_names(name);
        db.tree_names()
            .iter()
            .any(|t| t.as_ref() == entries.as_bytes())
    }

    /// Opens (or creates) the outbox `name` in `db` and rebuilds its in-memory index.
    ///
    /// Entries acked before a crash whose removal did not reach the disk are removed here.
    /// Fails with [`OutboxError::Corrupt`] when a stored record cannot be decoded (nothing is
    /// changed then; [`Outbox::remove`] discards the outbox), and with [`OutboxError::Config`]
    /// when `max_bytes` is 0.
    pub fn open(
        db: &sled::Db,
        name: &str,
        config: OutboxConfig,
        coalesce: Coalesce,
    ) -> Result<Outbox, OutboxError> {
        if config.max_bytes == 0 {
            return Err(OutboxError::Config {
                name: name.to_owned(),
                detail: "max_bytes must be greater than 0".to_owned(),
            });
        }
        let storage = |context| {
            let name = name.to_owned();
            move |source| OutboxError::Storage {
                name,
                context,
                source,
            }
        };
        let [entries_name, meta_name, dropped_name] = tree_names(name);
        let entries = db
            .open_tree(&entries_name)
            .map_err(storage("opening the entries tree"))?;
        let meta = db
            .open_tree(&meta_name)
            .map_err(storage("opening the meta tree"))?;
        let dropped = db
            .open_tree(&dropped_name)
            .map_err(storage("opening the dropped-keys tree"))?;
        let corrupt = |tree: &str, key: &[u8], detail: String| OutboxError::Corrupt {
            name: name.to_owned(),
            tree: tree.to_owned(),
            key: key.to_vec(),
            detail,
        };

        let acked_through = match meta
            .get(ACKED_THROUGH)
            .map_err(storage("reading the acked high-water mark"))?
        {
            None => 0,
            Some(v) => decode_u64(&v).ok_or_else(|| {
                corrupt(
                    &meta_name,
                    ACKED_THROUGH,
                    format!("acked_through has {} bytes, expected 8", v.len()),
                )
            })?,
        };
        for item in dropped.iter() {
            let (k, v) = item.map_err(storage("reading the dropped keys"))?;
            if v.len() != 8 {
                return Err(corrupt(
                    &dropped_name,
                    &k,
                    format!("drop token has {} bytes, expected 8", v.len()),
                ));
            }
        }

        let mut state = State {
            acked_through,
            ..State::default()
        };
        let mut stale = sled::Batch::default();
        let mut stale_count = 0usize;
        let mut last_seq = 0;
        for item in entries.iter() {
            let (k, v) = item.map_err(storage("reading the entries"))?;
            let seq = decode_u64(&k).ok_or_else(|| {
                corrupt(
                    &entries_name,
                    &k,
                    format!("entry key has {} bytes, expected 8", k.len()),
                )
            })?;
            let (key, payload) = decode_entry(&v).map_err(|d| corrupt(&entries_name, &k, d))?;
            last_seq = seq;
            if seq <= acked_through {
                stale.remove(k);
                stale_count += 1;
                continue;
            }
            let key: Arc<[u8]> = Arc::from(key);
            let size = (key.len() + payload.len()) as u64;
            state.bytes += size;
            state.newest.insert(key.clone(), seq);
            state.pending.insert(seq, Pending { key, size });
        }
        if stale_count > 0 {
            entries
                .apply_batch(stale)
                .map_err(storage("removing entries acked before a restart"))?;
            tracing::debug!(
                outbox = name,
                stale_count,
                "removed acked entries left by a crash"
            );
        }
        state.next_seq = last_seq.max(acked_through) + 1;

        Ok(Outbox {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                db: db.clone(),
                entries,
                meta,
                dropped,
                max_bytes: config.max_bytes,
                coalesce_pending: config.coalesce_pending,
                coalesce,
                state: Mutex::new(state),
                notify: Notify::new(),
            }),
        })
    }

    /// Removes the trees of outbox `name` from `db` without opening it (e.g. a corrupt outbox,
    /// or the outbox of a link deleted while it was not running). Returns whether any existed.
    /// Must not be called while that outbox is open; use [`Outbox::destroy`] then.
    pub fn remove(db: &sled::Db, name: &str) -> Result<bool, OutboxError> {
        let mut any = false;
        for tree in tree_names(name) {
            any |= db.drop_tree(tree).map_err(|source| OutboxError::Storage {
                name: name.to_owned(),
                context: "dropping a tree",
                source,
            })?;
        }
        Ok(any)
    }

    /// The outbox name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Queues one update of `key`. Quick and synchronous: it never blocks on the sender and does
    /// no I/O beyond sled's in-memory insert (plus a read of the entry to coalesce into, when
    /// full). It does not flush (see the module docs).
    ///
    /// When key + payload fit under `max_bytes`, the update becomes a new entry
    /// ([`Pushed::Queued`]). Otherwise it is joined with the newest pending entry of the same key
    /// that is not in flight (its seq is above every seq returned by [`Outbox::peek`]), by the
    /// coalesce function, and that entry is rewritten in place ([`Pushed::Coalesced`]), if the
    /// merged entry still fits. If there is no such entry, the function returns `None`, or the
    /// merge does not fit, the update is dropped ([`Pushed::Dropped`]) and `key` is recorded
    /// for [`Outbox::take_dropped_keys`].
    pub fn push(&self, key: &[u8], payload: &[u8]) -> Result<Pushed, OutboxError> {
        let inner = &*self.inner;
        let mut st = inner.lock();
        if st.destroyed {
            return Err(inner.destroyed());
        }
        let size = (key.len() + payload.len()) as u64;
        let waiting = st
            .newest
            .get(key)
            .copied()
            .filter(|&seq| seq > st.in_flight_through);
        if inner.coalesce_pending
            && let Some(seq) = waiting
            && let Some(seq) = inner.coalesce_into(&mut st, seq, key, payload)?
        {
            return Ok(Pushed::Coalesced { seq });
        }
        if st.bytes.saturating_add(size) <= inner.max_bytes
            && let Some(value) = encode_entry(key, payload)
        {
            let seq = st.next_seq;
            inner
                .entries
                .insert(seq.to_be_bytes(), value)
                .map_err(|e| inner.storage("writing an entry", e))?;
            st.next_seq += 1;
            st.bytes += size;
            st.queued_total += 1;
            let key: Arc<[u8]> = match st.newest.get_key_value(key) {
                Some((k, _)) => k.clone(),
                None => Arc::from(key),
            };
            st.newest.insert(key.clone(), seq);
            st.pending.insert(seq, Pending { key, size });
            drop(st);
            inner.notify.notify_waiters();
            return Ok(Pushed::Queued { seq });
        }
        if !st.full_logged {
            st.full_logged = true;
            tracing::warn!(
                outbox = %inner.name,
                bytes = st.bytes,
                max_bytes = inner.max_bytes,
                "outbox full: coalescing or dropping updates until the peer catches up"
            );
        }
        // (Already tried above when coalescing pending entries.)
        if !inner.coalesce_pending
            && let Some(seq) = waiting
            && let Some(seq) = inner.coalesce_into(&mut st, seq, key, payload)?
        {
            return Ok(Pushed::Coalesced { seq });
        }
        let token = inner
            .db
            .generate_id()
            .map_err(|e| inner.storage("generating a drop token", e))?;
        inner
            .dropped
            .insert(key, &token.to_be_bytes())
            .map_err(|e| inner.storage("recording a dropped key", e))?;
        st.dropped_total += 1;
        tracing::debug!(outbox = %inner.name, "outbox full: update dropped, its thing will be resynced");
        Ok(Pushed::Dropped)
    }

    /// Returns up to `max` of the oldest pending entries, oldest first, and marks them in flight:
    /// from now on no update is coalesced into them. Peeking again without an ack returns the
    /// same entries again (the sender retries them).
    pub fn peek(&self, max: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        self.peek_after(0, max, u64::MAX)
    }

    /// Like [`Outbox::peek`], but only entries with a sequence number above `after` (a sender
    /// with a window peeks after the last entry it has in flight), and at most `max_bytes` of
    /// keys and payloads (but always at least one entry when there is one).
    pub fn peek_after(
        &self,
        after: u64,
        max: usize,
        max_bytes: u64,
    ) -> Result<Vec<OutboxEntry>, OutboxError> {
        let inner = &*self.inner;
        let (first, last) = {
            let mut st = inner.lock();
            if st.destroyed {
                return Err(inner.destroyed());
            }
            let mut bytes = 0u64;
            let mut range = None;
            for (&seq, p) in st.pending.range(after.saturating_add(1)..).take(max) {
                bytes += p.size;
                if range.is_some() && bytes > max_bytes {
                    break;
                }
                range = Some((range.map_or(seq, |(first, _)| first), seq));
            }
            let Some((first, last)) = range else {
                return Ok(Vec::new());
            };
            st.in_flight_through = st.in_flight_through.max(last);
            (first, last)
        };
        // Entries up to `last` are in flight now: no push rewrites them, so they are read
        // without the lock. A concurrent ack may remove some; they are then not returned.
        let mut out = Vec::with_capacity(max.min(1024));
        for item in inner
            .entries
            .range(first.to_be_bytes()..=last.to_be_bytes())
        {
            let (k, v) = item.map_err(|e| inner.storage("reading entries", e))?;
            out.push(inner.entry(&k, &v)?);
        }
        Ok(out)
    }

    /// The sender gave up on everything it has in flight (the connection failed): its next
    /// peek starts again at the first pending entry, and until then pushes may be coalesced
    /// into every pending entry again, so a peer that stays away costs one entry per key, not
    /// one per retry.
    pub fn rewind(&self) {
        let mut st = self.inner.lock();
        st.in_flight_through = st.acked_through;
    }

    /// Removes every entry with `seq <= through_seq` (the sender has delivered them). Acked
    /// entries never come back, also after a restart. Acking beyond the newest entry acks all.
    pub fn ack(&self, through_seq: u64) -> Result<(), OutboxError> {
        let inner = &*self.inner;
        let removed = {
            let mut st = inner.lock();
            if st.destroyed {
                return Err(inner.destroyed());
            }
            let through = through_seq.min(st.next_seq - 1);
            if through <= st.acked_through {
                return Ok(());
            }
            // The mark first: if the process dies before the removals reach the disk, open()
            // removes the entries the mark covers.
            inner
                .meta
                .insert(ACKED_THROUGH, &through.to_be_bytes())
                .map_err(|e| inner.storage("writing the acked high-water mark", e))?;
            st.acked_through = through;
            let rest = st.pending.split_off(&(through + 1));
            let removed = std::mem::replace(&mut st.pending, rest);
            for (seq, p) in &removed {
                st.bytes -= p.size;
                if st.newest.get(&p.key) == Some(seq) {
                    st.newest.remove(&p.key);
                }
            }
            if st.bytes <= inner.max_bytes / 2 {
                st.full_logged = false;
            }
            removed
        };
        let mut batch = sled::Batch::default();
        for seq in removed.keys() {
            batch.remove(&seq.to_be_bytes());
        }
        inner
            .entries
            .apply_batch(batch)
            .map_err(|e| inner.storage("removing acked entries", e))
    }

    /// Resolves when the outbox holds a pending entry (at once if it does already), or when it
    /// is destroyed. Waits on a [`Notify`]; no polling.
    pub async fn ready(&self) {
        self.ready_after(0).await;
    }

    /// Resolves when the outbox holds a pending entry with a sequence number above `after`
    /// (at once if it does already), or when it is destroyed.
    pub async fn ready_after(&self, after: u64) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.inner.lock();
                if st.destroyed || st.pending.range(after.saturating_add(1)..).next().is_some() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Whether an update of `key` is pending (in flight or waiting).
    pub fn is_pending(&self, key: &[u8]) -> bool {
        self.inner.lock().newest.contains_key(key)
    }

    /// Current counters and gauges.
    pub fn stats(&self) -> OutboxStats {
        let st = self.inner.lock();
        OutboxStats {
            entries: st.pending.len() as u64,
            bytes: st.bytes,
            in_flight: st.pending.range(..=st.in_flight_through).count() as u64,
            queued_total: st.queued_total,
            coalesced_total: st.coalesced_total,
            dropped_total: st.dropped_total,
            oldest_seq: st.pending.keys().next().copied(),
        }
    }

    /// Returns (and forgets) the keys of updates dropped since the last call, also those dropped
    /// before a restart, each once, in key order. The link resyncs these things from full state.
    /// A key dropped again while this runs is kept and returned again by the next call.
    pub fn take_dropped_keys(&self) -> Result<Vec<Vec<u8>>, OutboxError> {
        let inner = &*self.inner;
        if inner.lock().destroyed {
            return Err(inner.destroyed());
        }
        let mut keys = Vec::new();
        for item in inner.dropped.iter() {
            let (k, token) = item.map_err(|e| inner.storage("reading the dropped keys", e))?;
            // Forget the key only if it was not dropped again since it was read.
            inner
                .dropped
                .compare_and_swap(&k, Some(&token), None::<&[u8]>)
                .map_err(|e| inner.storage("forgetting a dropped key", e))?
                .ok();
            keys.push(k.to_vec());
        }
        Ok(keys)
    }

    /// Flushes the whole database (all trees, not only this outbox's): everything pushed and
    /// acked so far survives a killed process. Only for an outbox in a database nobody else
    /// flushes; in the engine's database the store's group commit does this. Like sled's flush,
    /// this hands the data to the kernel (`sync_file_range`), which is not a power-loss guarantee.
    pub fn flush(&self) -> Result<(), OutboxError> {
        self.inner
            .db
            .flush()
            .map(drop)
            .map_err(|e| self.inner.storage("flushing the database", e))
    }

    /// Removes the outbox and its trees (the link was deleted). Other handles of this outbox
    /// then fail with [`OutboxError::Destroyed`], and their [`Outbox::ready`] resolves.
    pub fn destroy(self) -> Result<(), OutboxError> {
        let inner = &*self.inner;
        {
            let mut st = inner.lock();
            if st.destroyed {
                return Err(inner.destroyed());
            }
            st.destroyed = true;
            st.pending.clear();
            st.newest.clear();
            st.bytes = 0;
        }
        inner.notify.notify_waiters();
        Outbox::remove(&inner.db, &inner.name).map(drop)
    }
}

impl Inner {
    /// Locks the state. A panic in the coalesce function happens before any change to the
    /// state, so a poisoned lock still guards a consistent state.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn storage(&self, context: &'static str, source: sled::Error) -> OutboxError {
        OutboxError::Storage {
            name: self.name.clone(),
            context,
            source,
        }
    }

    fn destroyed(&self) -> OutboxError {
        OutboxError::Destroyed {
            name: self.name.clone(),
        }
    }

    fn corrupt(&self, key: &[u8], detail: String) -> OutboxError {
        OutboxError::Corrupt {
            name: self.name.clone(),
            tree: String::from_utf8_lossy(&self.entries.name()).into_owned(),
            key: key.to_vec(),
            detail,
        }
    }

    fn entry(&self, k: &[u8], v: &[u8]) -> Result<OutboxEntry, OutboxError> {
        let seq = decode_u64(k)
            .ok_or_else(|| self.corrupt(k, format!("entry key has {} bytes", k.len())))?;
        let (key, payload) = decode_entry(v).map_err(|d| self.corrupt(k, d))?;
        Ok(OutboxEntry {
            seq,
            key: key.to_vec(),
            payload: payload.to_vec(),
        })
    }

    /// Merges `payload` into pending entry `seq` (of `key`, not in flight) if the coalesce
    /// function agrees and the result fits; returns the seq on success.
    fn coalesce_into(
        &self,
        st: &mut State,
        seq: u64,
        key: &[u8],
        payload: &[u8],
    ) -> Result<Option<u64>, OutboxError> {
        let k = seq.to_be_bytes();
        let Some(old) = self
            .entries
            .get(k)
            .map_err(|e| self.storage("reading the entry to coalesce into", e))?
        else {
            return Ok(None);
        };
        let (_, old_payload) = decode_entry(&old).map_err(|d| self.corrupt(&k, d))?;
        let Some(merged) = (self.coalesce)(old_payload, payload) else {
            return Ok(None);
        };
        let old_size = st.pending.get(&seq).map_or(0, |p| p.size);
        let new_size = (key.len() + merged.len()) as u64;
        if st.bytes - old_size + new_size > self.max_bytes {
            return Ok(None);
        }
        let Some(value) = encode_entry(key, &merged) else {
            return Ok(None);
        };
        self.entries
            .insert(k, value)
            .map_err(|e| self.storage("rewriting a coalesced entry", e))?;
        if let Some(p) = st.pending.get_mut(&seq) {
            p.size = new_size;
        }
        st.bytes = st.bytes - old_size + new_size;
        st.coalesced_total += 1;
        Ok(Some(seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> sled::Db {
        sled::Config::new().temporary(true).open().unwrap()
    }

    fn latest_wins() -> Coalesce {
        Arc::new(|_old: &[u8], new: &[u8]| Some(new.to_vec()))
    }

    fn open(db: &sled::Db, max_bytes: u64) -> Result<Outbox, OutboxError> {
        Outbox::open(
            db,
            "t",
            OutboxConfig {
                max_bytes,
                ..OutboxConfig::default()
            },
            latest_wins(),
        )
    }

    #[test]
    fn entry_codec_round_trips_and_rejects_garbage() {
        let v = encode_entry(b"thing:1", b"{\"a\":1}").unwrap();
        assert_eq!(
            decode_entry(&v).unwrap(),
            (&b"thing:1"[..], &b"{\"a\":1}"[..])
        );
        let v = encode_entry(b"", b"").unwrap();
        assert_eq!(decode_entry(&v).unwrap(), (&b""[..], &b""[..]));
        assert!(decode_entry(&[1, 0, 0]).unwrap_err().contains("shorter"));
        assert!(
            decode_entry(&[9, 0, 0, 0, 0])
                .unwrap_err()
                .contains("version 9")
        );
        assert!(
            decode_entry(&[1, 0, 0, 0, 5, b'a'])
                .unwrap_err()
                .contains("exceeds")
        );
    }

    #[test]
    fn config_defaults_and_rejects_unknown_fields_and_zero() {
        let c: OutboxConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.max_bytes, DEFAULT_MAX_BYTES);
        let c: OutboxConfig = serde_json::from_str(r#"{"max_bytes": 10}"#).unwrap();
        assert_eq!(c.max_bytes, 10);
        assert!(serde_json::from_str::<OutboxConfig>(r#"{"maxBytes": 10}"#).is_err());
        let err = open(&db(), 0).unwrap_err();
        assert!(matches!(err, OutboxError::Config { .. }), "{err}");
    }

    #[test]
    fn corrupt_records_are_reported_at_open_and_remove_recovers() {
        for (tree, key, value) in [
            ("outbox/entries/t", &1u64.to_be_bytes()[..], &[1u8, 0][..]),
            ("outbox/entries/t", &b"abc"[..], &[1u8, 0, 0, 0, 0][..]),
            ("outbox/meta/t", ACKED_THROUGH, &[1u8, 2][..]),
            ("outbox/dropped/t", &b"k"[..], &[1u8][..]),
        ] {
            let db = db();
            db.open_tree(tree).unwrap().insert(key, value).unwrap();
            let err = open(&db, 100).unwrap_err();
            match &err {
                OutboxError::Corrupt {
                    tree: t, key: k, ..
                } => {
                    assert_eq!(t, tree);
                    assert_eq!(k, key);
                }
                other => panic!("expected Corrupt, got {other}"),
            }
            assert!(err.to_string().contains("corrupt record"), "{err}");
            assert!(Outbox::remove(&db, "t").unwrap());
            let ob = open(&db, 100).unwrap();
            assert_eq!(ob.stats(), OutboxStats::default());
        }
    }

    #[test]
    fn an_update_larger_than_the_bound_is_dropped() {
        let ob = open(&db(), 10).unwrap();
        assert_eq!(ob.push(b"k", &[0; 10]).unwrap(), Pushed::Dropped);
        assert_eq!(ob.push(b"k", &[0; 9]).unwrap(), Pushed::Queued { seq: 1 });
        assert_eq!(ob.stats().bytes, 10);
        assert_eq!(ob.take_dropped_keys().unwrap(), vec![b"k".to_vec()]);
    }

    #[test]
    fn a_merge_that_does_not_fit_is_dropped() {
        let concat: Coalesce = Arc::new(|old: &[u8], new: &[u8]| Some([old, new].concat()));
        let ob = Outbox::open(
            &db(),
            "t",
            OutboxConfig {
                max_bytes: 10,
                ..OutboxConfig::default()
            },
            concat,
        )
        .unwrap();
        assert_eq!(ob.push(b"k", b"1234").unwrap(), Pushed::Queued { seq: 1 });
        assert_eq!(ob.push(b"j", b"123").unwrap(), Pushed::Queued { seq: 2 });
        // k's entry would become 1 + 6 bytes: 7 + 4 > 10.
        assert_eq!(ob.push(b"k", b"56").unwrap(), Pushed::Dropped);
        assert_eq!(ob.push(b"j", b"4").unwrap(), Pushed::Coalesced { seq: 2 });
        let e = ob.peek(10).unwrap();
        assert_eq!(e[1].payload, b"1234");
        assert_eq!(ob.stats().bytes, 10);
    }

    #[test]
    fn ack_beyond_the_newest_entry_does_not_move_seqs() {
        let db = db();
        let ob = open(&db, 100).unwrap();
        ob.push(b"k", b"v").unwrap();
        ob.ack(u64::MAX).unwrap();
        assert_eq!(ob.stats().entries, 0);
        assert_eq!(ob.push(b"k", b"v").unwrap(), Pushed::Queued { seq: 2 });
        drop(ob);
        let ob = open(&db, 100).unwrap();
        assert_eq!(ob.push(b"k", b"v").unwrap(), Pushed::Queued { seq: 3 });
    }

    #[test]
    fn entries_covered_by_the_acked_mark_are_removed_at_open() {
        // As if the process died after writing the mark but before removing the entries.
        let db = db();
        let ob = open(&db, 100).unwrap();
        for i in 0..5u8 {
            ob.push(b"k", &[i]).unwrap();
        }
        drop(ob);
        db.open_tree("outbox/meta/t")
            .unwrap()
            .insert(ACKED_THROUGH, &3u64.to_be_bytes())
            .unwrap();
        let ob = open(&db, 100).unwrap();
        let seqs: Vec<u64> = ob.peek(10).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(db.open_tree("outbox/entries/t").unwrap().len(), 2);
        assert_eq!(ob.stats().bytes, 4);
    }

    #[test]
    fn destroy_removes_the_trees_and_stops_other_handles() {
        let db = db();
        let ob = open(&db, 100).unwrap();
        let other = ob.clone();
        ob.push(b"k", b"v").unwrap();
        ob.destroy().unwrap();
        assert!(matches!(
            other.push(b"k", b"v"),
            Err(OutboxError::Destroyed { .. })
        ));
        assert!(matches!(other.peek(1), Err(OutboxError::Destroyed { .. })));
        assert!(matches!(other.ack(1), Err(OutboxError::Destroyed { .. })));
        assert!(matches!(
            other.take_dropped_keys(),
            Err(OutboxError::Destroyed { .. })
        ));
        let names: Vec<_> = db.tree_names();
        assert!(
            !names.iter().any(|n| n.starts_with(b"outbox/")),
            "trees left: {names:?}"
        );
        assert!(matches!(
            other.destroy(),
            Err(OutboxError::Destroyed { .. })
        ));
        let ob = open(&db, 100).unwrap();
        assert_eq!(ob.push(b"k", b"v").unwrap(), Pushed::Queued { seq: 1 });
    }

    #[test]
    fn names_do_not_collide() {
        let db = db();
        let a = open(&db, 100).unwrap();
        let b = Outbox::open(&db, "t/dropped", OutboxConfig::default(), latest_wins()).unwrap();
        a.push(b"k", b"a").unwrap();
        b.push(b"k", b"b").unwrap();
        assert_eq!(a.peek(5).unwrap().len(), 1);
        assert_eq!(b.peek(5).unwrap()[0].payload, b"b");
        assert!(a.take_dropped_keys().unwrap().is_empty());
    }

    #[test]
    fn a_panicking_coalesce_leaves_the_outbox_usable() {
        let boom: Coalesce = Arc::new(|_: &[u8], _: &[u8]| panic!("coalesce failed"));
        let ob = Outbox::open(
            &db(),
            "t",
            OutboxConfig {
                max_bytes: 4,
                ..OutboxConfig::default()
            },
            boom,
        )
        .unwrap();
        ob.push(b"k", b"12").unwrap();
        let ob2 = ob.clone();
        let r = std::thread::spawn(move || ob2.push(b"k", b"345")).join();
        assert!(r.is_err());
        assert_eq!(ob.stats().bytes, 3);
        assert_eq!(ob.push(b"j", b"").unwrap(), Pushed::Queued { seq: 2 });
    }
}
