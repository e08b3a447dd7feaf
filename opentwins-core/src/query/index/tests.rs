use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::query::Filter;
use crate::query::tests::thing;

fn index_of(paths: &[&str], things: &[Thing]) -> SearchIndex<u32> {
    let mut index = SearchIndex::new();
    for p in paths {
        let path = Path::parse(p).unwrap();
        assert!(index.add_path(path.clone()));
        index.ready(&path);
    }
    things.iter().for_each(|t| index.put(t, &handle(t)));
    index
}

/// A handle per thing: its number.
fn handle(t: &Thing) -> u32 {
    t.id()
        .name()
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0)
}

fn ids(index: &SearchIndex<u32>, filter: &str) -> Option<Vec<String>> {
    let f = Filter::parse(filter).unwrap();
    index
        .candidates(f.root())
        .map(|c| c.iter().map(|(id, _)| id.to_string()).collect())
}

fn fleet() -> Vec<Thing> {
    vec![
        thing(
            "ns:a",
            json!({"attributes": {"n": 1, "s": "alpha", "tags": ["x", 7]}}),
        ),
        thing("ns:b", json!({"attributes": {"n": 1.0, "s": "beta"}})),
        thing("ns:c", json!({"attributes": {"n": 2.5, "s": 3}})),
        thing(
            "other:d",
            json!({"attributes": {"n": "1", "s": null, "tags": [{"k": 1}]}}),
        ),
        thing(
            "other:e",
            json!({"attributes": {"list": [{"x": 5}, {"x": 6}]}}),
        ),
    ]
}

