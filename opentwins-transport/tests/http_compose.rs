//! Composition over HTTP (`/api/2/types`, `/api/2/twins`) through `app()` with `oneshot`: the
//! whole flow from types to a twin tree and back, the reserved attributes kept out of the
//! things API, Ditto-style errors for bad input, and callers limited by policies. One test
//! runs the WebSocket on a real socket (127.0.0.1:0).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::{ThingId, compose};
use opentwins_transport::http::{
    AuthConfig, HttpConfig, HttpState, TokenConfig, app, hash_token, serve,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower::ServiceExt;

const LIMIT: Duration = Duration::from_secs(30);
const ALICE: &str = "Bearer alice-token";
const BOB: &str = "Bearer bob-token";

fn config(composition: bool) -> HttpConfig {
    HttpConfig {
        composition,
        auth: AuthConfig {
            tokens: vec![
                TokenConfig {
                    sha256: hash_token("alice-token"),
                    subject: "token:alice".into(),
                },
                TokenConfig {
                    sha256: hash_token("bob-token"),
                    subject: "token:bob".into(),
                },
            ],
            ..AuthConfig::default()
        },
        ..HttpConfig::default()
    }
}

fn state(composition: bool) -> HttpState {
    HttpState::new(
        Twins::in_memory(EngineConfig::default()),
        config(composition),
    )
    .unwrap()
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

    fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        if self.text.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    fn error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let v = self.json();
        assert_eq!(
            (v["status"].as_u64(), v["error"].as_str()),
            (Some(status as u64), Some(code)),
            "{v}"
        );
        assert!(v["message"].is_string(), "{v}");
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(app: &Router, method: &str, uri: &str, auth: &str, body: Option<Value>) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", auth);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
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

fn item_ids(v: &Value) -> Vec<&str> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["thingId"].as_str().unwrap())
        .collect()
}

/// car = wheel x4 (each with a sensor) + camera, as alice.
async fn car_types(app: &Router) {
    for t in ["ns:car", "ns:wheel", "ns:sensor", "ns:camera"] {
        let body =
            json!({"attributes": {"kind": t}, "features": {"state": {"properties": {"v": 0}}}});
        let r = call(app, "PUT", &format!("/api/2/types/{t}"), ALICE, Some(body)).await;
        assert_eq!(r.ok(201)["attributes"]["_isType"], true);
        assert_eq!(
            r.header("location"),
            Some(format!("/api/2/types/{t}").as_str())
        );
    }
    for (parent, child, count) in [
        ("ns:car", "ns:wheel", Some(json!(4))),
        ("ns:car", "ns:camera", None),
        ("ns:wheel", "ns:sensor", Some(json!(1))),
    ] {
        let uri = format!("/api/2/types/{parent}/children/{child}");
        call(app, "PUT", &uri, ALICE, count).await.ok(201);
    }
}

#[tokio::test]
async fn composition_is_off_unless_configured() {
    let app = app(state(false));
    call(&app, "GET", "/api/2/types", ALICE, None)
        .await
        .error(404, "gateway:route.notfound");
    // Without composition, the attributes are ordinary ones.
    let r = call(
        &app,
        "PUT",
        "/api/2/things/ns:t",
        ALICE,
        Some(json!({"attributes": {"_parent": "ns:x"}})),
    )
    .await;
    r.ok(201);
}

