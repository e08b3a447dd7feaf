//! [`MemoryStore`]: records in a map under a lock. Nothing survives the process; for tests and
//! for instances that keep no state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock};

use super::{Durable, Kind, Record, Store, WriteOp};
use crate::error::Result;

/// A [`Store`] in memory: every `write` applies at once, atomically, and its [`Durable`] is
/// already resolved ("durable" here means visible: nothing survives the process).
#[derive(Debug, Default)]
pub struct MemoryStore {
    maps: RwLock<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    things: BTreeMap<String, Record>,
    policies: BTreeMap<String, Record>,
    graves: BTreeMap<String, Record>,
}

impl Maps {
    fn of(&self, kind: Kind) -> &BTreeMap<String, Record> {
        match kind {
            Kind::Thing => &self.things,
            Kind::Policy => &self.policies,
            Kind::Grave => &self.graves,
        }
    }

    fn of_mut(&mut self, kind: Kind) -> &mut BTreeMap<String, Record> {
        match kind {
            Kind::Thing => &mut self.things,
            Kind::Policy => &mut self.policies,
            Kind::Grave => &mut self.graves,
        }
    }

    /// Checks every op's condition in order, seeing the effects of the ops before it.
    fn check(&self, batch: &[WriteOp]) -> Result<()> {
        let mut staged: HashMap<(Kind, &str), Option<u64>> = HashMap::new();
        for op in batch {
            let (kind, id) = (op.kind(), op.id());
            let found = match staged.get(&(kind, id)) {
                Some(rev) => *rev,
                None => self.of(kind).get(id).map(|r| r.revision),
            };
            op.expect().check(kind, id, found)?;
            staged.insert((kind, id), op.revision_after());
        }
        Ok(())
    }

    fn apply(&mut self, batch: Vec<WriteOp>) {
        for op in batch {
            match op {
                WriteOp::Put { record, .. } => {
                    self.of_mut(record.kind).insert(record.id.clone(), record);
                }
                WriteOp::Delete { kind, id, .. } => {
                    self.of_mut(kind).remove(&id);
                }
            }
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn write(&self, batch: Vec<WriteOp>) -> Durable {
        // A panic elsewhere while holding the lock cannot leave the maps half-written: a batch
        // is checked before anything is applied, and applying does not fail.
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        let result = maps.check(&batch);
        if result.is_ok() {
            maps.apply(batch);
        }
        Durable::ready(result)
    }

    fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>> {
        let maps = self.maps.read().unwrap_or_else(PoisonError::into_inner);
        Ok(maps.of(kind).get(id).cloned())
    }

    fn scan(&self, kind: Kind) -> Result<Vec<Record>> {
        let maps = self.maps.read().unwrap_or_else(PoisonError::into_inner);
        Ok(maps.of(kind).values().cloned().collect())
    }
}
