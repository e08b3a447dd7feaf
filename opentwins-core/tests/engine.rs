//! The engine end to end, in process: every path level, revisions, preconditions, policies,
//! events, sinks, limits and restarts.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LIMIT, cmd, id, put_policy};
use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{
    Action, EventAction, Headers, TWIN_PERSISTED, ThingCommand, ThingEvent,
};
use opentwins_core::store::{SledConfig, SledStore, Store};
use opentwins_core::{Error, FieldSelector, Thing};
use serde_json::{Value, json};

fn alice() -> AuthContext {
    AuthContext::new(["test:alice"])
}

async fn run(
    tw: &Twins,
    auth: &AuthContext,
    c: ThingCommand,
) -> Result<(u16, Option<Value>, Vec<ThingEvent>), Error> {
    let out = tokio::time::timeout(LIMIT, tw.apply(auth, c))
        .await
        .expect("engine hung")?;
    Ok((out.response.status, out.response.value, out.events))
}

async fn ok(tw: &Twins, auth: &AuthContext, c: ThingCommand) -> (u16, Option<Value>) {
    let (s, v, _) = run(tw, auth, c).await.unwrap_or_else(|e| panic!("{e}"));
    (s, v)
}

async fn err(tw: &Twins, auth: &AuthContext, c: ThingCommand) -> Error {
    run(tw, auth, c).await.expect_err("command should fail")
}

#[tokio::test]
async fn every_level_create_retrieve_modify_delete() {
    let tw = Twins::in_memory(EngineConfig::default());
    let a = alice();
    let (status, value) = ok(
        &tw,
        &a,
        cmd(
            "ns:car",
            Action::Create,
            "/",
            Some(json!({"attributes": {"brand": "x"}})),
        ),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        value.unwrap(),
        json!({"thingId": "ns:car", "policyId": "ns:car", "attributes": {"brand": "x"}})
    );

    // (path, first value, second value) at every level below the thing.
    let levels = [
        ("/definition", json!("ns:vehicle:1"), json!("ns:vehicle:2")),
        ("/attributes", json!({"a": 1}), json!({"b": 2})),
        ("/attributes/loc/lat", json!(1.5), json!(2.5)),
        (
            "/features",
            json!({"gps": {}}),
            json!({"gps": {"properties": {"v": 1}}}),
        ),
        (
            "/features/lane",
            json!({"properties": {"offset": 0.1}}),
            json!({}),
        ),
        (
            "/features/lane/definition",
            json!(["ns:lane:1"]),
            json!(["ns:lane:2"]),
        ),
        (
            "/features/lane/properties",
            json!({"offset": 0.2}),
            json!({"offset": 0.3}),
        ),
        ("/features/lane/properties/offset", json!(0.4), json!(0.5)),
        (
            "/features/lane/desiredProperties",
            json!({"mode": "a"}),
            json!({"mode": "b"}),
        ),
        (
            "/features/lane/desiredProperties/mode",
            json!("c"),
            json!("d"),
        ),
    ];
    let mut revision = 1;
    for (path, first, second) in levels {
        let (s1, _) = ok(
            &tw,
            &a,
            cmd("ns:car", Action::Modify, path, Some(first.clone())),
        )
        .await;
        assert!(s1 == 201 || s1 == 204, "{path}: {s1}");
        let (s2, v2) = ok(
            &tw,
            &a,
            cmd("ns:car", Action::Modify, path, Some(second.clone())),
        )
        .await;
        assert_eq!((s2, v2), (204, None), "{path}");
        let (s3, v3) = ok(&tw, &a, cmd("ns:car", Action::Retrieve, path, None)).await;
        assert_eq!((s3, v3.unwrap()), (200, second.clone()), "{path}");
        revision += 2;
        assert_eq!(
            tw.get_thing(&id("ns:car")).unwrap().revision(),
            revision,
            "{path}"
        );
    }
    // Deletes from the deepest up, then 404 at each level.
    for path in [
        "/features/lane/desiredProperties/mode",
        "/features/lane/desiredProperties",
        "/features/lane/properties/offset",
        "/features/lane/properties",
        "/features/lane/definition",
        "/features/lane",
        "/features",
        "/attributes/loc/lat",
        "/attributes",
        "/definition",
    ] {
        let (s, _) = ok(&tw, &a, cmd("ns:car", Action::Delete, path, None)).await;
        assert_eq!(s, 204, "{path}");
        let e = err(&tw, &a, cmd("ns:car", Action::Retrieve, path, None)).await;
        assert_eq!(e.status(), 404, "{path}");
    }
    let e = err(
        &tw,
        &a,
        cmd(
            "ns:car",
            Action::Retrieve,
            "/features/lane/properties",
            None,
        ),
    )
    .await;
    assert_eq!(e.code(), "things:feature.properties.notfound");
    let e = err(
        &tw,
        &a,
        cmd("ns:car", Action::Delete, "/attributes/nope", None),
    )
    .await;
    assert_eq!(e.code(), "things:attribute.notfound");
    // Properties of a missing feature cannot be modified (Ditto: feature not found).
    let e = err(
        &tw,
        &a,
        cmd(
            "ns:car",
            Action::Modify,
            "/features/none/properties/x",
            Some(json!(1)),
        ),
    )
    .await;
    assert_eq!(e.code(), "things:feature.notfound");

    let (s, _) = ok(&tw, &a, cmd("ns:car", Action::Delete, "/", None)).await;
    assert_eq!(s, 204);
    assert_eq!(
        err(&tw, &a, cmd("ns:car", Action::Retrieve, "/", None))
            .await
            .code(),
        "things:thing.notfound"
    );
}

