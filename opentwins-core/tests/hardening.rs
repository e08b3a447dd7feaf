//! Regression tests for the hardening findings (issue 14): each reproduces an attack on the
//! engine and asserts it fails while the legitimate use keeps working.

mod common;

use std::sync::Arc;

use common::{LIMIT, cmd, id, put_policy};
use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, PolicyCommand, ThingCommand};
use opentwins_core::replica::{Replica, Stamp, Update, changes_for_merge};
use opentwins_core::store::{Expect, Kind, MemoryStore, Record, Store, WriteOp};
use opentwins_core::{Error, Pointer, PolicyId};
use serde_json::{Value, json};

fn user(name: &str) -> AuthContext {
    AuthContext::new([format!("test:{name}")])
}

async fn run(tw: &Twins, auth: &AuthContext, c: ThingCommand) -> Result<Option<Value>, Error> {
    let out = tokio::time::timeout(LIMIT, tw.apply(auth, c))
        .await
        .expect("engine hung")?;
    Ok(out.response.value)
}

async fn ok(tw: &Twins, auth: &AuthContext, c: ThingCommand) -> Option<Value> {
    run(tw, auth, c).await.unwrap_or_else(|e| panic!("{e}"))
}

async fn err(tw: &Twins, auth: &AuthContext, c: ThingCommand) -> Error {
    run(tw, auth, c).await.expect_err("command should fail")
}

/// A policy granting each `(subject, resource, permissions)`, one entry each.
fn policy(grants: &[(&str, &str, &[&str])]) -> Value {
    let mut entries = serde_json::Map::new();
    for (i, (subject, resource, perms)) in grants.iter().enumerate() {
        entries.insert(
            format!("e{i}"),
            json!({
                "subjects": {*subject: {"type": "test"}},
                "resources": {*resource: {"grant": perms, "revoke": []}}
            }),
        );
    }
    json!({ "entries": entries })
}

