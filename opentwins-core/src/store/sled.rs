//! [`SledStore`]: the embedded default backend, on a sled database, with group commit.
//!
//! One committer thread owns every write. [`Store::write`] queues the batch on a channel (so
//! batches apply in call order) and returns at once; the committer takes whatever is queued,
//! checks each batch's conditions in order against the database plus the batches before it in
//! the same group, applies every accepted batch with one `sled::Batch`, flushes once (and, in
//! [`SyncMode::Fsync`], `fdatasync`s the database files), then resolves every batch's
//! [`Durable`]. Many concurrent writers thus share one flush.
//!
//! On disk a record is the key `kind byte ++ id` and the value `revision (u64, big-endian) ++ JSON`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{Durable, Kind, Record, Store, WriteOp};
use crate::error::{Error, ErrorKind, Result};

/// How long [`SledStore::open`] waits for the lock of a database that is being closed.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// How far a flush goes before a write counts as durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// sled's flush: the data is handed to the kernel (`sync_file_range` on Linux), so an
    /// acknowledged write survives `kill -9` of the process, not necessarily a power loss.
    #[default]
    Flush,
    /// sled's flush, then `fdatasync` of the database files (the log and new blob files), so an
    /// acknowledged write survives a power loss too. Costs one device sync per group commit.
    Fsync,
}

/// Configuration of a [`SledStore`] (TOML-friendly: durations as `"2ms"`, `"1s"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SledConfig {
    /// The database directory (created if missing). Default `data/store`.
    pub path: PathBuf,
    /// When a write counts as durable. Default `flush`.
    pub sync: SyncMode,
    /// How long the committer may wait for more writes before committing a group. Default `0s`:
    /// commit whatever is queued at once (concurrent writers still share a flush, because writes
    /// queue up while the previous group flushes). A delay helps only few, sparse writers.
    #[serde(with = "humantime_duration")]
    pub max_batch_delay: Duration,
    /// The most ops one group commit takes (a single larger batch still commits, alone; 0
    /// counts as 1).
    /// Default 8192.
    pub max_batch_ops: usize,
    /// Bytes of sled's page cache. The engine keeps every entity in memory and reads the store
    /// only at start, so a small cache costs nothing but bounds memory. Default 8 MiB.
    pub cache_bytes: u64,
}

impl Default for SledConfig {
    fn default() -> Self {
        SledConfig {
            path: PathBuf::from("data/store"),
            sync: SyncMode::Flush,
            max_batch_delay: Duration::ZERO,
            max_batch_ops: 8192,
            cache_bytes: 8 * 1024 * 1024,
        }
    }
}

impl SledConfig {
    /// The default configuration with the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SledConfig {
            path: path.into(),
            ..SledConfig::default()
        }
    }
}

/// Durations in config files as humantime strings (`"0s"`, `"500us"`, `"2ms"`).
mod humantime_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            D::Error::custom(format!(
                "invalid duration '{s}' (expected e.g. \"2ms\"): {e}"
            ))
        })
    }
}

/// A queued batch and the channel that answers it.
struct Job {
    batch: Vec<WriteOp>,
    done: oneshot::Sender<Result<()>>,
}