#[tokio::test]
async fn modify_at_root_creates_then_replaces_and_create_conflicts() {
    let tw = Twins::in_memory(EngineConfig::default());
    let a = alice();
    let (s, _) = ok(
        &tw,
        &a,
        cmd(
            "ns:t",
            Action::Modify,
            "/",
            Some(json!({"attributes": {"x": 1}})),
        ),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = ok(
        &tw,
        &a,
        cmd("ns:t", Action::Modify, "/", Some(json!({"features": {}}))),
    )
    .await;
    assert_eq!(s, 204);
    let thing = tw.get_thing(&id("ns:t")).unwrap();
    assert_eq!(
        thing.body(),
        &json!({"thingId": "ns:t", "policyId": "ns:t", "features": {}})
    );
    assert_eq!(
        err(&tw, &a, cmd("ns:t", Action::Create, "/", Some(json!({}))))
            .await
            .code(),
        "things:thing.conflict"
    );
    // A merge of a whole missing thing creates it (Ditto since 3.3), without the patch's nulls.
    let (s, v) = ok(
        &tw,
        &a,
        cmd(
            "ns:merged",
            Action::Merge,
            "/",
            Some(json!({"attributes": {"x": 1, "y": null}})),
        ),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(
        v.unwrap(),
        json!({"thingId": "ns:merged", "policyId": "ns:merged", "attributes": {"x": 1}})
    );
    // Sub-resource commands on a missing thing: 404.
    for c in [
        cmd("ns:none", Action::Merge, "/attributes", Some(json!({}))),
        cmd("ns:none", Action::Modify, "/attributes/a", Some(json!(1))),
        cmd("ns:none", Action::Delete, "/", None),
    ] {
        assert_eq!(err(&tw, &a, c).await.code(), "things:thing.notfound");
    }
}

#[tokio::test]
async fn merge_at_paths_and_revisions() {
    let tw = Twins::in_memory(EngineConfig::default());
    let a = alice();
    ok(
        &tw,
        &a,
        cmd(
            "ns:m",
            Action::Create,
            "/",
            Some(json!({"attributes": {"a": 1, "b": {"c": 2}}})),
        ),
    )
    .await;
    let (s, _, events) = run(
        &tw,
        &a,
        cmd(
            "ns:m",
            Action::Merge,
            "/attributes",
            Some(json!({"a": null, "b": {"d": 3}})),
        ),
    )
    .await
    .unwrap();
    assert_eq!(s, 204);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].action, EventAction::Merged);
    assert_eq!(events[0].revision, 2);
    assert_eq!(events[0].value, Some(json!({"a": null, "b": {"d": 3}})));
    ok(
        &tw,
        &a,
        cmd(
            "ns:m",
            Action::Merge,
            "/features/new/properties",
            Some(json!({"p": {"q": 1}})),
        ),
    )
    .await;
    let t = tw.get_thing(&id("ns:m")).unwrap();
    assert_eq!(t.body()["attributes"], json!({"b": {"c": 2, "d": 3}}));
    assert_eq!(
        t.body()["features"],
        json!({"new": {"properties": {"p": {"q": 1}}}})
    );
    assert_eq!(t.revision(), 3);
    assert_eq!(t.etag(), "\"rev:3\"");
}