#[tokio::test]
async fn types_instantiate_into_twin_trees_and_back() {
    let app = app(state(true));
    car_types(&app).await;
    // Replacing a type keeps its composition; the count can change.
    let r = call(
        &app,
        "PUT",
        "/api/2/types/ns:car",
        ALICE,
        Some(json!({"attributes": {"kind": "sedan"}})),
    )
    .await;
    r.ok(204);
    assert_eq!(r.header("etag"), Some("\"rev:4\""));
    let children = call(&app, "GET", "/api/2/types/ns:car/children", ALICE, None)
        .await
        .ok(200);
    assert_eq!(
        children,
        json!([{"typeId": "ns:wheel", "count": 4}, {"typeId": "ns:camera", "count": 1}])
    );
    call(
        &app,
        "PUT",
        "/api/2/types/ns:car/children/ns:wheel",
        ALICE,
        Some(json!(2)),
    )
    .await
    .ok(204);
    let parents = call(&app, "GET", "/api/2/types/ns:sensor/parents", ALICE, None)
        .await
        .ok(200);
    assert_eq!(parents, json!([{"typeId": "ns:wheel", "count": 1}]));
    let tree = call(&app, "GET", "/api/2/types/ns:car/tree", ALICE, None)
        .await
        .ok(200);
    assert_eq!(tree["children"][0]["children"][0]["thingId"], "ns:sensor");
    let types = call(
        &app,
        "GET",
        "/api/2/types?filter=like(attributes/kind,%22ns:*%22)&fields=thingId",
        ALICE,
        None,
    )
    .await
    .ok(200);
    assert_eq!(item_ids(&types), ["ns:camera", "ns:sensor", "ns:wheel"]);
    let one = call(
        &app,
        "GET",
        "/api/2/types/ns:car?fields=attributes/kind",
        ALICE,
        None,
    )
    .await
    .ok(200);
    assert_eq!(one, json!({"attributes": {"kind": "sedan"}}));

    // Instantiate.
    let r = call(
        &app,
        "POST",
        "/api/2/types/ns:car/instantiate",
        ALICE,
        Some(json!({"thingId": "fleet:car-1", "attributes": {"plate": "1234"}})),
    )
    .await;
    let created = r.ok(201);
    assert_eq!(r.header("location"), Some("/api/2/twins/fleet:car-1"));
    assert_eq!(created["thingId"], "fleet:car-1");
    assert_eq!(created["created"].as_array().unwrap().len(), 1 + 2 * 2 + 1);
    let twin = call(
        &app,
        "GET",
        "/api/2/things/fleet:car-1:wheel_2:sensor",
        ALICE,
        None,
    )
    .await
    .ok(200);
    assert_eq!(
        twin["attributes"],
        json!({"kind": "ns:sensor", "_type": "ns:sensor", "_parent": "fleet:car-1:wheel_2"})
    );
    let roots = call(&app, "GET", "/api/2/twins", ALICE, None).await.ok(200);
    assert_eq!(item_ids(&roots), ["fleet:car-1"]);
    let kids = call(
        &app,
        "GET",
        "/api/2/twins/fleet:car-1/children?option=size(2)",
        ALICE,
        None,
    )
    .await
    .ok(200);
    assert_eq!(
        item_ids(&kids),
        ["fleet:car-1:camera", "fleet:car-1:wheel_1"]
    );
    assert!(kids["cursor"].is_string());
    let parent = call(
        &app,
        "GET",
        "/api/2/twins/fleet:car-1:wheel_1/parent",
        ALICE,
        None,
    )
    .await
    .ok(200);
    assert_eq!(parent, "fleet:car-1");
    call(&app, "GET", "/api/2/twins/fleet:car-1/parent", ALICE, None)
        .await
        .error(404, "things:attribute.notfound");

    // Move a sensor, unlink it, link it back.
    call(
        &app,
        "PUT",
        "/api/2/twins/fleet:car-1:wheel_1:sensor/parent/fleet:car-1:wheel_2",
        ALICE,
        None,
    )
    .await
    .ok(204);
    call(
        &app,
        "DELETE",
        "/api/2/twins/fleet:car-1:wheel_1:sensor/parent",
        ALICE,
        None,
    )
    .await
    .ok(204);
    call(
        &app,
        "PUT",
        "/api/2/twins/fleet:car-1:wheel_1:sensor/parent/fleet:car-1:wheel_1",
        ALICE,
        None,
    )
    .await
    .ok(201);
    // A cycle is a conflict.
    call(
        &app,
        "PUT",
        "/api/2/twins/fleet:car-1/parent/fleet:car-1:wheel_1:sensor",
        ALICE,
        None,
    )
    .await
    .error(409, "things:thing.conflict");
    let tree = call(&app, "GET", "/api/2/twins/fleet:car-1/tree", ALICE, None)
        .await
        .ok(200);
    assert_eq!(tree["children"].as_array().unwrap().len(), 3);
    assert_eq!(
        tree["children"][1]["children"][0]["thingId"],
        "fleet:car-1:wheel_1:sensor"
    );

    // Duplicate the tree, then the wheel alone.
    let r = call(
        &app,
        "POST",
        "/api/2/twins/fleet:car-1/duplicate",
        ALICE,
        Some(json!({"thingId": "fleet:car-2"})),
    )
    .await;
    assert_eq!(r.ok(201)["created"].as_array().unwrap().len(), 6);
    let copy = call(&app, "GET", "/api/2/twins/fleet:car-2:wheel_1", ALICE, None)
        .await
        .ok(200);
    assert_eq!(copy["attributes"]["_copyOf"], "fleet:car-1:wheel_1");
    assert_eq!(copy["features"]["state"]["properties"]["v"], Value::Null);
    let r = call(
        &app,
        "POST",
        "/api/2/twins/fleet:car-1:wheel_1/duplicate?recursive=false",
        ALICE,
        Some(json!({"thingId": "fleet:spare"})),
    )
    .await;
    assert_eq!(r.ok(201)["created"], json!(["fleet:spare"]));

    // Delete: the wheel alone (its sensor becomes a root), then the whole car.
    let done = call(
        &app,
        "DELETE",
        "/api/2/twins/fleet:car-1:wheel_1",
        ALICE,
        None,
    )
    .await
    .ok(200);
    assert_eq!(
        done,
        json!({"deleted": ["fleet:car-1:wheel_1"], "unlinked": ["fleet:car-1:wheel_1:sensor"]})
    );
    let done = call(
        &app,
        "DELETE",
        "/api/2/twins/fleet:car-1?recursive=true",
        ALICE,
        None,
    )
    .await
    .ok(200);
    assert_eq!(
        done["deleted"],
        json!([
            "fleet:car-1:wheel_2:sensor",
            "fleet:car-1:wheel_2",
            "fleet:car-1:camera",
            "fleet:car-1"
        ])
    );
    call(
        &app,
        "GET",
        "/api/2/things/fleet:car-1:wheel_2",
        ALICE,
        None,
    )
    .await
    .error(404, "things:thing.notfound");
    let roots = call(&app, "GET", "/api/2/twins", ALICE, None).await.ok(200);
    assert_eq!(
        item_ids(&roots),
        ["fleet:car-1:wheel_1:sensor", "fleet:car-2", "fleet:spare"]
    );

    // Types: a used type cannot go; unused, it can.
    call(&app, "DELETE", "/api/2/types/ns:sensor", ALICE, None)
        .await
        .error(409, "things:thing.conflict");
    call(
        &app,
        "DELETE",
        "/api/2/types/ns:wheel/children/ns:sensor",
        ALICE,
        None,
    )
    .await
    .ok(204);
    call(
        &app,
        "DELETE",
        "/api/2/types/ns:wheel/children/ns:sensor",
        ALICE,
        None,
    )
    .await
    .error(404, "things:attribute.notfound");
    call(&app, "DELETE", "/api/2/types/ns:sensor", ALICE, None)
        .await
        .ok(204);
}