/// A peer's update of `thing` merging `patch` at `path`, stamped `wall_ms` by instance `evil`.
fn peer_update(thing: &str, path: &str, patch: Value, wall_ms: u64) -> Update {
    let stamp = Stamp {
        wall_ms,
        counter: 0,
        origin: Arc::from("evil"),
    };
    Update {
        thing_id: id(thing),
        origin: Arc::from("evil"),
        hops: vec![Arc::from("evil")],
        policy_id: None,
        changes: Replica::from(changes_for_merge(
            &Pointer::parse(path).unwrap(),
            &patch,
            &stamp,
        )),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// Finding 11: a policy created in advance under a thing's id is never adopted silently.
#[tokio::test]
async fn a_squatted_policy_id_makes_creation_fail_instead_of_being_adopted() {
    let tw = Twins::in_memory(EngineConfig::default());
    let (alice, bob) = (user("alice"), user("bob"));
    let squat = policy(&[
        ("test:alice", "thing:/", &["READ", "WRITE"]),
        ("test:bob", "thing:/", &["READ"]),
        ("test:bob", "policy:/", &["READ", "WRITE"]),
    ]);
    put_policy(&tw, &bob, "sec:alice-car", squat).await;
    let body = json!({"attributes": {"vin": "secret"}});
    let e = err(
        &tw,
        &alice,
        cmd("sec:alice-car", Action::Create, "/", Some(body.clone())),
    )
    .await;
    assert_eq!(e.code(), "things:thing.notcreatable");
    assert!(tw.get_thing(&id("sec:alice-car")).is_none());
    // Naming it is a choice alice may make.
    let mut named = body;
    named["policyId"] = json!("sec:alice-car");
    ok(
        &tw,
        &alice,
        cmd("sec:alice-car", Action::Create, "/", Some(named)),
    )
    .await;
    // A thing with a fresh id still gets its own default policy.
    let v = ok(
        &tw,
        &alice,
        cmd("sec:other", Action::Create, "/", Some(json!({}))),
    )
    .await;
    assert_eq!(v.unwrap()["policyId"], "sec:other");
}

// Finding 11 for links: a peer's new thing never lands under a policy that does not grant the
// peer, and the policy made for it keeps the fallback's operators.
#[tokio::test]
async fn a_peer_creates_things_only_under_policies_that_grant_it() {
    let tw = Twins::in_memory(EngineConfig::default());
    let (bob, ops, peer) = (user("bob"), user("ops"), AuthContext::new(["link:edge1"]));
    put_policy(
        &tw,
        &bob,
        "ns:squat",
        policy(&[("test:bob", "policy:/", &["READ", "WRITE"])]),
    )
    .await;
    put_policy(
        &tw,
        &ops,
        "ns:fleet",
        policy(&[
            ("test:ops", "thing:/", &["READ", "WRITE"]),
            ("test:ops", "policy:/", &["READ", "WRITE"]),
        ]),
    )
    .await;
    let fleet = PolicyId::new("ns:fleet").unwrap();
    let up = peer_update("ns:squat", "/attributes", json!({"a": 1}), now_ms());
    let e = tw
        .apply_update(&peer, &up, Some(&fleet), &|_| false, true)
        .await
        .expect_err("the squatted id must refuse the peer");
    assert_eq!(e.code(), "things:thing.notcreatable");
    assert!(tw.get_thing(&id("ns:squat")).is_none());

    let up = peer_update("ns:car", "/attributes", json!({"a": 1}), now_ms());
    tw.apply_update(&peer, &up, Some(&fleet), &|_| false, true)
        .await
        .unwrap();
    let thing = tw.get_thing(&id("ns:car")).unwrap();
    assert_eq!(thing.policy_id().as_str(), "ns:car");
    // The fleet's operators keep access; the peer may write this thing only.
    let v = ok(
        &tw,
        &ops,
        cmd("ns:car", Action::Retrieve, "/attributes/a", None),
    )
    .await;
    assert_eq!(v.unwrap(), json!(1));
    ok(
        &tw,
        &ops,
        cmd(
            "ns:other",
            Action::Create,
            "/",
            Some(json!({"policyId": "ns:fleet"})),
        ),
    )
    .await;
    let up = peer_update("ns:other", "/attributes", json!({"a": 2}), now_ms());
    let e = tw
        .apply_update(&peer, &up, Some(&fleet), &|_| false, true)
        .await
        .expect_err("the fleet policy does not grant the peer");
    assert_eq!(e.status(), 404, "{e}");
}

/// `{"p": {"p": … 1 …}}`, `depth` levels deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |v, _| json!({ "p": v }))
}

// Finding 3: one accepted write nested 136 deep made the store unloadable at the next start.
#[tokio::test]
async fn a_write_may_not_nest_deeper_than_the_store_can_load() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let tw = Twins::open(EngineConfig::default(), store.clone()).unwrap();
    let bob = user("bob");
    ok(&tw, &bob, cmd("ns:t", Action::Create, "/", Some(json!({})))).await;
    let max = opentwins_core::Limits::get().max_json_depth;
    let path = format!("/attributes{}", "/p".repeat(9));
    for (at, value) in [
        (path.as_str(), nested(126)),
        ("/attributes", nested(max)),
        ("/", json!({"attributes": nested(max)})),
    ] {
        let write = cmd("ns:t", Action::Modify, at, Some(value.clone()));
        assert_eq!(err(&tw, &bob, write).await.status(), 400, "{at}");
        let merge = cmd("ns:t", Action::Merge, at, Some(value));
        assert_eq!(err(&tw, &bob, merge).await.status(), 400, "{at}");
    }
    // One level less is accepted, and loads again.
    let write = cmd("ns:t", Action::Modify, "/attributes", Some(nested(max - 1)));
    ok(&tw, &bob, write).await;
    drop(tw);
    let again = Twins::open(EngineConfig::default(), store).unwrap();
    assert!(again.quarantined().is_empty());
    let v = ok(
        &again,
        &bob,
        cmd("ns:t", Action::Retrieve, "/attributes", None),
    )
    .await;
    assert_eq!(v.unwrap(), nested(max - 1));
}

