//! History: time series of property values, recorded from events and queried per path.
//!
//! A [`HistorySink`] turns every event of the engine into [`Point`]s, one per changed leaf
//! value under the configured [`HistoryConfig::paths`], and hands them to a [`History`]
//! backend: [`SledHistory`] (embedded, in the store's own sled database, so a point is as
//! durable as the write that produced it) or [`MemoryHistory`] (tests, embedding).
//! [`History::query`] answers raw points or downsampled [`Bucket`]s for a time range;
//! [`run_retention`] prunes old points periodically. docs/history.md describes the behaviour
//! and the HTTP API built on it.

use std::ops::ControlFlow;

use serde_json::{Map, Value, json};

use crate::model::{Pointer, ThingId, Timestamp};

mod config;
mod memory;
mod query;
mod sink;
mod sled;

#[cfg(test)]
mod contract;

pub use self::config::{DEFAULT_MAX_POINTS_PER_PATH, HistoryConfig, run_retention};
pub use self::memory::MemoryHistory;
pub use self::query::{
    Bucket, Cursor, DEFAULT_LIMIT, HistoryQuery, MAX_LIMIT, Order, QueryResult, Span, parse_step,
    parse_time,
};
pub use self::sink::HistorySink;
pub use self::sled::SledHistory;

/// Why a history operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A query parameter is invalid (`history:query.invalid`, 400).
    #[error("{0}")]
    InvalidQuery(String),
    /// The backend failed or holds data it cannot read (`history:history.unavailable`, 503).
    #[error("the history is unavailable: {0}")]
    Unavailable(String),
}

impl HistoryError {
    /// The HTTP status Ditto-style APIs answer with.
    pub fn status(&self) -> u16 {
        match self {
            HistoryError::InvalidQuery(_) => 400,
            HistoryError::Unavailable(_) => 503,
        }
    }

    /// The error code (`history:query.invalid`, `history:history.unavailable`).
    pub fn code(&self) -> &'static str {
        match self {
            HistoryError::InvalidQuery(_) => "history:query.invalid",
            HistoryError::Unavailable(_) => "history:history.unavailable",
        }
    }

    /// What the caller can do about it.
    pub fn description(&self) -> &'static str {
        match self {
            HistoryError::InvalidQuery(_) => {
                "Check the query parameters: from, to (RFC 3339, 'now' or '-1h'), limit (1..=10000), step (e.g. '1m'), order (asc|desc), cursor (as returned in 'next')."
            }
            HistoryError::Unavailable(_) => "The history backend failed; retry later.",
        }
    }

    /// The error as Ditto JSON: `{status, error, message, description}`.
    pub fn to_json(&self) -> Value {
        json!({
            "status": self.status(),
            "error": self.code(),
            "message": self.to_string(),
            "description": self.description(),
        })
    }
}

/// Shorthand for history results.
pub type Result<T, E = HistoryError> = std::result::Result<T, E>;

/// One recorded value of one path: when, at which revision of the thing, and the value
/// (`None`: the path was removed, a tombstone).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The event's timestamp.
    pub time: Timestamp,
    /// The thing's revision after the event.
    pub revision: u64,
    /// The value, or `None` when the event removed the path.
    pub value: Option<Value>,
}

impl Point {
    /// Where the point sits in a path's series (time, then revision).
    pub fn cursor(&self) -> Cursor {
        Cursor {
            time: self.time,
            revision: self.revision,
        }
    }

    /// `{"t": RFC 3339, "revision": N, "value": V}`; a tombstone is
    /// `{"t", "revision", "value": null, "removed": true}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::with_capacity(4);
        m.insert("t".into(), Value::String(self.time.to_string()));
        m.insert("revision".into(), Value::from(self.revision));
        m.insert("value".into(), self.value.clone().unwrap_or(Value::Null));
        if self.value.is_none() {
            m.insert("removed".into(), Value::Bool(true));
        }
        Value::Object(m)
    }
}

/// What is recorded for one path of a thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSummary {
    /// The path.
    pub path: Pointer,
    /// Number of points (tombstones included).
    pub count: u64,
    /// Time of the oldest point.
    pub first: Timestamp,
    /// Time of the newest point.
    pub last: Timestamp,
    /// Whether the newest point is a tombstone (the path was removed).
    pub removed: bool,
}

