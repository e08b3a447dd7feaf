//! The HTTP server on a real socket (127.0.0.1:0): a real HTTP client, an SSE client reading
//! events, a WebSocket client doing command round trips and START-SEND-EVENTS, and shutdown.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_transport::http::{
    AuthConfig, HttpConfig, HttpState, TokenConfig, app, hash_token, serve,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const LIMIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "Bearer socket-token";

struct Server {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start() -> Server {
        let twins = Twins::in_memory(EngineConfig::default());
        let config = HttpConfig {
            auth: AuthConfig {
                tokens: vec![TokenConfig {
                    sha256: hash_token("socket-token"),
                    subject: "token:socket".into(),
                }],
                ..AuthConfig::default()
            },
            ..HttpConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let app = app(HttpState::new(twins, config).unwrap());
        let task = tokio::spawn(serve(listener, app, async {
            let _ = stopped.await;
        }));
        Server {
            base,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn real_client_round_trip() {
    tokio::time::timeout(LIMIT, async {
        let server = Server::start().await;
        let client = reqwest::Client::new();
        let url = format!("{}/api/2/things/t.sock:a", server.base);
        let r = client
            .put(&url)
            .header("authorization", TOKEN)
            .header("content-type", "application/json")
            .body(r#"{"attributes": {"x": 1}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["etag"], "\"rev:1\"");
        // Keep-alive: several requests on the same client.
        for i in 0..5 {
            let r = client
                .put(format!("{url}/attributes/x"))
                .header("authorization", TOKEN)
                .body(i.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
        }
        let r = client
            .get(&url)
            .header("authorization", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["attributes"]["x"], 4);
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = client
            .get(format!("{}/health", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), r#"{"status":"UP"}"#);
        server.stop().await;
    })
    .await
    .expect("test hung");
}

/// Reads SSE `data:` lines until `n` have arrived.
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<Value> {
    let mut buf = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = resp.chunk().await.unwrap().expect("stream ended");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    events.push(serde_json::from_str(data.trim()).unwrap());
                }
            }
        }
    }
    events
}

#[tokio::test]
async fn sse_streams_changes() {
    tokio::time::timeout(LIMIT, async {
        let server = Server::start().await;
        let client = reqwest::Client::new();
        let thing = format!("{}/api/2/things/t.sse:a", server.base);
        let put = |path: &str, body: &str| {
            client
                .put(format!("{thing}{path}"))
                .header("authorization", TOKEN)
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send()
        };
        assert_eq!(put("", "{}").await.unwrap().status(), 201);
        assert_eq!(put("/features/lane", "{}").await.unwrap().status(), 201);

        let mut all = client
            .get(format!(
                "{}/api/2/things?ids=t.sse:a&fields=thingId,_revision,features",
                server.base
            ))
            .header("authorization", TOKEN)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(all.status(), 200);
        assert!(
            all.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut feature = client
            .get(format!("{thing}/features/lane"))
            .header("authorization", TOKEN)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        let mut filtered = client
            .get(format!(
                "{}/api/2/things?filter=gt(features/lane/properties/offset,0.5)",
                server.base
            ))
            .header("authorization", TOKEN)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        // The streams are open once the headers arrived; now change things.
        assert_eq!(put("/attributes/a", "1").await.unwrap().status(), 201);
        assert_eq!(
            put("/features/lane/properties/offset", "0.25").await.unwrap().status(),
            201
        );
        assert_eq!(
            put("/features/lane/properties/offset", "0.75").await.unwrap().status(),
            204
        );

        let got = read_events(&mut all, 2).await;
        // The attribute change has no selected field: skipped.
        assert_eq!(
            got[0],
            json!({"thingId": "t.sse:a", "_revision": 4, "features": {"lane": {"properties": {"offset": 0.25}}}})
        );
        assert_eq!(got[1]["_revision"], 5);
        let got = read_events(&mut feature, 2).await;
        assert_eq!(got[0], json!({"properties": {"offset": 0.25}}));
        assert_eq!(got[1], json!({"properties": {"offset": 0.75}}));
        let got = read_events(&mut filtered, 1).await;
        assert_eq!(
            got[0],
            json!({"features": {"lane": {"properties": {"offset": 0.75}}}, "thingId": "t.sse:a"})
        );
        // Invalid RQL on an SSE request is a plain 400.
        let r = client
            .get(format!("{}/api/2/things?filter=eq(", server.base))
            .header("authorization", TOKEN)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let m = client
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(m.contains(r#"opentwins_http_open_streams{transport="sse"} 3"#), "{m}");
        // Shutdown with streams still open ends within the grace period.
        server.stop().await;
    })
    .await
    .expect("test hung");
}

#[tokio::test]
async fn websocket_commands_and_events() {
    tokio::time::timeout(LIMIT, async {
        let server = Server::start().await;
        let ws_url = format!("{}/ws/2", server.base.replace("http://", "ws://"));
        // Without credentials the upgrade is refused.
        assert!(tokio_tungstenite::connect_async(&ws_url).await.is_err());
        let mut req = ws_url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", TOKEN.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();

        let create = json!({
            "topic": "t.ws/car/things/twin/commands/create",
            "headers": {"correlation-id": "c-1"},
            "path": "/",
            "value": {"attributes": {"x": 1}}
        });
        ws.send(Frame::Text(create.to_string().into()))
            .await
            .unwrap();
        let reply = recv_json(&mut ws).await;
        assert_eq!(reply["topic"], "t.ws/car/things/twin/commands/create");
        assert_eq!(reply["status"], 201);
        assert_eq!(reply["headers"]["correlation-id"], "c-1");
        assert_eq!(reply["value"]["thingId"], "t.ws:car");

        // Malformed frames: error envelopes, the session stays open.
        ws.send(Frame::Text("{not json".into())).await.unwrap();
        let err = recv_json(&mut ws).await;
        assert_eq!(err["topic"], "_/_/things/twin/errors");
        assert_eq!(err["status"], 400);
        assert_eq!(err["value"]["error"], "json.invalid");
        ws.send(Frame::Text(
            json!({"topic": "bad", "headers": {"correlation-id": "c-2"}, "path": "/"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        let err = recv_json(&mut ws).await;
        assert_eq!(err["headers"]["correlation-id"], "c-2");
        assert_eq!(err["status"], 400);
        let missing = json!({
            "topic": "t.ws/none/things/twin/commands/retrieve",
            "headers": {"correlation-id": "c-3"},
            "path": "/"
        });
        ws.send(Frame::Text(missing.to_string().into()))
            .await
            .unwrap();
        let err = recv_json(&mut ws).await;
        assert_eq!(err["topic"], "t.ws/none/things/twin/errors");
        assert_eq!(err["status"], 404);
        assert_eq!(err["value"]["error"], "things:thing.notfound");
        assert_eq!(err["headers"]["correlation-id"], "c-3");

        // Events.
        ws.send(Frame::Text(
            "START-SEND-EVENTS?filter=exists(attributes/x)".into(),
        ))
        .await
        .unwrap();
        assert_eq!(recv_text(&mut ws).await, "START-SEND-EVENTS:ACK");
        let modify = json!({
            "topic": "t.ws/car/things/twin/commands/modify",
            "headers": {"correlation-id": "c-4"},
            "path": "/attributes/x",
            "value": 2
        });
        ws.send(Frame::Text(modify.to_string().into()))
            .await
            .unwrap();
        // The response and the event may come in either order.
        let (mut response, mut event) = (None, None);
        for _ in 0..2 {
            let v = recv_json(&mut ws).await;
            if v["topic"] == "t.ws/car/things/twin/events/modified" {
                event = Some(v);
            } else {
                response = Some(v);
            }
        }
        let (response, event) = (response.unwrap(), event.unwrap());
        assert_eq!(response["status"], 204);
        assert_eq!(response["headers"]["correlation-id"], "c-4");
        assert_eq!(event["path"], "/attributes/x");
        assert_eq!(event["value"], 2);
        assert_eq!(event["revision"], 2);
        // A change the filter does not match is not delivered; one over HTTP is.
        let client = reqwest::Client::new();
        let r = client
            .put(format!(
                "{}/api/2/things/t.ws:car/attributes/y",
                server.base
            ))
            .header("authorization", TOKEN)
            .body("5")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = client
            .put(format!(
                "{}/api/2/things/t.ws:car/attributes/x",
                server.base
            ))
            .header("authorization", TOKEN)
            .body("3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let ev = recv_json(&mut ws).await;
        assert_eq!(ev["path"], "/attributes/x");
        assert_eq!(ev["value"], 3);

        ws.send(Frame::Text("STOP-SEND-EVENTS".into()))
            .await
            .unwrap();
        assert_eq!(recv_text(&mut ws).await, "STOP-SEND-EVENTS:ACK");
        let retrieve = json!({
            "topic": "t.ws/car/things/twin/commands/retrieve",
            "headers": {"correlation-id": "c-5"},
            "path": "/attributes"
        });
        ws.send(Frame::Text(retrieve.to_string().into()))
            .await
            .unwrap();
        let v = recv_json(&mut ws).await;
        assert_eq!(v["status"], 200);
        assert_eq!(v["value"], json!({"x": 3, "y": 5}));
        ws.close(None).await.unwrap();
        server.stop().await;
    })
    .await
    .expect("test hung");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn recv_text(ws: &mut Ws) -> String {
    loop {
        match ws.next().await.expect("closed").unwrap() {
            Frame::Text(t) => return t.to_string(),
            _ => continue,
        }
    }
}

async fn recv_json(ws: &mut Ws) -> Value {
    let t = recv_text(ws).await;
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
}
