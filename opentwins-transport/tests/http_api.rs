//! The HTTP API through `app()` with `oneshot` (no socket): every route group, Ditto's headers
//! and status codes, authentication, and the bad-input matrix — each bad request gets the
//! right status and Ditto error code, and the app keeps answering.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_transport::http::{
    AuthConfig, HttpConfig, HttpState, TokenConfig, UserConfig, app, hash_password, hash_token,
};
use serde_json::{Value, json};
use tower::ServiceExt;

const LIMIT: Duration = Duration::from_secs(30);

fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

fn alice() -> String {
    basic("alice", "wonderland")
}

fn bob() -> String {
    "Bearer bob-token".to_owned()
}

fn config() -> HttpConfig {
    HttpConfig {
        max_body_bytes: 64 * 1024,
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

fn test_app() -> Router {
    let twins = Twins::in_memory(EngineConfig::default());
    app(HttpState::new(twins, config()).unwrap())
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Asserts a Ditto error answer with this status and code.
    fn error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let v = self.json();
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(v["error"], code, "{v}");
        assert!(v["message"].is_string(), "{v}");
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let has_ct = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if body.is_some() && !has_ct {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, app.clone().oneshot(req))
        .await
        .expect("request hung")
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn put(app: &Router, uri: &str, body: Value) -> Reply {
    call(
        app,
        "PUT",
        uri,
        Some(&alice()),
        &[],
        Some(&body.to_string()),
    )
    .await
}

async fn get(app: &Router, uri: &str) -> Reply {
    call(app, "GET", uri, Some(&alice()), &[], None).await
}

#[tokio::test]
async fn things_every_level() {
    let app = test_app();
    let r = put(
        &app,
        "/api/2/things/t.every:car",
        json!({"attributes": {"brand": "x"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("location"), Some("/api/2/things/t.every:car"));
    assert_eq!(r.header("etag"), Some("\"rev:1\""), "{:?}", r.headers);
    assert!(r.header("correlation-id").is_some());
    assert_eq!(r.json()["thingId"], "t.every:car");
    assert_eq!(r.json()["policyId"], "t.every:car");

    let r = get(&app, "/api/2/things/t.every:car").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["attributes"]["brand"], "x");
    assert_eq!(r.header("etag"), Some("\"rev:1\""), "{:?}", r.headers);

    // Every sub-resource: PUT creates (201 + Location), PUT again modifies (204), GET reads.
    let levels = [
        ("/definition", json!("ns:model:1"), json!("ns:model:2")),
        ("/attributes", json!({"a": 1}), json!({"b": 2})),
        ("/attributes/loc/lat", json!(1.5), json!(2.5)),
        (
            "/features",
            json!({"gps": {}}),
            json!({"gps": {"properties": {"v": 1}}}),
        ),
        (
            "/features/lane",
            json!({}),
            json!({"properties": {"offset": 0.1}}),
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
        ("/features/lane/properties/deep/x", json!(1), json!(2)),
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
    for (path, first, second) in levels {
        let uri = format!("/api/2/things/t.every:car{path}");
        let r = call(&app, "DELETE", &uri, Some(&alice()), &[], None).await;
        assert!(r.status == 204 || r.status == 404, "{path}: {}", r.text);
        let r = put(&app, &uri, first.clone()).await;
        assert_eq!(r.status, 201, "{path}: {}", r.text);
        assert_eq!(r.header("location"), Some(uri.as_str()), "{path}");
        assert_eq!(r.json(), first, "{path}");
        let r = put(&app, &uri, second.clone()).await;
        assert_eq!(r.status, 204, "{path}: {}", r.text);
        assert!(r.text.is_empty());
        assert!(r.header("etag").unwrap().starts_with("\"rev:"));
        let r = get(&app, &uri).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json(), second, "{path}");
    }
    // policyId: the thing's default policy exists, so setting it to itself works.
    let r = put(
        &app,
        "/api/2/things/t.every:car/policyId",
        json!("t.every:car"),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);

    // PATCH needs the merge-patch media type.
    let patch = r#"{"attributes": {"brand": null, "year": 2024}}"#;
    let r = call(
        &app,
        "PATCH",
        "/api/2/things/t.every:car",
        Some(&alice()),
        &[],
        Some(patch),
    )
    .await;
    r.error(415, "mediatype.unsupported");
    let mp = [("content-type", "application/merge-patch+json")];
    let r = call(
        &app,
        "PATCH",
        "/api/2/things/t.every:car",
        Some(&alice()),
        &mp,
        Some(patch),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = get(&app, "/api/2/things/t.every:car/attributes").await;
    assert_eq!(r.json()["year"], 2024);
    assert!(r.json().get("brand").is_none());
    let r = call(
        &app,
        "PATCH",
        "/api/2/things/t.every:car/features/lane/properties/deep",
        Some(&alice()),
        &mp,
        Some(r#"{"y": 3}"#),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);

    // DELETE at a sub-path, then it is gone with a level-specific 404.
    let r = call(
        &app,
        "DELETE",
        "/api/2/things/t.every:car/attributes/loc",
        Some(&alice()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    get(&app, "/api/2/things/t.every:car/attributes/loc")
        .await
        .error(404, "things:attribute.notfound");
    get(&app, "/api/2/things/t.every:car/features/nope/properties")
        .await
        .error(404, "things:feature.properties.notfound");

    // fields.
    let r = get(
        &app,
        "/api/2/things/t.every:car?fields=thingId,attributes/year,_revision",
    )
    .await;
    let v = r.json();
    assert_eq!(v["attributes"], json!({"year": 2024}));
    assert!(v["_revision"].is_u64());
    assert!(v.get("features").is_none());

    // DELETE the thing.
    let r = call(
        &app,
        "DELETE",
        "/api/2/things/t.every:car",
        Some(&alice()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    get(&app, "/api/2/things/t.every:car")
        .await
        .error(404, "things:thing.notfound");
}

#[tokio::test]
async fn preconditions_and_ditto_headers() {
    let app = test_app();
    put(&app, "/api/2/things/t.pre:a", json!({})).await;
    let a = alice();
    let uri = "/api/2/things/t.pre:a/attributes/x";
    let r = call(
        &app,
        "PUT",
        uri,
        Some(&a),
        &[("if-match", "\"rev:9\"")],
        Some("1"),
    )
    .await;
    r.error(412, "things:precondition.failed");
    let r = call(
        &app,
        "PUT",
        uri,
        Some(&a),
        &[("if-match", "\"rev:1\"")],
        Some("1"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(
        &app,
        "PUT",
        "/api/2/things/t.pre:a",
        Some(&a),
        &[("if-none-match", "*")],
        Some("{}"),
    )
    .await;
    r.error(412, "things:precondition.failed");
    let r = call(
        &app,
        "GET",
        "/api/2/things/t.pre:a",
        Some(&a),
        &[("if-none-match", "\"rev:2\"")],
        None,
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.text.is_empty());
    let r = call(
        &app,
        "PUT",
        &format!("{uri}?condition=eq(attributes/x,2)"),
        Some(&a),
        &[],
        Some("3"),
    )
    .await;
    r.error(412, "things:condition.failed");
    let r = call(
        &app,
        "PUT",
        &format!("{uri}?condition=eq(attributes/x,1)"),
        Some(&a),
        &[],
        Some("3"),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = call(
        &app,
        "PUT",
        uri,
        Some(&a),
        &[("condition", "eq(attributes/x,3)")],
        Some("4"),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);

    // response-required=false: 202, no body, applied.
    let r = call(
        &app,
        "PUT",
        uri,
        Some(&a),
        &[("response-required", "false")],
        Some("5"),
    )
    .await;
    assert_eq!(r.status, 202);
    assert!(r.text.is_empty());
    assert_eq!(get(&app, uri).await.json(), 5);
    let r = call(
        &app,
        "PUT",
        &format!("{uri}?timeout=0"),
        Some(&a),
        &[],
        Some("6"),
    )
    .await;
    assert_eq!(r.status, 202);
    assert_eq!(get(&app, uri).await.json(), 6);

    // requested-acks and timeout as header and parameter; correlation id echoed.
    let r = call(
        &app,
        "PUT",
        &format!("{uri}?requested-acks=twin-persisted&timeout=5s"),
        Some(&a),
        &[("correlation-id", "my-corr")],
        Some("7"),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.header("correlation-id"), Some("my-corr"));
    let r = call(
        &app,
        "PUT",
        uri,
        Some(&a),
        &[("requested-acks", ""), ("timeout", "2s")],
        Some("8"),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    call(
        &app,
        "PUT",
        uri,
        Some(&a),
        &[("timeout", "10 years")],
        Some("9"),
    )
    .await
    .error(400, "header.invalid");
    call(
        &app,
        "PUT",
        uri,
        Some(&a),
        &[("if-match", "rev:1")],
        Some("9"),
    )
    .await
    .error(400, "header.invalid");
}

#[tokio::test]
async fn create_with_generated_id_and_retrieve_many() {
    let app = test_app();
    let r = call(
        &app,
        "POST",
        "/api/2/things",
        Some(&alice()),
        &[],
        Some(r#"{"attributes": {"n": 1}}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["thingId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("opentwins:"), "{id}");
    assert_eq!(
        r.header("location"),
        Some(format!("/api/2/things/{id}").as_str())
    );
    let r = call(
        &app,
        "POST",
        "/api/2/things?namespace=t.gen",
        Some(&alice()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id2 = r.json()["thingId"].as_str().unwrap().to_owned();
    assert!(id2.starts_with("t.gen:"));
    call(
        &app,
        "POST",
        "/api/2/things?namespace=1bad",
        Some(&alice()),
        &[],
        None,
    )
    .await
    .error(400, "things:id.invalid");
    // The id is the server's to choose: one in the body is refused, as Ditto does.
    call(
        &app,
        "POST",
        "/api/2/things",
        Some(&alice()),
        &[],
        Some(r#"{"thingId": "t.gen:mine"}"#),
    )
    .await
    .error(400, "things:id.notsettable");

    let r = get(
        &app,
        &format!("/api/2/things?ids={id2},t.gen:missing,{id}&fields=thingId"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!([{"thingId": id2}, {"thingId": id}]));
    get(&app, "/api/2/things?ids=bad%20id")
        .await
        .error(400, "things:id.invalid");
    get(&app, "/api/2/things")
        .await
        .error(400, "gateway:query.param.missing");
}

#[tokio::test]
async fn search_and_count() {
    let app = test_app();
    for i in 0..5 {
        put(
            &app,
            &format!("/api/2/things/t.search:s{i}"),
            json!({"attributes": {"n": i}}),
        )
        .await;
    }
    put(
        &app,
        "/api/2/things/t.other:x",
        json!({"attributes": {"n": 1}}),
    )
    .await;
    let r = get(&app, "/api/2/search/things?filter=ge(attributes/n,2)&option=sort(-attributes/n),size(2)&fields=thingId").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(
        v["items"],
        json!([{"thingId": "t.search:s4"}, {"thingId": "t.search:s3"}])
    );
    let cursor = v["cursor"].as_str().unwrap().to_owned();
    let r = get(
        &app,
        &format!("/api/2/search/things?filter=ge(attributes/n,2)&option=sort(-attributes/n),size(2),cursor({cursor})&fields=thingId"),
    )
    .await;
    assert_eq!(r.json()["items"], json!([{"thingId": "t.search:s2"}]));
    assert!(r.json().get("cursor").is_none());
    // The same search form-encoded in a POST body (Ditto's; its JavaScript client's
    // `postSearch`), the body's parameters before the query's; any other body type is a 415.
    let form = "filter=ge(attributes%2Fn%2C2)&option=sort(-attributes/n),size(2)\
                &namespaces=t.search&fields=thingId";
    let ct = [("content-type", "application/x-www-form-urlencoded")];
    let r = call(
        &app,
        "POST",
        "/api/2/search/things?fields=policyId",
        Some(&alice()),
        &ct,
        Some(form),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["items"],
        json!([{"thingId": "t.search:s4"}, {"thingId": "t.search:s3"}])
    );
    let r = call(
        &app,
        "POST",
        "/api/2/search/things",
        Some(&alice()),
        &ct,
        Some("filter=eq(attributes/n,1)"),
    )
    .await;
    assert_eq!(
        r.json()["items"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.text
    );
    call(
        &app,
        "POST",
        "/api/2/search/things",
        Some(&alice()),
        &[("content-type", "text/plain")],
        Some("filter=x"),
    )
    .await
    .error(415, "mediatype.unsupported");
    call(
        &app,
        "POST",
        "/api/2/search/things",
        Some(&alice()),
        &ct,
        Some("filter=eq(attributes/n"),
    )
    .await
    .error(400, "rql.expression.invalid");
    let r = get(&app, "/api/2/search/things/count?filter=eq(attributes/n,1)").await;
    assert_eq!(r.text, "2");
    let r = get(
        &app,
        "/api/2/search/things/count?filter=eq(attributes/n,1)&namespaces=t.search",
    )
    .await;
    assert_eq!(r.text, "1");
    let r = get(&app, "/api/2/search/things/count").await;
    assert_eq!(r.json(), 6);
    // Bob sees nothing of alice's things.
    let r = call(
        &app,
        "GET",
        "/api/2/search/things/count",
        Some(&bob()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.json(), 0);
    get(&app, "/api/2/search/things?filter=eq(attributes/n")
        .await
        .error(400, "rql.expression.invalid");
    get(&app, "/api/2/search/things/count?filter=foo(1)")
        .await
        .error(400, "rql.expression.invalid");
    get(&app, "/api/2/search/things?option=size(0)")
        .await
        .error(400, "things-search:option.invalid");
    get(&app, "/api/2/search/things?fields=a((")
        .await
        .error(400, "json.fieldselector.invalid");
}

fn policy_for(subjects: &[&str], read_only: &[&str]) -> Value {
    let mut entries = serde_json::Map::new();
    let subj = |list: &[&str]| {
        Value::Object(
            list.iter()
                .map(|s| ((*s).to_owned(), json!({"type": "test"})))
                .collect(),
        )
    };
    entries.insert(
        "owner".into(),
        json!({"subjects": subj(subjects), "resources": {
            "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
            "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}
        }}),
    );
    if !read_only.is_empty() {
        entries.insert(
            "reader".into(),
            json!({"subjects": subj(read_only), "resources": {
                "thing:/": {"grant": ["READ"], "revoke": []}
            }}),
        );
    }
    json!({"entries": entries})
}

#[tokio::test]
async fn policies_every_level() {
    let app = test_app();
    let base = "/api/2/policies/t.pol:p";
    let r = put(&app, base, policy_for(&["basic:alice"], &[])).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("location"), Some(base));
    let r = get(&app, base).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["policyId"], "t.pol:p");
    assert!(r.header("etag").is_some());
    let r = get(&app, &format!("{base}/entries")).await;
    assert!(r.json()["owner"].is_object());

    // A new entry, its subjects and its resources.
    let entry = json!({"subjects": {"token:bob": {"type": "t"}}, "resources": {"thing:/attributes": {"grant": ["READ"], "revoke": []}}});
    let r = put(&app, &format!("{base}/entries/bobs"), entry).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = put(
        &app,
        &format!("{base}/entries/bobs/subjects/token:carol"),
        json!({"type": "t"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = get(&app, &format!("{base}/entries/bobs/subjects")).await;
    assert!(r.json()["token:carol"].is_object(), "{}", r.text);
    let r = get(
        &app,
        &format!("{base}/entries/bobs/resources/thing:/attributes"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["grant"], json!(["READ"]));
    let r = put(
        &app,
        &format!("{base}/entries/bobs/resources/thing:/features/lane"),
        json!({"grant": ["READ", "WRITE"], "revoke": []}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = put(
        &app,
        &format!("{base}/entries/bobs/resources/thing:/"),
        json!({"grant": ["READ"], "revoke": []}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = get(&app, &format!("{base}/entries/bobs/resources")).await;
    assert!(r.json()["thing:/"].is_object(), "{}", r.text);

    // A thing on that policy: bob reads it (token auth), may write only the lane feature.
    let r = put(
        &app,
        "/api/2/things/t.pol:car",
        json!({"policyId": "t.pol:p", "features": {"lane": {}}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(
        &app,
        "GET",
        "/api/2/things/t.pol:car",
        Some(&bob()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &app,
        "PUT",
        "/api/2/things/t.pol:car/features/lane/properties",
        Some(&bob()),
        &[],
        Some(r#"{"x":1}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    call(
        &app,
        "PUT",
        "/api/2/things/t.pol:car/attributes/a",
        Some(&bob()),
        &[],
        Some("1"),
    )
    .await
    .error(403, "things:attribute.notmodifiable");
    // Bob may not touch the policy itself.
    call(&app, "GET", base, Some(&bob()), &[], None)
        .await
        .error(404, "policies:policy.notfound");
    call(&app, "DELETE", base, Some(&bob()), &[], None)
        .await
        .error(404, "policies:policy.notfound");

    let r = call(
        &app,
        "DELETE",
        &format!("{base}/entries/bobs/subjects/token:carol"),
        Some(&alice()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = call(
        &app,
        "DELETE",
        &format!("{base}/entries/bobs"),
        Some(&alice()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    get(&app, &format!("{base}/entries/bobs"))
        .await
        .error(404, "policies:entry.notfound");
    let r = call(
        &app,
        "GET",
        "/api/2/things/t.pol:car",
        Some(&bob()),
        &[],
        None,
    )
    .await;
    r.error(404, "things:thing.notfound");
    call(&app, "PATCH", base, Some(&alice()), &[], Some("{}"))
        .await
        .error(405, "gateway:method.notallowed");
    put(&app, "/api/2/policies/bad%20id", json!({}))
        .await
        .error(400, "policies:id.invalid");
    put(&app, "/api/2/policies/t.pol:q", json!({"entries": 5}))
        .await
        .error(400, "json.field.invalid");
    // A policy nobody may manage.
    put(&app, "/api/2/policies/t.pol:q", json!({"entries": {"e": {"subjects": {"a:b": {"type": "t"}}, "resources": {"thing:/": {"grant": ["READ"], "revoke": []}}}}}))
        .await
        .error(400, "policies:policy.invalid");
    let r = call(&app, "DELETE", base, Some(&alice()), &[], None).await;
    assert_eq!(r.status, 204);
}

/// method, uri, authorization, headers, body, expected status, expected error code.
type Case = (
    &'static str,
    String,
    Option<String>,
    Vec<(&'static str, &'static str)>,
    Option<String>,
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_input_matrix_keeps_the_app_up() {
    let app = test_app();
    put(&app, "/api/2/things/t.bad:a", json!({})).await;
    let a = alice();
    let big = format!("\"{}\"", "x".repeat(70 * 1024));
    let cases: Vec<Case> = vec![
        (
            "PUT",
            "/api/2/things/t.bad:a/attributes/x".into(),
            Some(a.clone()),
            vec![],
            Some("{nope".into()),
            400,
            "json.invalid",
        ),
        (
            "PUT",
            "/api/2/things/t.bad:a".into(),
            Some(a.clone()),
            vec![],
            Some("".into()),
            400,
            "json.invalid",
        ),
        (
            "PUT",
            "/api/2/things/no-namespace".into(),
            Some(a.clone()),
            vec![],
            Some("{}".into()),
            400,
            "things:id.invalid",
        ),
        (
            "GET",
            "/api/2/things/%20bad:%20".into(),
            Some(a.clone()),
            vec![],
            None,
            400,
            "things:id.invalid",
        ),
        (
            "PUT",
            "/api/2/things/t.bad:a/attributes/x".into(),
            Some(a.clone()),
            vec![("content-type", "text/plain")],
            Some("1".into()),
            415,
            "mediatype.unsupported",
        ),
        (
            "PATCH",
            "/api/2/things/t.bad:a".into(),
            Some(a.clone()),
            vec![("content-type", "application/json")],
            Some("{}".into()),
            415,
            "mediatype.unsupported",
        ),
        (
            "PUT",
            "/api/2/things/t.bad:a/attributes/x".into(),
            Some(a.clone()),
            vec![],
            Some(big.clone()),
            413,
            "things:thing.toolarge",
        ),
        (
            "GET",
            "/api/2/search/things?filter=and(".into(),
            Some(a.clone()),
            vec![],
            None,
            400,
            "rql.expression.invalid",
        ),
        (
            "PUT",
            "/api/2/things/t.bad:a/attributes/x?condition=eq(".into(),
            Some(a.clone()),
            vec![],
            Some("1".into()),
            400,
            "rql.expression.invalid",
        ),
        (
            "GET",
            "/api/2/things/t.bad:a".into(),
            None,
            vec![],
            None,
            401,
            "gateway:authentication.failed",
        ),
        (
            "GET",
            "/api/2/things/t.bad:a".into(),
            Some(basic("alice", "wrong")),
            vec![],
            None,
            401,
            "gateway:authentication.failed",
        ),
        (
            "GET",
            "/api/2/things/t.bad:a".into(),
            Some(basic("mallory", "x")),
            vec![],
            None,
            401,
            "gateway:authentication.failed",
        ),
        (
            "GET",
            "/api/2/things/t.bad:a".into(),
            Some("Basic !!!".into()),
            vec![],
            None,
            401,
            "gateway:authentication.failed",
        ),
        (
            "GET",
            "/api/2/things/t.bad:a".into(),
            Some("Bearer wrong".into()),
            vec![],
            None,
            401,
            "gateway:authentication.failed",
        ),
        (
            "GET",
            "/api/2/things/t.bad:a".into(),
            Some(bob()),
            vec![],
            None,
            404,
            "things:thing.notfound",
        ),
        (
            "PUT",
            "/api/2/things/t.bad:a/attributes/x".into(),
            Some(bob()),
            vec![],
            Some("1".into()),
            404,
            "things:thing.notfound",
        ),
        (
            "GET",
            "/api/2/things/t.bad:a/thingId".into(),
            Some(a.clone()),
            vec![],
            None,
            404,
            "things:path.unknown",
        ),
        (
            "GET",
            "/api/2/things/t.bad:a/attributes//x".into(),
            Some(a.clone()),
            vec![],
            None,
            400,
            "json.pointer.invalid",
        ),
        (
            "PUT",
            "/api/2/things/t.bad:a/attributes".into(),
            Some(a.clone()),
            vec![],
            Some("[1]".into()),
            400,
            "json.field.invalid",
        ),
        (
            "GET",
            "/api/2/things/t.bad:a?fields=((".into(),
            Some(a.clone()),
            vec![],
            None,
            400,
            "json.fieldselector.invalid",
        ),
        (
            "POST",
            "/api/2/things/t.bad:a".into(),
            Some(a.clone()),
            vec![],
            Some("{}".into()),
            405,
            "gateway:method.notallowed",
        ),
        (
            "GET",
            "/api/2/nothing".into(),
            Some(a.clone()),
            vec![],
            None,
            404,
            "gateway:route.notfound",
        ),
        (
            "GET",
            "/ws/2".into(),
            Some(a.clone()),
            vec![],
            None,
            400,
            "gateway:websocket.required",
        ),
    ];
    for (method, uri, auth, headers, body, status, code) in cases {
        let r = call(
            &app,
            method,
            &uri,
            auth.as_deref(),
            &headers,
            body.as_deref(),
        )
        .await;
        assert_eq!(r.status.as_u16(), status, "{method} {uri}: {}", r.text);
        r.error(status, code);
        if status == 401 {
            assert!(
                r.header("www-authenticate")
                    .unwrap()
                    .contains("Basic realm=")
            );
        }
        let h = call(&app, "GET", "/health", None, &[], None).await;
        assert_eq!(h.status, 200);
    }
    // Bob with READ only: 403 on writes.
    put(
        &app,
        "/api/2/policies/t.bad:p",
        policy_for(&["basic:alice"], &["token:bob"]),
    )
    .await;
    put(
        &app,
        "/api/2/things/t.bad:b",
        json!({"policyId": "t.bad:p"}),
    )
    .await;
    let r = call(
        &app,
        "GET",
        "/api/2/things/t.bad:b",
        Some(&bob()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    call(
        &app,
        "PUT",
        "/api/2/things/t.bad:b/attributes/x",
        Some(&bob()),
        &[],
        Some("1"),
    )
    .await
    .error(403, "things:attribute.notmodifiable");
    call(
        &app,
        "DELETE",
        "/api/2/things/t.bad:b",
        Some(&bob()),
        &[],
        None,
    )
    .await
    .error(403, "things:thing.notmodifiable");
    // The thing is untouched and the app still serves alice.
    let r = get(&app, "/api/2/things/t.bad:a").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn health_metrics_anonymous_and_pre_authenticated() {
    let twins = Twins::in_memory(EngineConfig::default());
    let config = HttpConfig {
        auth: AuthConfig {
            anonymous: true,
            pre_authenticated_header: Some("x-opentwins-subject".into()),
            ..AuthConfig::default()
        },
        ..HttpConfig::default()
    };
    let app = app(HttpState::new(twins, config).unwrap());
    let r = call(&app, "GET", "/health", None, &[], None).await;
    assert_eq!(r.json(), json!({"status": "UP"}));
    // Anonymous creates a thing: its default policy names the anonymous subject.
    let r = call(&app, "PUT", "/api/2/things/t.anon:a", None, &[], Some("{}")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(
        &app,
        "GET",
        "/api/2/policies/t.anon:a/entries/DEFAULT/subjects",
        None,
        &[],
        None,
    )
    .await;
    assert!(r.json()["anonymous:anonymous"].is_object(), "{}", r.text);
    // A proxy-authenticated caller is someone else.
    let proxy = [("x-opentwins-subject", "proxy:carol")];
    call(&app, "GET", "/api/2/things/t.anon:a", None, &proxy, None)
        .await
        .error(404, "things:thing.notfound");
    let r = call(
        &app,
        "PUT",
        "/api/2/things/t.anon:c",
        None,
        &proxy,
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 201);
    call(
        &app,
        "GET",
        "/api/2/things/t.anon:c",
        None,
        &[("x-opentwins-subject", "no-colon")],
        None,
    )
    .await
    .error(401, "gateway:authentication.failed");
    // Unknown routes and methods count under one label each.
    call(&app, "GET", "/nowhere", None, &[], None)
        .await
        .error(404, "gateway:route.notfound");
    call(&app, "BREW", "/api/2/things/t.anon:a", None, &[], None)
        .await
        .error(405, "gateway:method.notallowed");

    let r = call(&app, "GET", "/metrics", None, &[], None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let t = &r.text;
    assert!(
        t.contains(r#"opentwins_http_requests_total{method="PUT",route="/api/2/things/{thingId}",status="201"} 2"#),
        "{t}"
    );
    assert!(
        t.contains(r#"opentwins_http_requests_total{method="GET",route="/api/2/policies/{policyId}/entries/{label}/subjects",status="200"} 1"#),
        "{t}"
    );
    assert!(
        t.contains("# TYPE opentwins_http_request_duration_seconds histogram"),
        "{t}"
    );
    assert!(
        t.contains(r#"opentwins_http_requests_total{method="GET",route="/health",status="200"} 1"#),
        "{t}"
    );
    assert!(
        t.contains(
            r#"opentwins_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
        ),
        "{t}"
    );
    assert!(
        t.contains(r#"opentwins_http_requests_total{method="other",route="/api/2/things/{thingId}",status="405"} 1"#),
        "{t}"
    );
    assert!(
        t.contains(r#"opentwins_http_events_sent_total{transport="sse"} 0"#),
        "{t}"
    );
}

// Issue 14, "shape while you are there": routes are registered per method, so a method a route
// does not serve is 405 Ditto JSON with `Allow` (after authentication), every rejection of a
// request part is Ditto JSON, and requests are counted under the route template that matched.
#[tokio::test]
async fn methods_rejections_and_route_labels() {
    let app = test_app();
    let thing = "/api/2/things/t.routes:a";
    let r = call(&app, "PUT", thing, Some(&alice()), &[], Some("{}")).await;
    assert_eq!(r.status, 201, "{}", r.text);

    // 405 names the methods the route serves.
    let r = call(&app, "POST", thing, Some(&alice()), &[], Some("{}")).await;
    r.error(405, "gateway:method.notallowed");
    let allow = r.header("allow").unwrap_or_default().to_owned();
    for m in ["GET", "HEAD", "PUT", "PATCH", "DELETE"] {
        assert!(allow.contains(m), "{allow}");
    }
    assert!(!allow.contains("POST"), "{allow}");
    let r = call(
        &app,
        "PATCH",
        "/api/2/policies/t.routes:a",
        Some(&alice()),
        &[],
        Some("{}"),
    )
    .await;
    r.error(405, "gateway:method.notallowed");
    assert!(!r.header("allow").unwrap().contains("PATCH"));
    // Without credentials: 401 first, as before.
    call(&app, "DELETE", "/api/2/search/things", None, &[], None)
        .await
        .error(401, "gateway:authentication.failed");
    // /health and /metrics need no credentials, and answer other methods in Ditto JSON too
    // (axum's own 405 had no body).
    let r = call(&app, "POST", "/health", None, &[], None).await;
    r.error(405, "gateway:method.notallowed");
    assert!(r.header("allow").unwrap().contains("GET"));
    call(&app, "DELETE", "/metrics", None, &[], None)
        .await
        .error(405, "gateway:method.notallowed");

    // A path that does not decode is 400 Ditto JSON on every route (the connections routes
    // answered axum's plain text).
    for uri in [
        "/api/2/things/t.routes:%FF",
        "/api/2/policies/t.routes:%FF/entries",
        "/api/2/connections/%FF",
        "/api/2/history/things/t.routes:%FF",
    ] {
        call(&app, "GET", uri, Some(&alice()), &[], None)
            .await
            .error(400, "gateway:request.invalid");
    }

    // HEAD is GET without the body.
    let r = call(&app, "HEAD", thing, Some(&alice()), &[], None).await;
    assert_eq!(r.status, 200);
    assert!(r.text.is_empty());
    assert_eq!(r.header("etag"), Some("\"rev:1\""), "{:?}", r.headers);

    // Every level of a thing and of a policy has its own route template.
    let r = call(
        &app,
        "PUT",
        &format!("{thing}/features/f"),
        Some(&alice()),
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(
        &app,
        "PUT",
        &format!("{thing}/features/f/properties/x/y"),
        Some(&alice()),
        &[],
        Some("1"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    call(
        &app,
        "GET",
        &format!("{thing}/nowhere/x"),
        Some(&alice()),
        &[],
        None,
    )
    .await
    .error(404, "things:path.unknown");
    call(
        &app,
        "GET",
        &format!("{thing}/features/f/nowhere"),
        Some(&alice()),
        &[],
        None,
    )
    .await
    .error(404, "things:path.unknown");
    let r = call(
        &app,
        "GET",
        "/api/2/policies/t.routes:a/entries/DEFAULT/resources/thing:/",
        Some(&alice()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let metrics = call(&app, "GET", "/metrics", None, &[], None).await.text;
    for series in [
        r#"{method="PUT",route="/api/2/things/{thingId}",status="201"} 1"#,
        r#"{method="POST",route="/api/2/things/{thingId}",status="405"} 1"#,
        r#"{method="HEAD",route="/api/2/things/{thingId}",status="200"} 1"#,
        r#"{method="PATCH",route="/api/2/policies/{policyId}",status="405"} 1"#,
        r#"{method="DELETE",route="/api/2/search/things",status="401"} 1"#,
        r#"{method="POST",route="/health",status="405"} 1"#,
        r#"{method="GET",route="/api/2/connections/{name}",status="400"} 1"#,
        r#"{method="PUT",route="/api/2/things/{thingId}/features/{featureId}",status="201"} 1"#,
        r#"{method="PUT",route="/api/2/things/{thingId}/features/{featureId}/properties/{*path}",status="201"} 1"#,
        r#"{method="GET",route="/api/2/things/{thingId}/{*unknown}",status="404"} 2"#,
        r#"{method="GET",route="/api/2/policies/{policyId}/entries/{label}/resources/{*resource}",status="200"} 1"#,
    ] {
        assert!(
            metrics.contains(&format!("opentwins_http_requests_total{series}")),
            "{series} missing in\n{metrics}"
        );
    }
}
