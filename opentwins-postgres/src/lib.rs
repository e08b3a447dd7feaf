//! [`PgStore`]: the PostgreSQL backend of [`Store`], for a hub that outgrows one sled file.
//!
//! One row per thing, policy and grave (`things`, `policies`, `graves`: `id text COLLATE "C"`
//! primary key, `revision bigint`, `doc json`, which keeps the document's text exactly, key
//! order included). The tables live in one schema (`PgConfig::schema`), created with its
//! tables at open by versioned migrations (`schema_migrations`).
//!
//! Writes go through one committer task, as in the sled backend: [`Store::write`] queues the
//! batch and returns; the committer takes what is queued (up to `max_batch_ops`) and commits it
//! as **one transaction**: it takes a transaction-scoped advisory lock of the schema (so two
//! processes on one schema never interleave their checks and writes), reads the stored
//! revisions of every key the group touches, checks each batch's conditions in order (a failing
//! batch is rejected alone), writes the accepted batches' final state with one upsert and one
//! delete per table, and commits. Every batch's [`Durable`] resolves after `COMMIT` returns, so an
//! acknowledged write is as durable as PostgreSQL makes a commit (`synchronous_commit`).
//!
//! A hook given to [`PgStore::open`] runs before each transaction: the runtime flushes the
//! local sled database there, where the links' outboxes and the history live, so an
//! acknowledged write never misses its outbox entry (docs/storage.md).
//!
//! The store runs its connections on a thread of its own (a single-threaded Tokio runtime), so
//! the trait's synchronous reads ([`Store::get`], [`Store::scan`]) block only their caller, on any
//! runtime. A lost connection is re-established on the next request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use opentwins_core::store::{Durable, Kind, Record, Store, WriteOp};
use opentwins_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

/// How long opening the store waits for PostgreSQL.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The migrations, in order: version `n` is `MIGRATIONS[n - 1]`. Never change one that has
/// shipped; append.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE things (id text COLLATE "C" PRIMARY KEY, revision bigint NOT NULL, doc json NOT NULL);
CREATE TABLE policies (id text COLLATE "C" PRIMARY KEY, revision bigint NOT NULL, doc json NOT NULL);
CREATE TABLE graves (id text COLLATE "C" PRIMARY KEY, revision bigint NOT NULL, doc json NOT NULL);
"#];

/// Configuration of a [`PgStore`] (`store = { kind = "postgres", url = "postgres://…" }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgConfig {
    /// The connection URL or key-value string (`postgres://user@host:5432/db`,
    /// `host=/var/run/postgresql dbname=twins`). `sslmode=require` is refused: TLS to
    /// PostgreSQL is not supported yet.
    pub url: String,
    /// The schema of the tables (created when missing): lowercase letters, digits and `_`.
    /// Default `opentwins`.
    pub schema: String,
    /// The most ops one transaction takes (a single larger batch still commits, alone).
    /// Default 8192.
    pub max_batch_ops: usize,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            url: "postgres://localhost/opentwins".to_owned(),
            schema: "opentwins".to_owned(),
            max_batch_ops: 8192,
        }
    }
}

/// Runs before each transaction (see the crate documentation).
pub type BeforeCommit = Box<dyn FnMut() -> Result<()> + Send>;

/// A queued batch and the channel that answers it.
struct Job {
    batch: Vec<WriteOp>,
    done: oneshot::Sender<Result<()>>,
}

/// A read and the channel that answers it.
enum Read {
    Get(Kind, String, std_mpsc::SyncSender<Result<Option<Record>>>),
    Scan(Kind, std_mpsc::SyncSender<Result<Vec<Record>>>),
}