fn with_headers(mut c: ThingCommand, h: Value) -> ThingCommand {
    c.headers = Headers::from_json(h.as_object().unwrap()).unwrap();
    c
}

#[tokio::test]
async fn preconditions() {
    let tw = Twins::in_memory(EngineConfig::default());
    let a = alice();
    ok(
        &tw,
        &a,
        cmd(
            "ns:p",
            Action::Create,
            "/",
            Some(json!({"attributes": {"temp": 20}})),
        ),
    )
    .await;
    let modify = || cmd("ns:p", Action::Modify, "/attributes/temp", Some(json!(21)));
    let e = err(
        &tw,
        &a,
        with_headers(modify(), json!({"if-match": "\"rev:7\""})),
    )
    .await;
    assert_eq!(
        (e.status(), e.code().as_ref()),
        (412, "things:precondition.failed")
    );
    ok(
        &tw,
        &a,
        with_headers(modify(), json!({"if-match": "\"rev:1\""})),
    )
    .await;
    ok(&tw, &a, with_headers(modify(), json!({"if-match": "*"}))).await;
    let e = err(
        &tw,
        &a,
        with_headers(modify(), json!({"if-none-match": "*"})),
    )
    .await;
    assert_eq!(e.status(), 412);
    // if-none-match on a retrieve that matches: 304.
    let e = err(
        &tw,
        &a,
        with_headers(
            cmd("ns:p", Action::Retrieve, "/", None),
            json!({"if-none-match": "\"rev:3\""}),
        ),
    )
    .await;
    assert_eq!(
        (e.status(), e.code().as_ref()),
        (304, "things:precondition.notmodified")
    );
    // if-none-match * creates only when absent.
    let create = || {
        with_headers(
            cmd("ns:q", Action::Modify, "/", Some(json!({}))),
            json!({"if-none-match": "*"}),
        )
    };
    assert_eq!(ok(&tw, &a, create()).await.0, 201);
    assert_eq!(err(&tw, &a, create()).await.status(), 412);
    // if-match on a missing thing fails.
    let e = err(
        &tw,
        &a,
        with_headers(
            cmd("ns:r", Action::Modify, "/", Some(json!({}))),
            json!({"if-match": "*"}),
        ),
    )
    .await;
    assert_eq!(e.status(), 412);
    // condition: RQL over the current thing.
    let cond = |c: &str| with_headers(modify(), json!({"condition": c}));
    let e = err(&tw, &a, cond("gt(attributes/temp,30)")).await;
    assert_eq!(
        (e.status(), e.code().as_ref()),
        (412, "things:condition.failed")
    );
    ok(&tw, &a, cond("lt(attributes/temp,30)")).await;
    assert_eq!(
        err(&tw, &a, cond("lt(attributes/temp,")).await.code(),
        "rql.expression.invalid"
    );
    assert_eq!(tw.get_thing(&id("ns:p")).unwrap().revision(), 4);
}

#[tokio::test]
async fn fields_and_metadata_fields() {
    let tw = Twins::in_memory(EngineConfig::default());
    let a = alice();
    ok(&tw, &a, cmd("ns:f", Action::Create, "/", Some(json!({
        "attributes": {"location": "x", "model": "y"},
        "features": {"gps": {"properties": {"speed": 3, "alt": 4}}, "lane": {"properties": {"speed": 5}}}
    })))).await;
    let mut c = cmd("ns:f", Action::Retrieve, "/", None);
    c.fields = Some(
        FieldSelector::parse("thingId,attributes/location,features/*/properties/speed,_revision")
            .unwrap(),
    );
    let (_, v) = ok(&tw, &a, c).await;
    assert_eq!(
        v.unwrap(),
        json!({
            "thingId": "ns:f", "attributes": {"location": "x"},
            "features": {"gps": {"properties": {"speed": 3}}, "lane": {"properties": {"speed": 5}}},
            "_revision": 1
        })
    );
}

