//! [`HistorySink`]: turns events into points, one per changed leaf under the recorded paths.
//!
//! From an event at path `P` the sink takes the regions the event replaced: `P` itself for
//! `created`, `modified` and `deleted`; for `merged`, every position where the patch holds a
//! non-object (a value or a `null`), while positions where the patch holds an object only
//! become objects. Then, from the thing *after* the event:
//! - every leaf (number, string, bool, null, or array, recorded whole) inside a replaced region
//!   that the configuration selects gets a point with the event's time and revision, even if
//!   its value did not change (a report of the same value is a sample);
//! - every recorded path inside a replaced region that is no longer a leaf (removed, or now an
//!   object), and every recorded path where a merge put an object, gets a tombstone
//!   (`value: None`), unless its newest point already is one.
//!
//! A deleted thing (`deleted` at `/`) tombstones every recorded path and gets a tombstone at
//! `/` itself, which ends the incarnation: its history stays until retention removes it, but a
//! thing created again under the id is answered only what came after ([`History::deleted_at`]). Events without a thing that are not deletions (changes a peer sent
//! for a thing this instance does not hold) are skipped.

use std::sync::Arc;

use serde_json::Value;

use super::{History, HistoryConfig, PathSummary, Point};
use crate::model::{PathPattern, Pointer, Thing, Timestamp};
use crate::protocol::{EventAction, ThingEvent};
use crate::sink::Sink;

/// The [`Sink`] that records history; register it with [`crate::Twins::add_sink`].
pub struct HistorySink {
    history: Arc<dyn History>,
    paths: Vec<PathPattern>,
    exclude: Vec<PathPattern>,
    max_value_bytes: usize,
}

impl std::fmt::Debug for HistorySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistorySink")
            .field("paths", &self.paths)
            .field("exclude", &self.exclude)
            .finish_non_exhaustive()
    }
}

impl HistorySink {
    /// A sink recording into `history` what `config` selects.
    pub fn new(history: Arc<dyn History>, config: &HistoryConfig) -> Self {
        HistorySink {
            history,
            paths: config.paths.clone(),
            exclude: config.exclude.clone(),
            max_value_bytes: config.max_value_bytes,
        }
    }

    /// The points an event produces, in path order within each region.
    pub fn points(&self, event: &ThingEvent, thing: Option<&Thing>) -> Vec<(Pointer, Point)> {
        let mut out = Recorder {
            sink: self,
            time: event.timestamp,
            revision: event.revision,
            points: Vec::new(),
        };
        let Some(thing) = thing else {
            if event.action == EventAction::Deleted && event.path.is_root() {
                out.tombstones(&event.path, None, &self.recorded(event, &event.path));
                // Marks the end of this incarnation ([`History::deleted_at`]).
                out.push(Pointer::root(), None);
            }
            return out.points;
        };
        if !self.may_select_below(&event.path) {
            return out.points;
        }
        let recorded = self.recorded(event, &event.path);
        match (&event.action, &event.value) {
            (EventAction::Merged, Some(patch)) => {
                out.merged(&event.path, patch, thing, &recorded);
            }
            _ => out.replaced(&event.path, thing, &recorded),
        }
        out.points
    }

    /// Whether a path is recorded: inside `paths` and outside `exclude`.
    fn selects(&self, path: &Pointer) -> bool {
        self.paths.iter().any(|p| p.covers(path)) && !self.excludes(path)
    }

    fn excludes(&self, path: &Pointer) -> bool {
        self.exclude.iter().any(|p| p.covers(path))
    }

    /// Whether `path` or something below it may be recorded.
    fn may_select_below(&self, path: &Pointer) -> bool {
        !self.excludes(path)
            && self
                .paths
                .iter()
                .any(|p| p.covers(path) || p.is_below(path))
    }

    /// The recorded paths at or below `under` whose newest point is a value.
    fn recorded(&self, event: &ThingEvent, under: &Pointer) -> Vec<PathSummary> {
        match self.history.paths(&event.thing_id, under) {
            Ok(paths) => paths.into_iter().filter(|p| !p.removed).collect(),
            Err(e) => {
                tracing::warn!(thing = %event.thing_id, error = %e, "history: listing recorded paths failed");
                Vec::new()
            }
        }
    }
}