// Finding 3: a record that does not load is quarantined; the instance starts without it.
#[tokio::test]
async fn a_record_that_does_not_load_is_quarantined_and_the_rest_loads() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let tw = Twins::open(EngineConfig::default(), store.clone()).unwrap();
    let alice = user("alice");
    ok(
        &tw,
        &alice,
        cmd("ns:good", Action::Create, "/", Some(json!({}))),
    )
    .await;
    drop(tw);
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let bad = |kind: Kind, id: &str, json: &str| WriteOp::Put {
        record: Record {
            kind,
            id: id.into(),
            revision: 1,
            json: Arc::from(json.as_bytes()),
        },
        expect: Expect::Any,
    };
    store
        .write(vec![
            bad(
                Kind::Thing,
                "ns:deep",
                &format!(r#"{{"thingId":"ns:deep","attributes":{{"a":{deep}}}}}"#),
            ),
            bad(Kind::Thing, "not an id", "{}"),
            bad(Kind::Policy, "ns:broken", "{\"entries\":"),
        ])
        .await
        .unwrap();
    let tw = Twins::open(EngineConfig::default(), store).unwrap();
    let mut ids: Vec<_> = tw.quarantined().iter().map(|q| q.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["not an id", "ns:broken", "ns:deep"]);
    ok(&tw, &alice, cmd("ns:good", Action::Retrieve, "/", None)).await;
    let e = err(&tw, &alice, cmd("ns:deep", Action::Retrieve, "/", None)).await;
    assert_eq!(e.status(), 503, "{e}");
}

/// Thing `ns:v` (attributes `secret`, features `{}`) under a policy giving `test:ops` everything
/// and the peer `link:edge1` READ and WRITE on `/features/lane/properties` only.
async fn fleet_with_peer() -> (Twins, AuthContext, AuthContext) {
    let tw = Twins::in_memory(EngineConfig::default());
    let (ops, peer) = (user("ops"), AuthContext::new(["link:edge1"]));
    let body = policy(&[
        ("test:ops", "thing:/", &["READ", "WRITE"]),
        ("test:ops", "policy:/", &["READ", "WRITE"]),
        (
            "link:edge1",
            "thing:/features/lane/properties",
            &["READ", "WRITE"],
        ),
    ]);
    put_policy(&tw, &ops, "ns:pol", body).await;
    let thing = json!({"policyId": "ns:pol", "attributes": {"secret": "s3"}, "features": {}});
    ok(&tw, &ops, cmd("ns:v", Action::Create, "/", Some(thing))).await;
    (tw, ops, peer)
}

/// The wall time of the clock `path` carries in `thing`'s clocks.
fn stamp_ms(tw: &Twins, thing: &str, path: &str) -> u64 {
    let clocks = tw
        .get_thing(&id(thing))
        .unwrap()
        .clocks()
        .clone()
        .clocks_json();
    let clock = clocks[path].as_str().unwrap();
    Stamp::parse(&clock[1..]).unwrap().wall_ms
}

// Finding 7: an "is an object" mark turned a secret the peer may not write into `{}`.
#[tokio::test]
async fn every_change_a_peer_brings_needs_write_marks_included() {
    let (tw, ops, peer) = fleet_with_peer().await;
    let attack = peer_update("ns:v", "/attributes/secret", json!({}), now_ms() + 1_000);
    let e = tw
        .apply_update(&peer, &attack, None, &|_| false, true)
        .await
        .expect_err("a mark on a path the peer may not write");
    assert_eq!(e.status(), 404, "{e}");
    let v = ok(
        &tw,
        &ops,
        cmd("ns:v", Action::Retrieve, "/attributes/secret", None),
    )
    .await;
    assert_eq!(v.unwrap(), "s3");
    // What the policy grants still replicates, objects appearing on the way included.
    let legit = peer_update(
        "ns:v",
        "/features/lane/properties",
        json!({"offset": 2}),
        now_ms() + 1_000,
    );
    let applied = tw
        .apply_update(&peer, &legit, None, &|_| false, true)
        .await
        .unwrap();
    assert!(applied.changes > 0);
    let v = ok(
        &tw,
        &ops,
        cmd(
            "ns:v",
            Action::Retrieve,
            "/features/lane/properties/offset",
            None,
        ),
    )
    .await;
    assert_eq!(v.unwrap(), 2);
}