#[tokio::test]
async fn policies_filter_reads_and_refuse_writes() {
    let tw = Twins::in_memory(EngineConfig::default());
    let admin = AuthContext::new(["test:admin"]);
    let reader = AuthContext::new(["test:reader"]);
    let stranger = AuthContext::new(["test:nobody"]);
    put_policy(
        &tw,
        &admin,
        "ns:pol",
        json!({
            "entries": {
                "admin": {
                    "subjects": {"test:admin": {"type": "user"}},
                    "resources": {
                        "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
                        "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}
                    }
                },
                "reader": {
                    "subjects": {"test:reader": {"type": "user"}},
                    "resources": {
                        "thing:/": {"grant": ["READ"], "revoke": []},
                        "thing:/attributes/secret": {"grant": [], "revoke": ["READ"]},
                        "thing:/features/lane/properties": {"grant": ["WRITE"], "revoke": []}
                    }
                }
            }
        }),
    )
    .await;
    ok(
        &tw,
        &admin,
        cmd(
            "ns:v",
            Action::Create,
            "/",
            Some(json!({
                "policyId": "ns:pol",
                "attributes": {"secret": "s3", "public": 1},
                "features": {"lane": {"properties": {"offset": 0.1}}}
            })),
        ),
    )
    .await;

    // Partial read: the secret is filtered out.
    let (_, v) = ok(
        &tw,
        &reader,
        cmd("ns:v", Action::Retrieve, "/attributes", None),
    )
    .await;
    assert_eq!(v.unwrap(), json!({"public": 1}));
    assert_eq!(
        err(
            &tw,
            &reader,
            cmd("ns:v", Action::Retrieve, "/attributes/secret", None)
        )
        .await
        .status(),
        404
    );
    // READ but no WRITE: 403; WRITE granted deeper: allowed.
    let e = err(
        &tw,
        &reader,
        cmd("ns:v", Action::Modify, "/attributes/public", Some(json!(2))),
    )
    .await;
    assert_eq!(
        (e.status(), e.code().as_ref()),
        (403, "things:attribute.notmodifiable")
    );
    ok(
        &tw,
        &reader,
        cmd(
            "ns:v",
            Action::Modify,
            "/features/lane/properties/offset",
            Some(json!(0.2)),
        ),
    )
    .await;
    // A merge touching a forbidden path is refused as a whole.
    let e = err(&tw, &reader, cmd("ns:v", Action::Merge, "/", Some(json!({"features": {"lane": {"properties": {"offset": 0.3}}}, "attributes": {"public": 5}})))).await;
    assert_eq!(e.status(), 403);
    assert_eq!(
        tw.get_thing(&id("ns:v")).unwrap().body()["features"]["lane"]["properties"]["offset"],
        json!(0.2)
    );
    // Unknown subject: the thing does not exist for it.
    for c in [
        cmd("ns:v", Action::Retrieve, "/", None),
        cmd("ns:v", Action::Modify, "/attributes/public", Some(json!(3))),
        cmd("ns:v", Action::Delete, "/", None),
    ] {
        assert_eq!(err(&tw, &stranger, c).await.code(), "things:thing.notfound");
    }
    // Search sees only what the caller may read.
    let r = tw
        .search(&reader, Some("exists(attributes/public)"), None, None)
        .unwrap();
    assert_eq!(
        r.items,
        vec![json!({
            "thingId": "ns:v", "policyId": "ns:pol",
            "attributes": {"public": 1},
            "features": {"lane": {"properties": {"offset": 0.2}}}
        })]
    );
    assert_eq!(
        tw.count(&reader, Some("eq(attributes/secret,\"s3\")"))
            .unwrap(),
        0
    );
    assert_eq!(
        tw.count(&admin, Some("eq(attributes/secret,\"s3\")"))
            .unwrap(),
        1
    );
    assert_eq!(tw.count(&stranger, None).unwrap(), 0);
}

