//! [`SledHistory`]: the embedded backend, one tree (`history`) in a sled database, usually the
//! store's own ([`crate::store::SledStore::db`]), so the store's group commit flushes the
//! points a write produced together with the write.
//!
//! Keys (thing ids and paths hold no control characters, so `\0` separates them):
//! - a point: `p` thing `\0` path `\0` micros (u64 BE) revision (u64 BE) → the value's JSON, or
//!   nothing for a tombstone. A path's points are one contiguous range ordered by time, then
//!   revision: a query is one range scan.
//! - a path's point count: `i` thing `\0` path → count (u64 BE). Listing a thing's paths is a
//!   prefix scan of these.
//!
//! Writers of one thing's points (the sink, under the engine's thing lock) and the pruner take
//! one of 64 stripe locks chosen by the thing id, so counts stay exact; each change of points
//! and count is one atomic `sled::Batch`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use super::{
    Cursor, DEFAULT_MAX_POINTS_PER_PATH, History, HistoryError, Order, PathSummary, Point, Result,
    Span,
};
use crate::model::{Pointer, ThingId, Timestamp};

const POINT: u8 = b'p';
const COUNT: u8 = b'i';
const STRIPES: usize = 64;
/// The most points the pruner removes under one stripe lock.
const PRUNE_CHUNK: usize = 512;

/// The sled backend of [`History`].
pub struct SledHistory {
    tree: ::sled::Tree,
    max_points: usize,
    stripes: Vec<Mutex<()>>,
}

impl std::fmt::Debug for SledHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledHistory")
            .field("max_points", &self.max_points)
            .finish_non_exhaustive()
    }
}

