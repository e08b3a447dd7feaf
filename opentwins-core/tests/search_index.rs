//! The search index never changes an answer: searches and counts through it equal a scan's, for
//! callers who may read everything and for callers who may read part, across pages, after
//! writes and deletions, while the index fills under concurrent writers, and from the paths
//! configured at start.

mod common;

use std::sync::Arc;

use common::{LIMIT, cmd, id, put_policy};
use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::Action;
use opentwins_core::query::{self, Filter, SearchOptions};
use opentwins_core::store::{MemoryStore, Store};
use opentwins_core::{ErrorKind, Thing};
use serde_json::{Value, json};

fn user(name: &str) -> AuthContext {
    AuthContext::new([format!("test:{name}")])
}

async fn ok(tw: &Twins, auth: &AuthContext, c: opentwins_core::protocol::ThingCommand) {
    tokio::time::timeout(LIMIT, tw.apply(auth, c))
        .await
        .expect("engine hung")
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A small deterministic generator (xorshift), so a failure names its seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }

    fn value(&mut self) -> Value {
        match self.next() % 6 {
            0 => json!(self.next() % 5),
            1 => json!((self.next() % 5) as f64 + 0.5),
            2 => json!(*self.pick(&["a", "ab", "b", "ns:t1"])),
            3 => json!([self.next() % 5, *self.pick(&["a", "b"])]),
            4 => json!(null),
            _ => json!(self.next().is_multiple_of(2)),
        }
    }

    fn literal(&mut self) -> String {
        match self.next() % 4 {
            0 => (self.next() % 5).to_string(),
            1 => format!("{}.5", self.next() % 5),
            2 => format!("{:?}", self.pick(&["a", "ab", "b", "ns:t1", "ns:t"])),
            _ => self.pick(&["null", "true", "false"]).to_string(),
        }
    }

    fn filter(&mut self, depth: u32) -> String {
        let path = *self.pick(&[
            "attributes/n",
            "attributes/s",
            "attributes/secret",
            "thingId",
        ]);
        match self.next() % if depth == 0 { 5 } else { 8 } {
            0 | 1 => {
                let op = self.pick(&["eq", "ne", "gt", "ge", "lt", "le"]);
                format!("{op}({path},{})", self.literal())
            }
            2 => format!(
                "like({path},{:?})",
                self.pick(&["a*", "ns:*", "ns:t1?", "*b"])
            ),
            3 => format!("in({path},{},{})", self.literal(), self.literal()),
            4 => format!("exists({path})"),
            5 => format!("and({},{})", self.filter(depth - 1), self.filter(depth - 1)),
            6 => format!("or({},{})", self.filter(depth - 1), self.filter(depth - 1)),
            _ => format!("not({})", self.filter(depth - 1)),
        }
    }
}

/// Alice owns and reads everything; bob reads the things of `ns:shared` except their secret,
/// and nothing of `ns:private`.
async fn fleet(config: EngineConfig, things: usize, seed: u64) -> Twins {
    let tw = Twins::open(config, Arc::new(MemoryStore::new())).unwrap();
    let alice = user("alice");
    let entry = |subject: &str, resources: Value| json!({"subjects": {subject: {"type": "test"}}, "resources": resources});
    let owner = json!({"thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
                       "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}});
    let shared = json!({"entries": {
        "alice": entry("test:alice", owner.clone()),
        "bob": entry("test:bob", json!({"thing:/": {"grant": ["READ"], "revoke": []},
                                         "thing:/attributes/secret": {"grant": [], "revoke": ["READ"]}}))
    }});
    put_policy(&tw, &alice, "ns:shared", shared).await;
    put_policy(
        &tw,
        &alice,
        "ns:private",
        json!({"entries": {"alice": entry("test:alice", owner)}}),
    )
    .await;
    let mut g = Gen(seed);
    for i in 0..things {
        let policy = if i % 3 == 0 {
            "ns:private"
        } else {
            "ns:shared"
        };
        let mut attrs = serde_json::Map::new();
        for key in ["n", "s", "secret"] {
            if !g.next().is_multiple_of(4) {
                attrs.insert(key.into(), g.value());
            }
        }
        let body = json!({"policyId": policy, "attributes": attrs});
        ok(
            &tw,
            &alice,
            cmd(&format!("ns:t{i}"), Action::Create, "/", Some(body)),
        )
        .await;
    }
    tw
}

/// Every page of a search, followed with its cursors: the thing ids in order.
fn all_pages(tw: &Twins, auth: &AuthContext, filter: &str, sort: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let options = match &cursor {
            None => format!("{sort}size(3)"),
            Some(c) => format!("{sort}size(3),cursor({c})"),
        };
        let page = tw
            .search(auth, Some(filter), Some(&options), None)
            .unwrap_or_else(|e| panic!("{filter} {options}: {e}"));
        seen.extend(
            page.items
                .iter()
                .map(|t| t["thingId"].as_str().unwrap().to_owned()),
        );
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return seen,
        }
    }
}

