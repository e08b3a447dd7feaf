//! The bad-input matrix: every kind of malformed command gets a Ditto-style error (status,
//! error code, message, description) and changes nothing — no new revision, no event.

use std::time::Duration;

use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, Message, ThingCommand};
use opentwins_core::{Error, Pointer, ThingId};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(20);
const THING: &str = "ns:victim";

fn command(action: Action, path: &str, value: Option<Value>) -> ThingCommand {
    ThingCommand::new(
        ThingId::new(THING).unwrap(),
        action,
        Pointer::parse(path).unwrap(),
        value,
    )
}

fn headers(h: Value) -> Headers {
    Headers::from_json(h.as_object().unwrap()).unwrap()
}

async fn setup() -> (Twins, AuthContext) {
    let tw = Twins::in_memory(EngineConfig {
        max_thing_bytes: 4096,
        max_value_bytes: 2048,
        ..EngineConfig::default()
    });
    let owner = AuthContext::new(["test:owner"]);
    let c = command(
        Action::Create,
        "/",
        Some(json!({
            "attributes": {"a": 1},
            "features": {"f": {"properties": {"p": 1}}}
        })),
    );
    tw.apply(&owner, c).await.unwrap();
    (tw, owner)
}

/// Runs one bad command and checks: the expected error, a message, and no change at all.
async fn rejects(
    name: &str,
    auth: Option<AuthContext>,
    cmd: ThingCommand,
    status: u16,
    code: &str,
) {
    let (tw, owner) = setup().await;
    let before = tw.get_thing(&ThingId::new(THING).unwrap()).unwrap();
    let mut events = tw.subscribe(AuthContext::system(), None).unwrap();
    let auth = auth.unwrap_or(owner);
    let result = tokio::time::timeout(LIMIT, tw.apply(&auth, cmd))
        .await
        .expect("hung");
    let e: Error = result.expect_err(name);
    assert_eq!(
        (e.status(), e.code().as_ref()),
        (status, code),
        "{name}: {e}"
    );
    assert!(!e.message().is_empty(), "{name}: empty message");
    let rendered = e.to_json();
    assert_eq!(rendered["status"], status, "{name}");
    assert_eq!(rendered["error"], code, "{name}");
    let after = tw.get_thing(&ThingId::new(THING).unwrap()).unwrap();
    assert_eq!(after, before, "{name}: the thing changed");
    assert!(
        tokio::time::timeout(Duration::from_millis(20), events.recv())
            .await
            .is_err(),
        "{name}: an event was emitted"
    );
}

#[tokio::test]
async fn wrong_types_at_known_fields() {
    let cases = [
        ("attributes not an object", "/attributes", json!(5)),
        ("features not an object", "/features", json!([])),
        ("feature not an object", "/features/f", json!("x")),
        (
            "properties not an object",
            "/features/f/properties",
            json!(true),
        ),
        (
            "desiredProperties not an object",
            "/features/f/desiredProperties",
            json!(1),
        ),
        (
            "feature definition not an array",
            "/features/f/definition",
            json!("a:b:1"),
        ),
        (
            "feature definition of numbers",
            "/features/f/definition",
            json!([1]),
        ),
        ("definition not a string", "/definition", json!(3)),
        ("policyId not a string", "/policyId", json!(3)),
        ("thing not an object", "/", json!("thing")),
        ("key with a slash", "/attributes", json!({"a/b": 1})),
        ("empty key deep inside", "/attributes/x", json!({"": 1})),
    ];
    for (name, path, value) in cases {
        rejects(
            name,
            None,
            command(Action::Modify, path, Some(value)),
            400,
            "json.field.invalid",
        )
        .await;
    }
}

#[tokio::test]
async fn unknown_top_level_and_feature_fields() {
    rejects(
        "unknown top-level",
        None,
        command(Action::Modify, "/", Some(json!({"color": "red"}))),
        400,
        "json.field.invalid",
    )
    .await;
    rejects(
        "unknown top-level in merge",
        None,
        command(Action::Merge, "/", Some(json!({"color": "red"}))),
        400,
        "json.field.invalid",
    )
    .await;
    rejects(
        "unknown feature field",
        None,
        command(Action::Modify, "/features/f", Some(json!({"props": {}}))),
        400,
        "json.field.invalid",
    )
    .await;
}

#[tokio::test]
async fn invalid_ids_and_paths() {
    assert_eq!(
        ThingId::new("no-namespace-separator").unwrap_err().code(),
        "things:id.invalid"
    );
    assert_eq!(ThingId::new("1bad:x").unwrap_err().status(), 400);
    assert_eq!(
        Pointer::parse("/attributes//x").unwrap_err().code(),
        "json.pointer.invalid"
    );
    rejects(
        "policyId invalid",
        None,
        command(Action::Modify, "/policyId", Some(json!("nocolon"))),
        400,
        "policies:id.invalid",
    )
    .await;
    rejects(
        "unknown resource path",
        None,
        command(Action::Modify, "/thingId", Some(json!("ns:x"))),
        404,
        "things:path.unknown",
    )
    .await;
    rejects(
        "feature id with control char",
        None,
        command(Action::Modify, "/features", Some(json!({"a\u{1}b": {}}))),
        400,
        "json.field.invalid",
    )
    .await;
    rejects(
        "create below root",
        None,
        command(Action::Create, "/attributes", Some(json!({}))),
        400,
        "things:protocol.invalid",
    )
    .await;
    rejects(
        "modify without value",
        None,
        command(Action::Modify, "/attributes/a", None),
        400,
        "json.field.invalid",
    )
    .await;
}

