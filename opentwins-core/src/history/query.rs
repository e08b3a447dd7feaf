//! Queries on one path's series: time range, order, limit, cursor, and downsampling into
//! buckets aligned to multiples of the step since the Unix epoch.

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{History, HistoryError, Point, Result};
use crate::model::{Pointer, ThingId, Timestamp};

/// The number of points or buckets a query returns when it names no limit.
pub const DEFAULT_LIMIT: usize = 1000;
/// The largest limit a query may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// Which end of the range comes first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (the default).
    #[default]
    Asc,
    /// Newest first: the latest values without knowing when they were written.
    Desc,
}

impl FromStr for Order {
    type Err = HistoryError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "asc" => Ok(Order::Asc),
            "desc" => Ok(Order::Desc),
            _ => Err(invalid(format!(
                "The order '{s}' is not valid: use 'asc' or 'desc'."
            ))),
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        })
    }
}

/// A position in a path's series: a point's time and revision. As text (`next` / `cursor` in
/// the HTTP API) it is `{micros}.{revision}`, opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// The time.
    pub time: Timestamp,
    /// The revision (points at one time are ordered by revision).
    pub revision: u64,
}

impl Cursor {
    /// The first position at `time`.
    pub fn at_start_of(time: Timestamp) -> Self {
        Cursor { time, revision: 0 }
    }

    /// The last position at `time`.
    pub fn at_end_of(time: Timestamp) -> Self {
        Cursor {
            time,
            revision: u64::MAX,
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.time.as_micros(), self.revision)
    }
}

impl FromStr for Cursor {
    type Err = HistoryError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            invalid(format!(
                "The cursor '{s}' is not valid: pass the 'next' value of a previous answer."
            ))
        };
        let (t, r) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            time: Timestamp::from_micros(t.parse().map_err(|_| bad())?),
            revision: r.parse().map_err(|_| bad())?,
        })
    }
}

/// An inclusive range of positions in a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first position included.
    pub from: Cursor,
    /// The last position included.
    pub to: Cursor,
}

impl Span {
    /// Every position.
    pub fn all() -> Self {
        Span {
            from: Cursor::at_start_of(Timestamp::from_micros(0)),
            to: Cursor::at_end_of(Timestamp::from_micros(u64::MAX)),
        }
    }

    /// No position.
    pub fn empty() -> Self {
        Span {
            from: Cursor::at_end_of(Timestamp::from_micros(u64::MAX)),
            to: Cursor::at_start_of(Timestamp::from_micros(0)),
        }
    }

    /// Whether the span holds no position.
    pub fn is_empty(&self) -> bool {
        self.from > self.to
    }

    /// Whether `c` lies inside.
    pub fn contains(&self, c: Cursor) -> bool {
        self.from <= c && c <= self.to
    }
}

/// A query on one path.
///
/// The range is `from` (inclusive) to `to` (exclusive); either end may be open. Without `step`
/// the answer is up to `limit` raw points in `order`; with `step` it is up to `limit` non-empty
/// buckets. When more exist, the answer's `next` is a cursor: the same query with `cursor` set
/// to it continues exactly where the answer stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The oldest time included.
    pub from: Option<Timestamp>,
    /// The first time no longer included.
    pub to: Option<Timestamp>,
    /// The most points (or buckets) answered: 1..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
    pub limit: usize,
    /// Downsample into buckets this long (at least 1 µs).
    pub step: Option<Duration>,
    /// Oldest or newest first.
    pub order: Order,
    /// Continue after a previous answer (its `next`).
    pub cursor: Option<Cursor>,
    /// Only points after this time: the server sets it to the thing's last deletion
    /// ([`super::History::deleted_at`]), so a re-created thing answers its own points only.
    /// Never a query parameter.
    pub after: Option<Timestamp>,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        HistoryQuery {
            from: None,
            to: None,
            limit: DEFAULT_LIMIT,
            step: None,
            order: Order::Asc,
            cursor: None,
            after: None,
        }
    }
}