// Finding 8: one update stamped at the end of time froze every later local stamp.
#[tokio::test]
async fn stamps_far_ahead_are_refused_and_refused_updates_do_not_move_the_clock() {
    let (tw, ops, peer) = fleet_with_peer().await;
    let write = |v: i64| cmd("ns:v", Action::Modify, "/attributes/n", Some(json!(v)));
    tw.enable_clocks();
    let at_end_of_time = peer_update(
        "ns:v",
        "/features/lane/properties",
        json!({"o": 1}),
        u64::MAX,
    );
    let e = tw
        .apply_update(&peer, &at_end_of_time, None, &|_| false, true)
        .await
        .expect_err("a stamp far ahead");
    assert_eq!(e.status(), 400, "{e}");
    // Within the skew but not authorised: refused, and the clock stays where it was.
    let unauthorised = peer_update("ns:v", "/attributes", json!({"x": 1}), now_ms() + 50_000);
    assert!(
        tw.apply_update(&peer, &unauthorised, None, &|_| false, true)
            .await
            .is_err()
    );
    ok(&tw, &ops, write(1)).await;
    assert!(stamp_ms(&tw, "ns:v", "/attributes/n") < now_ms() + 10_000);
    let first = stamp_ms(&tw, "ns:v", "/attributes/n");
    ok(&tw, &ops, write(2)).await;
    assert!(stamp_ms(&tw, "ns:v", "/attributes/n") >= first);
}

// Finding 13: writing below a value whose WRITE is revoked replaced that value.
#[tokio::test]
async fn writing_below_a_value_replaces_it_and_needs_write_there() {
    let tw = Twins::in_memory(EngineConfig::default());
    let (ops, bob) = (user("ops"), user("bob"));
    let body = json!({"entries": {
        "ops": {
            "subjects": {"test:ops": {"type": "test"}},
            "resources": {
                "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
                "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}
            }
        },
        "bob": {
            "subjects": {"test:bob": {"type": "test"}},
            "resources": {
                "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
                "thing:/attributes/locked": {"grant": [], "revoke": ["WRITE"]}
            }
        }
    }});
    put_policy(&tw, &ops, "ns:pol", body).await;
    let thing = json!({"policyId": "ns:pol", "attributes": {"locked": "do-not-change"}});
    ok(&tw, &ops, cmd("ns:t", Action::Create, "/", Some(thing))).await;
    for attack in [
        cmd(
            "ns:t",
            Action::Modify,
            "/attributes/locked/sub",
            Some(json!(1)),
        ),
        cmd(
            "ns:t",
            Action::Merge,
            "/attributes/locked/sub",
            Some(json!(1)),
        ),
        cmd(
            "ns:t",
            Action::Merge,
            "/attributes",
            Some(json!({"locked": {"sub": 1}})),
        ),
        cmd(
            "ns:t",
            Action::Merge,
            "/attributes/locked",
            Some(json!({"sub": 1})),
        ),
    ] {
        let e = err(&tw, &bob, attack).await;
        assert_eq!(e.status(), 403, "{e}");
    }
    let v = ok(
        &tw,
        &ops,
        cmd("ns:t", Action::Retrieve, "/attributes/locked", None),
    )
    .await;
    assert_eq!(v.unwrap(), "do-not-change");
    // Beside it bob writes as before, and ops (WRITE there) may replace it.
    ok(
        &tw,
        &bob,
        cmd(
            "ns:t",
            Action::Merge,
            "/attributes",
            Some(json!({"free": {"a": 1}})),
        ),
    )
    .await;
    ok(
        &tw,
        &ops,
        cmd(
            "ns:t",
            Action::Modify,
            "/attributes/locked/sub",
            Some(json!(1)),
        ),
    )
    .await;
}

