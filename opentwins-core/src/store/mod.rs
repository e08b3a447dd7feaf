//! Persistence: the [`Store`] trait and its backends (memory, sled).
//!
//! A store keeps *records*: the JSON of a thing or a policy with its revision. The engine keeps
//! the working state in memory and hands every change to the store, in order, as it happens;
//! the store makes it durable, batching concurrent writes into one flush (group commit).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::Result;

/// Which kind of entity a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A thing (`Thing::full_json`).
    Thing,
    /// A policy.
    Policy,
}

/// One stored entity: its id, revision and JSON bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Thing or policy.
    pub kind: Kind,
    /// The entity id.
    pub id: String,
    /// The entity revision.
    pub revision: u64,
    /// The entity as JSON.
    pub json: Arc<[u8]>,
}

/// The compare-and-set condition of a write, on the stored revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is stored.
    Any,
    /// The entity must not exist.
    Absent,
    /// The stored revision must be this one.
    Revision(u64),
}

/// A change to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Insert or replace a record.
    Put {
        /// The new record.
        record: Record,
        /// Condition on what is stored.
        expect: Expect,
    },
    /// Remove a record.
    Delete {
        /// Thing or policy.
        kind: Kind,
        /// The entity id.
        id: String,
        /// Condition on what is stored.
        expect: Expect,
    },
}

/// Resolves when a write is durable, or with the error that prevented it (a failed
/// compare-and-set is `things:thing.conflict`, an I/O failure `things:thing.unavailable`).
pub struct Durable(Pin<Box<dyn Future<Output = Result<()>> + Send>>);

impl Durable {
    /// Already durable (or already failed).
    pub fn ready(result: Result<()>) -> Self {
        Durable(Box::pin(std::future::ready(result)))
    }

    /// Durable when `fut` resolves.
    pub fn new(fut: impl Future<Output = Result<()>> + Send + 'static) -> Self {
        Durable(Box::pin(fut))
    }
}

impl Future for Durable {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.0.as_mut().poll(cx)
    }
}

/// Where things and policies persist.
///
/// Contract (checked by `tests/store_contract.rs` for every backend):
/// - `write` takes effect in call order: a later `write` observes an earlier one, even before
///   either is durable. Ops in one batch apply atomically and in order.
/// - `Expect` is checked against the state including earlier, not-yet-durable writes.
/// - When the returned [`Durable`] resolves `Ok`, the write survives a crash of the process
///   (see the backend for power loss); a `get` or `scan` after it sees the write.
pub trait Store: Send + Sync + 'static {
    /// Enqueues a batch of changes; they apply atomically, after every earlier batch.
    fn write(&self, batch: Vec<WriteOp>) -> Durable;

    /// The record of one entity.
    fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>>;

    /// Every record of a kind, in id order (the engine loads its state with this at start).
    fn scan(&self, kind: Kind) -> Result<Vec<Record>>;
}