impl HistoryQuery {
    /// Checks the limit and the step.
    pub fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(invalid(format!(
                "The limit {} is not valid: it must be between 1 and {MAX_LIMIT}.",
                self.limit
            )));
        }
        if let Some(step) = self.step
            && step_micros(step) == 0
        {
            return Err(invalid(
                "The step must be at least 1us (e.g. '1s', '5m', '1h').",
            ));
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from > to
        {
            return Err(invalid(format!(
                "The range is not valid: 'from' ({from}) is after 'to' ({to})."
            )));
        }
        Ok(())
    }

    /// The positions the query covers, narrowed by the cursor.
    pub fn span(&self) -> Span {
        let mut span = Span::all();
        if let Some(from) = self.from {
            span.from = Cursor::at_start_of(from);
        }
        if let Some(to) = self.to {
            match to.as_micros().checked_sub(1) {
                Some(m) => span.to = Cursor::at_end_of(Timestamp::from_micros(m)),
                // Up to the epoch, exclusive: nothing.
                None => return Span::empty(),
            }
        }
        if let Some(after) = self.after {
            let next = Timestamp::from_micros(after.as_micros().saturating_add(1));
            span.from = span.from.max(Cursor::at_start_of(next));
        }
        if let Some(c) = self.cursor {
            match self.order {
                Order::Asc => span.from = span.from.max(c),
                Order::Desc => span.to = span.to.min(c),
            }
        }
        span
    }
}

/// One downsampled interval `[start, start + step)`.
///
/// `count`, `first` and `last` cover every value; `min`, `max` and `avg` only the numbers
/// (absent when the bucket holds none). Tombstones are not counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// The start, a multiple of the step since the Unix epoch.
    pub start: Timestamp,
    /// Number of values.
    pub count: u64,
    /// The smallest number, as recorded.
    pub min: Option<Value>,
    /// The largest number, as recorded.
    pub max: Option<Value>,
    /// The mean of the numbers.
    pub avg: Option<f64>,
    /// The oldest value.
    pub first: Value,
    /// The newest value.
    pub last: Value,
}

impl Bucket {
    /// `{"t", "count", "min", "max", "avg", "first", "last"}`; `min`, `max`, `avg` absent when the
    /// bucket holds no number.
    pub fn to_json(&self) -> Value {
        let mut m = Map::with_capacity(7);
        m.insert("t".into(), Value::String(self.start.to_string()));
        m.insert("count".into(), Value::from(self.count));
        if let (Some(min), Some(max), Some(avg)) = (&self.min, &self.max, self.avg) {
            m.insert("min".into(), min.clone());
            m.insert("max".into(), max.clone());
            m.insert("avg".into(), Value::from(avg));
        }
        m.insert("first".into(), self.first.clone());
        m.insert("last".into(), self.last.clone());
        Value::Object(m)
    }
}

/// What a query answers.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    /// Raw points, in the query's order.
    Points {
        /// The points.
        points: Vec<Point>,
        /// Where to continue, when more points exist.
        next: Option<Cursor>,
    },
    /// Buckets, in the query's order; only non-empty buckets are listed.
    Buckets {
        /// The buckets.
        buckets: Vec<Bucket>,
        /// Where to continue, when more buckets exist.
        next: Option<Cursor>,
    },
}

impl QueryResult {
    /// The cursor to continue with, if the answer was cut at the limit.
    pub fn next(&self) -> Option<Cursor> {
        match self {
            QueryResult::Points { next, .. } | QueryResult::Buckets { next, .. } => *next,
        }
    }
}