/// The PostgreSQL backend of [`Store`].
pub struct PgStore {
    schema: String,
    jobs: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    reads: Mutex<Option<mpsc::UnboundedSender<Read>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Where the connections are made from.
#[derive(Clone, Debug)]
struct Target {
    config: tokio_postgres::Config,
    schema: String,
}

impl PgStore {
    /// Connects, applies the migrations the schema lacks, and starts the committer.
    ///
    /// Fails with `things:thing.unavailable` when PostgreSQL cannot be reached in 10 s, the
    /// configuration is invalid, or the schema was written by a newer version.
    pub fn open(config: PgConfig, before_commit: Option<BeforeCommit>) -> Result<PgStore> {
        let target = Target::new(&config)?;
        let (opened_tx, opened_rx) = std_mpsc::sync_channel(1);
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let (reads_tx, reads_rx) = mpsc::unbounded_channel();
        let max_ops = config.max_batch_ops.max(1);
        let thread = std::thread::Builder::new()
            .name("store-postgres".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = opened_tx.send(Err(Error::unavailable(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let opened = async {
                        let writer = target.connect().await?;
                        migrate(&writer, &target.schema).await?;
                        let reader = target.connect().await?;
                        Ok::<_, Error>((writer, reader))
                    };
                    let (writer, reader) = match tokio::time::timeout(CONNECT_TIMEOUT, opened).await
                    {
                        Ok(Ok(clients)) => clients,
                        Ok(Err(e)) => {
                            let _ = opened_tx.send(Err(e));
                            return;
                        }
                        Err(_) => {
                            let _ = opened_tx.send(Err(Error::unavailable(
                                "PostgreSQL did not answer within 10 s",
                            )));
                            return;
                        }
                    };
                    let _ = opened_tx.send(Ok(()));
                    let committer = Committer {
                        target: target.clone(),
                        client: Some(writer),
                        before_commit,
                        max_ops,
                    };
                    tokio::join!(
                        committer.run(jobs_rx),
                        serve_reads(target, reader, reads_rx)
                    );
                    tracing::debug!("postgres store exits");
                });
            })
            .map_err(|e| Error::unavailable(format!("cannot start the store thread: {e}")))?;
        let opened = opened_rx
            .recv()
            .unwrap_or_else(|_| Err(Error::unavailable("the store thread stopped")));
        if let Err(e) = opened {
            let _ = thread.join();
            return Err(e);
        }
        Ok(PgStore {
            schema: config.schema,
            jobs: Mutex::new(Some(jobs_tx)),
            reads: Mutex::new(Some(reads_tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Stops taking writes and reads, commits what is queued, and waits for the store's thread
    /// to exit. Idempotent; `Drop` calls it. Blocks the calling thread.
    pub fn close(&self) -> Result<()> {
        drop(lock(&self.jobs).take());
        drop(lock(&self.reads).take());
        if let Some(thread) = lock(&self.thread).take() {
            thread
                .join()
                .map_err(|_| Error::unavailable("the store's thread panicked"))?;
        }
        Ok(())
    }

    fn read<T>(&self, make: impl FnOnce(std_mpsc::SyncSender<Result<T>>) -> Read) -> Result<T> {
        let (tx, rx) = std_mpsc::sync_channel(1);
        let sent = lock(&self.reads)
            .as_ref()
            .is_some_and(|reads| reads.send(make(tx)).is_ok());
        if !sent {
            return Err(Error::unavailable("the store is closed"));
        }
        rx.recv()
            .unwrap_or_else(|_| Err(Error::unavailable("the store stopped during a read")))
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(schema = %self.schema, error = %e, "closing the postgres store failed");
        }
    }
}

impl Store for PgStore {
    fn write(&self, batch: Vec<WriteOp>) -> Durable {
        let (done, answer) = oneshot::channel();
        let queued = lock(&self.jobs)
            .as_ref()
            .is_some_and(|jobs| jobs.send(Job { batch, done }).is_ok());
        if !queued {
            return Durable::ready(Err(Error::unavailable("the store is closed")));
        }
        Durable::new(async move {
            answer.await.unwrap_or_else(|_| {
                Err(Error::unavailable(
                    "the store stopped before the write was committed",
                ))
            })
        })
    }

    fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>> {
        self.read(|tx| Read::Get(kind, id.to_owned(), tx))
    }

    fn scan(&self, kind: Kind) -> Result<Vec<Record>> {
        self.read(|tx| Read::Scan(kind, tx))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Target {
    fn new(config: &PgConfig) -> Result<Target> {
        let schema = &config.schema;
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && !schema.starts_with(|c: char| c.is_ascii_digit())
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(invalid_config(format!(
                "the schema '{schema}' is not 1 to 63 lowercase letters, digits and '_' (not starting with a digit)"
            )));
        }
        let pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| invalid_config(format!("the PostgreSQL URL is invalid: {e}")))?;
        if pg.get_ssl_mode() == SslMode::Require {
            return Err(invalid_config(
                "sslmode=require: TLS to PostgreSQL is not supported yet (reach PostgreSQL over a local socket, a private network or a TLS tunnel)",
            ));
        }
        Ok(Target {
            config: pg,
            schema: schema.clone(),
        })
    }

    /// A new connection, its driver spawned, with `search_path` set to the schema.
    async fn connect(&self) -> Result<Client> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| Error::unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection lost");
            }
        });
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{0}\"; SET search_path TO \"{0}\"",
                self.schema
            ))
            .await
            .map_err(pg_error)?;
        Ok(client)
    }
}

