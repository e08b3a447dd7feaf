//! The WebSocket `/ws/2`: Ditto Protocol JSON in text frames.
//!
//! - A command (thing or policy) is applied for the authenticated caller by the dispatch every
//!   transport shares ([`crate::protocol`]); the response or an error envelope goes back with
//!   the command's `correlation-id`. Commands are applied in the order they arrive; answers of
//!   writes that wait for durability may overtake each other.
//! - `START-SEND-EVENTS[?filter=..&namespaces=..&fields=..]` subscribes the session to events
//!   (answered `START-SEND-EVENTS:ACK`), `STOP-SEND-EVENTS` ends it (`STOP-SEND-EVENTS:ACK`).
//!   Events are Ditto Protocol event envelopes.
//! - A frame that is not a command gets an error envelope; the connection stays open.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use opentwins_core::Pointer;
use opentwins_core::engine::RecvError;
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{EntityId, Headers, Message, ThingEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::error::ApiError;
use super::request::Params;
use super::search::with_namespaces;
use super::sse::{OpenGuard, View};
use super::{Caller, HttpState, StreamSlot};
use crate::protocol;

/// `GET /ws/2` with an upgrade.
pub(super) async fn upgrade(
    State(st): State<HttpState>,
    Caller(auth): Caller,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let slot = match st.open_stream(&auth) {
        Ok(slot) => slot,
        Err(e) => return e.into_response(),
    };
    match ws {
        Ok(ws) => ws
            .max_message_size(st.config().max_body_bytes)
            .on_upgrade(move |socket| session(st, auth, socket, slot)),
        Err(e) => ApiError::new(
            e.status().as_u16(),
            "gateway:websocket.required",
            format!("This resource only speaks WebSocket: {e}."),
            "Open a WebSocket connection to /ws/2.",
        )
        .into_response(),
    }
}

async fn session(st: HttpState, auth: AuthContext, socket: WebSocket, _slot: StreamSlot) {
    let open = st.metrics().ws_open.clone();
    open.inc();
    let _open = OpenGuard(open);
    let (mut sink, mut frames) = socket.split();
    let (queue, mut rx) = mpsc::unbounded_channel::<(String, OwnedSemaphorePermit)>();
    let max = st.config().ws_max_queued_bytes.clamp(1, u32::MAX as usize);
    let tx = Outgoing {
        queue,
        room: Arc::new(Semaphore::new(max)),
        max,
    };
    let writer = tokio::spawn(async move {
        while let Some((text, _room)) = rx.recv().await {
            if sink.send(Frame::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let in_flight = Arc::new(Semaphore::new(st.config().ws_max_in_flight.max(1)));
    let mut events: Option<JoinHandle<()>> = None;
    while let Some(frame) = frames.next().await {
        let text = match frame {
            Ok(Frame::Text(t)) => t.to_string(),
            Ok(Frame::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Frame::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let line = text.trim();
        if let Some(rest) = line.strip_prefix("START-SEND-EVENTS") {
            if let Some(h) = events.take() {
                h.abort();
            }
            match start_events(&st, &auth, rest, tx.clone()) {
                Ok(h) => {
                    events = Some(h);
                    tx.send("START-SEND-EVENTS:ACK".to_owned()).await;
                }
                Err(e) => {
                    tx.send(error_text(&e)).await;
                }
            }
            continue;
        }
        if line == "STOP-SEND-EVENTS" {
            if let Some(h) = events.take() {
                h.abort();
            }
            tx.send("STOP-SEND-EVENTS:ACK".to_owned()).await;
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        // Poll once here so commands apply in arrival order; only what waits for durability
        // continues in its own task.
        let mut fut: Pin<Box<dyn Future<Output = Option<String>> + Send>> =
            Box::pin(handle(st.clone(), auth.clone(), text));
        let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(reply) => {
                drop(permit);
                if let Some(r) = reply {
                    tx.send(r).await;
                }
            }
            Poll::Pending => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(r) = fut.await {
                        tx.send(r).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    if let Some(h) = events.take() {
        h.abort();
    }
    drop(tx);
    let _ = writer.await;
}

/// The frames of one session waiting for the socket, bounded in bytes
/// (`HttpConfig::ws_max_queued_bytes`): each holds permits of `room` for its length until the
/// writer has sent it.
#[derive(Clone)]
struct Outgoing {
    queue: mpsc::UnboundedSender<(String, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
    max: usize,
}

impl Outgoing {
    fn cost(&self, text: &str) -> u32 {
        // `max` fits a u32 (clamped at the session's start).
        text.len().clamp(1, self.max) as u32
    }

    /// Queues a reply, waiting for room; `false` once the session is gone.
    async fn send(&self, text: String) -> bool {
        let cost = self.cost(&text);
        match self.room.clone().acquire_many_owned(cost).await {
            Ok(room) => self.queue.send((text, room)).is_ok(),
            Err(_) => false,
        }
    }

    /// Queues an event if there is room now: `Some(false)` when there is none (the event is
    /// dropped: a slow client must not pin memory), `None` once the session is gone.
    fn offer(&self, text: String) -> Option<bool> {
        match self.room.clone().try_acquire_many_owned(self.cost(&text)) {
            Ok(room) => self.queue.send((text, room)).ok().map(|()| true),
            Err(_) => Some(false),
        }
    }
}

fn start_events(
    st: &HttpState,
    auth: &AuthContext,
    rest: &str,
    tx: Outgoing,
) -> Result<JoinHandle<()>, ApiError> {
    let params = Params::parse(rest.strip_prefix('?'));
    let fields = params.fields()?;
    let filter = with_namespaces(params.get("filter"), params.list("namespaces"));
    let ids = params
        .list("ids")
        .map(|ids| {
            ids.iter()
                .map(|i| opentwins_core::ThingId::new(i))
                .collect::<Result<HashSet<_>, _>>()
        })
        .transpose()?;
    let mut sub = st.twins().subscribe(auth.clone(), filter.as_deref())?;
    let view = View {
        thing: None,
        ids,
        feature: None,
        fields,
    };
    let sent = st.metrics().events_ws.clone();
    let lagged = st.metrics().lagged.clone();
    Ok(tokio::spawn(async move {
        loop {
            match sub.recv().await {
                Ok(ev) => {
                    let Some(ev) = shape(&view, ev) else { continue };
                    match tx.offer(text(&Message::ThingEvent(ev))) {
                        Some(true) => sent.inc(),
                        Some(false) => lagged.inc(),
                        None => break,
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "WebSocket subscriber lagged behind; continuing");
                    lagged.add(n);
                }
                Err(RecvError::Closed) => break,
            }
        }
    }))
}

/// The event as the session receives it: filtered by ids, and with `fields` its value trimmed
/// to the selected part (skipped when nothing of it is selected).
fn shape(view: &View, mut ev: ThingEvent) -> Option<ThingEvent> {
    if !view.watches(&ev) {
        return None;
    }
    if view.fields.is_some() && ev.value.is_some() {
        let doc = view.render(&ev)?;
        ev.value = Some(ev.path.get(&doc)?.clone());
    }
    Some(ev)
}

fn text(m: &Message) -> String {
    String::from_utf8(m.to_vec()).unwrap_or_default()
}

/// Applies one frame's command ([`crate::protocol::dispatch`]); the text to send back, if any.
async fn handle(st: HttpState, auth: AuthContext, frame: String) -> Option<String> {
    let default = std::time::Duration::from_millis(st.config().default_timeout_ms);
    // A session answers every frame it is sent (unless the command says it wants no answer).
    let done = protocol::dispatch(st.twins(), &auth, frame.as_bytes(), default, |_| true).await;
    done.reply.map(|r| String::from_utf8(r).unwrap_or_default())
}

/// An error envelope for an error of the session itself (not of a command).
fn error_text(e: &ApiError) -> String {
    let env = protocol::error_envelope(
        &EntityId::Unknown,
        &Pointer::root(),
        &Headers::default(),
        e.status(),
        e.body().clone(),
    );
    String::from_utf8(env).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentwins_core::{EngineConfig, Twins};
    use serde_json::{Value, json};

    use super::*;
    use crate::http::HttpConfig;
    use crate::mqtt::mapping::{Incoming, ditto};

    const LIMIT: Duration = Duration::from_secs(10);

    /// The answer the MQTT `ditto` mapping publishes on a response topic for `envelope`.
    async fn over_mqtt(twins: &Twins, auth: &AuthContext, envelope: &Value) -> Option<Value> {
        let msg = Incoming {
            topic: "in".into(),
            payload: envelope.to_string().into_bytes(),
            response_topic: Some("answers".into()),
            ..Incoming::default()
        };
        let (_, reply) = tokio::time::timeout(LIMIT, ditto(twins, auth, &msg))
            .await
            .expect("MQTT dispatch hung");
        reply.map(|r| serde_json::from_slice(&r.payload).unwrap())
    }

    /// The answer a WebSocket session sends for `envelope`.
    async fn over_ws(st: &HttpState, auth: &AuthContext, envelope: &Value) -> Option<Value> {
        let frame = envelope.to_string();
        tokio::time::timeout(LIMIT, handle(st.clone(), auth.clone(), frame))
            .await
            .expect("WebSocket dispatch hung")
            .map(|r| serde_json::from_str(&r).unwrap())
    }

    // Issue 14, "shape while you are there": the MQTT mapping and the WebSocket had their own
    // copies of the dispatch, with different guards and answers; one envelope now gets one
    // answer whichever transport carries it.
    #[tokio::test]
    async fn mqtt_and_websocket_answer_an_envelope_alike() {
        let twins = Twins::in_memory(EngineConfig::default());
        let st = HttpState::new(twins.clone(), HttpConfig::default()).unwrap();
        let (alice, bob) = (
            AuthContext::new(["test:alice"]),
            AuthContext::new(["test:bob"]),
        );
        let create = json!({"topic": "t.same/car/things/twin/commands/create", "path": "/",
            "headers": {"correlation-id": "c-0"}, "value": {"attributes": {"a": 1}}});
        let created = over_mqtt(&twins, &alice, &create).await.unwrap();
        assert_eq!(created["status"], 201, "{created}");

        let cases = [
            // Forbidden: bob may not even read alice's thing.
            (
                &bob,
                json!({"topic": "t.same/car/things/twin/commands/modify", "path": "/attributes/a",
                    "headers": {"correlation-id": "c-1", "x-extra": "kept"}, "value": 2}),
                Some((404, "things:thing.notfound")),
            ),
            // Malformed: not an envelope.
            (
                &alice,
                json!({"headers": {"correlation-id": "c-2"}, "topic": 5}),
                Some((400, "things:protocol.invalid")),
            ),
            // Not a command: an event.
            (
                &alice,
                json!({"topic": "t.same/car/things/twin/events/modified", "path": "/attributes/a",
                    "headers": {"correlation-id": "c-3"}, "value": 1, "revision": 1}),
                Some((400, "things:protocol.invalid")),
            ),
            // A conflict, refused by the engine.
            (&alice, create.clone(), Some((409, "things:thing.conflict"))),
            // A retrieve: the same response.
            (
                &alice,
                json!({"topic": "t.same/car/things/twin/commands/retrieve", "path": "/attributes",
                    "headers": {"correlation-id": "c-4"}}),
                None,
            ),
            // No answer wanted: none on either.
            (
                &bob,
                json!({"topic": "t.same/car/things/twin/commands/delete", "path": "/",
                    "headers": {"response-required": false}}),
                None,
            ),
        ];
        for (auth, envelope, error) in cases {
            let mqtt = over_mqtt(&twins, auth, &envelope).await;
            let ws = over_ws(&st, auth, &envelope).await;
            assert_eq!(mqtt, ws, "{envelope}");
            let wanted = envelope["headers"]["response-required"] != false;
            assert_eq!(mqtt.is_some(), wanted, "{envelope}");
            let Some(answer) = mqtt else { continue };
            for echoed in ["correlation-id", "x-extra"] {
                assert_eq!(
                    answer["headers"][echoed], envelope["headers"][echoed],
                    "{answer}"
                );
            }
            match error {
                Some((status, code)) => {
                    assert_eq!(answer["status"], status, "{answer}");
                    assert_eq!(answer["value"]["error"], code, "{answer}");
                    assert!(
                        answer["topic"].as_str().unwrap().ends_with("/errors"),
                        "{answer}"
                    );
                }
                None => {
                    assert_eq!(answer["status"], 200, "{answer}");
                    assert_eq!(answer["value"], json!({"a": 1}), "{answer}");
                }
            }
        }
        // Bob's unanswered delete did not delete alice's thing.
        assert!(
            twins
                .get_thing(&opentwins_core::ThingId::new("t.same:car").unwrap())
                .is_some()
        );
    }

    // Issue 14, finding 5: 300 unread 1 MB replies pinned 284 MiB per session.
    #[tokio::test]
    async fn a_slow_client_holds_at_most_the_queue_bound() {
        let (queue, mut rx) = mpsc::unbounded_channel();
        let out = Outgoing {
            queue,
            room: Arc::new(Semaphore::new(10)),
            max: 10,
        };
        assert_eq!(out.offer("12345678".into()), Some(true));
        // No room for another event: dropped, not queued.
        assert_eq!(out.offer("abc".into()), Some(false));
        // A reply waits until the writer has sent what is queued.
        let reply = tokio::spawn({
            let out = out.clone();
            async move { out.send("reply".into()).await }
        });
        tokio::task::yield_now().await;
        assert!(!reply.is_finished());
        let (first, room) = rx.recv().await.unwrap();
        assert_eq!(first, "12345678");
        drop(room);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), reply)
                .await
                .unwrap()
                .unwrap()
        );
        assert_eq!(rx.recv().await.unwrap().0, "reply");
        // A frame larger than the bound costs the whole bound (it is never stuck); once the
        // writer is gone, so is the session.
        drop(rx);
        assert_eq!(out.offer("x".repeat(100)), None);
    }
}