#[tokio::test]
async fn reserved_attributes_stay_out_of_reach() {
    let st = state(true);
    let app = app(st.clone());
    car_types(&app).await;
    call(
        &app,
        "POST",
        "/api/2/types/ns:car/instantiate",
        ALICE,
        Some(json!({"thingId": "ns:c1"})),
    )
    .await
    .ok(201);
    let refused: [(&str, &str, Option<Value>); 8] = [
        (
            "PUT",
            "/api/2/types/ns:x",
            Some(json!({"attributes": {"_isType": true}})),
        ),
        (
            "POST",
            "/api/2/types/ns:car/instantiate",
            Some(json!({"thingId": "ns:c9", "attributes": {"_parent": "ns:c1"}})),
        ),
        (
            "POST",
            "/api/2/twins/ns:c1/duplicate",
            Some(json!({"thingId": "ns:c9", "attributes": {"_copyOf": "x"}})),
        ),
        (
            "PUT",
            "/api/2/things/ns:c1:camera/attributes/_parent",
            Some(json!("ns:c1:wheel_1")),
        ),
        (
            "DELETE",
            "/api/2/things/ns:c1:camera/attributes/_type",
            None,
        ),
        (
            "PUT",
            "/api/2/things/ns:new",
            Some(json!({"attributes": {"_isType": true}})),
        ),
        ("DELETE", "/api/2/things/ns:c1:camera/attributes", None),
        (
            "POST",
            "/api/2/things",
            Some(json!({"attributes": {"_children": {}}})),
        ),
    ];
    for (method, uri, body) in refused {
        let r = call(&app, method, uri, ALICE, body).await;
        r.error(400, "json.field.invalid");
        assert!(
            r.json()["description"]
                .as_str()
                .unwrap()
                .contains("/api/2/twins"),
            "{uri}"
        );
    }
    let patch = Request::builder()
        .method("PATCH")
        .uri("/api/2/things/ns:c1:camera/attributes")
        .header("authorization", ALICE)
        .header("content-type", "application/merge-patch+json")
        .body(Body::from(r#"{"_parent": null}"#))
        .unwrap();
    let response = app.clone().oneshot(patch).await.unwrap();
    assert_eq!(response.status(), 400);
    // A replacement keeps the markers.
    call(
        &app,
        "PUT",
        "/api/2/things/ns:c1:camera/attributes",
        ALICE,
        Some(json!({"lens": "wide"})),
    )
    .await
    .ok(204);
    let t = st
        .twins()
        .get_thing(&ThingId::new("ns:c1:camera").unwrap())
        .unwrap();
    assert_eq!(
        t.body()["attributes"],
        json!({"lens": "wide", "_type": "ns:camera", "_parent": "ns:c1"})
    );
    assert_eq!(compose::markers_of(&t).len(), 2);
    // Ordinary attributes are as writable as ever.
    call(
        &app,
        "PUT",
        "/api/2/things/ns:c1:camera/attributes/lens",
        ALICE,
        Some(json!("tele")),
    )
    .await
    .ok(204);
}

#[tokio::test]
async fn bad_requests_get_ditto_errors() {
    let app = app(state(true));
    car_types(&app).await;
    let cases: [(&str, &str, Option<Value>, u16, &str); 12] = [
        (
            "GET",
            "/api/2/types/not-an-id",
            None,
            400,
            "things:id.invalid",
        ),
        (
            "POST",
            "/api/2/types",
            None,
            405,
            "gateway:method.notallowed",
        ),
        (
            "PATCH",
            "/api/2/types/ns:car",
            None,
            405,
            "gateway:method.notallowed",
        ),
        (
            "PUT",
            "/api/2/types/ns:car",
            Some(json!([1])),
            400,
            "json.field.invalid",
        ),
        (
            "PUT",
            "/api/2/types/ns:car",
            None,
            400,
            "json.field.invalid",
        ),
        (
            "PUT",
            "/api/2/types/ns:car/children/ns:wheel",
            Some(json!(-1)),
            400,
            "json.field.invalid",
        ),
        (
            "PUT",
            "/api/2/types/ns:car/children/ns:wheel",
            Some(json!(100000)),
            400,
            "json.field.invalid",
        ),
        (
            "PUT",
            "/api/2/types/ns:sensor/children/ns:car",
            None,
            409,
            "things:thing.conflict",
        ),
        (
            "POST",
            "/api/2/types/ns:car/instantiate",
            None,
            400,
            "json.field.invalid",
        ),
        (
            "POST",
            "/api/2/types/ns:car/instantiate",
            Some(json!({"thingId": "bad"})),
            400,
            "things:id.invalid",
        ),
        (
            "GET",
            "/api/2/types?filter=eq(",
            None,
            400,
            "rql.expression.invalid",
        ),
        (
            "DELETE",
            "/api/2/twins/ns:car?recursive=yes",
            None,
            400,
            "gateway:query.param.invalid",
        ),
    ];
    for (method, uri, body, status, code) in cases {
        let r = call(&app, method, uri, ALICE, body).await;
        assert_eq!(r.status.as_u16(), status, "{method} {uri}: {}", r.text);
        r.error(status, code);
    }
    // A type is not a twin, a twin not a type.
    call(
        &app,
        "POST",
        "/api/2/types/ns:car/instantiate",
        ALICE,
        Some(json!({"thingId": "ns:c1"})),
    )
    .await
    .ok(201);
    call(&app, "GET", "/api/2/twins/ns:car/tree", ALICE, None)
        .await
        .error(404, "things:thing.notfound");
    call(&app, "GET", "/api/2/types/ns:c1", ALICE, None)
        .await
        .error(404, "things:thing.notfound");
    call(&app, "PUT", "/api/2/types/ns:c1", ALICE, Some(json!({})))
        .await
        .error(409, "things:thing.conflict");
    // Existing ids are a conflict, and nothing new is created.
    call(
        &app,
        "POST",
        "/api/2/types/ns:car/instantiate",
        ALICE,
        Some(json!({"thingId": "ns:c1"})),
    )
    .await
    .error(409, "things:thing.conflict");
    let bad = Request::builder()
        .uri("/api/2/types")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.clone().oneshot(bad).await.unwrap().status(), 401);
}

#[tokio::test]
async fn callers_only_reach_what_policies_allow() {
    let st = state(true);
    let app = app(st.clone());
    car_types(&app).await;
    call(
        &app,
        "POST",
        "/api/2/types/ns:car/instantiate",
        ALICE,
        Some(json!({"thingId": "ns:c1"})),
    )
    .await
    .ok(201);
    let before = st.twins().thing_count();
    let types = call(&app, "GET", "/api/2/types", BOB, None).await.ok(200);
    assert_eq!(types, json!({"items": []}));
    let roots = call(&app, "GET", "/api/2/twins", BOB, None).await.ok(200);
    assert_eq!(roots, json!({"items": []}));
    let hidden: [(&str, &str, Option<Value>); 7] = [
        ("GET", "/api/2/types/ns:car", None),
        ("GET", "/api/2/types/ns:car/tree", None),
        (
            "POST",
            "/api/2/types/ns:car/instantiate",
            Some(json!({"thingId": "bob:c"})),
        ),
        ("GET", "/api/2/twins/ns:c1/children", None),
        (
            "POST",
            "/api/2/twins/ns:c1/duplicate",
            Some(json!({"thingId": "bob:c"})),
        ),
        ("DELETE", "/api/2/twins/ns:c1?recursive=true", None),
        ("DELETE", "/api/2/twins/ns:c1:camera/parent", None),
    ];
    for (method, uri, body) in hidden {
        call(&app, method, uri, BOB, body)
            .await
            .error(404, "things:thing.notfound");
    }
    assert_eq!(st.twins().thing_count(), before);
}

#[tokio::test]
async fn the_websocket_is_guarded_too() {
    tokio::time::timeout(LIMIT, async {
        let st = state(true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app(st), async {
            let _ = stopped.await;
        }));
        let mut req = format!("ws://{addr}/ws/2").into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", ALICE.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let frames = [
            (json!({"topic": "ns/t/things/twin/commands/create", "headers": {"correlation-id": "c-1"}, "path": "/", "value": {}}), 201),
            (json!({"topic": "ns/t/things/twin/commands/modify", "headers": {"correlation-id": "c-2"}, "path": "/attributes/_parent", "value": "ns:x"}), 400),
            (json!({"topic": "ns/t/things/twin/commands/modify", "headers": {"correlation-id": "c-3"}, "path": "/attributes/a", "value": 1}), 201),
        ];
        for (frame, status) in frames {
            ws.send(Frame::Text(frame.to_string().into())).await.unwrap();
            let reply = loop {
                match ws.next().await.expect("closed").unwrap() {
                    Frame::Text(t) => break serde_json::from_str::<Value>(&t).unwrap(),
                    _ => continue,
                }
            };
            assert_eq!(reply["status"], status, "{reply}");
            if status == 400 {
                assert_eq!(reply["value"]["error"], "json.field.invalid");
            }
        }
        ws.close(None).await.unwrap();
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    })
    .await
    .expect("test hung");
}
