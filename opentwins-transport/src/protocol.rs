//! The Ditto Protocol dispatch every transport shares: one envelope in, applied to the engine
//! for the caller, and the answer envelope out. The MQTT `ditto` mapping and the WebSocket
//! `/ws/2` only frame what [`dispatch`] returns (topics and correlation data, text frames).
//!
//! The rules, the same on every transport:
//!
//! - Thing commands go to `Twins::apply`, policy commands to `Twins::apply_policy`, under the
//!   caller's subjects; the engine checks the policy and its domain rules (the composition
//!   guard, limits).
//! - A command is answered (response or error envelope, `correlation-id` and pass-through
//!   headers echoed) when `response-required` is not `false` and the transport has somewhere to
//!   send the answer. A write whose answer is due and that names no `requested-acks` waits for
//!   `twin-persisted`, as Ditto requests it by default (and as the HTTP API does).
//! - The engine is given the command's `timeout` (at most [`MAX_TIMEOUT`]), else the
//!   transport's default; past it the answer is 408 `gateway:command.timeout` (the command may
//!   still be applied).
//! - An envelope that cannot be parsed, or that is not a command (an event, a response, an
//!   error), gets an error envelope (`_/_/things/twin/errors` when no entity can be read, its
//!   `correlation-id` echoed if the raw JSON has one) only on a channel that asked for answers
//!   without reading the envelope: a WebSocket session, an MQTT 5 response topic. Never on the
//!   envelope's own `reply-to`, so two instances cannot answer each other's events in a loop.

use std::time::Duration;

use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{
    Criterion, EntityId, Envelope, ErrorResponse, Headers, Message, PolicyCommand, TWIN_PERSISTED,
    ThingCommand, Topic,
};
use opentwins_core::{Error, ErrorKind, Pointer, Twins};
use serde_json::{Value, json};

/// The longest a command may ask to be waited for (its `timeout` header).
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// Ditto's default `timeout`: what the MQTT bridge waits for a command.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How an envelope ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The command was applied.
    Applied,
    /// The engine refused the command (policy, precondition, not found, limits...).
    Refused(Error),
    /// The engine did not answer within the timeout (the command may still be applied).
    TimedOut(Duration),
    /// The envelope could not be read as a command.
    Invalid(Error),
}

/// What [`dispatch`] made of one envelope.
#[derive(Debug)]
pub(crate) struct Dispatched {
    /// How it ended.
    pub(crate) outcome: Outcome,
    /// The command's headers, when the envelope was a command (MQTT reads `reply-to` there).
    pub(crate) headers: Option<Headers>,
    /// The answer (Ditto Protocol JSON), unless none is due.
    pub(crate) reply: Option<Vec<u8>>,
}