#[tokio::test]
async fn creating_with_a_missing_or_foreign_policy_is_refused() {
    let tw = Twins::in_memory(EngineConfig::default());
    let e = err(
        &tw,
        &alice(),
        cmd(
            "ns:x",
            Action::Create,
            "/",
            Some(json!({"policyId": "ns:missing"})),
        ),
    )
    .await;
    assert_eq!(
        (e.status(), e.code().as_ref()),
        (403, "things:thing.notcreatable")
    );
    ok(
        &tw,
        &alice(),
        cmd("ns:y", Action::Create, "/", Some(json!({}))),
    )
    .await;
    // Bob may not use Alice's default policy.
    let bob = AuthContext::new(["test:bob"]);
    let e = err(
        &tw,
        &bob,
        cmd(
            "ns:z",
            Action::Create,
            "/",
            Some(json!({"policyId": "ns:y"})),
        ),
    )
    .await;
    assert_eq!(e.code(), "things:thing.notcreatable");
    assert!(tw.get_thing(&id("ns:x")).is_none());
    assert!(tw.get_thing(&id("ns:z")).is_none());
}

async fn recv(s: &mut opentwins_core::engine::Subscription) -> ThingEvent {
    tokio::time::timeout(LIMIT, s.recv())
        .await
        .expect("no event")
        .unwrap()
}

#[tokio::test]
async fn subscribers_get_filtered_events_in_order() {
    let tw = Twins::in_memory(EngineConfig::default());
    let a = alice();
    let mut all = tw.subscribe(a.clone(), None).unwrap();
    let mut lane_only = tw
        .subscribe(a.clone(), Some("exists(features/lane)"))
        .unwrap();
    let mut stranger = tw
        .subscribe(AuthContext::new(["test:nobody"]), None)
        .unwrap();
    ok(&tw, &a, cmd("ns:e", Action::Create, "/", Some(json!({})))).await;
    ok(
        &tw,
        &a,
        cmd("ns:e", Action::Modify, "/attributes/x", Some(json!(1))),
    )
    .await;
    ok(
        &tw,
        &a,
        cmd(
            "ns:e",
            Action::Modify,
            "/features/lane",
            Some(json!({"properties": {"offset": 1}})),
        ),
    )
    .await;
    let e1 = recv(&mut all).await;
    let e2 = recv(&mut all).await;
    let e3 = recv(&mut all).await;
    assert_eq!((e1.action, e1.revision), (EventAction::Created, 1));
    assert_eq!(
        (e2.action, e2.path.to_string(), e2.revision),
        (EventAction::Created, "/attributes/x".into(), 2)
    );
    assert_eq!(e3.revision, 3);
    let l = recv(&mut lane_only).await;
    assert_eq!(l.revision, 3);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), stranger.recv())
            .await
            .is_err(),
        "stranger saw an event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_see_each_thing_in_revision_order_under_concurrency() {
    let tw = Twins::in_memory(EngineConfig::default());
    let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let s = seen.clone();
    tw.add_sink(Arc::new(move |e: &ThingEvent, _: Option<&Thing>| {
        s.lock().unwrap().push((e.thing_id.to_string(), e.revision));
    }));
    let a = alice();
    for t in 0..4 {
        ok(
            &tw,
            &a,
            cmd(&format!("ns:c{t}"), Action::Create, "/", Some(json!({}))),
        )
        .await;
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let tw = tw.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let c = cmd(
                    &format!("ns:c{}", (w + i) % 4),
                    Action::Merge,
                    "/attributes",
                    Some(json!({"w": w, "i": i})),
                );
                tw.apply(&a, c).await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(LIMIT, t).await.unwrap().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4 + 8 * 200);
    for t in 0..4 {
        let revs: Vec<u64> = seen
            .iter()
            .filter(|(id, _)| *id == format!("ns:c{t}"))
            .map(|(_, r)| *r)
            .collect();
        let expected: Vec<u64> = (1..=revs.len() as u64).collect();
        assert_eq!(revs, expected, "thing {t}");
    }
}