impl Sink for HistorySink {
    fn on_event(&self, event: &ThingEvent, thing: Option<&Thing>) {
        let points = self.points(event, thing);
        if points.is_empty() {
            return;
        }
        if let Err(e) = self.history.record(&event.thing_id, &points) {
            tracing::warn!(thing = %event.thing_id, revision = event.revision, error = %e,
                "history: recording points failed");
        }
    }
}

/// Collects the points of one event.
struct Recorder<'a> {
    sink: &'a HistorySink,
    time: Timestamp,
    revision: u64,
    points: Vec<(Pointer, Point)>,
}

impl Recorder<'_> {
    fn push(&mut self, path: Pointer, value: Option<Value>) {
        self.points.push((
            path,
            Point {
                time: self.time,
                revision: self.revision,
                value,
            },
        ));
    }

    /// The subtree at `path` was replaced: its selected leaves now, tombstones for recorded
    /// paths inside it that are no longer leaves.
    fn replaced(&mut self, path: &Pointer, thing: &Thing, recorded: &[PathSummary]) {
        if let Some(value) = thing.get(path) {
            self.leaves(path.clone(), value);
        }
        self.tombstones(path, Some(thing), recorded);
    }

    /// Tombstones for the recorded paths at or below `under` that are not leaves of `thing`.
    fn tombstones(&mut self, under: &Pointer, thing: Option<&Thing>, recorded: &[PathSummary]) {
        for r in recorded.iter().filter(|r| r.path.starts_with(under)) {
            let still_leaf = thing
                .and_then(|t| t.get(&r.path))
                .is_some_and(|v| !v.is_object());
            if !still_leaf && self.sink.selects(&r.path) {
                self.push(r.path.clone(), None);
            }
        }
    }

    /// Every selected leaf at or below `path` (whose value is `value`).
    fn leaves(&mut self, path: Pointer, value: &Value) {
        if self.sink.excludes(&path) {
            return;
        }
        match value {
            Value::Object(members) => {
                for (key, v) in members {
                    let child = path.child(key);
                    if self.sink.may_select_below(&child) {
                        self.leaves(child, v);
                    }
                }
            }
            leaf => {
                if !self.sink.selects(&path) {
                    return;
                }
                let max = self.sink.max_value_bytes;
                if max > 0 && json_len(leaf) > max {
                    tracing::debug!(%path, "history: value above max_value_bytes not recorded");
                    return;
                }
                self.push(path, Some(leaf.clone()));
            }
        }
    }

    /// A merge patch at `path`: objects in the patch recurse, anything else replaced.
    fn merged(&mut self, path: &Pointer, patch: &Value, thing: &Thing, recorded: &[PathSummary]) {
        let Value::Object(members) = patch else {
            self.replaced(path, thing, recorded);
            return;
        };
        // A position the patch makes an object: a leaf recorded there is gone.
        if let Some(r) = recorded.iter().find(|r| &r.path == path)
            && thing.get(path).is_none_or(Value::is_object)
            && self.sink.selects(&r.path)
        {
            self.push(path.clone(), None);
        }
        for (key, v) in members {
            let child = path.child(key);
            if self.sink.may_select_below(&child) {
                self.merged(&child, v, thing, recorded);
            }
        }
    }
}

