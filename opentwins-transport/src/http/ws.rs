//! The WebSocket `/ws/2`: Ditto Protocol JSON in text frames.
//!
//! - A command (thing or policy) is applied for the authenticated caller; the response or an
//!   error envelope goes back with the command's `correlation-id`. Commands are applied in the
//!   order they arrive; answers of writes that wait for durability may overtake each other.
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
use opentwins_core::engine::RecvError;
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{
    Criterion, EntityId, Envelope, ErrorResponse, Headers, Message, TWIN_PERSISTED, ThingEvent,
    Topic,
};
use opentwins_core::{Error, Pointer};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::error::ApiError;
use super::request::{Params, timeout};
use super::search::with_namespaces;
use super::sse::{OpenGuard, View};
use super::{Caller, HttpState, StreamSlot};

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
                    tx.send(error_text(None, None, &e)).await;
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

/// Applies one frame's command; the text to send back, if any.
async fn handle(st: HttpState, auth: AuthContext, frame: String) -> Option<String> {
    let msg = match Message::from_slice(frame.as_bytes()) {
        Ok(m) => m,
        Err(e) => return Some(error_text(None, correlation_of(&frame), &e.into())),
    };
    let default_ms = st.config().default_timeout_ms;
    match msg {
        Message::ThingCommand(mut cmd) => {
            implicit_ack(&mut cmd.headers, cmd.action.is_write());
            let entity = EntityId::Thing(cmd.thing_id.clone());
            let (path, h) = (cmd.path.clone(), cmd.headers.clone());
            let wait = timeout(&h, default_ms);
            let result = tokio::time::timeout(wait, st.twins().apply(&auth, cmd)).await;
            if !h.response_required() {
                return None;
            }
            Some(match result {
                Ok(Ok(o)) => text(&Message::ThingResponse(o.response)),
                Ok(Err(e)) => error_envelope(entity, path, &h, e),
                Err(_) => error_text(
                    Some((entity, path)),
                    h.correlation_id,
                    &ApiError::timeout(wait.as_millis()),
                ),
            })
        }
        Message::PolicyCommand(mut cmd) => {
            implicit_ack(&mut cmd.headers, cmd.action.is_write());
            let entity = EntityId::Policy(cmd.policy_id.clone());
            let (path, h) = (cmd.path.clone(), cmd.headers.clone());
            let wait = timeout(&h, default_ms);
            let result = tokio::time::timeout(wait, st.twins().apply_policy(&auth, cmd)).await;
            if !h.response_required() {
                return None;
            }
            Some(match result {
                Ok(Ok(o)) => text(&Message::PolicyResponse(o.response)),
                Ok(Err(e)) => error_envelope(entity, path, &h, e),
                Err(_) => error_text(
                    Some((entity, path)),
                    h.correlation_id,
                    &ApiError::timeout(wait.as_millis()),
                ),
            })
        }
        _ => {
            let e = Error::new(
                opentwins_core::ErrorKind::ProtocolInvalid,
                "Only commands are accepted on the WebSocket (and START-SEND-EVENTS / STOP-SEND-EVENTS).",
            );
            Some(error_text(None, correlation_of(&frame), &e.into()))
        }
    }
}

/// Ditto requests `twin-persisted` implicitly for writes that want a response.
fn implicit_ack(h: &mut Headers, write: bool) {
    if write && h.requested_acks.is_none() && h.response_required() {
        h.requested_acks = Some(vec![TWIN_PERSISTED.to_owned()]);
    }
}

fn error_envelope(entity: EntityId, path: Pointer, h: &Headers, error: Error) -> String {
    text(&Message::Error(ErrorResponse {
        entity,
        path,
        error,
        headers: h.for_reply(),
    }))
}

/// An error envelope for errors that are not the engine's (or have no entity).
fn error_text(
    entity: Option<(EntityId, Pointer)>,
    correlation: Option<String>,
    e: &ApiError,
) -> String {
    let (entity, path) = entity.unwrap_or((EntityId::Unknown, Pointer::root()));
    let topic = match &entity {
        EntityId::Thing(id) => Topic::thing(id, Criterion::Errors),
        EntityId::Policy(id) => Topic::policy(id, Criterion::Errors),
        EntityId::Unknown => Topic::unknown_error(),
    };
    let headers = Headers {
        correlation_id: correlation,
        ..Headers::default()
    };
    let env = Envelope {
        topic: topic.to_string(),
        headers: headers.to_json(),
        path: path.to_string(),
        value: Some(e.body().clone()),
        fields: None,
        extra: None,
        status: Some(e.status()),
        revision: None,
        timestamp: None,
    };
    String::from_utf8(env.to_vec()).unwrap_or_default()
}

/// The `correlation-id` of a frame that could not be parsed as a command, if it has one.
fn correlation_of(frame: &str) -> Option<String> {
    let v: Value = serde_json::from_str(frame).ok()?;
    let headers = v.get("headers")?.as_object()?;
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("correlation-id"))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