/// The sled backend of [`Store`]: durable, with group commit on one committer thread.
///
/// Reads (`get`, `scan`) go to the database directly and see every write whose [`Durable`]
/// resolved (and possibly later ones that are applied but not yet flushed). Dropping the store,
/// or [`SledStore::close`], lets the committer finish what is queued, flush, and exit.
pub struct SledStore {
    db: ::sled::Db,
    path: PathBuf,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (or creates) the database at `config.path` and starts its committer thread.
    ///
    /// Fails with `things:thing.unavailable` when the database cannot be opened, e.g. because
    /// another process has it open (after waiting up to 2 s for its lock).
    pub fn open(config: SledConfig) -> Result<SledStore> {
        let open = || {
            ::sled::Config::new()
                .path(&config.path)
                // The committer flushes every group itself; sled's periodic flusher adds nothing.
                .flush_every_ms(None)
                .cache_capacity(config.cache_bytes)
                .open()
        };
        // The lock of a database just closed (a restart in the same process, a process that is
        // exiting) can take a moment to be released: wait a little before giving up.
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match open() {
                Err(::sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                result => break result,
            }
        }
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot open the sled database at '{}': {e}",
                config.path.display()
            ))
        })?;
        let syncer = match config.sync {
            SyncMode::Flush => None,
            SyncMode::Fsync => Some(FileSync::open(&config.path).map_err(|e| {
                Error::unavailable(format!(
                    "cannot sync the sled database files at '{}': {e}",
                    config.path.display()
                ))
            })?),
        };
        let (tx, rx) = mpsc::channel();
        let committer = Committer {
            db: db.clone(),
            rx,
            syncer,
            max_delay: config.max_batch_delay,
            max_ops: config.max_batch_ops.max(1),
        };
        let thread = std::thread::Builder::new()
            .name("store-committer".to_owned())
            .spawn(move || committer.run())
            .map_err(|e| Error::unavailable(format!("cannot start the committer thread: {e}")))?;
        Ok(SledStore {
            db,
            path: config.path,
            queue: Mutex::new(Some(tx)),
            committer: Mutex::new(Some(thread)),
        })
    }

    /// The sled database itself, for data that must be exactly as durable as the store's
    /// writes: trees written in it before a write is handed to the store are flushed by that
    /// write's group commit (a link's outbox lives here).
    pub fn db(&self) -> &::sled::Db {
        &self.db
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops taking writes, lets the committer commit what is queued, and waits for it to
    /// exit. Later writes resolve to `things:thing.unavailable`. Idempotent; `Drop` calls it.
    ///
    /// Blocks the calling thread until every queued write is committed.
    pub fn close(&self) -> Result<()> {
        drop(
            self.queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            thread
                .join()
                .map_err(|_| Error::unavailable("the store's committer thread panicked"))?;
        }
        self.db
            .flush()
            .map(drop)
            .map_err(|e| Error::unavailable(format!("flush failed: {e}")))
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(path = %self.path.display(), error = %e, "closing the sled store failed");
        }
    }
}

impl Store for SledStore {
    fn write(&self, batch: Vec<WriteOp>) -> Durable {
        let (done, answer) = oneshot::channel();
        let queued = {
            let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue
                .as_ref()
                .is_some_and(|tx| tx.send(Job { batch, done }).is_ok())
        };
        if !queued {
            return Durable::ready(Err(Error::unavailable(
                "the store is closed or its committer stopped",
            )));
        }
        Durable::new(async move {
            answer.await.unwrap_or_else(|_| {
                Err(Error::unavailable(
                    "the store's committer stopped before the write was committed",
                ))
            })
        })
    }

    fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>> {
        let key = encode_key(kind, id);
        match self.db.get(&key).map_err(read_error)? {
            Some(value) => decode(kind, id.to_owned(), &value).map(Some),
            None => Ok(None),
        }
    }

    fn scan(&self, kind: Kind) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        for item in self.db.scan_prefix([kind_byte(kind)]) {
            let (key, value) = item.map_err(read_error)?;
            let id = std::str::from_utf8(&key[1..])
                .map_err(|_| corrupt(format!("a {} key is not UTF-8", kind.name())))?;
            records.push(decode(kind, id.to_owned(), &value)?);
        }
        Ok(records)
    }
}

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Thing => b't',
        Kind::Policy => b'p',
        Kind::Grave => b'g',
    }
}

fn encode_key(kind: Kind, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(kind_byte(kind));
    key.extend_from_slice(id.as_bytes());
    key
}

fn encode_value(record: &Record) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + record.json.len());
    value.extend_from_slice(&record.revision.to_be_bytes());
    value.extend_from_slice(&record.json);
    value
}