fn invalid_config(message: impl Into<String>) -> Error {
    Error::unavailable(format!("invalid store configuration: {}", message.into()))
}

fn pg_error(e: tokio_postgres::Error) -> Error {
    Error::unavailable(format!("PostgreSQL: {e}"))
}

/// A stable 64-bit key of `text` for advisory locks (FNV-1a).
fn lock_key(text: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Applies the migrations the schema lacks, under a session lock of the schema (two processes
/// starting at once apply each migration once).
async fn migrate(client: &Client, schema: &str) -> Result<()> {
    let key = lock_key(&format!("opentwins-migrate/{schema}"));
    client
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .map_err(pg_error)?;
    let result = async {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(pg_error)?;
        let row = client
            .query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[])
            .await
            .map_err(pg_error)?;
        let current: i32 = row.get(0);
        let known = MIGRATIONS.len() as i32;
        if current > known {
            return Err(Error::unavailable(format!(
                "the schema '{schema}' is at version {current}, written by a newer OpenTwins-rs (this one knows {known})"
            )));
        }
        for (version, sql) in (1..).zip(MIGRATIONS).skip(current as usize) {
            client
                .batch_execute(&format!(
                    "BEGIN; {sql}; INSERT INTO schema_migrations (version) VALUES ({version}); COMMIT"
                ))
                .await
                .map_err(pg_error)?;
            tracing::info!(schema, version, "applied a store migration");
        }
        Ok(())
    }
    .await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .map_err(pg_error);
    result.and(unlocked.map(drop))
}

fn table(kind: Kind) -> &'static str {
    match kind {
        Kind::Thing => "things",
        Kind::Policy => "policies",
        Kind::Grave => "graves",
    }
}

const KINDS: [Kind; 3] = [Kind::Thing, Kind::Policy, Kind::Grave];

fn to_i64(revision: u64) -> Result<i64> {
    i64::try_from(revision)
        .map_err(|_| Error::unavailable(format!("revision {revision} exceeds PostgreSQL's bigint")))
}

fn to_u64(kind: Kind, id: &str, revision: i64) -> Result<u64> {
    u64::try_from(revision).map_err(|_| {
        Error::unavailable(format!(
            "corrupt record: the {} with ID '{id}' has revision {revision}",
            kind.name()
        ))
    })
}

/// The committer task's state.
struct Committer {
    target: Target,
    client: Option<Client>,
    before_commit: Option<BeforeCommit>,
    max_ops: usize,
}