/// Parses a time parameter: RFC 3339 (`2026-05-01T12:00:00Z`), `now`, or a duration before
/// now (`-1h`, `-15m`, `-7d`).
pub fn parse_time(s: &str, now: Timestamp) -> Result<Timestamp> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(ago) = s.strip_prefix('-') {
        let d = humantime::parse_duration(ago.trim()).map_err(|e| {
            invalid(format!(
                "The time '-{ago}' is not valid: {e} (expected e.g. '-1h', '-30m')."
            ))
        })?;
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        return Ok(Timestamp::from_micros(
            now.as_micros().saturating_sub(micros),
        ));
    }
    Timestamp::parse(s).map_err(|_| {
        invalid(format!(
            "The time '{s}' is not valid: use RFC 3339 (e.g. '2026-05-01T12:00:00Z'), 'now' or a duration before now (e.g. '-1h')."
        ))
    })
}

/// Parses a step (`30s`, `5m`, `1h`); it must be at least 1 µs.
pub fn parse_step(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        invalid(format!(
            "The step '{s}' is not valid: {e} (expected e.g. '1m')."
        ))
    })?;
    if step_micros(d) == 0 {
        return Err(invalid(format!(
            "The step '{s}' is not valid: it must be at least 1us."
        )));
    }
    Ok(d)
}

fn step_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn invalid(message: impl Into<String>) -> HistoryError {
    HistoryError::InvalidQuery(message.into())
}

/// [`History::query`]'s implementation, shared by every backend.
pub(super) fn run<H: History + ?Sized>(
    history: &H,
    thing: &ThingId,
    path: &Pointer,
    q: &HistoryQuery,
) -> Result<QueryResult> {
    q.validate()?;
    let span = q.span();
    match q.step {
        None => {
            let mut points = Vec::new();
            let mut next = None;
            if !span.is_empty() {
                history.scan(thing, path, span, q.order, &mut |p| {
                    if points.len() == q.limit {
                        next = Some(p.cursor());
                        return ControlFlow::Break(());
                    }
                    points.push(p);
                    ControlFlow::Continue(())
                })?;
            }
            Ok(QueryResult::Points { points, next })
        }
        Some(step) => {
            let step = step_micros(step);
            let mut acc = Downsampler::new(step, q.limit, q.order);
            if !span.is_empty() {
                history.scan(thing, path, span, q.order, &mut |p| acc.add(p))?;
            }
            let (buckets, next) = acc.finish();
            Ok(QueryResult::Buckets { buckets, next })
        }
    }
}

/// Folds points arriving in one order into buckets, up to a limit.
pub(super) struct Downsampler {
    step: u64,
    limit: usize,
    order: Order,
    buckets: Vec<Acc>,
    next: Option<Cursor>,
}

impl Downsampler {
    pub(super) fn new(step: u64, limit: usize, order: Order) -> Self {
        Downsampler {
            step: step.max(1),
            limit,
            order,
            buckets: Vec::new(),
            next: None,
        }
    }

    /// Adds the next point of the scan; `Break` once a bucket beyond the limit begins.
    pub(super) fn add(&mut self, p: Point) -> ControlFlow<()> {
        let Some(value) = p.value else {
            return ControlFlow::Continue(());
        };
        let t = p.time.as_micros();
        let start = t - t % self.step;
        let key = (p.time, p.revision);
        if self.buckets.last().is_none_or(|b| b.start != start) {
            if self.buckets.len() == self.limit {
                self.next = Some(match self.order {
                    Order::Asc => Cursor::at_start_of(Timestamp::from_micros(start)),
                    Order::Desc => Cursor::at_end_of(Timestamp::from_micros(
                        start.saturating_add(self.step - 1),
                    )),
                });
                return ControlFlow::Break(());
            }
            self.buckets.push(Acc::new(start, key, value));
            return ControlFlow::Continue(());
        }
        if let Some(b) = self.buckets.last_mut() {
            b.add(key, value);
        }
        ControlFlow::Continue(())
    }

    pub(super) fn finish(self) -> (Vec<Bucket>, Option<Cursor>) {
        let buckets = self.buckets.into_iter().map(Acc::finish).collect();
        (buckets, self.next)
    }
}

