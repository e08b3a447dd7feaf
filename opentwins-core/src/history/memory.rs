//! [`MemoryHistory`]: points in ordered maps behind one mutex, for tests and embedding.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Mutex, PoisonError};

use serde_json::Value;

use super::{
    Cursor, DEFAULT_MAX_POINTS_PER_PATH, History, Order, PathSummary, Point, Result, Span,
};
use crate::model::{Pointer, ThingId, Timestamp};

type Series = BTreeMap<Cursor, Option<Value>>;

/// The in-memory backend of [`History`]: nothing survives the process.
#[derive(Debug)]
pub struct MemoryHistory {
    max_points: usize,
    series: Mutex<BTreeMap<(ThingId, Pointer), Series>>,
}

impl Default for MemoryHistory {
    fn default() -> Self {
        MemoryHistory {
            max_points: DEFAULT_MAX_POINTS_PER_PATH,
            series: Mutex::default(),
        }
    }
}

impl MemoryHistory {
    /// An empty history keeping at most [`DEFAULT_MAX_POINTS_PER_PATH`] points per path
    /// (change it with [`MemoryHistory::with_max_points`]).
    pub fn new() -> Self {
        MemoryHistory::default()
    }

    /// Keeps at most `n` points per path (the oldest go on write); 0 = unlimited.
    pub fn with_max_points(mut self, n: usize) -> Self {
        self.max_points = n;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(ThingId, Pointer), Series>> {
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl History for MemoryHistory {
    fn record(&self, thing: &ThingId, points: &[(Pointer, Point)]) -> Result<()> {
        let mut all = self.lock();
        for (path, point) in points {
            let series = all.entry((thing.clone(), path.clone())).or_default();
            series.insert(point.cursor(), point.value.clone());
            if self.max_points > 0 {
                while series.len() > self.max_points {
                    series.pop_first();
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
        let all = self.lock();
        let Some(series) = all.get(&(thing.clone(), path.clone())) else {
            return Ok(());
        };
        let range = series.range(span.from..=span.to);
        let point = |(c, v): (&Cursor, &Option<Value>)| Point {
            time: c.time,
            revision: c.revision,
            value: v.clone(),
        };
        let _: ControlFlow<()> = match order {
            Order::Asc => range.map(point).try_for_each(&mut *visit),
            Order::Desc => range.rev().map(point).try_for_each(&mut *visit),
        };
        Ok(())
    }

    fn paths(&self, thing: &ThingId, under: &Pointer) -> Result<Vec<PathSummary>> {
        let all = self.lock();
        let start = (thing.clone(), under.clone());
        let mut summaries: Vec<PathSummary> = all
            .range(start..)
            .take_while(|((t, p), _)| t == thing && p.starts_with(under))
            .filter_map(|((_, path), series)| {
                let (first, _) = series.first_key_value()?;
                let (last, value) = series.last_key_value()?;
                Some(PathSummary {
                    path: path.clone(),
                    count: series.len() as u64,
                    first: first.time,
                    last: last.time,
                    removed: value.is_none(),
                })
            })
            .collect();
        // The order of the paths' text, as the sled backend lists them.
        summaries.sort_by_cached_key(|s| s.path.to_string());
        Ok(summaries)
    }

    fn prune(&self, before: Timestamp) -> Result<u64> {
        let mut all = self.lock();
        let mut removed = 0;
        all.retain(|_, series| {
            let keep = series.split_off(&Cursor::at_start_of(before));
            removed += series.len() as u64;
            *series = keep;
            !series.is_empty()
        });
        Ok(removed)
    }
}