impl Committer {
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(first) = jobs.recv().await {
            let mut ops = first.batch.len().max(1);
            let mut group = vec![first];
            while ops < self.max_ops {
                match jobs.try_recv() {
                    Ok(job) => {
                        ops += job.batch.len().max(1);
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group).await;
        }
    }

    /// Commits one group as one transaction, then answers every job in it.
    async fn commit(&mut self, group: Vec<Job>) {
        let (batches, dones): (Vec<_>, Vec<_>) =
            group.into_iter().map(|j| (j.batch, j.done)).unzip();
        let outcome = if batches.iter().all(Vec::is_empty) {
            Ok(vec![Ok(()); batches.len()])
        } else {
            self.transact(batches).await
        };
        match outcome {
            Ok(verdicts) => {
                for (done, verdict) in dones.into_iter().zip(verdicts) {
                    // The caller may have dropped its Durable: nobody to tell.
                    let _ = done.send(verdict);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batches = dones.len(), "store transaction failed");
                for done in dones {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }

    /// The group's transaction: the verdict of each batch, or the error that failed them all.
    async fn transact(&mut self, batches: Vec<Vec<WriteOp>>) -> Result<Vec<Result<()>>> {
        if let Some(hook) = &mut self.before_commit {
            hook()?;
        }
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(self.target.connect().await?);
        }
        let client = self.client.as_mut().expect("connected above");
        let tx = client.transaction().await.map_err(pg_error)?;
        let key = lock_key(&format!("opentwins-commit/{}", self.target.schema));
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
            .await
            .map_err(pg_error)?;

        // The stored revision of every key the group touches.
        let mut stored: HashMap<(Kind, String), Option<u64>> = HashMap::new();
        for kind in KINDS {
            let ids: Vec<&str> = batches
                .iter()
                .flatten()
                .filter(|op| op.kind() == kind)
                .map(WriteOp::id)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let sql = format!(
                "SELECT id, revision FROM {} WHERE id = ANY($1)",
                table(kind)
            );
            for row in tx.query(&sql, &[&ids]).await.map_err(pg_error)? {
                let id: String = row.get(0);
                let revision = to_u64(kind, &id, row.get(1))?;
                stored.insert((kind, id), Some(revision));
            }
            for id in ids {
                stored.entry((kind, id.to_owned())).or_insert(None);
            }
        }

        // Each batch's conditions, in order, against what the batches before it left.
        let mut last: BTreeMap<(Kind, String), Option<Record>> = BTreeMap::new();
        let mut verdicts = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut staged: HashMap<(Kind, String), Option<u64>> = HashMap::new();
            let verdict = batch.iter().try_for_each(|op| {
                let key = (op.kind(), op.id().to_owned());
                let found = staged
                    .get(&key)
                    .or_else(|| stored.get(&key))
                    .copied()
                    .flatten();
                op.expect().check(op.kind(), op.id(), found)?;
                staged.insert(key, op.revision_after());
                Ok(())
            });
            if verdict.is_ok() {
                stored.extend(staged);
                for op in batch {
                    match op {
                        WriteOp::Put { record, .. } => {
                            last.insert((record.kind, record.id.clone()), Some(record))
                        }
                        WriteOp::Delete { kind, id, .. } => last.insert((kind, id), None),
                    };
                }
            }
            verdicts.push(verdict);
        }

        // The accepted batches' final state: one upsert and one delete per table.
        for kind in KINDS {
            let (mut ids, mut revisions, mut docs, mut gone) = (vec![], vec![], vec![], vec![]);
            for ((k, id), record) in &last {
                if *k != kind {
                    continue;
                }
                match record {
                    Some(record) => {
                        ids.push(id.as_str());
                        revisions.push(to_i64(record.revision)?);
                        docs.push(std::str::from_utf8(&record.json).map_err(|_| {
                            Error::new(
                                ErrorKind::Unavailable,
                                format!("the {} with ID '{id}' is not UTF-8 JSON", kind.name()),
                            )
                        })?);
                    }
                    None => gone.push(id.as_str()),
                }
            }
            if !ids.is_empty() {
                let sql = format!(
                    "INSERT INTO {} (id, revision, doc) \
                     SELECT id, revision, doc::json FROM unnest($1::text[], $2::int8[], $3::text[]) AS u(id, revision, doc) \
                     ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, doc = excluded.doc",
                    table(kind)
                );
                tx.execute(&sql, &[&ids, &revisions, &docs])
                    .await
                    .map_err(pg_error)?;
            }
            if !gone.is_empty() {
                let sql = format!("DELETE FROM {} WHERE id = ANY($1)", table(kind));
                tx.execute(&sql, &[&gone]).await.map_err(pg_error)?;
            }
        }
        tx.commit().await.map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("The store is unavailable: PostgreSQL COMMIT failed: {e}"),
            )
            .with_description(
                "The write may or may not have been persisted; read it back before retrying.",
            )
        })?;
        Ok(verdicts)
    }
}