#[test]
fn comparisons_are_answered_from_ordered_keys() {
    let index = index_of(
        &[
            "attributes/n",
            "attributes/s",
            "attributes/tags",
            "attributes/list/x",
        ],
        &fleet(),
    );
    let some = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    // Numbers compare numerically: 1 and 1.0 are one key; the string "1" is not a number.
    assert_eq!(ids(&index, "eq(attributes/n,1)"), some(&["ns:a", "ns:b"]));
    assert_eq!(ids(&index, r#"eq(attributes/n,"1")"#), some(&["other:d"]));
    // Ranges stay within their type.
    assert_eq!(ids(&index, "gt(attributes/n,1)"), some(&["ns:c"]));
    assert_eq!(
        ids(&index, "ge(attributes/n,1)"),
        some(&["ns:a", "ns:b", "ns:c"])
    );
    assert_eq!(ids(&index, "lt(attributes/n,2.5)"), some(&["ns:a", "ns:b"]));
    assert_eq!(ids(&index, r#"lt(attributes/s,"b")"#), some(&["ns:a"]));
    assert_eq!(ids(&index, "gt(attributes/s,true)"), some(&[]));
    // Array elements (one level), and keys across arrays of objects.
    assert_eq!(ids(&index, "eq(attributes/tags,7)"), some(&["ns:a"]));
    assert_eq!(ids(&index, "eq(attributes/tags,1)"), some(&[]));
    assert_eq!(ids(&index, "eq(attributes/list/x,6)"), some(&["other:e"]));
    assert_eq!(ids(&index, "eq(attributes/s,null)"), some(&["other:d"]));
    assert_eq!(ids(&index, r#"like(attributes/s,"al*")"#), some(&["ns:a"]));
    assert_eq!(
        ids(&index, r#"in(attributes/s,"beta",3)"#),
        some(&["ns:b", "ns:c"])
    );
    // thingId: equality, ranges and prefixes over the ordered ids.
    assert_eq!(
        ids(&index, r#"like(thingId,"ns:*")"#),
        some(&["ns:a", "ns:b", "ns:c"])
    );
    assert_eq!(ids(&index, r#"eq(thingId,"other:e")"#), some(&["other:e"]));
    assert_eq!(
        ids(&index, r#"gt(thingId,"ns:c")"#),
        some(&["other:d", "other:e"])
    );
    assert_eq!(ids(&index, "eq(thingId,1)"), some(&[]));
    // `and` through its most selective child; `or` only when every child is answered.
    assert_eq!(
        ids(
            &index,
            r#"and(like(thingId,"ns:*"),eq(attributes/s,"beta"),exists(x))"#
        ),
        some(&["ns:b"])
    );
    assert_eq!(
        ids(&index, r#"or(eq(attributes/n,2.5),eq(thingId,"other:e"))"#),
        some(&["ns:c", "other:e"])
    );
    let exact = |f: &str| index.exact(Filter::parse(f).unwrap().root());
    assert!(
        exact("eq(attributes/n,1)") && exact("in(attributes/s,1,2)") && exact("gt(thingId,\"a\")")
    );
    assert!(exact(r#"like(attributes/s,"al*")"#));
    assert!(!exact(r#"like(attributes/s,"a?*")"#) && !exact(r#"like(attributes/s,"al*a")"#));
    assert!(!exact("and(eq(attributes/n,1))") && !exact("eq(attributes/unindexed,1)"));
    for unanswered in [
        "ne(attributes/n,1)",
        "not(eq(attributes/n,1))",
        "exists(attributes/n)",
        r#"ilike(attributes/s,"A*")"#,
        r#"like(attributes/s,"*a")"#,
        "eq(attributes/*,1)",
        "eq(attributes/unindexed,1)",
        "or(eq(attributes/n,1),exists(attributes/s))",
    ] {
        assert_eq!(ids(&index, unanswered), None, "{unanswered}");
    }
}

#[test]
fn values_that_do_not_fit_are_candidates_of_every_query_on_their_path() {
    let long = "x".repeat(MAX_KEY_BYTES + 1);
    let many: Vec<u32> = (0..=MAX_KEYS as u32).collect();
    let things = vec![
        thing("ns:long", json!({"attributes": {"v": long}})),
        thing("ns:many", json!({"attributes": {"v": many}})),
        thing("ns:small", json!({"attributes": {"v": 1}})),
    ];
    let mut index = index_of(&["attributes/v"], &things);
    let some = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        ids(&index, "eq(attributes/v,2)"),
        some(&["ns:long", "ns:many"])
    );
    assert_eq!(
        ids(&index, "eq(attributes/v,1)"),
        some(&["ns:long", "ns:many", "ns:small"])
    );
    assert!(!index.exact(Filter::parse("eq(attributes/v,2)").unwrap().root()));
    // Updating a thing unlinks what it held; removing it leaves nothing behind.
    index.put(&thing("ns:long", json!({"attributes": {"v": 2}})), &0);
    assert_eq!(
        ids(&index, "eq(attributes/v,2)"),
        some(&["ns:long", "ns:many"])
    );
    assert_eq!(
        ids(&index, "eq(attributes/v,1)"),
        some(&["ns:many", "ns:small"])
    );
    index.remove(&ThingId::new("ns:many").unwrap());
    index.remove(&ThingId::new("ns:small").unwrap());
    assert_eq!(ids(&index, "ge(attributes/v,0)"), some(&["ns:long"]));
    assert!(
        index.exact(Filter::parse("eq(attributes/v,2)").unwrap().root()),
        "no overflow left"
    );
    assert_eq!(index.len(), 1);
    assert_eq!(
        index.ids_after(None, 10),
        vec![(ThingId::new("ns:long").unwrap(), 0)]
    );
}

#[test]
fn a_path_is_used_once_filled_and_only_plain_compared_paths_are_proposed() {
    let mut index = SearchIndex::new();
    let things = fleet();
    things.iter().for_each(|t| index.put(t, &handle(t)));
    let f = Filter::parse(r#"and(eq(attributes/n,1),not(eq(attributes/s,"a")),ne(attributes/x,1),eq(thingId,"ns:a"),or(gt(attributes/*/y,1),lt(attributes/z,2)))"#).unwrap();
    let proposed: Vec<String> = index
        .unindexed(f.root())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proposed, ["attributes/z", "attributes/n"]);
    let path = Path::parse("attributes/n").unwrap();
    assert!(index.add_path(path.clone()));
    assert!(!index.add_path(path.clone()), "added twice");
    assert!(!index.add_path(Path::parse("attributes/*").unwrap()));
    // Not used while it is being filled.
    assert_eq!(ids(&index, "eq(attributes/n,1)"), None);
    things.iter().for_each(|t| index.fill(&path, t, &handle(t)));
    index.ready(&path);
    assert_eq!(
        ids(&index, "eq(attributes/n,1)"),
        Some(vec!["ns:a".into(), "ns:b".into()])
    );
    assert_eq!(index.unindexed(f.root()).len(), 1);
}

#[test]
fn ids_page_in_order() {
    let index = index_of(&[], &fleet());
    let page = |after: Option<&str>| -> Vec<String> {
        index
            .ids_after(after, 2)
            .iter()
            .map(|(id, _)| id.to_string())
            .collect()
    };
    assert_eq!(page(None), ["ns:a", "ns:b"]);
    assert_eq!(page(Some("ns:b")), ["ns:c", "other:d"]);
    assert_eq!(page(Some("ns:bb")), ["ns:c", "other:d"]);
    assert_eq!(page(Some("other:e")), Vec::<String>::new());
}

// ---- properties: the candidates always hold every match, after any writes ----

const PATHS: [&str; 5] = [
    "attributes/a",
    "attributes/b",
    "attributes/l",
    "attributes/l/x",
    "thingId",
];

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..4).prop_map(Value::from),
        (-3i64..4).prop_map(|i| Value::from(i as f64 + 0.5)),
        (-3i64..4).prop_map(|i| Value::from(i as f64)),
        "[ab]{0,3}".prop_map(Value::from),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => arb_scalar(),
        1 => prop::collection::vec(arb_scalar(), 0..4).prop_map(Value::from),
        1 => prop::collection::vec(arb_scalar(), 0..3)
            .prop_map(|v| Value::from(v.into_iter().map(|x| json!({"x": x})).collect::<Vec<_>>())),
        1 => arb_scalar().prop_map(|x| json!({"x": x})),
    ]
}

fn arb_body() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (prop::sample::select(vec!["a", "b", "l"]), arb_value()),
        0..4,
    )
    .prop_map(|fields| {
        let attrs: serde_json::Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        json!({ "attributes": attrs })
    })
}

fn arb_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        arb_scalar().prop_map(|v| v.to_string()),
        Just(r#""ns:t1""#.to_string()),
        Just(r#""ns:t""#.to_string()),
    ]
}

fn arb_filter() -> impl Strategy<Value = String> {
    let path = prop::sample::select(PATHS.to_vec());
    let leaf = prop_oneof![
        (
            prop::sample::select(vec!["eq", "ne", "gt", "ge", "lt", "le"]),
            path.clone(),
            arb_literal()
        )
            .prop_map(|(op, p, v)| format!("{op}({p},{v})")),
        (
            prop::sample::select(vec!["like", "ilike"]),
            path.clone(),
            "[ab*?]{0,3}|ns:t[0-9*]?"
        )
            .prop_map(|(op, p, v)| format!("{op}({p},{})", Literal::String(v))),
        (path.clone(), prop::collection::vec(arb_literal(), 1..3))
            .prop_map(|(p, vs)| format!("in({p},{})", vs.join(","))),
        path.prop_map(|p| format!("exists({p})")),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3)
                .prop_map(|c| format!("and({})", c.join(","))),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|c| format!("or({})", c.join(","))),
            inner.prop_map(|c| format!("not({c})")),
        ]
    })
}

/// A write: thing `n` gets `body`, or is removed when `None`.
fn arb_writes() -> impl Strategy<Value = Vec<(u8, Option<Value>)>> {
    prop::collection::vec((0u8..8, prop::option::weighted(0.8, arb_body())), 0..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn candidates_hold_every_match(writes in arb_writes(), filters in prop::collection::vec(arb_filter(), 1..6)) {
        let paths = &PATHS[..4];
        let mut index = index_of(paths, &[]);
        let mut held: std::collections::BTreeMap<u8, Thing> = Default::default();
        for (n, body) in writes {
            let id = format!("ns:t{n}");
            match body {
                Some(body) => {
                    let t = thing(&id, body);
                    index.put(&t, &u32::from(n));
                    held.insert(n, t);
                }
                None => {
                    index.remove(&ThingId::new(&id).unwrap());
                    held.remove(&n);
                }
            }
        }
        // The index after these writes is the index of the final things.
        let fresh = index_of(paths, &held.values().cloned().collect::<Vec<_>>());
        for text in filters {
            let f = Filter::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(index.answerable(f.root()), index.estimate(f.root()).is_some(), "{}", text);
            let got = index.candidates(f.root());
            prop_assert_eq!(&got, &fresh.candidates(f.root()), "{}", text);
            if let Some(candidates) = got {
                prop_assert!(candidates.windows(2).all(|w| w[0].0.as_str() < w[1].0.as_str()));
                let matching: Vec<u32> = held.iter().filter(|(_, t)| f.matches(*t)).map(|(n, _)| u32::from(*n)).collect();
                for n in &matching {
                    prop_assert!(candidates.iter().any(|(_, h)| h == n), "ns:t{} matches {} but is no candidate", n, text);
                }
                // The handles are the same things, and exact candidates are the matches.
                let mut handles = index.candidate_handles(f.root()).unwrap();
                handles.sort_unstable();
                let mut by_id: Vec<u32> = candidates.iter().map(|(_, h)| *h).collect();
                by_id.sort_unstable();
                prop_assert_eq!(&handles, &by_id, "{}", text);
                if index.exact(f.root()) {
                    prop_assert_eq!(&handles, &matching, "{} is exact", text);
                }
                // A page of candidates after an id is that part of all of them.
                for (after, n) in [(None, 1), (Some("ns:t3"), 2), (Some("ns:t"), 3), (Some("ns:t55"), 1), (Some("zz"), 4)] {
                    let expected: Vec<&ThingId> = candidates
                        .iter()
                        .map(|(id, _)| id)
                        .filter(|id| after.is_none_or(|a| id.as_str() > a))
                        .take(n)
                        .collect();
                    let page = index.candidates_after(f.root(), after, n).unwrap();
                    let got: Vec<&ThingId> = page.iter().map(|(id, _)| id).collect();
                    prop_assert_eq!(got, expected, "{} after {:?}", text, after);
                }
            }
        }
        let all: Vec<String> = index.ids_after(None, 100).iter().map(|(id, _)| id.to_string()).collect();
        let expected: Vec<String> = held.values().map(|t| t.id().to_string()).collect();
        prop_assert_eq!(all, expected);
    }
}
