//! The history routes through `app()` with `oneshot` (no socket): writes through the things
//! API are recorded by a `HistorySink`, then `GET /api/2/history/things/{id}` lists the paths
//! and `GET /api/2/history/things/{id}/{path}` answers raw points, pages and buckets, with the
//! caller's read permission on the thing's current policy and Ditto-style errors.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::history::{
    History, HistoryConfig, HistorySink, MemoryHistory, Point, SledHistory,
};
use opentwins_core::{Pointer, ThingId, Timestamp};
use opentwins_transport::http::{
    AuthConfig, HttpConfig, HttpState, TokenConfig, UserConfig, app, hash_password, hash_token,
};
use serde_json::{Value, json};
use tower::ServiceExt;

const LIMIT: Duration = Duration::from_secs(30);
const THING: &str = "t.hist:car";

fn alice() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:wonderland")
    )
}

fn bob() -> String {
    "Bearer bob-token".to_owned()
}

fn config() -> HttpConfig {
    HttpConfig {
        auth: AuthConfig {
            users: vec![UserConfig {
                name: "alice".into(),
                password_hash: hash_password("wonderland"),
                subjects: vec![],
            }],
            tokens: vec![TokenConfig {
                sha256: hash_token("bob-token"),
                subject: "token:bob".into(),
            }],
            ..AuthConfig::default()
        },
        ..HttpConfig::default()
    }
}

/// An app whose engine records into `history`.
fn app_with(history: Arc<dyn History>) -> Router {
    let twins = Twins::in_memory(EngineConfig::default());
    twins.add_sink(Arc::new(HistorySink::new(
        history.clone(),
        &HistoryConfig::default(),
    )));
    app(HttpState::new(twins, config())
        .unwrap()
        .with_history(history))
}

struct Reply {
    status: StatusCode,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    fn ok(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        self.json()
    }

    fn error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let v = self.json();
        assert_eq!(
            (v["status"].clone(), v["error"].clone()),
            (json!(status), json!(code)),
            "{v}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if body.is_some() {
        let ct = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        req = req.header("content-type", ct);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, app.clone().oneshot(req))
        .await
        .expect("request hung")
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &Router, uri: &str, who: &str) -> Reply {
    call(app, "GET", uri, Some(who), None).await
}

async fn write(app: &Router, method: &str, uri: &str, body: Value) {
    let r = call(app, method, uri, Some(&alice()), Some(body)).await;
    assert!(r.status.is_success(), "{method} {uri}: {}", r.text);
}

fn series_uri(path: &str, query: &str) -> String {
    format!("/api/2/history/things/{THING}{path}{query}")
}