#[tokio::test]
async fn oversize_values() {
    rejects(
        "value over max_value_bytes",
        None,
        command(
            Action::Modify,
            "/attributes/big",
            Some(json!("x".repeat(3000))),
        ),
        413,
        "things:thing.toolarge",
    )
    .await;
    let mut merge = serde_json::Map::new();
    for i in 0..3 {
        merge.insert(format!("k{i}"), json!("y".repeat(1500)));
    }
    rejects(
        "several merges over max_thing_bytes",
        None,
        command(Action::Merge, "/attributes", Some(Value::Object(merge))),
        413,
        "things:thing.toolarge",
    )
    .await;
}

#[tokio::test]
async fn invalid_rql_and_headers() {
    let mut c = command(Action::Modify, "/attributes/a", Some(json!(2)));
    c.headers = headers(json!({"condition": "eq(attributes/a"}));
    rejects(
        "invalid RQL condition",
        None,
        c,
        400,
        "rql.expression.invalid",
    )
    .await;
    let mut c = command(Action::Modify, "/attributes/a", Some(json!(2)));
    c.headers = headers(json!({"if-match": "rev:1"}));
    rejects("unquoted entity tag", None, c, 400, "header.invalid").await;
    let (tw, owner) = setup().await;
    for filter in [
        "eq(attributes/a)",
        "and()",
        "foo(a,1)",
        "eq(attributes//a,1)",
        "eq(a,\"x",
    ] {
        let e = tw.search(&owner, Some(filter), None, None).unwrap_err();
        assert_eq!(e.code(), "rql.expression.invalid", "{filter}");
    }
    for option in [
        "size(0)",
        "size(x)",
        "sort(attributes/a)",
        "cursor(!!!)",
        "limit",
    ] {
        let e = tw.search(&owner, None, Some(option), None).unwrap_err();
        assert_eq!(e.status(), 400, "{option}");
    }
}

#[tokio::test]
async fn patches_that_would_change_identity() {
    rejects(
        "merge changes thingId",
        None,
        command(Action::Merge, "/", Some(json!({"thingId": "ns:other"}))),
        400,
        "things:id.notsettable",
    )
    .await;
    rejects(
        "modify changes thingId",
        None,
        command(Action::Modify, "/", Some(json!({"thingId": "ns:other"}))),
        400,
        "things:id.notsettable",
    )
    .await;
    rejects(
        "merge removes thingId",
        None,
        command(Action::Merge, "/", Some(json!({"thingId": null}))),
        400,
        "json.field.invalid",
    )
    .await;
    rejects(
        "merge removes policyId",
        None,
        command(Action::Merge, "/", Some(json!({"policyId": null}))),
        400,
        "json.field.invalid",
    )
    .await;
    rejects(
        "delete policyId",
        None,
        command(Action::Delete, "/policyId", None),
        400,
        "json.field.invalid",
    )
    .await;
    rejects(
        "policyId to a missing policy",
        None,
        command(Action::Modify, "/policyId", Some(json!("ns:missing"))),
        404,
        "policies:policy.notfound",
    )
    .await;
}

#[tokio::test]
async fn unknown_subjects() {
    let stranger = || Some(AuthContext::new(["test:stranger"]));
    rejects(
        "stranger modifies",
        stranger(),
        command(Action::Modify, "/attributes/a", Some(json!(2))),
        404,
        "things:thing.notfound",
    )
    .await;
    rejects(
        "stranger merges",
        stranger(),
        command(Action::Merge, "/", Some(json!({"attributes": {"a": 3}}))),
        404,
        "things:thing.notfound",
    )
    .await;
    rejects(
        "stranger deletes",
        stranger(),
        command(Action::Delete, "/", None),
        404,
        "things:thing.notfound",
    )
    .await;
    rejects(
        "stranger creates over",
        stranger(),
        command(Action::Create, "/", Some(json!({}))),
        404,
        "things:thing.notfound",
    )
    .await;
    rejects(
        "no subjects at all",
        Some(AuthContext::new(Vec::<String>::new())),
        command(Action::Retrieve, "/", None),
        404,
        "things:thing.notfound",
    )
    .await;
}

#[test]
fn malformed_protocol_json() {
    for (bytes, code) in [
        (&b"{not json"[..], "json.invalid"),
        (&b"[]"[..], "things:protocol.invalid"),
        (&br#"{"topic": "ns/x/things/twin/commands/frobnicate", "path": "/", "headers": {}}"#[..], "things:protocol.invalid"),
        (&br#"{"topic": "ns/x/things/twin/commands/modify", "path": "/attributes//a", "headers": {}, "value": 1}"#[..], "json.pointer.invalid"),
        (&br#"{"topic": "1ns/x/things/twin/commands/retrieve", "path": "/", "headers": {}}"#[..], "things:id.invalid"),
    ] {
        let e = Message::from_slice(bytes).unwrap_err();
        assert_eq!(e.code(), code, "{}", String::from_utf8_lossy(bytes));
        assert_eq!(e.status(), 400);
    }
}
