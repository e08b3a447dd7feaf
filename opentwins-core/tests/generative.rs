//! Structure-aware generative tests of every parser that takes network input (issue 14): deep
//! and wide nesting, long pointers, hostile keys and headers. Each case must end in a success or
//! a Ditto error (a code, a 4xx/5xx status, a short message), without a panic and within a
//! bounded time; an engine fed such commands must load again from its store.
//!
//! The test run uses proptest's default number of cases (256 per property; the engine
//! property an eighth as many sequences); `benches/scripts/fuzz.sh` runs them with
//! `PROPTEST_CASES=1000000`
//! (docs/benchmarks.md has the figures).

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::policy::{AuthContext, Policy};
use opentwins_core::protocol::{Action, Headers, Message, ThingCommand};
use opentwins_core::replica::Update;
use opentwins_core::store::{MemoryStore, Store};
use opentwins_core::{Error, FieldSelector, Pointer, PolicyId, ThingId, Timestamp, patch};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// What one parser call may take, even in a debug build on a busy machine.
const BOUND: Duration = Duration::from_secs(2);

/// Checks that `result` is a success or a well-formed Ditto error, reached within [`BOUND`].
fn well_formed<T>(started: Instant, result: Result<T, Error>) -> Result<(), TestCaseError> {
    prop_assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    if let Err(e) = result {
        prop_assert!((400..600).contains(&e.status()), "status {}", e.status());
        prop_assert!(!e.code().is_empty());
        prop_assert!(
            e.message().len() < 2048,
            "message of {} bytes",
            e.message().len()
        );
    }
    Ok(())
}

/// Keys an attacker would try: ordinary, empty, wildcards, reserved, control and other
/// non-ASCII characters, syntax of other parsers.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,6}",
        1 => Just(String::new()),
        1 => Just("*".to_owned()),
        1 => Just("_parent".to_owned()),
        1 => "[\\x00-\\x1f]",
        1 => "\\PC{1,4}",
        1 => prop::sample::select(vec!["a(b)", "..", "%2F", "thingId", "features", "~1"])
            .prop_map(str::to_owned),
    ]
}

/// Pointers: a few hostile keys, or one key repeated up to thousands of times.
fn pointer_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop::collection::vec(key(), 0..12), any::<bool>()).prop_map(|(keys, lead)| {
            let joined = keys.join("/");
            if lead { format!("/{joined}") } else { joined }
        }),
        ("[a-z]{1,3}", 0usize..5000).prop_map(|(k, n)| format!("/{k}").repeat(n)),
    ]
}

/// `fields` selectors: nested groups, and parentheses thousands deep, balanced or not.
fn selector_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        key(),
        pointer_text().prop_map(|p| p.trim_start_matches('/').to_owned())
    ];
    let nested = leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..6).prop_map(|items| items.join(",")),
            ("[a-z]{1,4}", prop::collection::vec(inner, 1..4))
                .prop_map(|(head, items)| format!("{head}({})", items.join(","))),
        ]
    });
    prop_oneof![
        3 => nested,
        1 => (0usize..20_000, -1i64..=1).prop_map(|(n, skew)| {
            let close = (n as i64 + skew).max(0) as usize;
            format!("{}b{}", "a(".repeat(n), ")".repeat(close))
        }),
        1 => (1usize..2000).prop_map(|n| vec!["a"; n].join(",")),
    ]
}

/// JSON values, some nested far beyond what a thing may hold.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    let tree = leaf.prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    prop_oneof![
        4 => tree,
        1 => (0usize..120, any::<bool>()).prop_map(|(n, arrays)| {
            (0..n).fold(json!(1), |v, _| if arrays { json!([v]) } else { json!({ "p": v }) })
        }),
    ]
}

/// JSON text: well-formed values, text nested past serde_json's recursion limit, and broken.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => value().prop_map(|v| v.to_string()),
        1 => (0usize..3000).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        1 => (0usize..3000).prop_map(|n| "{\"a\":".repeat(n)),
        1 => "\\PC{0,40}",
    ]
}

fn topic() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        3 => prop::sample::select(vec![
            "ns", "car", "things", "policies", "twin", "live", "commands", "events", "errors",
            "modify", "merge", "create", "retrieve", "delete", "search", "_",
        ])
        .prop_map(str::to_owned),
        1 => key(),
    ];
    prop::collection::vec(part, 0..9).prop_map(|parts| parts.join("/"))
}

fn headers() -> impl Strategy<Value = Map<String, Value>> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "correlation-id",
            "response-required",
            "if-match",
            "if-none-match",
            "condition",
            "timeout",
            "requested-acks",
            "content-type",
            "opentwins-clocks",
            "opentwins-hops",
            "opentwins-origin",
            "opentwins-policy",
            "opentwins-values",
        ])
        .prop_map(str::to_owned),
        key(),
    ];
    prop::collection::vec((name, value()), 0..6).prop_map(|kv| kv.into_iter().collect())
}

/// Clock headers as a peer could send them: hostile paths and stamps.
fn clocks() -> impl Strategy<Value = Value> {
    let stamp = prop_oneof![
        (
            any::<u64>(),
            any::<u32>(),
            "[a-z]{1,4}",
            prop::sample::select(vec!["v", "o", "r", "x", ""])
        )
            .prop_map(|(ms, c, origin, cell)| format!("{cell}{ms}.{c}@{origin}")),
        "\\PC{0,16}",
    ];
    prop::collection::vec((pointer_text(), stamp), 0..8)
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
}