/// A car with a speed reported three times and a gear removed.
async fn car(app: &Router) {
    let props = format!("/api/2/things/{THING}/features/drive/properties");
    write(
        app,
        "PUT",
        &format!("/api/2/things/{THING}"),
        json!({"attributes": {"model": "x"},
               "features": {"drive": {"properties": {"speed": 10, "gear": "D"}}}}),
    )
    .await;
    write(app, "PATCH", &props, json!({"speed": 12.5})).await;
    write(app, "PUT", &format!("{props}/speed"), json!(15)).await;
    let r = call(
        app,
        "DELETE",
        &format!("{props}/gear"),
        Some(&alice()),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

#[tokio::test]
async fn listing_and_raw_points_follow_the_writes() {
    let history = Arc::new(MemoryHistory::new());
    let app = app_with(history.clone());
    car(&app).await;
    let a = alice();

    let list = get(&app, &format!("/api/2/history/things/{THING}"), &a)
        .await
        .ok();
    assert_eq!(list["thingId"], json!(THING));
    let paths = list["paths"].as_array().unwrap();
    let summary: Vec<_> = paths
        .iter()
        .map(|p| {
            (
                p["path"].clone(),
                p["count"].clone(),
                p.get("removed").cloned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                json!("/features/drive/properties/gear"),
                json!(2),
                Some(json!(true))
            ),
            (json!("/features/drive/properties/speed"), json!(3), None),
        ],
        "attributes are not recorded by default"
    );
    let first = Timestamp::parse(paths[1]["first"].as_str().unwrap()).unwrap();
    let last = Timestamp::parse(paths[1]["last"].as_str().unwrap()).unwrap();
    assert!(first < last);

    let r = get(
        &app,
        &series_uri("/features/drive/properties/speed", ""),
        &a,
    )
    .await
    .ok();
    assert_eq!(r["thingId"], json!(THING));
    assert_eq!(r["path"], json!("/features/drive/properties/speed"));
    assert_eq!(
        (r["from"].clone(), r["to"].clone()),
        (Value::Null, Value::Null)
    );
    assert!(r.get("next").is_none() && r.get("step").is_none(), "{r}");
    let points = r["points"].as_array().unwrap();
    let values: Vec<_> = points
        .iter()
        .map(|p| (p["revision"].clone(), p["value"].clone()))
        .collect();
    assert_eq!(
        values,
        vec![
            (json!(1), json!(10)),
            (json!(2), json!(12.5)),
            (json!(3), json!(15))
        ]
    );
    assert!(Timestamp::parse(points[0]["t"].as_str().unwrap()).is_ok());

    let gear = get(&app, &series_uri("/features/drive/properties/gear", ""), &a)
        .await
        .ok();
    assert_eq!(
        gear["points"][1],
        json!({"t": gear["points"][1]["t"], "revision": 4, "value": null, "removed": true})
    );

    // Newest first, two per page, continued with the cursor.
    let uri = series_uri("/features/drive/properties/speed", "?order=desc&limit=2");
    let page = get(&app, &uri, &a).await.ok();
    assert_eq!(page["order"], json!("desc"));
    let revs: Vec<_> = page["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["revision"].clone())
        .collect();
    assert_eq!(revs, vec![json!(3), json!(2)]);
    let next = page["next"].as_str().expect("a next cursor").to_owned();
    let rest = get(&app, &format!("{uri}&cursor={next}"), &a).await.ok();
    let revs: Vec<_> = rest["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["revision"].clone())
        .collect();
    assert_eq!(revs, vec![json!(1)]);
    assert!(rest.get("next").is_none());

    // A time range: from the second point on, relative `to`.
    let from = points[1]["t"].as_str().unwrap();
    let ranged = get(
        &app,
        &series_uri(
            "/features/drive/properties/speed",
            &format!("?from={from}&to=now"),
        ),
        &a,
    )
    .await
    .ok();
    assert_eq!(ranged["points"].as_array().unwrap().len(), 2);
    assert_eq!(ranged["from"], json!(from));
    let none = get(
        &app,
        &series_uri("/features/drive/properties/speed", "?to=-1h"),
        &a,
    )
    .await
    .ok();
    assert_eq!(none["points"], json!([]));

    // A readable path without history: no points, not an error.
    let attr = get(&app, &series_uri("/attributes/model", ""), &a)
        .await
        .ok();
    assert_eq!(attr["points"], json!([]));
}

#[tokio::test]
async fn steps_answer_buckets_on_sled() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let history = Arc::new(SledHistory::open(&db).unwrap());
    let app = app_with(history.clone());
    write(
        &app,
        "PUT",
        &format!("/api/2/things/{THING}"),
        json!({"features": {"env": {"properties": {}}}}),
    )
    .await;
    // Points at known times: 12:00:00.5, 12:00:00.9 (numbers), 12:00:01.2 (a string),
    // 12:00:03.0 (a number), plus a tombstone at 12:00:01.5.
    let base = Timestamp::parse("2026-05-01T12:00:00Z")
        .unwrap()
        .as_micros();
    let path = Pointer::parse("/features/env/properties/temp").unwrap();
    let id = ThingId::new(THING).unwrap();
    let at = |ms: u64, revision: u64, value: Option<Value>| {
        (
            path.clone(),
            Point {
                time: Timestamp::from_micros(base + ms * 1000),
                revision,
                value,
            },
        )
    };
    history
        .record(
            &id,
            &[
                at(500, 2, Some(json!(20))),
                at(900, 3, Some(json!(21.5))),
                at(1200, 4, Some(json!("n/a"))),
                at(1500, 5, None),
                at(3000, 6, Some(json!(19))),
            ],
        )
        .unwrap();
    let a = alice();
    let uri = series_uri(
        "/features/env/properties/temp",
        "?step=1s&from=2026-05-01T12:00:00Z&to=2026-05-01T12:01:00Z",
    );
    let r = get(&app, &uri, &a).await.ok();
    assert_eq!(r["step"], json!("1s"));
    assert_eq!(r["from"], json!("2026-05-01T12:00:00.000000Z"));
    assert_eq!(
        r["buckets"],
        json!([
            {"t": "2026-05-01T12:00:00.000000Z", "count": 2, "min": 20, "max": 21.5, "avg": 20.75,
             "first": 20, "last": 21.5},
            {"t": "2026-05-01T12:00:01.000000Z", "count": 1, "first": "n/a", "last": "n/a"},
            {"t": "2026-05-01T12:00:03.000000Z", "count": 1, "min": 19, "max": 19, "avg": 19.0,
             "first": 19, "last": 19}
        ])
    );
    assert!(r.get("points").is_none());

    // Bucket pages never split a bucket.
    let page = get(&app, &format!("{uri}&limit=2"), &a).await.ok();
    assert_eq!(page["buckets"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_owned();
    let rest = get(&app, &format!("{uri}&limit=2&cursor={next}"), &a)
        .await
        .ok();
    assert_eq!(
        rest["buckets"][0]["t"],
        json!("2026-05-01T12:00:03.000000Z")
    );
    assert!(rest.get("next").is_none());

    // The raw limit caps points the same way.
    let raw = get(
        &app,
        &series_uri("/features/env/properties/temp", "?limit=3"),
        &a,
    )
    .await
    .ok();
    assert_eq!(raw["points"].as_array().unwrap().len(), 3);
    assert!(raw["next"].is_string());
}

#[tokio::test]
async fn bad_parameters_are_400_with_ditto_errors() {
    let app = app_with(Arc::new(MemoryHistory::new()));
    car(&app).await;
    let a = alice();
    let speed = "/features/drive/properties/speed";
    for query in [
        "?limit=0",
        "?limit=10001",
        "?limit=many",
        "?from=yesterday",
        "?to=2026-02-30T00:00:00Z",
        "?from=2026-05-02T00:00:00Z&to=2026-05-01T00:00:00Z",
        "?step=0s",
        "?step=often",
        "?order=up",
        "?cursor=zz",
    ] {
        let r = get(&app, &series_uri(speed, query), &a).await;
        let v = r.error(400, "history:query.invalid");
        assert!(v["description"].is_string(), "{query}: {v}");
    }
    get(&app, "/api/2/history/things/no-namespace/features/x", &a)
        .await
        .error(400, "things:id.invalid");
    get(
        &app,
        &series_uri("/features/drive/properties//speed", ""),
        &a,
    )
    .await
    .error(400, "json.pointer.invalid");
    call(&app, "DELETE", &series_uri(speed, ""), Some(&a), None)
        .await
        .error(405, "gateway:method.notallowed");
    call(
        &app,
        "POST",
        &format!("/api/2/history/things/{THING}"),
        Some(&a),
        None,
    )
    .await
    .error(405, "gateway:method.notallowed");
    call(&app, "GET", &series_uri(speed, ""), None, None)
        .await
        .error(401, "gateway:authentication.failed");
}

#[tokio::test]
async fn reads_follow_the_current_policy() {
    let app = app_with(Arc::new(MemoryHistory::new()));
    let policy = json!({"entries": {
        "owner": {"subjects": {"basic:alice": {"type": "t"}}, "resources": {
            "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
            "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}}},
        "reader": {"subjects": {"token:bob": {"type": "t"}}, "resources": {
            "thing:/features/pub": {"grant": ["READ"], "revoke": []},
            "thing:/features/pub/properties/secret": {"grant": [], "revoke": ["READ"]}}}
    }});
    write(&app, "PUT", "/api/2/policies/t.hist:p", policy).await;
    write(
        &app,
        "PUT",
        &format!("/api/2/things/{THING}"),
        json!({"policyId": "t.hist:p", "features": {
            "pub": {"properties": {"x": 1, "secret": 2}},
            "priv": {"properties": {"y": 3}}}}),
    )
    .await;
    let b = bob();
    let list = get(&app, &format!("/api/2/history/things/{THING}"), &b)
        .await
        .ok();
    let paths: Vec<_> = list["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].clone())
        .collect();
    assert_eq!(paths, vec![json!("/features/pub/properties/x")]);
    let x = get(&app, &series_uri("/features/pub/properties/x", ""), &b)
        .await
        .ok();
    assert_eq!(x["points"][0]["value"], json!(1));
    for hidden in [
        "/features/pub/properties/secret",
        "/features/priv/properties/y",
    ] {
        get(&app, &series_uri(hidden, ""), &b)
            .await
            .error(404, "things:feature.property.notfound");
    }
    // Alice sees all three.
    let all = get(&app, &format!("/api/2/history/things/{THING}"), &alice())
        .await
        .ok();
    assert_eq!(all["paths"].as_array().unwrap().len(), 3);

    // Another caller's thing: not found on both routes.
    write(
        &app,
        "PUT",
        "/api/2/things/t.hist:private",
        json!({"features": {"f": {"properties": {"v": 1}}}}),
    )
    .await;
    get(&app, "/api/2/history/things/t.hist:private", &b)
        .await
        .error(404, "things:thing.notfound");
    get(
        &app,
        "/api/2/history/things/t.hist:private/features/f/properties/v",
        &b,
    )
    .await
    .error(404, "things:thing.notfound");

    // Revoking bob's entry takes effect at once: the policy is read on every request.
    call(
        &app,
        "DELETE",
        "/api/2/policies/t.hist:p/entries/reader",
        Some(&alice()),
        None,
    )
    .await;
    get(&app, &series_uri("/features/pub/properties/x", ""), &b)
        .await
        .error(404, "things:thing.notfound");
}

#[tokio::test]
async fn a_deleted_thing_is_not_found_though_its_history_remains() {
    let history = Arc::new(MemoryHistory::new());
    let app = app_with(history.clone());
    car(&app).await;
    let r = call(
        &app,
        "DELETE",
        &format!("/api/2/things/{THING}"),
        Some(&alice()),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    get(
        &app,
        &series_uri("/features/drive/properties/speed", ""),
        &alice(),
    )
    .await
    .error(404, "things:thing.notfound");
    get(&app, &format!("/api/2/history/things/{THING}"), &alice())
        .await
        .error(404, "things:thing.notfound");
    let kept = history
        .paths(&ThingId::new(THING).unwrap(), &Pointer::root())
        .unwrap();
    // The two properties, and `/`, which marks the deletion.
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(
        kept.iter().all(|p| p.removed),
        "tombstoned on delete: {kept:?}"
    );
}

// Issue 14, finding 12: after alice deleted her thing, bob re-created the id and read her
// history. A history belongs to one incarnation of a thing.
#[tokio::test]
async fn a_re_created_thing_does_not_show_its_predecessors_history() {
    let history = Arc::new(MemoryHistory::new());
    let app = app_with(history.clone());
    car(&app).await;
    let thing = format!("/api/2/things/{THING}");
    let r = call(&app, "DELETE", &thing, Some(&alice()), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    // Alice's default policy outlives her thing, so bob names a policy of his own.
    let policy = json!({"entries": {"bob": {
        "subjects": {"token:bob": {"type": "token"}},
        "resources": {"thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
                      "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}}}}});
    let r = call(
        &app,
        "PUT",
        "/api/2/policies/t.hist:bobs",
        Some(&bob()),
        Some(policy),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let body = json!({"policyId": "t.hist:bobs",
                      "features": {"drive": {"properties": {"speed": 99}}}});
    let r = call(&app, "PUT", &thing, Some(&bob()), Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let list = get(&app, &format!("/api/2/history/things/{THING}"), &bob())
        .await
        .ok();
    assert_eq!(
        list["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (&p["path"], &p["count"]))
            .collect::<Vec<_>>(),
        [(&json!("/features/drive/properties/speed"), &json!(1))],
        "{list}"
    );
    for (path, values) in [("speed", vec![json!(99)]), ("gear", vec![])] {
        let uri = series_uri(&format!("/features/drive/properties/{path}"), "");
        let series = get(&app, &uri, &bob()).await.ok();
        let got: Vec<Value> = series["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["value"].clone())
            .collect();
        assert_eq!(got, values, "{series}");
    }
}

#[tokio::test]
async fn without_a_history_the_routes_say_so() {
    let twins = Twins::in_memory(EngineConfig::default());
    let app = app(HttpState::new(twins, config()).unwrap());
    car(&app).await;
    for uri in [
        format!("/api/2/history/things/{THING}"),
        series_uri("/features/drive/properties/speed", ""),
    ] {
        get(&app, &uri, &alice())
            .await
            .error(404, "history:history.notenabled");
    }
}