/// One bucket being filled.
struct Acc {
    start: u64,
    count: u64,
    numbers: u64,
    sum: f64,
    min: Option<(f64, Value)>,
    max: Option<(f64, Value)>,
    first: ((Timestamp, u64), Value),
    last: ((Timestamp, u64), Value),
}

impl Acc {
    fn new(start: u64, key: (Timestamp, u64), value: Value) -> Self {
        let mut acc = Acc {
            start,
            count: 0,
            numbers: 0,
            sum: 0.0,
            min: None,
            max: None,
            first: (key, value.clone()),
            last: (key, value.clone()),
        };
        acc.add(key, value);
        acc
    }

    fn add(&mut self, key: (Timestamp, u64), value: Value) {
        self.count += 1;
        if let Some(x) = value.as_f64() {
            self.numbers += 1;
            self.sum += x;
            if self.min.as_ref().is_none_or(|(m, _)| x < *m) {
                self.min = Some((x, value.clone()));
            }
            if self.max.as_ref().is_none_or(|(m, _)| x > *m) {
                self.max = Some((x, value.clone()));
            }
        }
        if key < self.first.0 {
            self.first = (key, value);
        } else if key > self.last.0 {
            self.last = (key, value);
        }
    }

    fn finish(self) -> Bucket {
        Bucket {
            start: Timestamp::from_micros(self.start),
            count: self.count,
            avg: (self.numbers > 0).then(|| self.sum / self.numbers as f64),
            min: self.min.map(|(_, v)| v),
            max: self.max.map(|(_, v)| v),
            first: self.first.1,
            last: self.last.1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::history::MemoryHistory;

    fn ts(micros: u64) -> Timestamp {
        Timestamp::from_micros(micros)
    }

    #[test]
    fn times_parse_absolute_relative_and_now() {
        let now = Timestamp::parse("2026-05-01T12:00:00Z").unwrap();
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(
            parse_time("-1h", now).unwrap(),
            Timestamp::parse("2026-05-01T11:00:00Z").unwrap()
        );
        assert_eq!(
            parse_time("2026-05-01T11:30:00.5Z", now).unwrap(),
            Timestamp::from_micros(now.as_micros() - 1_800_000_000 + 500_000)
        );
        assert_eq!(parse_time("-100000d", now).unwrap(), ts(0), "clamps");
        for bad in ["yesterday", "-1 parsec", "2026-13-01T00:00:00Z", ""] {
            let e = parse_time(bad, now).unwrap_err();
            assert_eq!(e.code(), "history:query.invalid", "{bad}");
        }
        assert_eq!(parse_step("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_step("0s").is_err());
        assert!(parse_step("1ns").is_err(), "below a microsecond");
        assert!(parse_step("soon").is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            time: ts(1_700_000_000_123_456),
            revision: 42,
        };
        assert_eq!(c.to_string(), "1700000000123456.42");
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        for bad in ["", "12", "a.b", "1.-2", "1.2.3"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
        assert_eq!("desc".parse::<Order>().unwrap(), Order::Desc);
        assert!("up".parse::<Order>().is_err());
    }

    #[test]
    fn validation_and_spans() {
        let q = HistoryQuery {
            limit: 0,
            ..HistoryQuery::default()
        };
        assert!(q.validate().is_err());
        let q = HistoryQuery {
            limit: MAX_LIMIT + 1,
            ..HistoryQuery::default()
        };
        assert!(q.validate().is_err());
        let q = HistoryQuery {
            from: Some(ts(10)),
            to: Some(ts(5)),
            ..HistoryQuery::default()
        };
        assert!(q.validate().is_err());
        let q = HistoryQuery {
            step: Some(Duration::from_nanos(10)),
            ..HistoryQuery::default()
        };
        assert!(q.validate().is_err());

        let q = HistoryQuery {
            from: Some(ts(10)),
            to: Some(ts(20)),
            ..HistoryQuery::default()
        };
        let s = q.span();
        assert!(s.contains(Cursor::at_start_of(ts(10))));
        assert!(s.contains(Cursor::at_end_of(ts(19))));
        assert!(!s.contains(Cursor::at_start_of(ts(20))), "to is exclusive");
        assert!(!s.contains(Cursor::at_end_of(ts(9))));
        let empty = HistoryQuery {
            from: Some(ts(10)),
            to: Some(ts(10)),
            ..HistoryQuery::default()
        };
        assert!(empty.span().is_empty());
        let zero = HistoryQuery {
            to: Some(ts(0)),
            ..HistoryQuery::default()
        };
        assert!(zero.span().is_empty());
    }

    fn series(points: &[(u64, u64, Option<Value>)]) -> (MemoryHistory, ThingId, Pointer) {
        let h = MemoryHistory::new();
        let thing = ThingId::new("t:q").unwrap();
        let path = Pointer::parse("/features/f/properties/x").unwrap();
        let batch: Vec<_> = points
            .iter()
            .map(|(t, r, v)| {
                (
                    path.clone(),
                    Point {
                        time: ts(*t),
                        revision: *r,
                        value: v.clone(),
                    },
                )
            })
            .collect();
        h.record(&thing, &batch).unwrap();
        (h, thing, path)
    }

    #[test]
    fn raw_queries_page_with_cursors_in_both_orders() {
        let pts: Vec<_> = (1..=7).map(|i| (i * 10, i, Some(json!(i)))).collect();
        let (h, thing, path) = series(&pts);
        for order in [Order::Asc, Order::Desc] {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let q = HistoryQuery {
                    from: Some(ts(20)),
                    to: Some(ts(70)),
                    limit: 2,
                    order,
                    cursor,
                    ..HistoryQuery::default()
                };
                let QueryResult::Points { points, next } = h.query(&thing, &path, &q).unwrap()
                else {
                    panic!("points expected")
                };
                assert!(points.len() <= 2);
                seen.extend(points.iter().map(|p| p.revision));
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let mut want = vec![2, 3, 4, 5, 6];
            if order == Order::Desc {
                want.reverse();
            }
            assert_eq!(seen, want, "{order}");
        }
    }

    #[test]
    fn buckets_page_at_bucket_boundaries() {
        // Two points per 100 µs bucket, buckets 0..5.
        let pts: Vec<_> = (0..10u64)
            .map(|i| (i * 50 + 1, i, Some(json!(i))))
            .collect();
        let (h, thing, path) = series(&pts);
        for order in [Order::Asc, Order::Desc] {
            let mut starts = Vec::new();
            let mut cursor = None;
            loop {
                let q = HistoryQuery {
                    step: Some(Duration::from_micros(100)),
                    limit: 2,
                    order,
                    cursor,
                    ..HistoryQuery::default()
                };
                let QueryResult::Buckets { buckets, next } = h.query(&thing, &path, &q).unwrap()
                else {
                    panic!("buckets expected")
                };
                for b in &buckets {
                    assert_eq!(b.count, 2, "a bucket is never split across pages");
                    starts.push(b.start.as_micros());
                }
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let mut want = vec![0, 100, 200, 300, 400];
            if order == Order::Desc {
                want.reverse();
            }
            assert_eq!(starts, want, "{order}");
        }
    }

    #[test]
    fn buckets_aggregate_numbers_and_skip_tombstones() {
        let (h, thing, path) = series(&[
            (1_000, 1, Some(json!(3))),
            (1_500, 2, Some(json!("on"))),
            (1_700, 3, None),
            (1_900, 4, Some(json!(1.5))),
            (2_100, 5, Some(json!("off"))),
            (3_000, 6, None),
        ]);
        let q = HistoryQuery {
            step: Some(Duration::from_millis(1)),
            ..HistoryQuery::default()
        };
        let QueryResult::Buckets { buckets, next } = h.query(&thing, &path, &q).unwrap() else {
            panic!("buckets expected")
        };
        assert_eq!(next, None);
        let json: Vec<Value> = buckets.iter().map(Bucket::to_json).collect();
        assert_eq!(
            json,
            vec![
                json!({"t": "1970-01-01T00:00:00.001000Z", "count": 3, "min": 1.5, "max": 3,
                       "avg": 2.25, "first": 3, "last": 1.5}),
                json!({"t": "1970-01-01T00:00:00.002000Z", "count": 1,
                       "first": "off", "last": "off"}),
            ]
        );
    }

    /// One bucket computed the obvious way.
    #[derive(Debug, PartialEq)]
    struct Naive {
        count: u64,
        min: Option<f64>,
        max: Option<f64>,
        avg: Option<f64>,
        first: Value,
        last: Value,
    }

    fn naive(points: &[(u64, u64, Option<Value>)], step: u64) -> BTreeMap<u64, Naive> {
        let mut sorted: Vec<_> = points.to_vec();
        sorted.sort_by_key(|(t, r, _)| (*t, *r));
        sorted.dedup_by_key(|(t, r, _)| (*t, *r));
        let mut groups: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
        for (t, _, v) in sorted {
            if let Some(v) = v {
                groups.entry(t / step * step).or_default().push(v);
            }
        }
        groups
            .into_iter()
            .map(|(start, vs)| {
                let nums: Vec<f64> = vs.iter().filter_map(Value::as_f64).collect();
                let b = Naive {
                    count: vs.len() as u64,
                    min: nums.iter().copied().reduce(f64::min),
                    max: nums.iter().copied().reduce(f64::max),
                    avg: (!nums.is_empty()).then(|| nums.iter().sum::<f64>() / nums.len() as f64),
                    first: vs[0].clone(),
                    last: vs[vs.len() - 1].clone(),
                };
                (start, b)
            })
            .collect()
    }

    fn value() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            (-1000i64..1000).prop_map(|i| Some(json!(i))),
            (-1.0e6f64..1.0e6).prop_map(|f| Some(json!(f))),
            "[a-c]{0,2}".prop_map(|s| Some(json!(s))),
            Just(Some(json!(true))),
            Just(None),
        ]
    }

    proptest! {
        #[test]
        fn downsampling_matches_a_naive_computation(
            points in proptest::collection::vec((0u64..5_000, 0u64..4, value()), 0..80),
            step in 1u64..1_500,
            desc in any::<bool>(),
        ) {
            // Unique revisions per time, as events give (the same key twice keeps the last).
            let points: Vec<_> = points
                .into_iter()
                .enumerate()
                .map(|(i, (t, _, v))| (t, i as u64, v))
                .collect();
            let (h, thing, path) = series(&points);
            let order = if desc { Order::Desc } else { Order::Asc };
            let q = HistoryQuery {
                step: Some(Duration::from_micros(step)),
                limit: MAX_LIMIT,
                order,
                ..HistoryQuery::default()
            };
            let QueryResult::Buckets { mut buckets, next } = h.query(&thing, &path, &q).unwrap()
            else {
                panic!("buckets expected")
            };
            prop_assert_eq!(next, None);
            if desc {
                buckets.reverse();
            }
            let want = naive(&points, step);
            prop_assert_eq!(buckets.len(), want.len());
            for (b, (start, n)) in buckets.iter().zip(&want) {
                prop_assert_eq!(b.start.as_micros(), *start);
                prop_assert_eq!(b.count, n.count);
                prop_assert_eq!(b.min.as_ref().and_then(Value::as_f64), n.min);
                prop_assert_eq!(b.max.as_ref().and_then(Value::as_f64), n.max);
                match (b.avg, n.avg) {
                    (Some(a), Some(w)) => prop_assert!((a - w).abs() <= 1e-6 * w.abs().max(1.0)),
                    (a, w) => prop_assert_eq!(a, w),
                }
                prop_assert_eq!(&b.first, &n.first);
                prop_assert_eq!(&b.last, &n.last);
            }
        }
    }
}