// Finding 10: a policy's entries below a path where the caller's READ is revoked were returned.
#[tokio::test]
async fn a_policy_read_leaves_out_what_the_caller_may_not_read() {
    let tw = Twins::in_memory(EngineConfig::default());
    let (ops, bob) = (user("ops"), user("bob"));
    let body = json!({"entries": {
        "ops": {
            "subjects": {"test:ops": {"type": "test"}},
            "resources": {"policy:/": {"grant": ["READ", "WRITE"], "revoke": []}}
        },
        "bob": {
            "subjects": {"test:bob": {"type": "test"}},
            "resources": {
                "policy:/": {"grant": ["READ"], "revoke": []},
                "policy:/entries/ops": {"grant": [], "revoke": ["READ"]}
            }
        }
    }});
    put_policy(&tw, &ops, "ns:pol", body).await;
    let read = |auth: AuthContext, path: &str| {
        let c = PolicyCommand {
            policy_id: PolicyId::new("ns:pol").unwrap(),
            action: Action::Retrieve,
            path: Pointer::parse(path).unwrap(),
            value: None,
            headers: Headers::default(),
        };
        let tw = tw.clone();
        async move { tw.apply_policy(&auth, c).await }
    };
    let whole = read(bob.clone(), "/")
        .await
        .unwrap()
        .response
        .value
        .unwrap();
    assert!(whole["entries"].get("ops").is_none(), "{whole}");
    assert!(whole["entries"].get("bob").is_some(), "{whole}");
    assert_eq!(
        read(bob.clone(), "/entries/ops")
            .await
            .unwrap_err()
            .status(),
        404
    );
    let all = read(ops, "/").await.unwrap().response.value.unwrap();
    assert!(all["entries"].get("ops").is_some());
}

// Finding 9: sorting on a field the caller may not read leaked its order, and the cursor its
// values.
#[tokio::test]
async fn search_sorts_on_what_the_caller_may_read_and_cursors_hold_nothing_else() {
    use base64::Engine as _;
    let tw = Twins::in_memory(EngineConfig::default());
    let (alice, bob) = (user("alice"), user("bob"));
    let body = json!({"entries": {
        "alice": {
            "subjects": {"test:alice": {"type": "test"}},
            "resources": {
                "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
                "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}
            }
        },
        "bob": {
            "subjects": {"test:bob": {"type": "test"}},
            "resources": {
                "thing:/": {"grant": ["READ"], "revoke": []},
                "thing:/attributes/secret": {"grant": [], "revoke": ["READ"]}
            }
        }
    }});
    put_policy(&tw, &alice, "ns:pol", body).await;
    // Secrets in the reverse order of the ids.
    for (n, secret) in [(1, "zz-secret"), (2, "mm-secret"), (3, "aa-secret")] {
        let thing = json!({"policyId": "ns:pol", "attributes": {"secret": secret, "n": n}});
        ok(
            &tw,
            &alice,
            cmd(&format!("ns:t{n}"), Action::Create, "/", Some(thing)),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let options = match &cursor {
            None => "sort(+attributes/secret),size(1)".to_owned(),
            Some(c) => format!("sort(+attributes/secret),size(1),cursor({c})"),
        };
        let page = tw.search(&bob, None, Some(&options), None).unwrap();
        for item in &page.items {
            assert!(item["attributes"].get("secret").is_none(), "{item}");
            seen.push(item["thingId"].as_str().unwrap().to_owned());
        }
        let Some(next) = page.cursor else { break };
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(next.as_bytes())
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&decoded).contains("-secret"),
            "{next}"
        );
        cursor = Some(next);
    }
    // Hidden values sort as missing: the order is the ids', not the secrets'.
    assert_eq!(seen, ["ns:t1", "ns:t2", "ns:t3"]);
    let first = tw
        .search(&alice, None, Some("sort(+attributes/secret),size(1)"), None)
        .unwrap();
    assert_eq!(
        first.items[0]["thingId"], "ns:t3",
        "alice sorts on the secrets"
    );
    // Alice's cursor holds her last sort value, "aa-secret": sealed, it shows nothing in clear,
    // and it is hers alone: bob cannot continue her search with it, nor forge one.
    let token = first.cursor.expect("more pages");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("secret"), "{token}");
    let next = format!("sort(+attributes/secret),size(1),cursor({token})");
    let second = tw.search(&alice, None, Some(&next), None).unwrap();
    assert_eq!(second.items[0]["thingId"], "ns:t2");
    let stolen = tw.search(&bob, None, Some(&next), None).unwrap_err();
    assert_eq!(stolen.status(), 400, "{stolen}");
    let plain = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"v":1,"s":"+attributes/secret","f":"","k":[["aa-secret"]],"t":"ns:t3"}"#);
    let forged = format!("sort(+attributes/secret),size(1),cursor({plain})");
    assert!(tw.search(&alice, None, Some(&forged), None).is_err());
}