fn decode_revision(kind: Kind, id: &str, value: &[u8]) -> Result<u64> {
    let head: [u8; 8] = value
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| {
            corrupt(format!(
                "the {} with ID '{id}' has no revision",
                kind.name()
            ))
        })?;
    Ok(u64::from_be_bytes(head))
}

fn decode(kind: Kind, id: String, value: &[u8]) -> Result<Record> {
    let revision = decode_revision(kind, &id, value)?;
    Ok(Record {
        kind,
        id,
        revision,
        json: Arc::from(&value[8..]),
    })
}

fn read_error(e: ::sled::Error) -> Error {
    Error::unavailable(format!("read failed: {e}"))
}

fn corrupt(what: String) -> Error {
    Error::unavailable(format!("corrupt record: {what}"))
}

/// The committer thread's state.
struct Committer {
    db: ::sled::Db,
    rx: mpsc::Receiver<Job>,
    syncer: Option<FileSync>,
    max_delay: Duration,
    max_ops: usize,
}

impl Committer {
    fn run(mut self) {
        loop {
            let Ok(first) = self.rx.recv() else { break };
            let (group, disconnected) = self.gather(first);
            self.commit(group);
            if disconnected {
                break;
            }
        }
        // Everything queued is committed; the store's handle flushes once more on close.
        tracing::debug!("store committer exits");
    }

    /// Takes queued jobs after `first`, up to `max_ops` ops, waiting at most `max_delay`.
    /// Also says whether the channel is closed (the store was closed).
    fn gather(&self, first: Job) -> (Vec<Job>, bool) {
        let mut ops = first.batch.len().max(1);
        let mut group = vec![first];
        let deadline = Instant::now() + self.max_delay;
        while ops < self.max_ops {
            let next = if self.max_delay.is_zero() {
                match self.rx.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return (group, true),
                }
            } else {
                match self
                    .rx
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return (group, true),
                }
            };
            ops += next.batch.len().max(1);
            group.push(next);
        }
        (group, false)
    }

    /// Checks, applies and flushes one group, then answers every job in it.
    fn commit(&mut self, group: Vec<Job>) {
        // The revision each key has after the accepted batches so far (None: deleted).
        let mut overlay: HashMap<Vec<u8>, Option<u64>> = HashMap::new();
        let mut writes = ::sled::Batch::default();
        let mut applied_ops = 0usize;
        let mut answers = Vec::with_capacity(group.len());
        for Job { batch, done } in group {
            let verdict = self.check(&batch, &mut overlay);
            if verdict.is_ok() {
                for op in batch {
                    applied_ops += 1;
                    match op {
                        WriteOp::Put { record, .. } => writes
                            .insert(encode_key(record.kind, &record.id), encode_value(&record)),
                        WriteOp::Delete { kind, id, .. } => writes.remove(encode_key(kind, &id)),
                    }
                }
            }
            answers.push((done, verdict));
        }
        let outcome = if applied_ops == 0 {
            Ok(())
        } else {
            self.persist(writes)
        };
        tracing::trace!(
            batches = answers.len(),
            ops = applied_ops,
            "store group commit"
        );
        match outcome {
            Ok(()) => {
                for (done, verdict) in answers {
                    // The caller may have dropped its Durable: nobody to tell.
                    let _ = done.send(verdict);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batches = answers.len(), "store group commit failed");
                for (done, _) in answers {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }

    /// Checks one batch's conditions in order; on success records its effects in `overlay`.
    fn check(&self, batch: &[WriteOp], overlay: &mut HashMap<Vec<u8>, Option<u64>>) -> Result<()> {
        let mut staged: HashMap<Vec<u8>, Option<u64>> = HashMap::new();
        for op in batch {
            let (kind, id) = (op.kind(), op.id());
            let key = encode_key(kind, id);
            let found = match staged.get(&key).or_else(|| overlay.get(&key)) {
                Some(revision) => *revision,
                None => match self.db.get(&key).map_err(read_error)? {
                    Some(value) => Some(decode_revision(kind, id, &value)?),
                    None => None,
                },
            };
            op.expect().check(kind, id, found)?;
            staged.insert(key, op.revision_after());
        }
        overlay.extend(staged);
        Ok(())
    }

    /// Applies the group's writes atomically and makes them durable.
    fn persist(&mut self, writes: ::sled::Batch) -> Result<()> {
        self.db
            .apply_batch(writes)
            .map_err(|e| Error::unavailable(format!("write failed: {e}")))?;
        self.db
            .flush()
            .map_err(|e| outcome_unknown(format!("flush failed: {e}")))?;
        if let Some(syncer) = &mut self.syncer {
            syncer
                .sync()
                .map_err(|e| outcome_unknown(format!("fdatasync failed: {e}")))?;
        }
        Ok(())
    }
}

/// An I/O failure after the write reached the database: it may or may not persist.
fn outcome_unknown(what: String) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("The store is unavailable: {what}"),
    )
    .with_description("The write may or may not have been persisted; read it back before retrying.")
}

