//! The hot set: how many things stay parsed in memory. Beyond `max_hot_things`, the things made
//! hot longest ago are cooled to their compact JSON bytes (about a quarter of the memory of a
//! parsed small thing) and parsed again when a command touches them. Reads that scan many things
//! (search, count) parse cold things without heating them.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};
use crate::model::Thing;

/// What a thing's slot holds.
// Most entries are hot: boxing the thing would cost every command an indirection to save
// memory only on absent and cold entries.
#[allow(clippy::large_enum_variant)]
pub(super) enum Entry {
    /// No thing (never created, or deleted).
    Absent,
    /// Parsed, ready for commands.
    Hot(Thing),
    /// The thing's full JSON (`Thing::to_full_vec`), parsed on the next command.
    Cold(Arc<[u8]>),
}

/// One thing's slot: the lock that orders its commands.
pub(super) type Slot = Arc<Mutex<Entry>>;

/// A slot as the search index holds it: ordered by address, which tells slots apart.
#[derive(Clone)]
pub(super) struct SlotRef(pub(super) Slot);

impl Ord for SlotRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        Arc::as_ptr(&self.0).cmp(&Arc::as_ptr(&other.0))
    }
}

impl PartialOrd for SlotRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SlotRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SlotRef {}

impl Entry {
    /// Whether a thing is there.
    pub(super) fn is_present(&self) -> bool {
        !matches!(self, Entry::Absent)
    }

    /// The thing, for reading; a cold thing is parsed into a copy and stays cold.
    pub(super) fn peek(&self) -> Result<Option<Cow<'_, Thing>>> {
        Ok(match self {
            Entry::Absent => None,
            Entry::Hot(t) => Some(Cow::Borrowed(t)),
            Entry::Cold(bytes) => Some(Cow::Owned(parse(bytes)?)),
        })
    }

    /// The thing, for a command: a cold thing is parsed and becomes hot.
    pub(super) fn heat(&mut self, slot: &Slot, hot: &HotSet) -> Result<Option<&mut Thing>> {
        if let Entry::Cold(bytes) = self {
            *self = Entry::Hot(parse(bytes)?);
            hot.became_hot(slot);
        }
        Ok(match self {
            Entry::Hot(t) => Some(t),
            _ => None,
        })
    }
}

fn parse(bytes: &[u8]) -> Result<Thing> {
    let value = serde_json::from_slice(bytes)
        .map_err(|e| Error::unavailable(format!("a cold thing does not parse: {e}")))?;
    Thing::from_full_json(value)
}

/// Counts hot things and cools the oldest when there are too many.
pub(super) struct HotSet {
    /// 0: unlimited (nothing is ever cooled).
    max: usize,
    count: AtomicUsize,
    queue: Mutex<VecDeque<Weak<Mutex<Entry>>>>,
}

impl HotSet {
    pub(super) fn new(max: usize) -> Self {
        HotSet {
            max,
            count: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether things may be cooled at all.
    pub(super) fn limited(&self) -> bool {
        self.max > 0
    }

    /// Records that the slot's entry just became `Hot` (the caller holds the slot lock).
    pub(super) fn became_hot(&self, slot: &Slot) {
        if self.limited() {
            self.count.fetch_add(1, Ordering::Relaxed);
            super::lock(&self.queue).push_back(Arc::downgrade(slot));
        }
    }

    /// Records that a `Hot` entry stopped being hot (deleted).
    pub(super) fn became_cold(&self) {
        if self.limited() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Cools the things made hot longest ago until at most `max` are hot. Never waits for a
    /// slot: a busy thing goes to the back of the queue. Call it holding no slot lock.
    pub(super) fn cool(&self) {
        if !self.limited() || self.count.load(Ordering::Relaxed) <= self.max {
            return;
        }
        let mut queue = super::lock(&self.queue);
        let mut budget = queue.len();
        while budget > 0 && self.count.load(Ordering::Relaxed) > self.max {
            budget -= 1;
            let Some(weak) = queue.pop_front() else { break };
            // A slot that is gone was absent (it is only dropped then): nothing to count.
            let Some(slot) = weak.upgrade() else { continue };
            let Ok(mut entry) = slot.try_lock() else {
                queue.push_back(weak);
                continue;
            };
            // Stale entries (cooled or deleted since) are simply dropped from the queue.
            if let Entry::Hot(thing) = &*entry {
                *entry = Entry::Cold(thing.to_full_vec().into());
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// How many things are hot (only counted when limited).
    #[cfg(test)]
    pub(super) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}