/// A policy body of about `bytes` bytes (compact JSON): entries of one subject and one resource
/// each, the first of which makes it manageable.
fn policy_of(bytes: usize) -> Value {
    let entry = |subject: &str, resource: &str| {
        json!({
            "subjects": {subject: {"type": "test"}},
            "resources": {resource: {"grant": ["READ", "WRITE"], "revoke": []}}
        })
    };
    let mut entries = serde_json::Map::new();
    entries.insert("owner".into(), entry("test:owner", "policy:/"));
    let mut size = 40;
    let mut i = 0;
    while size < bytes {
        let e = entry(
            &format!("test:u{i:06}"),
            &format!("thing:/features/f{i:06}"),
        );
        size += serde_json::to_string(&e).unwrap().len() + 16;
        entries.insert(format!("entry-{i:06}"), e);
        i += 1;
    }
    json!({ "entries": entries })
}

#[tokio::test]
async fn a_policy_larger_than_the_limit_is_refused_when_created_or_grown() {
    let max = opentwins_core::Limits::get().max_policy_bytes;
    let tw = Twins::in_memory(EngineConfig::default());
    let owner = user("owner");
    let put = |path: &str, value: Value, action: Action| PolicyCommand {
        policy_id: PolicyId::new("big:p").unwrap(),
        action,
        path: Pointer::parse(path).unwrap(),
        value: Some(value),
        headers: Headers::default(),
    };
    let too_big = policy_of(max + 1000);
    assert!(serde_json::to_string(&too_big).unwrap().len() > max);
    let e = tokio::time::timeout(
        LIMIT,
        tw.apply_policy(&owner, put("/", too_big, Action::Create)),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(
        (e.status(), &*e.code()),
        (413, "policies:policy.toolarge"),
        "{e}"
    );
    assert!(tw.get_policy(&PolicyId::new("big:p").unwrap()).is_none());

    // Just below the limit is fine; one more entry is not, and changes nothing.
    let fits = policy_of(max - 20_000);
    tokio::time::timeout(
        LIMIT,
        tw.apply_policy(&owner, put("/", fits, Action::Create)),
    )
    .await
    .unwrap()
    .unwrap();
    let before = tw.get_policy(&PolicyId::new("big:p").unwrap()).unwrap();
    assert!(before.json_size() <= max);
    let entry = json!({
        "subjects": {"test:extra": {"type": "test"}},
        "resources": {format!("thing:/{}", "x".repeat(30_000)): {"grant": ["READ"], "revoke": []}}
    });
    let e = tokio::time::timeout(
        LIMIT,
        tw.apply_policy(&owner, put("/entries/extra", entry, Action::Modify)),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(e.code(), "policies:policy.toolarge", "{e}");
    let after = tw.get_policy(&PolicyId::new("big:p").unwrap()).unwrap();
    assert_eq!(after.revision(), before.revision());
    assert!(after.entry("extra").is_none());
    // A small change still goes through.
    let small = json!({"subjects": {"test:extra": {"type": "test"}}, "resources": {}});
    tokio::time::timeout(
        LIMIT,
        tw.apply_policy(&owner, put("/entries/extra", small, Action::Modify)),
    )
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test]
async fn the_event_ring_is_bounded_in_bytes_for_a_subscriber_that_does_not_read() {
    let config = EngineConfig {
        event_buffer_bytes: 1024 * 1024,
        ..EngineConfig::default()
    };
    let tw = Twins::in_memory(config);
    let owner = user("owner");
    put_policy(
        &tw,
        &owner,
        "ring:p",
        policy(&[
            ("test:owner", "thing:/", &["READ", "WRITE"]),
            ("test:owner", "policy:/", &["READ", "WRITE"]),
        ]),
    )
    .await;
    ok(
        &tw,
        &owner,
        cmd(
            "ring:t",
            Action::Create,
            "/",
            Some(json!({"policyId": "ring:p"})),
        ),
    )
    .await;
    let mut slow = tw.subscribe(owner.clone(), None).unwrap();
    // 100 writes of 100 KiB: 10 MiB of events, ten times the ring's bytes.
    let big = "x".repeat(100 * 1024);
    for i in 0..100 {
        ok(
            &tw,
            &owner,
            cmd(
                "ring:t",
                Action::Modify,
                "/attributes/blob",
                Some(json!(format!("{i}{big}"))),
            ),
        )
        .await;
    }
    let first = tokio::time::timeout(LIMIT, slow.recv()).await.unwrap();
    let Err(opentwins_core::engine::RecvError::Lagged(missed)) = first else {
        panic!("the subscriber should have lagged: {first:?}");
    };
    assert!((90..100).contains(&missed), "{missed} events dropped");
    // The rest arrive, newest last.
    let mut last = None;
    for _ in missed..100 {
        let e = tokio::time::timeout(LIMIT, slow.recv())
            .await
            .unwrap()
            .unwrap();
        last = e.value;
    }
    let last = last.unwrap();
    assert!(
        last.as_str().unwrap().starts_with("99x"),
        "the newest is kept"
    );
}

// Issue 15, item 6: graves were kept in memory only; after a restart a late change older than a
// deletion re-created the thing. Each "process" is its own runtime, dropped with its tasks.
#[test]
fn a_deleted_thing_stays_deleted_across_a_restart_until_its_grave_expires() {
    let dir = tempfile::tempdir().unwrap();
    let open = |lifetime_ms: u64| {
        // sled's threads may hold the file lock a moment after the last handle is dropped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let store = loop {
            let config = opentwins_core::store::SledConfig::new(dir.path());
            match opentwins_core::store::SledStore::open(config) {
                Ok(store) => break store,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("cannot reopen the store: {e}"),
            }
        };
        let tw = Twins::open(
            EngineConfig {
                instance_id: "hub".into(),
                grave_lifetime_ms: lifetime_ms,
                ..EngineConfig::default()
            },
            Arc::new(store),
        )
        .unwrap();
        tw.enable_clocks();
        tw
    };
    let process = |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { tokio::time::timeout(LIMIT, f).await.expect("timed out") });
        rt.shutdown_timeout(std::time::Duration::from_secs(5));
    };
    let (ops, peer) = (user("ops"), AuthContext::new(["link:evil"]));
    let fleet = PolicyId::new("ns:fleet").unwrap();
    let before_delete = now_ms();
    process(Box::pin(async {
        let tw = open(60_000);
        let grants = policy(&[
            ("test:ops", "thing:/", &["READ", "WRITE"]),
            ("test:ops", "policy:/", &["READ", "WRITE"]),
            ("link:evil", "thing:/", &["READ", "WRITE"]),
        ]);
        put_policy(&tw, &ops, "ns:fleet", grants).await;
        let thing = json!({"policyId": "ns:fleet", "attributes": {"a": 0}});
        ok(&tw, &ops, cmd("ns:car", Action::Create, "/", Some(thing))).await;
        ok(&tw, &ops, cmd("ns:car", Action::Delete, "/", None)).await;
    }));
    // Restarted: a change made before the deletion arrives late and is old news.
    let late = peer_update("ns:car", "/attributes", json!({"a": 1}), before_delete - 1);
    process(Box::pin(async {
        let tw = open(60_000);
        tw.apply_update(&peer, &late, Some(&fleet), &|_| false, true)
            .await
            .unwrap();
        assert!(tw.get_thing(&id("ns:car")).is_none(), "the grave was lost");
    }));
    // Once the grave expired, the same late change creates the thing again.
    process(Box::pin(async {
        let tw = open(0);
        tw.apply_update(&peer, &late, Some(&fleet), &|_| false, true)
            .await
            .unwrap();
        assert!(tw.get_thing(&id("ns:car")).is_some());
    }));
}
