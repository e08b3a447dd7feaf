use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::patch;

#[derive(Debug, Clone)]
enum Op {
    Modify(Pointer, Value),
    Merge(Pointer, Value),
    Delete(Pointer),
}

fn path() -> impl Strategy<Value = Pointer> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..4)
        .prop_map(|segs| Pointer::from_segments(segs).unwrap())
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i8>().prop_map(|n| json!(n)),
        prop::sample::select(vec!["x", "y"]).prop_map(|s| json!(s)),
        Just(json!([1, 2])),
        Just(json!({})),
        Just(Value::Null),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), inner, 0..3)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (path(), value()).prop_map(|(p, v)| Op::Modify(p, v)),
        (path(), value()).prop_map(|(p, v)| Op::Merge(p, v)),
        path().prop_map(Op::Delete),
    ]
}

/// What the op does to plain JSON (the engine's semantics).
fn apply_json(body: &mut Value, op: &Op) {
    match op {
        Op::Modify(p, v) if p.is_root() => *body = v.clone(),
        Op::Modify(p, v) => {
            p.set(body, v.clone());
        }
        Op::Merge(p, v) => patch::merge_at(body, p, v),
        Op::Delete(p) if p.is_root() => *body = Value::Null,
        Op::Delete(p) => {
            p.remove(body);
        }
    }
}

fn changes(op: &Op, stamp: &Stamp) -> Vec<Change> {
    match op {
        Op::Modify(p, v) => changes_for_modify(p, v, stamp),
        Op::Merge(p, v) => changes_for_merge(p, v, stamp),
        Op::Delete(p) => vec![change_for_delete(p, stamp)],
    }
}