/// Parses `envelope`, applies the command for `auth` within its `timeout` (else
/// `default_timeout`) and builds the answer. `answerable` tells whether the transport can
/// deliver an answer: given the command's headers, or `None` for an envelope that is not a
/// command (see the module doc).
pub(crate) async fn dispatch(
    twins: &Twins,
    auth: &AuthContext,
    envelope: &[u8],
    default_timeout: Duration,
    answerable: impl FnOnce(Option<&Headers>) -> bool,
) -> Dispatched {
    let invalid = |error: Error, answerable: bool| {
        let reply = answerable.then(|| {
            let headers = correlation_of(envelope)
                .map(Headers::with_correlation_id)
                .unwrap_or_default();
            Message::Error(ErrorResponse {
                entity: EntityId::Unknown,
                path: Pointer::root(),
                error: error.clone(),
                headers,
            })
            .to_vec()
        });
        Dispatched {
            outcome: Outcome::Invalid(error),
            headers: None,
            reply,
        }
    };
    let mut command = match Message::from_slice(envelope) {
        Ok(Message::ThingCommand(c)) => Command::Thing(c),
        Ok(Message::PolicyCommand(c)) => Command::Policy(c),
        Ok(other) => {
            let kind = match other {
                Message::ThingEvent(_) => "an event",
                Message::Error(_) => "an error",
                _ => "a response",
            };
            let error = Error::new(
                ErrorKind::ProtocolInvalid,
                format!(
                    "The message is {kind}, not a command: only thing and policy commands are applied."
                ),
            );
            return invalid(error, answerable(None));
        }
        Err(error) => return invalid(error, answerable(None)),
    };
    let (entity, path, headers, write) = match &mut command {
        Command::Thing(c) => (
            EntityId::Thing(c.thing_id.clone()),
            c.path.clone(),
            &mut c.headers,
            c.action.is_write(),
        ),
        Command::Policy(c) => (
            EntityId::Policy(c.policy_id.clone()),
            c.path.clone(),
            &mut c.headers,
            c.action.is_write(),
        ),
    };
    let answer = headers.response_required() && answerable(Some(&*headers));
    if answer && write && headers.requested_acks.is_none() {
        headers.requested_acks = Some(vec![TWIN_PERSISTED.to_owned()]);
    }
    let headers = headers.clone();
    let wait = headers.timeout.unwrap_or(default_timeout).min(MAX_TIMEOUT);
    let applied = match command {
        Command::Thing(c) => tokio::time::timeout(wait, twins.apply(auth, c))
            .await
            .map(|r| r.map(|o| Message::ThingResponse(o.response))),
        Command::Policy(c) => tokio::time::timeout(wait, twins.apply_policy(auth, c))
            .await
            .map(|r| r.map(|o| Message::PolicyResponse(o.response))),
    };
    let (outcome, reply) = match applied {
        Ok(Ok(response)) => (Outcome::Applied, answer.then(|| response.to_vec())),
        Ok(Err(error)) => {
            let reply = answer.then(|| {
                Message::Error(ErrorResponse {
                    entity: entity.clone(),
                    path: path.clone(),
                    error: error.clone(),
                    headers: headers.for_reply(),
                })
                .to_vec()
            });
            (Outcome::Refused(error), reply)
        }
        Err(_) => {
            let reply = answer.then(|| {
                error_envelope(
                    &entity,
                    &path,
                    &headers.for_reply(),
                    408,
                    timeout_error(wait.as_millis()),
                )
            });
            (Outcome::TimedOut(wait), reply)
        }
    };
    Dispatched {
        outcome,
        headers: Some(headers),
        reply,
    }
}

/// The commands [`dispatch`] applies.
enum Command {
    Thing(ThingCommand),
    Policy(PolicyCommand),
}

/// The Ditto error JSON of 408 `gateway:command.timeout` after `ms` milliseconds.
pub(crate) fn timeout_error(ms: u128) -> Value {
    json!({
        "status": 408,
        "error": "gateway:command.timeout",
        "message": format!("The command did not complete within {ms} ms."),
        "description": "The command may still be applied; retrieve the resource to find out, or raise the 'timeout'.",
    })
}

/// An error envelope for an error that is not the engine's (its Ditto error JSON `body`, with
/// `status`): `{ns}/{name}/things/twin/errors`, `{ns}/{name}/policies/errors` or
/// `_/_/things/twin/errors`.
pub(crate) fn error_envelope(
    entity: &EntityId,
    path: &Pointer,
    headers: &Headers,
    status: u16,
    body: Value,
) -> Vec<u8> {
    let topic = match entity {
        EntityId::Thing(id) => Topic::thing(id, Criterion::Errors),
        EntityId::Policy(id) => Topic::policy(id, Criterion::Errors),
        EntityId::Unknown => Topic::unknown_error(),
    };
    Envelope {
        topic: topic.to_string(),
        headers: headers.to_json(),
        path: path.to_string(),
        value: Some(body),
        fields: None,
        extra: None,
        status: Some(status),
        revision: None,
        timestamp: None,
    }
    .to_vec()
}

/// The `correlation-id` of an envelope that could not be read as a command, if it has one.
fn correlation_of(envelope: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(envelope).ok()?;
    v.get("headers")?
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("correlation-id"))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned)
}