#[tokio::test]
async fn indexed_answers_equal_scanned_answers() {
    const THINGS: usize = 40;
    let seed = 0x5eed_1234_abcd_0001;
    let indexed = fleet(EngineConfig::default(), THINGS, seed).await;
    let unindexed = fleet(
        EngineConfig {
            max_search_indexes: 0,
            ..EngineConfig::default()
        },
        THINGS,
        seed,
    )
    .await;
    let snapshot: Vec<Thing> = (0..THINGS)
        .map(|i| indexed.get_thing(&id(&format!("ns:t{i}"))).unwrap())
        .collect();
    let (alice, bob) = (user("alice"), user("bob"));
    let mut g = Gen(seed ^ 0xffff);
    let mut answered = 0;
    for _ in 0..300 {
        let text = g.filter(2);
        let filter = Filter::parse(&text).unwrap();
        // Alice reads everything: a scan over the things is the reference.
        let all = query::search(
            &snapshot,
            Some(&filter),
            &SearchOptions::parse("size(200)").unwrap(),
        )
        .unwrap();
        let expected: Vec<String> = all.items.iter().map(|t| t.id().to_string()).collect();
        assert_eq!(all_pages(&indexed, &alice, &text, ""), expected, "{text}");
        assert_eq!(
            indexed.count(&alice, Some(&text)).unwrap(),
            expected.len(),
            "{text}"
        );
        answered += usize::from(!expected.is_empty());
        // Bob reads part: the engine without path indexes is the reference, in id order and
        // sorted on another field.
        for sort in ["", "sort(-attributes/n),", "sort(+thingId),"] {
            assert_eq!(
                all_pages(&indexed, &bob, &text, sort),
                all_pages(&unindexed, &bob, &text, sort),
                "{text} {sort}"
            );
        }
        assert_eq!(
            indexed.count(&bob, Some(&text)).unwrap(),
            unindexed.count(&bob, Some(&text)).unwrap(),
            "{text}"
        );
    }
    assert!(
        answered > 100,
        "most filters should match something: {answered}"
    );
}

