//! The [`History`] contract, run against every backend: ordering, ranges in both orders,
//! replacement of a point, path listing with counts, tombstones, pruning, the point limit.

use std::ops::ControlFlow;

use serde_json::{Value, json};

use super::{DEFAULT_MAX_POINTS_PER_PATH, History, MemoryHistory, Order, Point, SledHistory, Span};
use crate::history::Cursor;
use crate::model::{Pointer, ThingId, Timestamp};

fn thing(s: &str) -> ThingId {
    ThingId::new(s).unwrap()
}

fn path(s: &str) -> Pointer {
    Pointer::parse(s).unwrap()
}

fn pt(path_: &str, micros: u64, revision: u64, value: Option<Value>) -> (Pointer, Point) {
    (
        path(path_),
        Point {
            time: Timestamp::from_micros(micros),
            revision,
            value,
        },
    )
}

fn scan(h: &dyn History, t: &ThingId, p: &str, span: Span, order: Order) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    h.scan(t, &path(p), span, order, &mut |pt| {
        out.push((pt.time.as_micros(), pt.revision));
        ControlFlow::Continue(())
    })
    .unwrap();
    out
}

fn span(from: (u64, u64), to: (u64, u64)) -> Span {
    let c = |(m, r): (u64, u64)| Cursor {
        time: Timestamp::from_micros(m),
        revision: r,
    };
    Span {
        from: c(from),
        to: c(to),
    }
}

const X: &str = "/features/f/properties/x";
const XY: &str = "/features/f/properties/xy";
const XA: &str = "/features/f/properties/x/a";

