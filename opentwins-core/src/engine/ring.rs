//! The engine's event ring: the recent events every subscriber reads from, bounded in events
//! and in bytes.
//!
//! One ring is shared by all subscribers (SSE streams, WebSocket sessions, the MQTT bridge,
//! processors). An event stays in it until every subscriber that existed when it was published
//! has read it, or until the ring is over one of its bounds: then the oldest events are dropped
//! and a subscriber that had not read them is told it lagged. With no subscriber, nothing is
//! kept.
//!
//! The byte bound counts each event's size ([`Published::bytes`]) plus, once per policy version,
//! the size of the policies the buffered events hold on to: an event keeps the policy in force
//! when it happened (subscribers filter by it), so a ring of events that alternate with policy
//! changes would otherwise pin every version of that policy.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::subscribe::Published;

/// Why [`Receiver::recv`] returned no event (mirrors [`super::RecvError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RingError {
    /// This many events were dropped before this receiver read them.
    Lagged(u64),
    /// The ring was closed (the engine is gone) and every event was read.
    Closed,
}

/// The shared ring.
pub(super) struct Ring {
    state: Mutex<State>,
    notify: Notify,
    max_events: usize,
    max_bytes: usize,
}

struct Slot {
    /// `None` once every receiver read it.
    value: Option<Arc<Published>>,
    /// What it counts against the byte bound (its own size; policies are counted apart).
    bytes: usize,
    /// Receivers that have yet to read it.
    remaining: usize,
}

#[derive(Default)]
struct State {
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    head: u64,
    /// Bytes of the events still held plus those of the policies they hold.
    bytes: usize,
    /// Policies held by buffered events: address → (events holding it, its size).
    policies: HashMap<usize, (usize, usize)>,
    receivers: usize,
    closed: bool,
}

impl State {
    fn tail(&self) -> u64 {
        self.head + self.slots.len() as u64
    }

    /// Releases what slot `i` holds (read by all, or dropped).
    fn release(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if let Some(value) = slot.value.take() {
            self.bytes -= slot.bytes;
            if let Some(policy) = &value.policy {
                let key = Arc::as_ptr(policy) as usize;
                if let Some((count, size)) = self.policies.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        self.bytes -= *size;
                        self.policies.remove(&key);
                    }
                }
            }
        }
    }

    /// Drops released slots at the front.
    fn compact(&mut self) {
        while self.slots.front().is_some_and(|s| s.value.is_none()) {
            self.slots.pop_front();
            self.head += 1;
        }
    }
}