impl SledHistory {
    /// Opens the `history` tree of `db` (created if missing), keeping at most
    /// [`DEFAULT_MAX_POINTS_PER_PATH`] points per path (change it with
    /// [`SledHistory::with_max_points`]).
    pub fn open(db: &::sled::Db) -> Result<Self> {
        let tree = db.open_tree("history").map_err(unavailable)?;
        Ok(SledHistory {
            tree,
            max_points: DEFAULT_MAX_POINTS_PER_PATH,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    /// Keeps at most `n` points per path: a write beyond it removes the oldest; 0 = unlimited.
    pub fn with_max_points(mut self, n: usize) -> Self {
        self.max_points = n;
        self
    }

    fn stripe(&self, thing: &[u8]) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        thing.hash(&mut h);
        let i = (h.finish() % STRIPES as u64) as usize;
        self.stripes[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, key: &[u8]) -> Result<u64> {
        Ok(self
            .tree
            .get(key)
            .map_err(unavailable)?
            .map_or(0, |v| decode_u64(&v)))
    }

    /// Removes the oldest `n` points of the series under `prefix` (count key `count_key`,
    /// holding `count`); the caller holds the thing's stripe.
    fn trim(&self, prefix: &[u8], count_key: &[u8], count: u64, n: usize) -> Result<()> {
        let mut batch = ::sled::Batch::default();
        let mut removed = 0u64;
        for item in self.tree.scan_prefix(prefix).keys().take(n) {
            batch.remove(item.map_err(unavailable)?);
            removed += 1;
        }
        set_count(&mut batch, count_key, count.saturating_sub(removed));
        self.tree.apply_batch(batch).map_err(unavailable)
    }

    /// Prunes one path's points before `end` (an exclusive key), in chunks; returns how many.
    fn prune_series(
        &self,
        thing: &[u8],
        count_key: &[u8],
        prefix: &[u8],
        end: &[u8],
    ) -> Result<u64> {
        let mut total = 0;
        loop {
            let _stripe = self.stripe(thing);
            let mut batch = ::sled::Batch::default();
            let mut n = 0usize;
            for key in self.tree.range(prefix..end).keys().take(PRUNE_CHUNK) {
                batch.remove(key.map_err(unavailable)?);
                n += 1;
            }
            if n == 0 {
                return Ok(total);
            }
            let count = self.count(count_key)?.saturating_sub(n as u64);
            set_count(&mut batch, count_key, count);
            self.tree.apply_batch(batch).map_err(unavailable)?;
            total += n as u64;
            if n < PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }
}

impl History for SledHistory {
    fn record(&self, thing: &ThingId, points: &[(Pointer, Point)]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let _stripe = self.stripe(thing.as_str().as_bytes());
        let mut batch = ::sled::Batch::default();
        // Per path: its series prefix and its count including this batch.
        let mut counts: HashMap<Vec<u8>, (Vec<u8>, u64)> = HashMap::new();
        let mut written = std::collections::HashSet::new();
        for (path, point) in points {
            let prefix = series_prefix(thing, path);
            let key = point_key(&prefix, point.cursor());
            let count_key = count_key(thing, path);
            let (_, count) = match counts.entry(count_key) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let count = self.count(e.key())?;
                    e.insert((prefix, count))
                }
            };
            let fresh = written.insert(key.clone())
                && !self.tree.contains_key(&key).map_err(unavailable)?;
            if fresh {
                *count += 1;
            }
            let value = match &point.value {
                Some(v) => serde_json::to_vec(v).map_err(|e| {
                    HistoryError::Unavailable(format!("cannot encode a value: {e}"))
                })?,
                None => Vec::new(),
            };
            batch.insert(key, value);
        }
        for (count_key, (_, count)) in &counts {
            set_count(&mut batch, count_key, *count);
        }
        self.tree.apply_batch(batch).map_err(unavailable)?;
        if self.max_points > 0 {
            for (count_key, (prefix, count)) in &counts {
                let excess = count.saturating_sub(self.max_points as u64);
                if excess > 0 {
                    self.trim(prefix, count_key, *count, excess as usize)?;
                }
            }
        }
        Ok(())
    }

    fn scan(
        &self,
        thing: &ThingId,
        path: &Pointer,
        span: Span,
        order: Order,
        visit: &mut dyn FnMut(Point) -> ControlFlow<()>,
    ) -> Result<()> {
        if span.is_empty() {
            return Ok(());
        }
        let prefix = series_prefix(thing, path);
        let range = self
            .tree
            .range(point_key(&prefix, span.from)..=point_key(&prefix, span.to));
        let mut each = |item: std::result::Result<(::sled::IVec, ::sled::IVec), ::sled::Error>| {
            let (key, value) = item.map_err(unavailable)?;
            let point = decode_point(&key[prefix.len()..], &value)?;
            Ok::<_, HistoryError>(visit(point))
        };
        match order {
            Order::Asc => {
                for item in range {
                    if each(item)?.is_break() {
                        break;
                    }
                }
            }
            Order::Desc => {
                for item in range.rev() {
                    if each(item)?.is_break() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn paths(&self, thing: &ThingId, under: &Pointer) -> Result<Vec<PathSummary>> {
        let mut start = count_key(thing, &Pointer::root());
        start.pop(); // "/": every path's text starts with it
        let mut scan_from = start.clone();
        if !under.is_root() {
            scan_from.extend_from_slice(under.to_string().as_bytes());
        }
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&scan_from) {
            let (key, value) = item.map_err(unavailable)?;
            let text = std::str::from_utf8(&key[start.len()..])
                .map_err(|_| corrupt("a path is not UTF-8"))?;
            let path = Pointer::parse(text).map_err(|_| corrupt("a path is not a pointer"))?;
            // `/a/b` also prefixes `/a/bc`.
            if !path.starts_with(under) {
                continue;
            }
            let prefix = series_prefix(thing, &path);
            let mut series = self.tree.scan_prefix(&prefix);
            let Some(first) = series.next() else {
                continue;
            };
            let (first_key, first_value) = first.map_err(unavailable)?;
            let (last_key, last_value) = match series.next_back() {
                Some(last) => last.map_err(unavailable)?,
                None => (first_key.clone(), first_value.clone()),
            };
            let first = decode_point(&first_key[prefix.len()..], &first_value)?;
            let last = decode_point(&last_key[prefix.len()..], &last_value)?;
            out.push(PathSummary {
                path,
                count: decode_u64(&value),
                first: first.time,
                last: last.time,
                removed: last.value.is_none(),
            });
        }
        Ok(out)
    }

    fn prune(&self, before: Timestamp) -> Result<u64> {
        let mut total = 0;
        // Collect the series first: pruning rewrites the count keys being iterated.
        let mut series = Vec::new();
        for key in self.tree.scan_prefix([COUNT]).keys() {
            series.push(key.map_err(unavailable)?);
        }
        for count_key in series {
            let body = &count_key[1..];
            let sep = body
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| corrupt("a count key has no separator"))?;
            let thing = &body[..sep];
            let mut prefix = Vec::with_capacity(count_key.len() + 2);
            prefix.push(POINT);
            prefix.extend_from_slice(body);
            prefix.push(0);
            let end = point_key(&prefix, Cursor::at_start_of(before));
            total += self.prune_series(thing, &count_key, &prefix, &end)?;
            // A series pruned empty loses its count (under the stripe: a point may just have
            // been recorded).
            let _stripe = self.stripe(thing);
            if self.tree.scan_prefix(&prefix).next().is_none() {
                self.tree.remove(&count_key).map_err(unavailable)?;
            }
        }
        Ok(total)
    }
}

/// `p` thing `\0` path `\0`: the prefix of every point of a path.
fn series_prefix(thing: &ThingId, path: &Pointer) -> Vec<u8> {
    let path = path.to_string();
    let mut k = Vec::with_capacity(thing.as_str().len() + path.len() + 19);
    k.push(POINT);
    k.extend_from_slice(thing.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(path.as_bytes());
    k.push(0);
    k
}

/// `i` thing `\0` path.
fn count_key(thing: &ThingId, path: &Pointer) -> Vec<u8> {
    let path = path.to_string();
    let mut k = Vec::with_capacity(thing.as_str().len() + path.len() + 2);
    k.push(COUNT);
    k.extend_from_slice(thing.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(path.as_bytes());
    k
}

fn point_key(prefix: &[u8], c: Cursor) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 16);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&c.time.as_micros().to_be_bytes());
    k.extend_from_slice(&c.revision.to_be_bytes());
    k
}

/// A point from the key's suffix after its series prefix and the stored value.
fn decode_point(suffix: &[u8], value: &[u8]) -> Result<Point> {
    if suffix.len() != 16 {
        return Err(corrupt("a point key has the wrong length"));
    }
    let value = if value.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice::<Value>(value)
                .map_err(|_| corrupt("a point value is not JSON"))?,
        )
    };
    Ok(Point {
        time: Timestamp::from_micros(decode_u64(&suffix[..8])),
        revision: decode_u64(&suffix[8..]),
        value,
    })
}

fn decode_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

fn set_count(batch: &mut ::sled::Batch, count_key: &[u8], count: u64) {
    if count == 0 {
        batch.remove(count_key);
    } else {
        batch.insert(count_key, &count.to_be_bytes());
    }
}

fn unavailable(e: ::sled::Error) -> HistoryError {
    HistoryError::Unavailable(format!("sled: {e}"))
}

fn corrupt(what: &str) -> HistoryError {
    HistoryError::Unavailable(format!("corrupt history data: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_thing_path_time_then_revision() {
        let t = |s: &str| ThingId::new(s).unwrap();
        let p = |s: &str| Pointer::parse(s).unwrap();
        let c = |m: u64, r: u64| Cursor {
            time: Timestamp::from_micros(m),
            revision: r,
        };
        let keys = [
            point_key(&series_prefix(&t("a:x"), &p("/f/a")), c(5, 9)),
            point_key(&series_prefix(&t("a:x"), &p("/f/a")), c(256, 1)),
            point_key(&series_prefix(&t("a:x"), &p("/f/a")), c(256, 2)),
            point_key(&series_prefix(&t("a:x"), &p("/f/a")), c(u64::MAX, 0)),
            point_key(&series_prefix(&t("a:x"), &p("/f/a/b")), c(0, 0)),
            point_key(&series_prefix(&t("a:x"), &p("/f/ab")), c(0, 0)),
            point_key(&series_prefix(&t("a:xy"), &p("/f/a")), c(0, 0)),
        ];
        for w in keys.windows(2) {
            assert!(w[0] < w[1], "{:?} < {:?}", w[0], w[1]);
        }
        // A path's series never interleaves with a path it prefixes.
        let a = series_prefix(&t("a:x"), &p("/f/a"));
        let ab = series_prefix(&t("a:x"), &p("/f/ab"));
        assert!(!ab.starts_with(&a));
        let decoded = decode_point(&keys[2][a.len()..], b"1.5").unwrap();
        assert_eq!(decoded.cursor(), c(256, 2));
        assert_eq!(decoded.value, Some(serde_json::json!(1.5)));
        assert_eq!(decode_point(&keys[2][a.len()..], b"").unwrap().value, None);
        assert!(decode_point(b"short", b"1").is_err());
    }
}