fn ranges_and_order(h: &dyn History) {
    let t = thing("c:one");
    // Recorded out of order, across two batches, with neighbours that share prefixes.
    h.record(
        &t,
        &[
            pt(X, 300, 3, Some(json!(3))),
            pt(X, 100, 1, Some(json!(1))),
            pt(XY, 150, 9, Some(json!("y"))),
        ],
    )
    .unwrap();
    h.record(
        &t,
        &[
            pt(X, 200, 2, Some(json!(2))),
            pt(X, 200, 4, Some(json!(4))),
            pt(XA, 250, 5, Some(json!(true))),
        ],
    )
    .unwrap();
    h.record(&thing("c:one2"), &[pt(X, 1, 1, Some(json!(0)))])
        .unwrap();
    let all = Span::all();
    assert_eq!(
        scan(h, &t, X, all, Order::Asc),
        vec![(100, 1), (200, 2), (200, 4), (300, 3)]
    );
    assert_eq!(
        scan(h, &t, X, all, Order::Desc),
        vec![(300, 3), (200, 4), (200, 2), (100, 1)]
    );
    assert_eq!(
        scan(h, &t, X, span((200, 3), (300, 2)), Order::Asc),
        vec![(200, 4)],
        "inclusive bounds on (time, revision)"
    );
    assert_eq!(scan(h, &t, X, Span::empty(), Order::Asc), vec![]);
    assert_eq!(scan(h, &t, XY, all, Order::Asc), vec![(150, 9)]);
    assert_eq!(scan(h, &thing("c:none"), X, all, Order::Asc), vec![]);

    // Break stops the scan.
    let mut n = 0;
    h.scan(&t, &path(X), all, Order::Asc, &mut |_| {
        n += 1;
        ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!(n, 1);

    // The same (time, revision) again replaces the value and does not count twice.
    h.record(&t, &[pt(X, 300, 3, Some(json!(33)))]).unwrap();
    let mut last = None;
    h.scan(&t, &path(X), all, Order::Desc, &mut |p| {
        last = p.value;
        ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!(last, Some(json!(33)));

    let listed: Vec<_> = h
        .paths(&t, &Pointer::root())
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.path.to_string(),
                s.count,
                s.first.as_micros(),
                s.last.as_micros(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (X.to_owned(), 4, 100, 300),
            (XA.to_owned(), 1, 250, 250),
            (XY.to_owned(), 1, 150, 150),
        ]
    );
    let under_x: Vec<_> = h
        .paths(&t, &path(X))
        .unwrap()
        .into_iter()
        .map(|s| s.path.to_string())
        .collect();
    assert_eq!(under_x, vec![X, XA], "'/x' is not a prefix of '/xy'");
    assert!(
        h.paths(&thing("c:none"), &Pointer::root())
            .unwrap()
            .is_empty()
    );
}

fn tombstones_and_prune(h: &dyn History) {
    let t = thing("c:two");
    h.record(
        &t,
        &[
            pt(X, 1_000, 1, Some(json!(1))),
            pt(XY, 1_000, 1, Some(json!(1))),
        ],
    )
    .unwrap();
    h.record(&t, &[pt(X, 2_000, 2, None)]).unwrap();
    let s = h.paths(&t, &Pointer::root()).unwrap();
    assert!(s[0].removed && !s[1].removed, "{s:?}");
    let mut values = Vec::new();
    h.scan(&t, &path(X), Span::all(), Order::Asc, &mut |p| {
        values.push(p.value);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(values, vec![Some(json!(1)), None]);

    // Prune before 1500: X keeps its tombstone, XY goes entirely.
    assert_eq!(h.prune(Timestamp::from_micros(1_500)).unwrap(), 2);
    let s = h.paths(&t, &Pointer::root()).unwrap();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].count, s[0].first.as_micros()), (1, 2_000));
    assert_eq!(h.prune(Timestamp::from_micros(1_500)).unwrap(), 0);
    // A series pruned empty and then written again counts from zero.
    h.record(&t, &[pt(XY, 3_000, 3, Some(json!(3)))]).unwrap();
    let s = h.paths(&t, &path(XY)).unwrap();
    assert_eq!(s[0].count, 1);
    assert_eq!(h.prune(Timestamp::from_micros(u64::MAX)).unwrap(), 2);
    assert!(h.paths(&t, &Pointer::root()).unwrap().is_empty());
}

fn point_limit(h: &dyn History) {
    let t = thing("c:three");
    for i in 1..=5u64 {
        h.record(&t, &[pt(X, i * 10, i, Some(json!(i)))]).unwrap();
    }
    // One batch beyond the limit by more than one.
    let batch: Vec<_> = (6..=9u64)
        .map(|i| pt(X, i * 10, i, Some(json!(i))))
        .collect();
    h.record(&t, &batch).unwrap();
    assert_eq!(
        scan(h, &t, X, Span::all(), Order::Asc),
        vec![(70, 7), (80, 8), (90, 9)]
    );
    let s = h.paths(&t, &Pointer::root()).unwrap();
    assert_eq!((s[0].count, s[0].first.as_micros()), (3, 70));
}

fn suite(make: &dyn Fn(usize) -> Box<dyn History>) {
    ranges_and_order(make(0).as_ref());
    tombstones_and_prune(make(0).as_ref());
    point_limit(make(3).as_ref());
}

/// A backend as constructed, without `with_max_points`, keeps the newest
/// [`DEFAULT_MAX_POINTS_PER_PATH`] points of a path: writing past the cap drops the oldest.
fn default_cap(h: &dyn History) {
    let t = thing("c:cap");
    let cap = DEFAULT_MAX_POINTS_PER_PATH as u64;
    let total = cap + 25;
    // In batches as a busy writer's events would come, then one by one past the cap.
    let mut i = 1;
    while i <= total {
        let end = if i + 500 <= cap { i + 499 } else { i };
        let batch: Vec<_> = (i..=end)
            .map(|n| pt(X, n * 10, n, Some(json!(n))))
            .collect();
        h.record(&t, &batch).unwrap();
        i = end + 1;
    }
    // Another path of the same thing is capped on its own.
    h.record(&t, &[pt(XY, 5, 1, Some(json!(1)))]).unwrap();
    let s = h.paths(&t, &Pointer::root()).unwrap();
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(s[0].count, cap, "the path holds exactly the cap");
    assert_eq!(s[0].first.as_micros(), 26 * 10, "the 25 oldest are gone");
    assert_eq!(s[0].last.as_micros(), total * 10, "the newest is kept");
    assert_eq!(s[1].count, 1);
    let kept = scan(h, &t, X, Span::all(), Order::Asc);
    assert_eq!(kept.len() as u64, cap);
    assert_eq!(kept.first(), Some(&(260, 26)));
    assert_eq!(kept.last(), Some(&(total * 10, total)));
    assert!(scan(h, &t, X, span((0, 0), (250, u64::MAX)), Order::Asc).is_empty());
}

#[test]
fn backends_cap_points_per_path_by_default() {
    assert_eq!(
        crate::history::HistoryConfig::default().max_points_per_path,
        DEFAULT_MAX_POINTS_PER_PATH
    );
    default_cap(&MemoryHistory::new());
    let db = ::sled::Config::new().temporary(true).open().unwrap();
    default_cap(&SledHistory::open(&db).unwrap());
}

#[test]
fn memory_backend_keeps_the_contract() {
    suite(&|n| Box::new(MemoryHistory::new().with_max_points(n)));
}

#[test]
fn sled_backend_keeps_the_contract() {
    suite(&|n| {
        let db = ::sled::Config::new().temporary(true).open().unwrap();
        Box::new(SledHistory::open(&db).unwrap().with_max_points(n))
    });
}

#[test]
fn sled_history_survives_a_reopen_with_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let t = thing("c:four");
    {
        let db = ::sled::open(dir.path()).unwrap();
        let h = SledHistory::open(&db).unwrap();
        h.record(
            &t,
            &[pt(X, 1, 1, Some(json!(1))), pt(X, 2, 2, Some(json!(2)))],
        )
        .unwrap();
        db.flush().unwrap();
    }
    // The dropped handle's threads may still hold the lock for a moment.
    let db = (0..250)
        .find_map(|_| {
            let db = ::sled::open(dir.path()).ok();
            if db.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            db
        })
        .expect("the database reopens");
    let h = SledHistory::open(&db).unwrap();
    h.record(&t, &[pt(X, 3, 3, Some(json!(3)))]).unwrap();
    let s = h.paths(&t, &Pointer::root()).unwrap();
    assert_eq!(
        (s[0].count, s[0].first.as_micros(), s[0].last.as_micros()),
        (3, 1, 3)
    );
}