/// `fdatasync` of sled's files for [`SyncMode::Fsync`]: sled 0.34's flush only calls
/// `sync_file_range` on Linux (data to the device, no metadata such as the file size), and
/// writes large values to blob files without syncing them.
struct FileSync {
    log: File,
    blobs_dir: PathBuf,
    /// Blob files synced already (blobs are written once, never changed).
    blobs_synced: HashSet<OsString>,
}

impl FileSync {
    fn open(dir: &Path) -> io::Result<FileSync> {
        let log = File::open(dir.join("db"))?;
        let mut syncer = FileSync {
            log,
            blobs_dir: dir.join("blobs"),
            blobs_synced: HashSet::new(),
        };
        // sled writes its `conf` file at creation without syncing it.
        File::open(dir.join("conf"))?.sync_all()?;
        // The directory entries of the files sled created.
        File::open(dir)?.sync_all()?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        syncer.sync()?;
        Ok(syncer)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.log.sync_data()?;
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::with_capacity(self.blobs_synced.len());
        let mut created = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.blobs_synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(blob) => blob.sync_data()?,
                    // Garbage-collected by sled meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                created = true;
            }
            present.insert(name);
        }
        if created {
            File::open(&self.blobs_dir)?.sync_all()?;
        }
        self.blobs_synced = present;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_parsing() {
        let c: SledConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, SledConfig::default());
        assert_eq!(c.sync, SyncMode::Flush);
        assert_eq!(c.max_batch_delay, Duration::ZERO);
        let c: SledConfig = serde_json::from_str(
            r#"{"path": "/tmp/x", "sync": "fsync", "max_batch_delay": "2ms", "max_batch_ops": 5}"#,
        )
        .unwrap();
        assert_eq!(c.path, PathBuf::from("/tmp/x"));
        assert_eq!(c.sync, SyncMode::Fsync);
        assert_eq!(c.max_batch_delay, Duration::from_millis(2));
        assert_eq!(c.max_batch_ops, 5);
        let round: SledConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(round, c);
        let e = serde_json::from_str::<SledConfig>(r#"{"pth": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = serde_json::from_str::<SledConfig>(r#"{"max_batch_delay": "soon"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid duration"), "{e}");
        assert!(serde_json::from_str::<SledConfig>(r#"{"sync": "always"}"#).is_err());
    }

    #[test]
    fn value_encoding() {
        let r = Record {
            kind: Kind::Thing,
            id: "a:b".into(),
            revision: 258,
            json: Arc::from(&b"{}"[..]),
        };
        let v = encode_value(&r);
        assert_eq!(&v[..8], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(decode(Kind::Thing, "a:b".into(), &v).unwrap(), r);
        assert_eq!(encode_key(Kind::Policy, "x"), b"px".to_vec());
        let e = decode(Kind::Thing, "a:b".into(), &[1, 2]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }
}