/// Answers reads on their own connection (reconnecting when it was lost).
async fn serve_reads(target: Target, client: Client, mut reads: mpsc::UnboundedReceiver<Read>) {
    let mut client = Some(client);
    while let Some(read) = reads.recv().await {
        if client.as_ref().is_none_or(Client::is_closed) {
            client = target.connect().await.ok();
        }
        match read {
            Read::Get(kind, id, answer) => {
                let result = match &client {
                    Some(c) => get(c, kind, id).await,
                    None => Err(Error::unavailable("cannot reconnect to PostgreSQL")),
                };
                let _ = answer.send(result);
            }
            Read::Scan(kind, answer) => {
                let result = match &client {
                    Some(c) => scan(c, kind).await,
                    None => Err(Error::unavailable("cannot reconnect to PostgreSQL")),
                };
                let _ = answer.send(result);
            }
        }
    }
}

async fn get(client: &Client, kind: Kind, id: String) -> Result<Option<Record>> {
    let sql = format!(
        "SELECT revision, doc::text FROM {} WHERE id = $1",
        table(kind)
    );
    let row = client.query_opt(&sql, &[&id]).await.map_err(pg_error)?;
    row.map(|row| record(kind, id, row.get(0), row.get(1)))
        .transpose()
}

async fn scan(client: &Client, kind: Kind) -> Result<Vec<Record>> {
    let sql = format!(
        "SELECT id, revision, doc::text FROM {} ORDER BY id",
        table(kind)
    );
    let rows = client.query(&sql, &[]).await.map_err(pg_error)?;
    rows.into_iter()
        .map(|row| record(kind, row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// The record of a row's id, revision and document text.
fn record(kind: Kind, id: String, revision: i64, doc: String) -> Result<Record> {
    Ok(Record {
        kind,
        revision: to_u64(kind, &id, revision)?,
        id,
        json: Arc::from(doc.into_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_checks() {
        let c: PgConfig =
            serde_json::from_str(r#"{"url": "postgres://root@127.0.0.1/test"}"#).unwrap();
        assert_eq!(c.schema, "opentwins");
        assert!(Target::new(&c).is_ok());
        for bad in ["", "Twins", "1st", "a-b", "a\"b", &"x".repeat(64)] {
            let c = PgConfig {
                schema: bad.to_owned(),
                ..PgConfig::default()
            };
            let e = Target::new(&c).unwrap_err();
            assert!(e.message().contains("schema"), "{bad}: {e}");
        }
        let c = PgConfig {
            url: "postgres://h/db?sslmode=require".to_owned(),
            ..PgConfig::default()
        };
        let e = Target::new(&c).unwrap_err();
        assert!(e.message().contains("TLS"), "{e}");
        let c = PgConfig {
            url: "postgres://h:notaport/db".to_owned(),
            ..PgConfig::default()
        };
        assert!(Target::new(&c).unwrap_err().message().contains("URL"));
        assert!(serde_json::from_str::<PgConfig>(r#"{"uri": "x"}"#).is_err());
    }

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("a"), lock_key("a"));
        assert_ne!(
            lock_key("opentwins-commit/a"),
            lock_key("opentwins-commit/b")
        );
        assert_eq!(lock_key(""), 0xcbf2_9ce4_8422_2325_u64 as i64);
    }
}