/// The length of a value's JSON, without building it for strings, numbers and literals.
fn json_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 2,
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        _ => serde_json::to_vec(v).map_or(usize::MAX, |b| b.len()),
    }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::history::{MemoryHistory, Order, Span};
    use crate::model::ThingId;
    use crate::policy::AuthContext;
    use crate::protocol::{Action, Headers, ThingCommand};
    use crate::{EngineConfig, Twins};

    const ID: &str = "t.hist:car";
    const F: &str = "/features/f/properties";

    struct Setup {
        twins: Twins,
        history: Arc<MemoryHistory>,
        id: ThingId,
    }

    fn setup(config: HistoryConfig) -> Setup {
        let twins = Twins::in_memory(EngineConfig::default());
        let history = Arc::new(MemoryHistory::new());
        twins.add_sink(Arc::new(HistorySink::new(history.clone(), &config)));
        Setup {
            twins,
            history,
            id: ThingId::new(ID).unwrap(),
        }
    }

    impl Setup {
        async fn apply(&self, action: Action, path: &str, value: Option<Value>) {
            let cmd = ThingCommand::new(
                self.id.clone(),
                action,
                Pointer::parse(path).unwrap(),
                value,
            );
            let system = AuthContext::system();
            let done = self.twins.apply(&system, cmd);
            tokio::time::timeout(Duration::from_secs(10), done)
                .await
                .expect("the command hung")
                .unwrap_or_else(|e| panic!("{action:?} {path}: {e}"));
        }

        /// (revision, value) of every point of a path, oldest first.
        fn series(&self, path: &str) -> Vec<(u64, Option<Value>)> {
            let mut out = Vec::new();
            self.history
                .scan(
                    &self.id,
                    &Pointer::parse(path).unwrap(),
                    Span::all(),
                    Order::Asc,
                    &mut |p| {
                        out.push((p.revision, p.value));
                        ControlFlow::Continue(())
                    },
                )
                .unwrap();
            out
        }

        fn paths(&self) -> Vec<String> {
            self.history
                .paths(&self.id, &Pointer::root())
                .unwrap()
                .into_iter()
                .map(|s| s.path.to_string())
                .collect()
        }
    }

    fn p(rest: &str) -> String {
        format!("{F}{rest}")
    }

    #[tokio::test]
    async fn creates_and_merges_record_the_resulting_leaves() {
        let s = setup(HistoryConfig::default());
        s.apply(
            Action::Create,
            "/",
            Some(json!({
                "attributes": {"loc": 1},
                "features": {"f": {
                    "properties": {"a": {"b": 1}, "s": "x", "empty": {}},
                    "desiredProperties": {"a": 5}
                }}
            })),
        )
        .await;
        assert_eq!(s.paths(), vec![p("/a/b"), p("/s")], "selected leaves only");
        assert_eq!(s.series(&p("/a/b")), vec![(1, Some(json!(1)))]);

        // A merge records what it set, from the thing after it; untouched leaves stay quiet.
        s.apply(Action::Merge, F, Some(json!({"a": {"b": 2, "c": [1, 2]}})))
            .await;
        assert_eq!(
            s.series(&p("/a/b")),
            vec![(1, Some(json!(1))), (2, Some(json!(2)))]
        );
        assert_eq!(
            s.series(&p("/a/c")),
            vec![(2, Some(json!([1, 2])))],
            "arrays whole"
        );
        assert_eq!(s.series(&p("/s")), vec![(1, Some(json!("x")))]);

        // A merge at the root (as replication sends) and a merge of a single leaf.
        s.apply(
            Action::Merge,
            "/",
            Some(json!({"features": {"f": {"properties": {"s": "y"}}}})),
        )
        .await;
        s.apply(Action::Merge, &p("/a/b"), Some(json!(3))).await;
        assert_eq!(
            s.series(&p("/s")),
            vec![(1, Some(json!("x"))), (3, Some(json!("y")))]
        );
        assert_eq!(s.series(&p("/a/b")).last(), Some(&(4, Some(json!(3)))));

        // A merge null removes: a tombstone.
        s.apply(Action::Merge, F, Some(json!({"s": null}))).await;
        assert_eq!(s.series(&p("/s")).last(), Some(&(5, None)));
    }

    #[tokio::test]
    async fn modifies_and_deletes_tombstone_what_disappears() {
        let s = setup(HistoryConfig::default());
        s.apply(
            Action::Create,
            "/",
            Some(json!({"features": {"f": {"properties": {"a": {"b": 1, "c": 2}, "s": 0}}}})),
        )
        .await;
        // A leaf replaces an object: the object's leaves are gone.
        s.apply(Action::Modify, &p("/a"), Some(json!(7))).await;
        assert_eq!(s.series(&p("/a")), vec![(2, Some(json!(7)))]);
        assert_eq!(s.series(&p("/a/b")), vec![(1, Some(json!(1))), (2, None)]);
        assert_eq!(s.series(&p("/a/c")), vec![(1, Some(json!(2))), (2, None)]);

        // An object replaces the leaf again (by merge): the leaf is gone, b is back.
        s.apply(Action::Merge, &p("/a"), Some(json!({"b": 3})))
            .await;
        assert_eq!(s.series(&p("/a")).last(), Some(&(3, None)));
        assert_eq!(s.series(&p("/a/b")).last(), Some(&(3, Some(json!(3)))));
        assert_eq!(s.series(&p("/a/c")).len(), 2, "no second tombstone");

        // Modifying the properties drops `s`, keeps writing `a/b` (the same value is a sample).
        s.apply(Action::Modify, F, Some(json!({"a": {"b": 3}})))
            .await;
        assert_eq!(s.series(&p("/s")), vec![(1, Some(json!(0))), (4, None)]);
        assert_eq!(s.series(&p("/a/b")).last(), Some(&(4, Some(json!(3)))));

        // Deleting the feature tombstones what is left under it.
        s.apply(Action::Delete, "/features/f", None).await;
        assert_eq!(s.series(&p("/a/b")).last(), Some(&(5, None)));
        let live: Vec<_> = s
            .history
            .paths(&s.id, &Pointer::root())
            .unwrap()
            .into_iter()
            .filter(|p| !p.removed)
            .collect();
        assert!(live.is_empty(), "{live:?}");
    }

    #[tokio::test]
    async fn a_deleted_thing_keeps_its_history_with_tombstones() {
        let s = setup(HistoryConfig::default());
        s.apply(
            Action::Create,
            "/",
            Some(json!({"features": {"f": {"properties": {"x": 1}}}})),
        )
        .await;
        s.apply(Action::Delete, "/", None).await;
        assert_eq!(s.series(&p("/x")), vec![(1, Some(json!(1))), (2, None)]);
        // Recreated (under the policy the first one left): revisions start again, time keeps
        // the order.
        tokio::time::sleep(Duration::from_millis(2)).await;
        s.apply(
            Action::Create,
            "/",
            Some(json!({"policyId": ID, "features": {"f": {"properties": {"x": 5}}}})),
        )
        .await;
        assert_eq!(
            s.series(&p("/x")),
            vec![(1, Some(json!(1))), (2, None), (1, Some(json!(5)))]
        );
    }

    #[tokio::test]
    async fn configuration_selects_excludes_and_limits_values() {
        let config = HistoryConfig {
            paths: vec![
                PathPattern::parse("/features/*/properties").unwrap(),
                PathPattern::parse("/attributes/loc").unwrap(),
            ],
            exclude: vec![PathPattern::parse("/features/camera").unwrap()],
            max_value_bytes: 16,
            ..HistoryConfig::default()
        };
        let s = setup(config);
        s.apply(
            Action::Create,
            "/",
            Some(json!({
                "attributes": {"loc": {"lat": 1.5}, "other": 1},
                "features": {
                    "camera": {"properties": {"frame": "abc"}},
                    "f": {"properties": {"small": "0123456789", "big": "0123456789abcdefghij"}}
                }
            })),
        )
        .await;
        assert_eq!(
            s.paths(),
            vec!["/attributes/loc/lat".to_owned(), p("/small")]
        );
    }

    #[test]
    fn events_without_a_thing_are_skipped_unless_the_thing_was_deleted() {
        let history = Arc::new(MemoryHistory::new());
        let sink = HistorySink::new(history.clone(), &HistoryConfig::default());
        let id = ThingId::new(ID).unwrap();
        let x = Pointer::parse(&p("/x")).unwrap();
        history
            .record(
                &id,
                &[(
                    x.clone(),
                    Point {
                        time: Timestamp::from_micros(1),
                        revision: 1,
                        value: Some(json!(1)),
                    },
                )],
            )
            .unwrap();
        let mut event = ThingEvent {
            thing_id: id.clone(),
            action: EventAction::Merged,
            path: Pointer::root(),
            value: None,
            revision: 0,
            timestamp: Timestamp::from_micros(2),
            headers: Headers::default(),
            provenance: None,
        };
        assert!(sink.points(&event, None).is_empty(), "a peer's change");
        event.action = EventAction::Deleted;
        event.revision = 2;
        let points = sink.points(&event, None);
        let paths: Vec<(&Pointer, &Option<Value>)> =
            points.iter().map(|(p, point)| (p, &point.value)).collect();
        // The recorded path's tombstone, and the one at `/` that ends the incarnation.
        assert_eq!(paths, [(&x, &None), (&Pointer::root(), &None)]);
        history.record(&id, &points).unwrap();
        assert_eq!(history.deleted_at(&id).unwrap(), Some(event.timestamp));
        assert!(
            history
                .current_paths(&id, &Pointer::root())
                .unwrap()
                .is_empty()
        );
    }
}