impl Ring {
    /// A ring of at most `max_events` events and `max_bytes` bytes (both at least 1; the newest
    /// event is always kept, however large).
    pub(super) fn new(max_events: usize, max_bytes: usize) -> Arc<Ring> {
        Arc::new(Ring {
            state: Mutex::default(),
            notify: Notify::new(),
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether anybody would receive a published event.
    pub(super) fn has_receivers(&self) -> bool {
        self.lock().receivers > 0
    }

    /// Publishes `value`; without receivers it is dropped at once.
    pub(super) fn send(&self, value: Arc<Published>) {
        {
            let mut st = self.lock();
            if st.receivers == 0 || st.closed {
                return;
            }
            let bytes = value.bytes();
            st.bytes += bytes;
            if let Some(policy) = &value.policy {
                let key = Arc::as_ptr(policy) as usize;
                let size = match st.policies.get_mut(&key) {
                    Some((count, _)) => {
                        *count += 1;
                        0
                    }
                    None => {
                        let size = policy.memory_estimate();
                        st.policies.insert(key, (1, size));
                        size
                    }
                };
                st.bytes += size;
            }
            let remaining = st.receivers;
            st.slots.push_back(Slot {
                value: Some(value),
                bytes,
                remaining,
            });
            while st.slots.len() > self.max_events
                || (st.bytes > self.max_bytes && st.slots.len() > 1)
            {
                st.release(0);
                st.slots.pop_front();
                st.head += 1;
                st.compact();
            }
        }
        self.notify.notify_waiters();
    }

    /// A receiver of the events published from now on.
    pub(super) fn subscribe(self: &Arc<Ring>) -> Receiver {
        let mut st = self.lock();
        st.receivers += 1;
        Receiver {
            ring: self.clone(),
            next: st.tail(),
        }
    }

    /// Closes the ring: receivers get the events still held, then [`RingError::Closed`].
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// Events and bytes held now (tests).
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let st = self.lock();
        let events = st.slots.iter().filter(|s| s.value.is_some()).count();
        (events, st.bytes)
    }
}

/// One subscriber's position in the ring.
pub(super) struct Receiver {
    ring: Arc<Ring>,
    /// Sequence number of the next event to read.
    next: u64,
}

impl Receiver {
    /// The next event; waits for one. Cancel-safe: an event is taken only when it is returned.
    pub(super) async fn recv(&mut self) -> Result<Arc<Published>, RingError> {
        loop {
            let notified = self.ring.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a send between the look and the wait wakes it.
            notified.as_mut().enable();
            if let Some(result) = try_recv(&self.ring, &mut self.next) {
                return result;
            }
            notified.await;
        }
    }
}

/// The next event for a receiver at `next` if one is there (or the reason there is none),
/// `None` to wait.
fn try_recv(ring: &Ring, next: &mut u64) -> Option<Result<Arc<Published>, RingError>> {
    let mut st = ring.lock();
    if *next < st.head {
        let missed = st.head - *next;
        *next = st.head;
        return Some(Err(RingError::Lagged(missed)));
    }
    let i = (*next - st.head) as usize;
    if i >= st.slots.len() {
        return st.closed.then_some(Err(RingError::Closed));
    }
    *next += 1;
    let slot = &mut st.slots[i];
    let value = slot.value.clone();
    slot.remaining = slot.remaining.saturating_sub(1);
    if slot.remaining == 0 {
        st.release(i);
        st.compact();
    }
    // Every receiver that existed when the event was published reads it before it is
    // released, so it is still there.
    value.map(Ok)
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut st = self.ring.lock();
        st.receivers -= 1;
        let from = self.next.saturating_sub(st.head) as usize;
        for i in from..st.slots.len() {
            let slot = &mut st.slots[i];
            if slot.value.is_some() {
                slot.remaining = slot.remaining.saturating_sub(1);
                if slot.remaining == 0 {
                    st.release(i);
                }
            }
        }
        st.compact();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::model::{PolicyId, ThingId, Timestamp};
    use crate::policy::{AuthContext, Policy};
    use crate::protocol::{EventAction, Headers, ThingEvent};

    const LIMIT: Duration = Duration::from_secs(10);

    fn event(revision: u64, value: Value, policy: Option<Arc<Policy>>) -> Arc<Published> {
        Arc::new(Published {
            event: ThingEvent {
                thing_id: ThingId::new("r:t").unwrap(),
                action: EventAction::Modified,
                path: crate::model::Pointer::parse("/attributes/a").unwrap(),
                value: Some(value),
                revision,
                timestamp: Timestamp::from_micros(revision),
                headers: Headers::default(),
                provenance: None,
            },
            policy,
        })
    }

    async fn next(rx: &mut Receiver) -> Result<u64, RingError> {
        tokio::time::timeout(LIMIT, rx.recv())
            .await
            .expect("an event or an error, not a hang")
            .map(|p| p.event.revision)
    }

    #[tokio::test]
    async fn every_receiver_reads_every_event_in_order_and_read_events_are_released() {
        let ring = Ring::new(16, 1 << 20);
        ring.send(event(0, json!(0), None));
        assert_eq!(ring.held(), (0, 0), "nothing is kept without receivers");
        let mut a = ring.subscribe();
        let mut b = ring.subscribe();
        for r in 1..=3 {
            ring.send(event(r, json!(r), None));
        }
        for r in 1..=3 {
            assert_eq!(next(&mut a).await, Ok(r));
        }
        assert_eq!(ring.held().0, 3, "b has not read them yet");
        for r in 1..=3 {
            assert_eq!(next(&mut b).await, Ok(r));
        }
        assert_eq!(ring.held(), (0, 0), "read by all: released");
        // A receiver that goes away releases what it had not read.
        ring.send(event(4, json!(4), None));
        drop(b);
        assert_eq!(ring.held().0, 1);
        assert_eq!(next(&mut a).await, Ok(4));
        assert_eq!(ring.held(), (0, 0));
        // A waiting receiver is woken by the next send.
        let ring2 = ring.clone();
        let waiter = tokio::spawn(async move { next(&mut a).await });
        tokio::task::yield_now().await;
        ring2.send(event(5, json!(5), None));
        assert_eq!(waiter.await.unwrap(), Ok(5));
    }

    #[tokio::test]
    async fn the_ring_is_bounded_in_events_and_in_bytes() {
        // 4 events at most.
        let ring = Ring::new(4, 1 << 30);
        let mut rx = ring.subscribe();
        for r in 1..=10 {
            ring.send(event(r, json!(r), None));
        }
        assert_eq!(ring.held().0, 4);
        assert_eq!(next(&mut rx).await, Err(RingError::Lagged(6)));
        assert_eq!(next(&mut rx).await, Ok(7));

        // 1 MiB at most: 100 values of 100 KiB leave about 10 in the ring.
        let ring = Ring::new(4096, 1 << 20);
        let mut slow = ring.subscribe();
        let big = Value::String("x".repeat(100 * 1024));
        for r in 1..=100 {
            ring.send(event(r, big.clone(), None));
        }
        let (events, bytes) = ring.held();
        assert!(bytes <= 1 << 20, "{bytes} bytes held");
        assert!((9..=10).contains(&events), "{events} events held");
        let Err(RingError::Lagged(missed)) = next(&mut slow).await else {
            panic!("the slow receiver lagged");
        };
        assert_eq!(missed, 100 - events as u64);
        assert_eq!(next(&mut slow).await, Ok(missed + 1));

        // One event larger than the bound is still delivered.
        let ring = Ring::new(4096, 1000);
        let mut rx = ring.subscribe();
        ring.send(event(1, Value::String("y".repeat(5000)), None));
        assert_eq!(next(&mut rx).await, Ok(1));
    }

    #[tokio::test]
    async fn policies_held_by_buffered_events_count_once_per_version() {
        let id = PolicyId::new("r:p").unwrap();
        let owner = AuthContext::new(["r:owner"]);
        let policy = |n: usize| {
            // Versions of one policy, each a distinct allocation of ~n entries.
            let mut p = Policy::default_for(id.clone(), &owner, Timestamp::from_micros(1));
            for i in 0..n {
                let mut e = crate::policy::PolicyEntry::new();
                e.set_subject(format!("r:user-{i}"), crate::policy::Subject::new("user"))
                    .unwrap();
                p.set_entry(format!("e{i}"), e).unwrap();
            }
            Arc::new(p)
        };
        let one = policy(200);
        let size = one.memory_estimate();
        assert!(size > 200 * 20, "{size}");
        let shared = Ring::new(4096, 1 << 30);
        let mut rx = shared.subscribe();
        for r in 1..=50 {
            shared.send(event(r, json!(r), Some(one.clone())));
        }
        let (_, bytes) = shared.held();
        assert!(
            bytes < size + 50 * 1000,
            "one version counted once: {bytes}"
        );
        for _ in 0..50 {
            next(&mut rx).await.unwrap();
        }
        assert_eq!(
            shared.held(),
            (0, 0),
            "its size is released with the last event"
        );
        // Every event under a new version of the policy counts that version.
        let versions = Ring::new(4096, 20 * size);
        let mut slow = versions.subscribe();
        for r in 1..=100 {
            versions.send(event(r, json!(r), Some(policy(200))));
        }
        let (events, bytes) = versions.held();
        assert!(bytes <= 20 * size, "{bytes}");
        assert!(
            events < 25,
            "at most ~20 versions are pinned, not 100: {events}"
        );
        assert!(matches!(next(&mut slow).await, Err(RingError::Lagged(_))));
        drop(slow);
        assert_eq!(versions.held(), (0, 0));
    }

    #[tokio::test]
    async fn closing_ends_receivers_after_what_is_held() {
        let ring = Ring::new(16, 1 << 20);
        let mut rx = ring.subscribe();
        ring.send(event(1, json!(1), None));
        ring.close();
        assert_eq!(next(&mut rx).await, Ok(1));
        assert_eq!(next(&mut rx).await, Err(RingError::Closed));
    }
}
