//! The latest-value slots between the event receiver and the workers: one pending frame per
//! thing, newest wins. Memory is bounded by the number of things, whatever the frame rate.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use opentwins_core::ThingId;

/// A frame waiting for inference.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) thing: ThingId,
    /// The frame value as found at the input path.
    pub(crate) value: serde_json::Value,
    /// The thing's revision when the frame was written.
    pub(crate) revision: u64,
    /// 1-based count of frames seen for this thing (gaps in the written values are skipped frames).
    pub(crate) seq: u64,
}

#[derive(Default)]
struct State {
    pending: HashMap<ThingId, Job>,
    /// Things with a pending frame and no frame in flight, oldest first (fair across things).
    ready: VecDeque<ThingId>,
    in_flight: HashSet<ThingId>,
    seq: HashMap<ThingId, u64>,
}

/// Pending frames, at most one per thing.
#[derive(Default)]
pub(crate) struct Slots {
    state: Mutex<State>,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Offers a new frame; returns `true` when it replaced an older pending frame of the same
    /// thing (which is then skipped).
    pub(crate) fn offer(&self, thing: ThingId, value: serde_json::Value, revision: u64) -> bool {
        let mut s = self.lock();
        let seq = {
            let n = s.seq.entry(thing.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let busy = s.in_flight.contains(&thing);
        let job = Job {
            thing: thing.clone(),
            value,
            revision,
            seq,
        };
        let replaced = s.pending.insert(thing.clone(), job).is_some();
        if !replaced && !busy {
            s.ready.push_back(thing);
        }
        replaced
    }

    /// Takes the next frame to process and marks its thing in flight.
    pub(crate) fn take(&self) -> Option<Job> {
        let mut s = self.lock();
        let thing = s.ready.pop_front()?;
        let job = s.pending.remove(&thing)?;
        s.in_flight.insert(thing);
        Some(job)
    }

    /// Marks `thing` done; returns `true` when a newer frame for it is waiting (now ready).
    pub(crate) fn finish(&self, thing: &ThingId) -> bool {
        let mut s = self.lock();
        s.in_flight.remove(thing);
        if s.pending.contains_key(thing) {
            s.ready.push_back(thing.clone());
            true
        } else {
            false
        }
    }

    /// Frames waiting (at most one per thing).
    pub(crate) fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn id(s: &str) -> ThingId {
        ThingId::new(s).unwrap()
    }

    #[test]
    fn newest_frame_wins_and_skips_are_reported() {
        let slots = Slots::default();
        assert!(!slots.offer(id("ns:a"), json!(1), 10));
        assert!(slots.offer(id("ns:a"), json!(2), 11));
        assert!(slots.offer(id("ns:a"), json!(3), 12));
        assert_eq!(slots.pending(), 1);
        let job = slots.take().unwrap();
        assert_eq!((job.value, job.revision, job.seq), (json!(3), 12, 3));
        assert!(slots.take().is_none());
        assert!(!slots.finish(&id("ns:a")));
    }

    #[test]
    fn a_thing_in_flight_is_not_handed_out_twice_and_things_take_turns() {
        let slots = Slots::default();
        slots.offer(id("ns:a"), json!("a1"), 1);
        slots.offer(id("ns:b"), json!("b1"), 1);
        let a = slots.take().unwrap();
        assert_eq!(a.thing, id("ns:a"));
        // A new frame for `a` while it is in flight waits; `b` goes first.
        assert!(!slots.offer(id("ns:a"), json!("a2"), 2));
        assert_eq!(slots.take().unwrap().thing, id("ns:b"));
        assert!(slots.take().is_none());
        assert!(slots.finish(&id("ns:a")));
        let a2 = slots.take().unwrap();
        assert_eq!((a2.value, a2.seq), (json!("a2"), 2));
    }
}
