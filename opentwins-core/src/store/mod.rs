//! Persistence: the [`Store`] trait and its backends (memory, sled; PostgreSQL in the
//! `opentwins-postgres` crate), and the [`contract`] every backend passes.
//!
//! A store keeps *records*: the JSON of a thing or a policy with its revision. The engine keeps
//! the working state in memory and hands every change to the store, in order, as it happens;
//! the store makes it durable, batching concurrent writes into one flush (group commit).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::{Error, ErrorKind, Result};

pub mod contract;
mod memory;
mod sled;

pub use self::memory::MemoryStore;
pub use self::sled::{SledConfig, SledStore, SyncMode};

/// Which kind of entity a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A thing (`Thing::full_json`).
    Thing,
    /// A policy.
    Policy,
    /// The clocks of a deleted thing (its grave), so a late, older change cannot bring it
    /// back (see `engine/graves.rs`).
    Grave,
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

impl Kind {
    /// The kind's name in messages (`Thing`, `Policy`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Thing => "Thing",
            Kind::Policy => "Policy",
            Kind::Grave => "Grave",
        }
    }
}

impl Expect {
    /// Checks the condition against the stored revision (`None`: nothing stored), naming the
    /// entity in the `things:thing.conflict` error when it fails.
    ///
    /// The same rule holds for puts and deletes: `Any` always holds, `Absent` holds when nothing
    /// is stored, `Revision(n)` holds when revision `n` is stored.
    pub fn check(self, kind: Kind, id: &str, found: Option<u64>) -> Result<()> {
        let holds = match self {
            Expect::Any => true,
            Expect::Absent => found.is_none(),
            Expect::Revision(n) => found == Some(n),
        };
        if holds {
            return Ok(());
        }
        let expected = match self {
            Expect::Revision(n) => format!("revision {n}"),
            _ => "absent".to_owned(),
        };
        let found = match found {
            Some(n) => format!("revision {n}"),
            None => "absent".to_owned(),
        };
        Err(Error::new(
            ErrorKind::RevisionConflict,
            format!(
                "The {} with ID '{id}' was expected to be {expected} in the store but is {found}.",
                kind.name()
            ),
        )
        .with_description("A concurrent write changed it first; reload it and retry."))
    }
}

impl WriteOp {
    /// The kind of the entity the op changes.
    pub fn kind(&self) -> Kind {
        match self {
            WriteOp::Put { record, .. } => record.kind,
            WriteOp::Delete { kind, .. } => *kind,
        }
    }

    /// The id of the entity the op changes.
    pub fn id(&self) -> &str {
        match self {
            WriteOp::Put { record, .. } => &record.id,
            WriteOp::Delete { id, .. } => id,
        }
    }

    /// The op's condition.
    pub fn expect(&self) -> Expect {
        match self {
            WriteOp::Put { expect, .. } | WriteOp::Delete { expect, .. } => *expect,
        }
    }

    /// The revision stored after the op applies (`None` for a delete).
    pub fn revision_after(&self) -> Option<u64> {
        match self {
            WriteOp::Put { record, .. } => Some(record.revision),
            WriteOp::Delete { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_rules() {
        assert!(Expect::Any.check(Kind::Thing, "a:b", None).is_ok());
        assert!(Expect::Any.check(Kind::Thing, "a:b", Some(3)).is_ok());
        assert!(Expect::Absent.check(Kind::Thing, "a:b", None).is_ok());
        assert!(
            Expect::Revision(3)
                .check(Kind::Thing, "a:b", Some(3))
                .is_ok()
        );
        let e = Expect::Absent
            .check(Kind::Policy, "a:p", Some(2))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RevisionConflict);
        assert_eq!(e.status(), 409);
        assert!(
            e.message().contains("Policy with ID 'a:p'"),
            "{}",
            e.message()
        );
        assert!(
            e.message().contains("expected to be absent"),
            "{}",
            e.message()
        );
        assert!(e.message().contains("is revision 2"), "{}", e.message());
        let e = Expect::Revision(4)
            .check(Kind::Thing, "a:b", None)
            .unwrap_err();
        assert!(
            e.message().contains("expected to be revision 4"),
            "{}",
            e.message()
        );
        assert!(e.message().contains("but is absent"), "{}", e.message());
        let e = Expect::Revision(4)
            .check(Kind::Thing, "a:b", Some(5))
            .unwrap_err();
        assert!(e.message().contains("but is revision 5"), "{}", e.message());
    }
}