#[tokio::test]
async fn writes_and_deletions_after_the_index_filled_are_seen() {
    let tw = fleet(EngineConfig::default(), 12, 7).await;
    let alice = user("alice");
    let count = |f: &str| tw.count(&alice, Some(f)).unwrap();
    let ids = |f: &str| all_pages(&tw, &alice, f, "");
    // The first search on attributes/n fills its index.
    assert!(tw.search_indexes().is_empty());
    assert_eq!(count("eq(attributes/n,42)"), 0);
    assert_eq!(tw.search_indexes(), ["attributes/n"]);
    ok(
        &tw,
        &alice,
        cmd("ns:t4", Action::Modify, "/attributes/n", Some(json!(42))),
    )
    .await;
    ok(
        &tw,
        &alice,
        cmd(
            "ns:t5",
            Action::Merge,
            "/attributes",
            Some(json!({"n": 42.0})),
        ),
    )
    .await;
    assert_eq!(ids("eq(attributes/n,42)"), ["ns:t4", "ns:t5"]);
    ok(
        &tw,
        &alice,
        cmd("ns:t4", Action::Modify, "/attributes/n", Some(json!(43))),
    )
    .await;
    assert_eq!(ids("eq(attributes/n,42)"), ["ns:t5"]);
    assert_eq!(ids("gt(attributes/n,42)"), ["ns:t4"]);
    ok(&tw, &alice, cmd("ns:t5", Action::Delete, "/", None)).await;
    assert_eq!(count("eq(attributes/n,42)"), 0);
    assert!(!ids(r#"like(thingId,"ns:*")"#).contains(&"ns:t5".to_owned()));
    // A new thing is in the id index and the path index at once.
    let body = json!({"policyId": "ns:shared", "attributes": {"n": 42}});
    ok(&tw, &alice, cmd("ns:t5", Action::Create, "/", Some(body))).await;
    assert_eq!(ids("eq(attributes/n,42)"), ["ns:t5"]);
    // Removing the value leaves the index too.
    ok(
        &tw,
        &alice,
        cmd("ns:t5", Action::Delete, "/attributes/n", None),
    )
    .await;
    assert_eq!(count("eq(attributes/n,42)"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_filled_while_writers_run_misses_nothing() {
    const THINGS: usize = 300;
    let tw = fleet(EngineConfig::default(), THINGS, 11).await;
    let alice = user("alice");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let (tw, stop, alice) = (tw.clone(), stop.clone(), alice.clone());
        writers.push(tokio::spawn(async move {
            let mut g = Gen(w + 99);
            let mut writes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || writes < 200 {
                let thing = format!("ns:t{}", g.next() % THINGS as u64);
                let value = json!(g.next() % 5);
                ok(
                    &tw,
                    &alice,
                    cmd(&thing, Action::Modify, "/attributes/fresh", Some(value)),
                )
                .await;
                writes += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    // The first search on attributes/fresh fills its index while the writers run.
    let searcher = {
        let tw = tw.clone();
        tokio::task::spawn_blocking(move || {
            tw.count(&user("alice"), Some("eq(attributes/fresh,3)"))
        })
    };
    searcher.await.unwrap().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        tokio::time::timeout(LIMIT, w)
            .await
            .expect("writer hung")
            .unwrap();
    }
    let snapshot: Vec<Thing> = tw
        .thing_ids()
        .iter()
        .filter_map(|i| tw.get_thing(i))
        .collect();
    for v in 0..5 {
        let text = format!("eq(attributes/fresh,{v})");
        let expected = query::count(&snapshot, Some(&Filter::parse(&text).unwrap()));
        assert_eq!(tw.count(&alice, Some(&text)).unwrap(), expected, "{text}");
    }
}

#[tokio::test]
async fn configured_paths_are_filled_at_open_and_bad_ones_refused() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let first = Twins::open(EngineConfig::default(), store.clone()).unwrap();
    let alice = user("alice");
    put_policy(
        &first,
        &alice,
        "ns:p",
        json!({"entries": {"alice": {"subjects": {"test:alice": {"type": "test"}},
            "resources": {"thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
                          "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}}}}}),
    )
    .await;
    for i in 0..5 {
        let body = json!({"policyId": "ns:p", "attributes": {"model": format!("m{}", i % 2)}});
        ok(
            &first,
            &alice,
            cmd(&format!("ns:c{i}"), Action::Create, "/", Some(body)),
        )
        .await;
    }
    drop(first);
    let config = EngineConfig {
        search_index: vec!["attributes/model".into()],
        max_search_indexes: 0,
        ..EngineConfig::default()
    };
    let tw = Twins::open(config.clone(), store.clone()).unwrap();
    assert_eq!(tw.search_indexes(), ["attributes/model"]);
    assert_eq!(
        all_pages(&tw, &alice, r#"eq(attributes/model,"m1")"#, ""),
        ["ns:c1", "ns:c3"]
    );
    let bad = EngineConfig {
        search_index: vec!["attributes//model".into()],
        ..config
    };
    let e = Twins::open(bad, store.clone())
        .err()
        .expect("a bad path is refused");
    assert_eq!(e.kind(), ErrorKind::RqlInvalid, "{e}");
    let wildcard = EngineConfig {
        search_index: vec!["attributes/*".into()],
        ..EngineConfig::default()
    };
    let e = Twins::open(wildcard, store)
        .err()
        .expect("a wildcard is refused");
    assert!(e.to_string().contains("wildcard"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_over_many_candidates_is_split_over_threads_and_stays_right() {
    const THINGS: usize = 20_000;
    let tw = fleet(EngineConfig::default(), THINGS, 3).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let snapshot: Vec<Thing> = tw
        .thing_ids()
        .iter()
        .filter_map(|i| tw.get_thing(i))
        .collect();
    let all = r#"like(thingId,"ns:t*")"#;
    assert_eq!(tw.count(&alice, Some(all)).unwrap(), THINGS);
    // Bob reads the things of ns:shared only: two in three.
    assert_eq!(
        tw.count(&bob, Some(all)).unwrap(),
        THINGS - THINGS.div_ceil(3)
    );
    for text in [
        "ge(attributes/n,0)",
        r#"or(lt(attributes/s,"b"),like(thingId,"ns:t1*"))"#,
    ] {
        let expected = query::count(&snapshot, Some(&Filter::parse(text).unwrap()));
        assert_eq!(tw.count(&alice, Some(text)).unwrap(), expected, "{text}");
    }
}
