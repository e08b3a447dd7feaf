//! The delta routes through `app()` with `oneshot` (no socket): `GET /api/2/things/{id}/delta`
//! and `GET /api/2/things/{id}/features/{featureId}/delta`, computed on the thing as the caller
//! may read it, with the engine's errors, and the neighbouring routes left as they were.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_transport::http::{
    AuthConfig, HttpConfig, HttpState, TokenConfig, UserConfig, app, hash_password, hash_token,
};
use serde_json::{Value, json};
use tower::ServiceExt;

const LIMIT: Duration = Duration::from_secs(30);
const THING: &str = "/api/2/things/t.delta:car";

fn alice() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:wonderland")
    )
}

fn bob() -> String {
    "Bearer bob-token".to_owned()
}

fn test_app() -> Router {
    let config = HttpConfig {
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
    };
    app(HttpState::new(Twins::in_memory(EngineConfig::default()), config).unwrap())
}

struct Reply {
    status: StatusCode,
    etag: Option<String>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Asserts 200 and returns the body.
    fn ok(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        self.json()
    }

    /// Asserts a Ditto error answer with this status and code.
    fn error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let v = self.json();
        assert_eq!(
            (v["status"].clone(), v["error"].clone()),
            (json!(status), json!(code)),
            "{v}"
        );
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
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
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = tokio::time::timeout(LIMIT, app.clone().oneshot(req))
        .await
        .expect("request hung")
        .unwrap();
    let status = response.status();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        etag,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &Router, uri: &str, who: &str) -> Reply {
    call(app, "GET", uri, Some(who), &[], None).await
}

async fn write(app: &Router, method: &str, uri: &str, body: Value) {
    let r = call(app, method, uri, Some(&alice()), &[], Some(body)).await;
    assert!(r.status.is_success(), "{method} {uri}: {}", r.text);
}

/// A car whose air conditioning should be on at 21 degrees, and a seat already in place.
async fn car(app: &Router) {
    write(
        app,
        "PUT",
        THING,
        json!({"features": {
            "ac": {"properties": {"on": false, "temp": 19.0, "fan": 2},
                   "desiredProperties": {"on": true, "temp": 21, "fan": 2}},
            "seat": {"properties": {"pos": 3}, "desiredProperties": {"pos": 3.0}},
            "gps": {"properties": {"lat": 1.5}}
        }}),
    )
    .await;
}

#[tokio::test]
async fn thing_and_feature_deltas_follow_reports() {
    let app = test_app();
    car(&app).await;
    let a = alice();
    assert_eq!(
        get(&app, &format!("{THING}/delta"), &a).await.ok(),
        json!({"features": {"ac": {"on": true, "temp": 21}}})
    );
    let r = get(&app, &format!("{THING}/features/ac/delta"), &a).await;
    assert_eq!(r.ok(), json!({"on": true, "temp": 21}));
    assert_eq!(r.etag.as_deref(), Some("\"rev:1\""), "the thing's revision");
    // In sync (3 == 3.0) and no desired state at all: `{}`.
    assert_eq!(
        get(&app, &format!("{THING}/features/seat/delta"), &a)
            .await
            .ok(),
        json!({})
    );
    assert_eq!(
        get(&app, &format!("{THING}/features/gps/delta"), &a)
            .await
            .ok(),
        json!({})
    );

    // The device reports part of it; then a desired null asks for `fan` to go.
    write(
        &app,
        "PATCH",
        &format!("{THING}/features/ac/properties"),
        json!({"on": true}),
    )
    .await;
    write(
        &app,
        "PATCH",
        &format!("{THING}/features/ac/desiredProperties"),
        json!({"fan": null}),
    )
    .await;
    // A stored null survives a PUT; as desired it means "absent".
    write(
        &app,
        "PUT",
        &format!("{THING}/features/ac/desiredProperties/fan"),
        json!(null),
    )
    .await;
    let d = get(&app, &format!("{THING}/features/ac/delta"), &a)
        .await
        .ok();
    assert_eq!(d, json!({"temp": 21, "fan": null}));
    // Applying the delta as a merge of the properties brings the thing in sync.
    write(&app, "PATCH", &format!("{THING}/features/ac/properties"), d).await;
    assert_eq!(
        get(&app, &format!("{THING}/delta"), &a).await.ok(),
        json!({})
    );
    assert_eq!(
        get(&app, &format!("{THING}/features/ac/delta"), &a)
            .await
            .ok(),
        json!({})
    );
    let props = get(&app, &format!("{THING}/features/ac/properties"), &a)
        .await
        .ok();
    assert_eq!(props, json!({"on": true, "temp": 21}));
}

