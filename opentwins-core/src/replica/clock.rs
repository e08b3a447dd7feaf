//! Hybrid logical clocks (Kulkarni et al., 2014): wall-clock milliseconds plus a logical counter,
//! tie-broken by the instance id, so every stamp is unique and causality is respected even when
//! the wall clocks of instances disagree.

use std::cmp::Ordering;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// A timestamp of one change: `(wall ms, counter, instance)`, totally ordered in that order.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch (the largest seen, not necessarily the local clock).
    pub wall_ms: u64,
    /// Orders stamps with the same `wall_ms`.
    pub counter: u32,
    /// The instance that made the change (breaks ties, names the origin).
    pub origin: Arc<str>,
}

impl Ord for Stamp {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.wall_ms, self.counter, &*self.origin).cmp(&(
            other.wall_ms,
            other.counter,
            &*other.origin,
        ))
    }
}

impl PartialOrd for Stamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Stamp {
    /// `{wall_ms}.{counter}@{origin}`, e.g. `1764080000000.3@edge-1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.counter, self.origin)
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stamp({self})")
    }
}

impl Stamp {
    /// Parses what `Display` writes.
    pub fn parse(s: &str) -> Result<Stamp> {
        let invalid = || {
            Error::field_invalid(format!(
                "'{s}' is not a clock stamp like '1764080000000.3@edge-1'."
            ))
        };
        let (time, origin) = s.split_once('@').ok_or_else(invalid)?;
        let (wall, counter) = time.split_once('.').ok_or_else(invalid)?;
        if origin.is_empty() {
            return Err(invalid());
        }
        Ok(Stamp {
            wall_ms: wall.parse().map_err(|_| invalid())?,
            counter: counter.parse().map_err(|_| invalid())?,
            origin: Arc::from(origin),
        })
    }
}

impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Stamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The clock of one instance. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Clock {
    origin: Arc<str>,
    last: Arc<Mutex<(u64, u32)>>,
    wall: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Clock {
    /// The clock of instance `origin`, reading the system clock.
    pub fn new(origin: &str) -> Clock {
        Clock::with_wall(origin, system_ms)
    }

    /// A clock reading wall time from `wall` (milliseconds): tests use skewed or frozen clocks.
    pub fn with_wall(origin: &str, wall: impl Fn() -> u64 + Send + Sync + 'static) -> Clock {
        Clock {
            origin: Arc::from(origin),
            last: Arc::new(Mutex::new((0, 0))),
            wall: Arc::new(wall),
        }
    }

    /// The instance this clock stamps for.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A new stamp, greater than every stamp this clock made or observed.
    pub fn now(&self) -> Stamp {
        let wall = (self.wall)();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        *last = if wall > last.0 {
            (wall, 0)
        } else {
            (last.0, last.1.saturating_add(1))
        };
        Stamp {
            wall_ms: last.0,
            counter: last.1,
            origin: self.origin.clone(),
        }
    }

    /// Whether `stamp` lies more than `skew_ms` milliseconds ahead of this clock's wall time.
    pub fn too_far_ahead(&self, stamp: &Stamp, skew_ms: u64) -> bool {
        stamp.wall_ms > (self.wall)().saturating_add(skew_ms)
    }

    /// Takes a stamp received from another instance into account, so later local stamps order
    /// after it even if this instance's wall clock is behind.
    pub fn observe(&self, remote: &Stamp) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if (remote.wall_ms, remote.counter) > *last {
            *last = (remote.wall_ms, remote.counter);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

    use super::*;

    #[test]
    fn stamps_grow_even_when_the_wall_clock_stalls_or_goes_back() {
        let t = Arc::new(AtomicU64::new(1000));
        let t2 = t.clone();
        let c = Clock::with_wall("a", move || t2.load(AtomicOrdering::Relaxed));
        let s1 = c.now();
        let s2 = c.now();
        t.store(900, AtomicOrdering::Relaxed);
        let s3 = c.now();
        t.store(2000, AtomicOrdering::Relaxed);
        let s4 = c.now();
        assert!(s1 < s2 && s2 < s3 && s3 < s4, "{s1} {s2} {s3} {s4}");
        assert_eq!((s3.wall_ms, s3.counter), (1000, 2));
        assert_eq!((s4.wall_ms, s4.counter), (2000, 0));
    }

    #[test]
    fn observing_a_remote_stamp_orders_later_local_stamps_after_it() {
        let behind = Clock::with_wall("b", || 10);
        let remote = Stamp {
            wall_ms: 5000,
            counter: 7,
            origin: Arc::from("a"),
        };
        behind.observe(&remote);
        let s = behind.now();
        assert!(s > remote, "{s} after {remote}");
    }

    #[test]
    fn stamps_round_trip_and_tie_break_by_origin() {
        let a = Stamp {
            wall_ms: 1,
            counter: 2,
            origin: Arc::from("edge-1"),
        };
        assert_eq!(Stamp::parse(&a.to_string()).unwrap(), a);
        let b = Stamp {
            origin: Arc::from("edge-2"),
            ..a.clone()
        };
        assert!(a < b);
        for bad in ["", "1.2", "x.2@a", "1.x@a", "1.2@"] {
            assert!(Stamp::parse(bad).is_err(), "{bad}");
        }
    }
}