#[tokio::test]
async fn size_limits_give_413_and_change_nothing() {
    let tw = Twins::in_memory(EngineConfig {
        max_thing_bytes: 1000,
        max_value_bytes: 700,
        ..EngineConfig::default()
    });
    let a = alice();
    ok(
        &tw,
        &a,
        cmd(
            "ns:s",
            Action::Create,
            "/",
            Some(json!({"attributes": {"a": "x".repeat(400)}})),
        ),
    )
    .await;
    let e = err(
        &tw,
        &a,
        cmd(
            "ns:s",
            Action::Modify,
            "/attributes/b",
            Some(json!("y".repeat(700))),
        ),
    )
    .await;
    assert_eq!(
        (e.status(), e.code().as_ref()),
        (413, "things:thing.toolarge")
    );
    let e = err(
        &tw,
        &a,
        cmd(
            "ns:s",
            Action::Modify,
            "/attributes/b",
            Some(json!("y".repeat(650))),
        ),
    )
    .await;
    assert_eq!(e.status(), 413);
    let e = err(
        &tw,
        &a,
        cmd(
            "ns:s",
            Action::Merge,
            "/attributes",
            Some(json!({"c": "z".repeat(400), "d": "w".repeat(250)})),
        ),
    )
    .await;
    assert_eq!(e.status(), 413, "merge over the thing limit: {e}");
    let t = tw.get_thing(&id("ns:s")).unwrap();
    assert_eq!(t.revision(), 1);
    assert_eq!(t.body()["attributes"], json!({"a": "x".repeat(400)}));
}

#[tokio::test]
async fn camera_frames_fit_by_default() {
    let tw = Twins::in_memory(EngineConfig::default());
    let a = alice();
    let frame = "A".repeat(270_000);
    ok(&tw, &a, cmd("ns:cam", Action::Create, "/", Some(json!({})))).await;
    let (s, _) = ok(
        &tw,
        &a,
        cmd(
            "ns:cam",
            Action::Modify,
            "/features/camera",
            Some(json!({"properties": {"frame": frame}})),
        ),
    )
    .await;
    assert_eq!(s, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_restart_restores_things_policies_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let config = SledConfig {
        path: dir.path().join("db"),
        ..SledConfig::default()
    };
    let a = alice();
    let persisted = |c: ThingCommand| with_headers(c, json!({"requested-acks": [TWIN_PERSISTED]}));
    let before;
    {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(config.clone()).unwrap());
        let tw = Twins::open(EngineConfig::default(), store).unwrap();
        for i in 0..20 {
            ok(
                &tw,
                &a,
                persisted(cmd(
                    &format!("ns:r{i}"),
                    Action::Create,
                    "/",
                    Some(json!({"attributes": {"i": i}})),
                )),
            )
            .await;
            ok(
                &tw,
                &a,
                persisted(cmd(
                    &format!("ns:r{i}"),
                    Action::Merge,
                    "/attributes",
                    Some(json!({"j": i})),
                )),
            )
            .await;
        }
        ok(&tw, &a, persisted(cmd("ns:r0", Action::Delete, "/", None))).await;
        before = tw
            .search(
                &a,
                None,
                Some("size(200)"),
                Some(&FieldSelector::parse("thingId,policyId,attributes,_revision").unwrap()),
            )
            .unwrap();
        assert_eq!(before.items.len(), 19);
    }
    let store: Arc<dyn Store> = Arc::new(SledStore::open(config).unwrap());
    let tw = Twins::open(EngineConfig::default(), store).unwrap();
    let after = tw
        .search(
            &a,
            None,
            Some("size(200)"),
            Some(&FieldSelector::parse("thingId,policyId,attributes,_revision").unwrap()),
        )
        .unwrap();
    assert_eq!(after, before);
    assert_eq!(tw.get_thing(&id("ns:r5")).unwrap().revision(), 2);
    // Policies came back too: alice still may write, bob may not read.
    ok(
        &tw,
        &a,
        cmd("ns:r5", Action::Modify, "/attributes/k", Some(json!(1))),
    )
    .await;
    let bob = AuthContext::new(["test:bob"]);
    assert_eq!(
        err(&tw, &bob, cmd("ns:r5", Action::Retrieve, "/", None))
            .await
            .status(),
        404
    );
    assert_eq!(tw.get_thing(&id("ns:r5")).unwrap().revision(), 3);
}