#[tokio::test]
async fn the_delta_is_computed_on_what_the_caller_may_read() {
    let app = test_app();
    let owner = json!({"subjects": {"basic:alice": {"type": "t"}}, "resources": {
        "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
        "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}}});
    // Bob reads the thing but neither the reported air conditioning nor the seat's desires.
    let reader = json!({"subjects": {"token:bob": {"type": "t"}}, "resources": {
        "thing:/": {"grant": ["READ"], "revoke": []},
        "thing:/features/ac/properties": {"grant": [], "revoke": ["READ"]},
        "thing:/features/seat/desiredProperties": {"grant": [], "revoke": ["READ"]}}});
    write(
        &app,
        "PUT",
        "/api/2/policies/t.delta:p",
        json!({"entries": {"owner": owner, "reader": reader}}),
    )
    .await;
    write(&app, "PUT", THING, json!({"policyId": "t.delta:p"})).await;
    write(
        &app,
        "PUT",
        &format!("{THING}/features"),
        json!({
            "ac": {"properties": {"on": true}, "desiredProperties": {"on": true}},
            "seat": {"properties": {"pos": 1}, "desiredProperties": {"pos": 2}}
        }),
    )
    .await;
    assert_eq!(
        get(&app, &format!("{THING}/delta"), &alice()).await.ok(),
        json!({"features": {"seat": {"pos": 2}}})
    );
    // For bob `ac` looks unreported (so it differs) and `seat` has no desires.
    assert_eq!(
        get(&app, &format!("{THING}/delta"), &bob()).await.ok(),
        json!({"features": {"ac": {"on": true}}})
    );
    assert_eq!(
        get(&app, &format!("{THING}/features/seat/delta"), &bob())
            .await
            .ok(),
        json!({})
    );
    // A thing bob may not read at all is not found, as for a retrieve.
    write(&app, "PUT", "/api/2/things/t.delta:private", json!({})).await;
    get(&app, "/api/2/things/t.delta:private/delta", &bob())
        .await
        .error(404, "things:thing.notfound");
}

#[tokio::test]
async fn errors_are_the_engines_and_the_apis() {
    let app = test_app();
    car(&app).await;
    let a = alice();
    get(&app, "/api/2/things/t.delta:nope/delta", &a)
        .await
        .error(404, "things:thing.notfound");
    get(&app, "/api/2/things/t.delta:nope/features/ac/delta", &a)
        .await
        .error(404, "things:thing.notfound");
    get(&app, &format!("{THING}/features/nope/delta"), &a)
        .await
        .error(404, "things:feature.notfound");
    get(&app, "/api/2/things/no-namespace-colon/delta", &a)
        .await
        .error(400, "things:id.invalid");
    call(
        &app,
        "PUT",
        &format!("{THING}/delta"),
        Some(&a),
        &[],
        Some(json!({})),
    )
    .await
    .error(405, "gateway:method.notallowed");
    call(
        &app,
        "DELETE",
        &format!("{THING}/features/ac/delta"),
        Some(&a),
        &[],
        None,
    )
    .await
    .error(405, "gateway:method.notallowed");
    call(&app, "GET", &format!("{THING}/delta"), None, &[], None)
        .await
        .error(401, "gateway:authentication.failed");
    // Retrieve headers apply: the delta only changes with the thing's revision.
    let r = call(
        &app,
        "GET",
        &format!("{THING}/delta"),
        Some(&a),
        &[("if-none-match", "\"rev:1\"")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{}", r.text);
    let r = call(
        &app,
        "GET",
        &format!("{THING}/delta?condition=eq(features/gps/properties/lat,2)"),
        Some(&a),
        &[],
        None,
    )
    .await;
    r.error(412, "things:condition.failed");
}

#[tokio::test]
async fn neighbouring_routes_are_unchanged_and_metrics_name_the_route() {
    let app = test_app();
    car(&app).await;
    let a = alice();
    // A feature called "delta" and a property called "delta" are still plain resources.
    write(
        &app,
        "PUT",
        &format!("{THING}/features/delta"),
        json!({"properties": {"x": 1}}),
    )
    .await;
    assert_eq!(
        get(&app, &format!("{THING}/features/delta"), &a).await.ok(),
        json!({"properties": {"x": 1}})
    );
    write(
        &app,
        "PUT",
        &format!("{THING}/features/ac/properties/delta"),
        json!(7),
    )
    .await;
    assert_eq!(
        get(&app, &format!("{THING}/features/ac/properties/delta"), &a)
            .await
            .ok(),
        json!(7)
    );
    assert_eq!(
        get(&app, &format!("{THING}/features/ac/properties/on"), &a)
            .await
            .ok(),
        json!(false)
    );
    assert_eq!(
        get(&app, &format!("{THING}/features/delta/delta"), &a)
            .await
            .ok(),
        json!({})
    );
    // Deeper paths ending in "delta" are not the delta route.
    get(&app, &format!("{THING}/features/ac/x/delta"), &a)
        .await
        .error(404, "things:path.unknown");
    get(&app, &format!("{THING}/delta"), &a).await.ok();
    let metrics = call(&app, "GET", "/metrics", None, &[], None).await.text;
    for route in [
        r#"{method="GET",route="/api/2/things/{thingId}/delta",status="200"} 1"#,
        r#"{method="GET",route="/api/2/things/{thingId}/features/{featureId}/delta",status="200"} 1"#,
    ] {
        assert!(metrics.contains(route), "{route} missing in\n{metrics}");
    }
}