proptest! {
    #[test]
    fn pointers(text in pointer_text()) {
        let started = Instant::now();
        let parsed = Pointer::parse(&text);
        if let Ok(p) = &parsed {
            prop_assert!(p.len() <= opentwins_core::Limits::get().max_pointer_segments);
            prop_assert_eq!(&Pointer::parse(&p.to_string()).unwrap(), p);
        }
        well_formed(started, parsed)?;
    }

    #[test]
    fn field_selectors(text in selector_text(), doc in value()) {
        let started = Instant::now();
        let parsed = FieldSelector::parse(&text);
        if let Ok(selector) = &parsed {
            prop_assert!(selector.paths().len() <= opentwins_core::Limits::get().max_selector_paths);
            let _ = selector.apply(&json!({"attributes": doc}));
        }
        well_formed(started, parsed)?;
    }

    #[test]
    fn ditto_envelopes(topic in topic(), headers in headers(), path in pointer_text(), value in json_text()) {
        let text = format!(
            r#"{{"topic":{},"headers":{},"path":{},"value":{value}}}"#,
            Value::String(topic),
            Value::Object(headers),
            Value::String(path),
        );
        let started = Instant::now();
        well_formed(started, Message::from_slice(text.as_bytes()))?;
    }

    #[test]
    fn merge_patches(mut target in value(), patch_value in value(), path in pointer_text()) {
        let started = Instant::now();
        patch::merge(&mut target, &patch_value);
        if let Ok(p) = Pointer::parse(&path) {
            patch::merge_at(&mut target, &p, &patch_value);
        }
        prop_assert!(started.elapsed() < BOUND);
    }

    #[test]
    fn policies(entries in prop::collection::vec((key(), headers(), prop::collection::vec((pointer_text(), value()), 0..4)), 0..4)) {
        let entries: Map<String, Value> = entries
            .into_iter()
            .map(|(label, subjects, resources)| {
                let resources: Map<String, Value> = resources
                    .into_iter()
                    .map(|(path, grant)| (format!("thing:{path}"), json!({"grant": grant, "revoke": []})))
                    .collect();
                (label, json!({"subjects": subjects, "resources": resources}))
            })
            .collect();
        let id = PolicyId::new("ns:p").unwrap();
        let started = Instant::now();
        well_formed(started, Policy::from_json(&id, &json!({"entries": entries}), Timestamp::now()))?;
    }

    #[test]
    fn link_headers(clocks in clocks(), hops in value(), origin in value(), patch_value in value()) {
        let mut cmd = ThingCommand::new(
            ThingId::new("ns:t").unwrap(),
            Action::Merge,
            Pointer::root(),
            Some(patch_value),
        );
        let mut headers = Headers::default();
        headers.other.insert("opentwins-clocks".into(), clocks);
        headers.other.insert("opentwins-hops".into(), hops);
        headers.other.insert("opentwins-origin".into(), origin);
        cmd.headers = headers;
        let started = Instant::now();
        well_formed(started, Update::from_command(&cmd))?;
    }
}

/// One command of a generated sequence.
fn command() -> impl Strategy<Value = (u8, Action, String, Option<Value>)> {
    let action = prop::sample::select(vec![
        Action::Create,
        Action::Modify,
        Action::Merge,
        Action::Delete,
        Action::Retrieve,
    ]);
    let path = prop_oneof![
        3 => prop::sample::select(vec!["/", "/attributes", "/attributes/a", "/features/f/properties", "/policyId"])
            .prop_map(str::to_owned),
        2 => pointer_text().prop_map(|p| format!("/attributes/{}", p.trim_start_matches('/'))),
    ];
    (0u8..3, action, path, prop::option::of(value()))
}

proptest! {
    // A sequence is many commands: an eighth of the cases (32 by default).
    #![proptest_config(ProptestConfig {
        cases: (ProptestConfig::default().cases / 8).max(1),
        ..ProptestConfig::default()
    })]

    // Whatever a sequence of hostile commands does, every answer is well-formed and the store
    // loads again with nothing quarantined.
    #[test]
    fn engine_commands(commands in prop::collection::vec(command(), 1..24)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let users = [
            AuthContext::new(["test:alice"]),
            AuthContext::new(["test:bob"]),
            AuthContext::new(["link:peer"]),
        ];
        let tw = Twins::open(EngineConfig::default(), store.clone()).unwrap();
        tw.enable_composition();
        for (who, action, path, value) in commands {
            let Ok(path) = Pointer::parse(&path) else { continue };
            let cmd = ThingCommand::new(ThingId::new("ns:t").unwrap(), action, path, value);
            let started = Instant::now();
            let result = runtime.block_on(async {
                tokio::time::timeout(BOUND, tw.apply(&users[usize::from(who)], cmd)).await
            });
            let Ok(result) = result else {
                return Err(TestCaseError::fail("a command hung"));
            };
            well_formed(started, result)?;
        }
        let count = tw.thing_count();
        drop(tw);
        let again = Twins::open(EngineConfig::default(), store).unwrap();
        prop_assert!(again.quarantined().is_empty(), "{:?}", again.quarantined());
        prop_assert_eq!(again.thing_count(), count);
    }
}