/// Transient paths: subscribers see the frame, the thing, the store and the sinks never do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_values_reach_subscribers_only() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledConfig {
        path: dir.path().join("db"),
        ..SledConfig::default()
    };
    let config = EngineConfig {
        transient: vec!["/features/camera/properties/frame".into()],
        ..EngineConfig::default()
    };
    let a = alice();
    let persisted = |c: ThingCommand| with_headers(c, json!({"requested-acks": [TWIN_PERSISTED]}));
    {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(sled.clone()).unwrap());
        let tw = Twins::open(config.clone(), store.clone()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::<ThingEvent>::new()));
        let sink = seen.clone();
        tw.add_sink(Arc::new(move |e: &ThingEvent, t: Option<&Thing>| {
            assert!(!t.unwrap().body().to_string().contains("AAAA"));
            sink.lock().unwrap().push(e.clone());
        }));
        let mut sub = tw.subscribe(alice(), None).unwrap();
        // A frame sent to a thing that does not exist creates nothing.
        let frame = json!({"features": {"camera": {"properties": {"frame": "AAAA"}}}});
        let e = err(
            &tw,
            &a,
            cmd("ns:car", Action::Merge, "/", Some(frame.clone())),
        )
        .await;
        assert_eq!(e.status(), 404);
        let body = json!({"features": {"camera": {"properties": {"seq": 0}}}});
        ok(
            &tw,
            &a,
            persisted(cmd("ns:car", Action::Create, "/", Some(body))),
        )
        .await;

        // Transient as a whole: answered, published with the same revision, nothing kept.
        let (s, _, events) = run(
            &tw,
            &a,
            persisted(cmd(
                "ns:car",
                Action::Modify,
                "/features/camera/properties/frame",
                Some(json!("AAAA")),
            )),
        )
        .await
        .unwrap();
        assert_eq!((s, events.len()), (204, 1));
        let (s, _, events) = run(&tw, &a, cmd("ns:car", Action::Merge, "/", Some(frame)))
            .await
            .unwrap();
        assert_eq!((s, events[0].revision), (204, 1));
        // Partly transient: the rest applies (revision 2), subscribers get the whole value.
        let both = json!({"properties": {"frame": "AAAA", "seq": 1}});
        ok(
            &tw,
            &a,
            persisted(cmd(
                "ns:car",
                Action::Merge,
                "/features/camera",
                Some(both.clone()),
            )),
        )
        .await;
        let mut got = Vec::new();
        for _ in 0..4 {
            let e = tokio::time::timeout(LIMIT, sub.recv())
                .await
                .unwrap()
                .unwrap();
            got.push((e.revision, e.path.to_string(), e.value));
        }
        assert_eq!(
            got[1..],
            [
                (
                    1,
                    "/features/camera/properties/frame".to_owned(),
                    Some(json!("AAAA"))
                ),
                (
                    1,
                    "/".to_owned(),
                    Some(json!({"features": {"camera": {"properties": {"frame": "AAAA"}}}}))
                ),
                (2, "/features/camera".to_owned(), Some(both)),
            ]
        );
        // Sinks saw the create and the persistent part of the merge only.
        let sunk: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| (e.revision, e.value.clone()))
            .collect();
        assert_eq!(sunk[1], (2, Some(json!({"properties": {"seq": 1}}))));
        assert_eq!(sunk.len(), 2);
        let e = err(
            &tw,
            &a,
            cmd(
                "ns:car",
                Action::Retrieve,
                "/features/camera/properties/frame",
                None,
            ),
        )
        .await;
        assert_eq!(e.status(), 404);
        // A frame for a feature that does not exist fails like any modify.
        let e = err(
            &tw,
            &a,
            cmd(
                "ns:car",
                Action::Modify,
                "/features/nope/properties/frame",
                Some(json!(1)),
            ),
        )
        .await;
        assert_eq!(e.status(), 404);
        // Nobody else may send frames either.
        let bob = AuthContext::new(["test:bob"]);
        let e = err(
            &tw,
            &bob,
            cmd(
                "ns:car",
                Action::Modify,
                "/features/camera/properties/frame",
                Some(json!(1)),
            ),
        )
        .await;
        assert_eq!(e.status(), 404);
    }
    // After a restart: revision 2, no frame anywhere in the store.
    let store: Arc<dyn Store> = Arc::new(SledStore::open(sled).unwrap());
    let record = store
        .get(opentwins_core::store::Kind::Thing, "ns:car")
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&record.json).contains("AAAA"));
    let tw = Twins::open(config, store).unwrap();
    let t = tw.get_thing(&id("ns:car")).unwrap();
    assert_eq!(
        (t.revision(), &t.body()["features"]),
        (2, &json!({"camera": {"properties": {"seq": 1}}}))
    );
}