impl PathSummary {
    /// `{"path", "count", "first", "last"}`, plus `"removed": true` when the newest point is a
    /// tombstone.
    pub fn to_json(&self) -> Value {
        let mut m = Map::with_capacity(5);
        m.insert("path".into(), Value::String(self.path.to_string()));
        m.insert("count".into(), Value::from(self.count));
        m.insert("first".into(), Value::String(self.first.to_string()));
        m.insert("last".into(), Value::String(self.last.to_string()));
        if self.removed {
            m.insert("removed".into(), Value::Bool(true));
        }
        Value::Object(m)
    }
}

/// Where recorded points live. Backends implement the four required methods; [`History::query`]
/// (raw points or buckets, with limits and cursors) is built on [`History::scan`].
///
/// Every method is synchronous and quick enough to be called from a [`crate::sink::Sink`]
/// (a sled insert); `scan` and `prune` may take longer over large ranges and should run on a
/// blocking thread when called from async code.
pub trait History: Send + Sync + 'static {
    /// Records points of one thing atomically. A point with the same path, time and revision
    /// as a recorded one replaces it. Backends with a point limit per path drop the oldest
    /// points beyond it here.
    fn record(&self, thing: &ThingId, points: &[(Pointer, Point)]) -> Result<()>;

    /// Calls `visit` with every point of `path` inside `span`, oldest first ([`Order::Asc`]) or
    /// newest first, until it answers `Break`. `visit` must not call back into the history.
    fn scan(
        &self,
        thing: &ThingId,
        path: &Pointer,
        span: Span,
        order: Order,
        visit: &mut dyn FnMut(Point) -> ControlFlow<()>,
    ) -> Result<()>;

    /// The recorded paths of a thing at or below `under` (`/` for all), in the order of the
    /// paths' text.
    fn paths(&self, thing: &ThingId, under: &Pointer) -> Result<Vec<PathSummary>>;

    /// Removes every point older than `before`; returns how many were removed.
    fn prune(&self, before: Timestamp) -> Result<u64>;

    /// Answers a query on one path: raw points or, with a step, buckets
    /// ([`HistoryQuery`] says how limits and cursors work).
    fn query(&self, thing: &ThingId, path: &Pointer, query: &HistoryQuery) -> Result<QueryResult> {
        query::run(self, thing, path, query)
    }

    /// When the thing was last deleted: the time of the newest point at `/`, where
    /// [`HistorySink`] records one when a thing is deleted. `None` if it never was.
    fn deleted_at(&self, thing: &ThingId) -> Result<Option<Timestamp>> {
        let mut last = None;
        self.scan(
            thing,
            &Pointer::root(),
            Span::all(),
            Order::Desc,
            &mut |p| {
                last = Some(p.time);
                ControlFlow::Break(())
            },
        )?;
        Ok(last)
    }

    /// The history of a thing's current incarnation: like [`History::paths`] (without `/`,
    /// which only marks deletions), counting only the points after the thing's last deletion;
    /// paths without any are left out. A re-created id never shows what its predecessor held.
    fn current_paths(&self, thing: &ThingId, under: &Pointer) -> Result<Vec<PathSummary>> {
        let after = self.deleted_at(thing)?;
        let mut out = Vec::new();
        for mut summary in self.paths(thing, under)? {
            if summary.path.is_root() {
                continue;
            }
            if let Some(after) = after {
                if summary.last <= after {
                    continue;
                }
                if summary.first <= after {
                    let q = HistoryQuery {
                        after: Some(after),
                        ..HistoryQuery::default()
                    };
                    let (mut count, mut first) = (0, None);
                    self.scan(thing, &summary.path, q.span(), Order::Asc, &mut |p| {
                        count += 1;
                        first.get_or_insert(p.time);
                        ControlFlow::Continue(())
                    })?;
                    summary.count = count;
                    summary.first = first.unwrap_or(summary.last);
                }
            }
            out.push(summary);
        }
        Ok(out)
    }
}
