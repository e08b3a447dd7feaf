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

// Issue 14, finding 6: half-sent requests stayed open for good, and over-long request heads
// were answered without Ditto error JSON.
#[tokio::test]
async fn slow_heads_are_cut_and_connections_bounded() {
    use opentwins_transport::http::{ServeLimits, serve_with};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(LIMIT, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = app(HttpState::new(
            Twins::in_memory(EngineConfig::default()),
            HttpConfig::default(),
        )
        .unwrap());
        let limits = ServeLimits {
            header_read_timeout: Duration::from_millis(300),
            max_connections: 3,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(
            listener,
            app,
            async {
                let _ = stopped.await;
            },
            limits,
        ));
        // A head that never ends is cut after the timeout.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let started = std::time::Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf))
            .await
            .expect("the half-sent request was not cut");
        assert!(started.elapsed() < Duration::from_secs(3));
        // Beyond max_connections, a new connection is closed at once.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .unwrap();
            let mut first = [0u8; 12];
            c.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            held.push(c);
        }
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = extra
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await;
        let mut rest = Vec::new();
        let _ = extra.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
        drop(held);
        // Too long a target, too many header bytes: Ditto errors.
        let client = reqwest::Client::new();
        let base = format!("http://{addr}");
        let long = format!("{base}/api/2/things/ns:t?fields={}", "a".repeat(20_000));
        let mut answer = None;
        for _ in 0..50 {
            // The slots held above are given back as those connections close.
            match client.get(&long).send().await {
                Ok(r) => {
                    answer = Some(r);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let r = answer.expect("the server answers again");
        assert_eq!(r.status(), 414);
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "gateway:uri.toolong");
        let r = client
            .get(format!("{base}/health"))
            .header("x-big", "b".repeat(40_000))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 431);
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "gateway:headers.toolarge");
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

// Issue 14, finding 5: one user held 500 SSE streams.
#[tokio::test]
async fn streams_per_subject_are_capped() {
    tokio::time::timeout(LIMIT, async {
        let server = Server::start().await;
        let client = reqwest::Client::new();
        let open = || {
            client
                .get(format!("{}/api/2/things", server.base))
                .header("authorization", TOKEN)
                .header("accept", "text/event-stream")
                .send()
        };
        let max = HttpConfig::default().max_streams_per_subject;
        let mut streams = Vec::new();
        for _ in 0..max {
            let r = open().await.unwrap();
            assert_eq!(r.status(), 200);
            streams.push(r);
        }
        let refused = open().await.unwrap();
        assert_eq!(refused.status(), 429);
        let body: Value = serde_json::from_str(&refused.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "gateway:streams.toomany");
        drop(streams);
        server.stop().await;
    })
    .await
    .unwrap();
}

// Issue 14 (safe defaults, browsers): a text/plain POST to a link inbox was applied, any page
// could open /ws/2, and a rebound DNS name reached the loopback API.
#[tokio::test]
async fn browsers_of_other_sites_cannot_drive_the_api() {
    tokio::time::timeout(LIMIT, async {
        let server = Server::start().await;
        let client = reqwest::Client::new();
        let things = format!("{}/api/2/things", server.base);
        let post = |content_type: Option<&str>, origin: Option<&str>| {
            let mut r = client
                .post(&things)
                .header("authorization", TOKEN)
                .body(r#"{"attributes": {}}"#);
            if let Some(ct) = content_type {
                r = r.header("content-type", ct);
            }
            if let Some(o) = origin {
                r = r.header("origin", o);
            }
            r.send()
        };
        let error = |r: reqwest::Response| async move {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap_or_default();
            let code = body["error"].as_str().unwrap_or(&text).to_owned();
            (status, code)
        };
        // What a cross-site form or fetch can send without a preflight.
        for ct in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let r = post(ct, None).await.unwrap();
            assert_eq!(
                error(r).await,
                (415, "mediatype.unsupported".to_owned()),
                "{ct:?}"
            );
        }
        let r = post(Some("application/json"), Some("https://evil.example"))
            .await
            .unwrap();
        assert_eq!(
            error(r).await,
            (403, "gateway:origin.notallowed".to_owned())
        );
        // The API's own origin (the dashboard) and clients without Origin work.
        let own = server.base.clone();
        assert_eq!(
            post(Some("application/json"), Some(&own))
                .await
                .unwrap()
                .status(),
            201
        );
        assert_eq!(
            post(Some("application/json"), None).await.unwrap().status(),
            201
        );
        // A name that is not configured (DNS rebinding) is not served at all.
        let r = client
            .get(format!("{}/api/2/things?ids=x", server.base))
            .header("authorization", TOKEN)
            .header("host", "attacker.example:8080")
            .send()
            .await
            .unwrap();
        assert_eq!(error(r).await, (421, "gateway:host.notallowed".to_owned()));
        // A WebSocket from another site's page is refused before the upgrade.
        let ws = server.base.replace("http://", "ws://") + "/ws/2";
        let mut request = ws.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", TOKEN.parse().unwrap());
        request
            .headers_mut()
            .insert("origin", "https://evil.example".parse().unwrap());
        assert!(tokio_tungstenite::connect_async(request).await.is_err());
        server.stop().await;
    })
    .await
    .unwrap();
}