fn clock(origin: &str, start: u64) -> Clock {
    let t = Arc::new(AtomicU64::new(start));
    Clock::with_wall(origin, move || t.fetch_add(1, AtomicOrdering::Relaxed) / 3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// One writer: the replica stands for exactly the JSON the commands produce.
    #[test]
    fn replica_matches_the_json_semantics(ops in prop::collection::vec(op(), 1..25)) {
        let c = clock("solo", 0);
        let mut body = Value::Null;
        let mut replica = Replica::new();
        for op in &ops {
            apply_json(&mut body, op);
            for ch in changes(op, &c.now()) {
                replica.apply(ch);
            }
            prop_assert_eq!(replica.materialize(), body.clone(), "after {:?}", op);
        }
    }

    /// Several writers with skewed clocks; every change delivered to every replica in a random
    /// order, some twice: all replicas end identical, and equal to applying the commands one
    /// after the other in stamp order.
    #[test]
    fn replicas_converge_whatever_the_delivery(
        ops in prop::collection::vec((0usize..4, op()), 1..30),
        seed in any::<u64>(),
    ) {
        let clocks: Vec<Clock> = (0..4).map(|i| clock(&format!("i{i}"), i as u64 * 7)).collect();
        let mut replicas = vec![Replica::new(); 4];
        let mut log: Vec<Change> = Vec::new();
        let mut stamped: Vec<(Stamp, Op)> = Vec::new();
        for (i, op) in &ops {
            // A writer sees what has reached it so far: here, a random prefix of the log.
            let seen = (seed as usize ^ log.len()) % (log.len() + 1);
            for ch in &log[..seen] {
                clocks[*i].observe(&ch.stamp);
                replicas[*i].apply(ch.clone());
            }
            let stamp = clocks[*i].now();
            for ch in changes(op, &stamp) {
                replicas[*i].apply(ch.clone());
                log.push(ch);
            }
            stamped.push((stamp, op.clone()));
        }
        // Deliver everything to everyone: shuffled, with duplicates.
        let mut rng = seed;
        for r in replicas.iter_mut() {
            let mut order: Vec<usize> = (0..log.len()).chain(0..log.len() / 3).collect();
            for k in (1..order.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(k, (rng >> 33) as usize % (k + 1));
            }
            for k in order {
                r.apply(log[k].clone());
            }
        }
        let first = replicas[0].materialize();
        for r in &replicas[1..] {
            prop_assert_eq!(r, &replicas[0]);
        }
        stamped.sort_by(|a, b| a.0.cmp(&b.0));
        let mut reference = Value::Null;
        for (_, op) in &stamped {
            apply_json(&mut reference, op);
        }
        prop_assert_eq!(first, reference);
    }
}

#[test]
fn late_older_write_stays_dead_after_a_removal() {
    let a = clock("a", 0);
    let (s1, s2, s3) = (a.now(), a.now(), a.now());
    let mut r = Replica::new();
    let p = |s: &str| Pointer::parse(s).unwrap();
    // Removal of /x at s2 arrives before the write of /x/b at s1 it overrides.
    r.apply(change_for_delete(&p("/x"), &s2));
    for ch in changes_for_modify(&p("/x/b"), &json!(1), &s1) {
        r.apply(ch);
    }
    // The root object the write created stays; /x and its member do not.
    assert_eq!(r.materialize(), json!({}));
    // A merge after the removal brings /x back without the dead member.
    for ch in changes_for_merge(&p("/x"), &json!({"c": 2}), &s3) {
        r.apply(ch);
    }
    assert_eq!(r.materialize(), json!({"x": {"c": 2}}));
}

#[test]
fn duplicates_and_losers_do_not_change_state() {
    let a = clock("a", 0);
    let (old, new) = (a.now(), a.now());
    let mut r = Replica::new();
    let p = Pointer::parse("/v").unwrap();
    assert!(r.apply(change(&p, Cell::Value(json!(2)), &new)));
    assert!(!r.apply(change(&p, Cell::Value(json!(2)), &new)));
    assert!(!r.apply(change(&p, Cell::Value(json!(1)), &old)));
    assert_eq!(r.materialize(), json!({"v": 2}));
    assert_eq!(r.latest(), Some(&new));
    assert_eq!(r.changes().count(), 1);
}

/// Replicas of several writers, each holding a random part of the others' changes.
fn replicas_of(ops: &[(usize, Op)], seed: u64) -> Vec<Replica> {
    let clocks: Vec<Clock> = (0..3)
        .map(|i| clock(&format!("i{i}"), i as u64 * 5))
        .collect();
    let mut replicas = vec![Replica::new(); 3];
    let mut log: Vec<Change> = Vec::new();
    for (i, op) in ops {
        let seen = (seed as usize ^ log.len()) % (log.len() + 1);
        for ch in &log[..seen] {
            clocks[*i].observe(&ch.stamp);
            replicas[*i].apply(ch.clone());
        }
        for ch in changes(op, &clocks[*i].now()) {
            replicas[*i].apply(ch.clone());
            log.push(ch);
        }
    }
    replicas
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// What a link sends (patch, values the patch cannot hold, clocks) gives the same replica
    /// back, values included.
    #[test]
    fn wire_encoding_round_trips(
        ops in prop::collection::vec((0usize..3, op()), 1..20),
        seed in any::<u64>(),
    ) {
        for r in replicas_of(&ops, seed) {
            let (patch, extra) = r.patch();
            let back = Replica::from_clocks(&r.clocks_json(), &patch, &extra).unwrap();
            prop_assert_eq!(&back, &r);
            // The compact form links send gives it back too, from any origin's view.
            for origin in ["i0", "i1", "elsewhere"] {
                let (base, clocks) = r.compact_clocks(origin);
                let origin: Arc<str> = Arc::from(origin);
                let back = Replica::from_compact_clocks(&clocks, base, &origin, &patch, &extra).unwrap();
                prop_assert_eq!(&back, &r, "compact clocks {}", clocks);
            }
        }
    }

    /// A thing keeps clocks without values and reads them back from its body: it then behaves
    /// exactly like the full replica under any further changes.
    #[test]
    fn stripped_clocks_filled_from_the_body_behave_like_the_full_replica(
        ops in prop::collection::vec((0usize..3, op()), 1..20),
        more in prop::collection::vec(op(), 1..10),
        seed in any::<u64>(),
    ) {
        let full = replicas_of(&ops, seed).swap_remove(0);
        let body = full.materialize();
        let mut stripped = Replica::from_clocks(&full.clocks_json(), &Value::Null, &Default::default()).unwrap();
        stripped.fill_values(&body);
        prop_assert_eq!(stripped.materialize(), body);
        let (mut a, mut b) = (full, stripped);
        let c = clock("late", 1_000);
        for op in &more {
            for ch in changes(op, &c.now()) {
                prop_assert_eq!(a.apply(ch.clone()), b.apply(ch));
            }
            prop_assert_eq!(a.materialize(), b.materialize());
        }
    }
}

#[test]
fn clocks_json_is_readable_and_rejects_garbage() {
    let a = clock("edge-1", 3_000);
    let mut r = Replica::new();
    for ch in changes_for_merge(
        &Pointer::parse("/f").unwrap(),
        &json!({"x": 1, "y": null}),
        &a.now(),
    ) {
        r.apply(ch);
    }
    let clocks = r.clocks_json();
    assert_eq!(clocks["/f/x"], json!("v1000.0@edge-1"));
    assert_eq!(clocks["/f/y"], json!("r1000.0@edge-1"));
    assert_eq!(clocks["/f"], json!("o1000.0@edge-1"));
    for bad in [
        json!([]),
        json!({"/a": 1}),
        json!({"/a": "x1.0@e"}),
        json!({"/a": "v1.0"}),
        json!({"a": "v1.0@e"}),
    ] {
        assert!(
            Replica::from_clocks(&bad, &Value::Null, &Default::default()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn compact_clocks_imply_ancestor_marks_and_shorten_stamps() {
    let stamp = |ms: u64, counter: u32, origin: &str| Stamp {
        wall_ms: ms,
        counter,
        origin: Arc::from(origin),
    };
    let path = Pointer::parse("/features/lane/properties/offset").unwrap();
    let one = Replica::from(changes_for_modify(
        &path,
        &json!(0.12),
        &stamp(1_764_080_000_000, 3, "edge-1"),
    ));
    let (base, clocks) = one.compact_clocks("edge-1");
    // One entry: the ancestors' marks are implied, the stamp is relative, the origin implied.
    assert_eq!(base, 1_764_080_000_000);
    assert_eq!(clocks, json!({"/features/lane/properties/offset": "v0.3"}));
    let origin: Arc<str> = Arc::from("edge-1");
    let (patch, extra) = one.patch();
    assert_eq!(
        Replica::from_compact_clocks(&clocks, base, &origin, &patch, &extra).unwrap(),
        one
    );
    // An ancestor whose mark is older than what is below it is written; one without any clock
    // is written as "" (nothing implied); stamps of other instances name them.
    let mut mixed = Replica::from(changes_for_modify(&path, &json!(1), &stamp(10, 0, "hub")));
    mixed.apply(Change {
        path: Pointer::parse("/features/lane/properties/offset").unwrap(),
        cell: Cell::Value(json!(2)),
        stamp: stamp(12, 1, "edge-1"),
    });
    mixed.apply(Change {
        path: Pointer::parse("/attributes/x/y").unwrap(),
        cell: Cell::Removed,
        stamp: stamp(11, 0, "edge-1"),
    });
    let (base, clocks) = mixed.compact_clocks("edge-1");
    assert_eq!(base, 10);
    assert_eq!(
        clocks,
        json!({
            "/": "o0@hub",
            "/features": "o0@hub",
            "/features/lane": "o0@hub",
            "/features/lane/properties": "o0@hub",
            "/features/lane/properties/offset": "v2.1",
            "/attributes/x/y": "r1",
            "/attributes": "",
            "/attributes/x": ""
        })
    );
    let (patch, extra) = mixed.patch();
    assert_eq!(
        Replica::from_compact_clocks(&clocks, base, &origin, &patch, &extra).unwrap(),
        mixed
    );
}

proptest! {
    /// Compact clocks from a hostile peer: any text is refused or read, never a panic, and
    /// what is read encodes back to clocks that read the same.
    #[test]
    fn compact_clocks_of_any_text_read_or_fail_cleanly(
        entries in prop::collection::vec(
            (path(), "(([vro][0-9]{0,3}(\\.[0-9]{1,2})?(@[a-z]{0,3})?)( [vro][0-9]{1,2})?)|.{0,6}"),
            0..8,
        ),
        base in prop_oneof![Just(0u64), Just(u64::MAX - 5), 0u64..1_000_000],
    ) {
        let clocks = Value::Object(entries.iter().map(|(p, t)| (p.to_string(), json!(t))).collect());
        let origin: Arc<str> = Arc::from("edge");
        if let Ok(r) = Replica::from_compact_clocks(&clocks, base, &origin, &Value::Null, &Default::default()) {
            let (base, again) = r.compact_clocks("edge");
            let back = Replica::from_compact_clocks(&again, base, &origin, &Value::Null, &Default::default()).unwrap();
            prop_assert_eq!(back, r);
        }
    }
}

/// A float crosses a link bit for bit, in both wire forms: instances that hold one write must
/// hold the same value (serde_json reads floats exactly only with `float_roundtrip`; without
/// it, these computed values came back one ulp off).
#[test]
fn floats_cross_both_wire_forms_exactly() {
    use crate::protocol::Message;
    let values = [
        0.381_859_485_365_136_36_f64,
        0.1 + 0.2,
        1.0 / 3.0,
        2.0_f64.sqrt() * 1e-300,
    ];
    for v in values {
        let clock = clock("edge-1", 1_764_080_000_000);
        let mut changes = Replica::new();
        let at = Pointer::parse("/features/lane/properties").unwrap();
        for c in changes_for_merge(&at, &json!({ "offset": v }), &clock.now()) {
            changes.apply(c);
        }
        let origin: Arc<str> = Arc::from("edge-1");
        let update = Update {
            thing_id: crate::model::ThingId::new("t:a").unwrap(),
            origin: origin.clone(),
            hops: vec![origin],
            policy_id: None,
            changes,
        };
        let bytes = Message::ThingCommand(update.to_command()).to_vec();
        let Ok(Message::ThingCommand(cmd)) = Message::from_slice(&bytes) else {
            panic!("not a command");
        };
        let json = Update::from_command(&cmd).unwrap().unwrap();
        let binary = decode_batch(&encode_batch(std::slice::from_ref(&update)), 1).unwrap();
        for back in [&json, &binary[0]] {
            let got = back.changes.materialize()["features"]["lane"]["properties"]["offset"]
                .as_f64()
                .unwrap();
            assert_eq!(got.to_bits(), v.to_bits(), "{v} came back as {got}");
        }
    }
}
