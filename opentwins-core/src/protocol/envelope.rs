//! The Ditto Protocol 2 JSON envelope and its conversion from and to [`Message`].
//!
//! ```json
//! {"topic": "com.acme/car-1/things/twin/commands/modify",
//!  "headers": {"correlation-id": "c-1"},
//!  "path": "/features/lane/properties/offset",
//!  "value": 0.12}
//! ```
//!
//! Rules (Ditto's, unless noted):
//! - A `commands` message with a `status` is the command's response; the status must be 2xx
//!   (failures use the `errors` criterion).
//! - `create` is only allowed at `/`; `create`, `modify` and `merge` need a `value` (JSON `null`
//!   counts: it deletes in a merge); `retrieve` and `delete` must not carry one.
//! - Events need a `revision`; `created`, `modified` and `merged` need a `value`, `deleted` must not
//!   carry one. A missing `timestamp` reads as the Unix epoch, which is rendered as "no timestamp".
//! - Merge commands and merged events carry `content-type: application/merge-patch+json`. It is
//!   implied: parsing drops any `content-type` of a merge command or merged event, rendering always
//!   writes that one (Ditto's protocol adapter does the same).
//! - `fields` is read on thing `retrieve` commands; on a policy `retrieve` it is rejected (not
//!   supported); envelope fields that do not apply to a message (`revision` on a command, `status`
//!   on an event, `extra`, unknown fields) are ignored, as Ditto ignores them.
//! - The live channel, policy events and Ditto's multi-thing `RetrieveThings`
//!   (`_/_/things/twin/commands/retrieve`) are reported as `things:protocol.invalid`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::topic::{Channel, Criterion, Group, Topic};
use super::{
    Action, EntityId, ErrorResponse, EventAction, Headers, Message, PolicyCommand, PolicyResponse,
    ThingCommand, ThingEvent, ThingResponse,
};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{FieldSelector, Pointer, Timestamp};

/// The media type of a JSON merge patch (RFC 7396).
pub const MERGE_PATCH_CONTENT_TYPE: &str = "application/merge-patch+json";

const CONTENT_TYPE: &str = "content-type";

/// A Ditto Protocol message as it travels: topic, headers, path, value and the optional fields of
/// responses (`status`), events (`revision`, `timestamp`) and retrieves (`fields`).
///
/// This is the raw shape: [`Message::from_envelope`] validates it. A JSON `null` `value` is kept as
/// `Some(Value::Null)` (it means "delete" in a merge), distinct from an absent `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// `{namespace}/{name}/{group}/{channel}/{criterion}/{action}`, see [`Topic`].
    pub topic: String,
    /// Headers; names are case-insensitive.
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// A path inside the entity, `/` for the whole entity.
    pub path: String,
    /// The payload.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Value>,
    /// For retrieve commands: which fields to return, e.g. `thingId,attributes(location)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<String>,
    /// Extra fields selected by signal enrichment (`extraFields`); not interpreted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
    /// Responses and errors: an HTTP-like status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Events: the entity's revision after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Events: when the change happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// Keeps an explicit JSON `null` as `Some(Value::Null)` (serde would make it `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Envelope {
    /// Parses an envelope from JSON bytes: malformed JSON is `json.invalid`, well-formed JSON of
    /// the wrong shape is `things:protocol.invalid`. Nesting deeper than 128 levels is rejected
    /// by the JSON parser (no unbounded recursion).
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => protocol_invalid(format!(
                "The message is not a Ditto Protocol envelope: {e}."
            )),
            _ => Error::json_invalid(e),
        })
    }

    /// Reads an envelope from parsed JSON (an element of a batch).
    pub fn from_value(value: Value) -> Result<Self> {
        serde_json::from_value(value).map_err(|e| {
            protocol_invalid(format!(
                "The message is not a Ditto Protocol envelope: {e}."
            ))
        })
    }

    /// The envelope as JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        // Serialising strings, numbers and `serde_json::Value`s with string keys cannot fail.
        serde_json::to_vec(self).expect("an envelope always serialises")
    }
}

fn protocol_invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::ProtocolInvalid, message).with_description(
        "Check the Ditto Protocol specification: https://eclipse.dev/ditto/protocol-specification.html",
    )
}

impl Message {
    /// Validates an envelope and builds the typed message. See the module doc for the rules.
    pub fn from_envelope(env: Envelope) -> Result<Message> {
        let topic = Topic::parse(&env.topic)?;
        let headers = Headers::from_json(&env.headers)?;
        let path = Pointer::parse(&env.path)?;
        match (topic.group, topic.criterion) {
            (Group::Things(Channel::Live), _) => Err(protocol_invalid(format!(
                "The topic '{}' uses the live channel, which is not supported; use the twin channel.",
                env.topic
            ))),
            (Group::Things(Channel::Twin), Criterion::Commands(action)) => {
                thing_command(&topic, action, path, env, headers)
            }
            (Group::Things(Channel::Twin), Criterion::Events(action)) => {
                thing_event(&topic, action, path, env, headers)
            }
            (Group::Things(Channel::Twin), Criterion::Errors) => {
                let entity = if topic.is_placeholder() {
                    EntityId::Unknown
                } else {
                    EntityId::Thing(topic.thing_id()?)
                };
                error_response(entity, path, env, headers)
            }
            (Group::Policies, Criterion::Commands(action)) => {
                policy_command(&topic, action, path, env, headers)
            }
            (Group::Policies, Criterion::Events(_)) => Err(protocol_invalid(format!(
                "The topic '{}' names a policy event, which is not supported.",
                env.topic
            ))),
            (Group::Policies, Criterion::Errors) => {
                let entity = if topic.is_placeholder() {
                    EntityId::Unknown
                } else {
                    EntityId::Policy(topic.policy_id()?)
                };
                error_response(entity, path, env, headers)
            }
        }
    }

    /// Renders the message as a Ditto Protocol envelope.
    pub fn to_envelope(&self) -> Envelope {
        match self {
            Message::ThingCommand(c) => Envelope {
                fields: c.fields.as_ref().map(render_fields),
                ..base(
                    Topic::thing(&c.thing_id, Criterion::Commands(c.action)),
                    headers_json(&c.headers, c.action == Action::Merge),
                    &c.path,
                    c.value.clone(),
                )
            },
            Message::ThingResponse(r) => Envelope {
                status: Some(r.status),
                ..base(
                    Topic::thing(&r.thing_id, Criterion::Commands(r.action)),
                    r.headers.to_json(),
                    &r.path,
                    r.value.clone(),
                )
            },
            Message::ThingEvent(e) => Envelope {
                revision: Some(e.revision),
                timestamp: (e.timestamp.as_micros() != 0).then(|| render_timestamp(e.timestamp)),
                ..base(
                    Topic::thing(&e.thing_id, Criterion::Events(e.action)),
                    headers_json(&e.headers, e.action == EventAction::Merged),
                    &e.path,
                    e.value.clone(),
                )
            },
            Message::PolicyCommand(c) => base(
                Topic::policy(&c.policy_id, Criterion::Commands(c.action)),
                c.headers.to_json(),
                &c.path,
                c.value.clone(),
            ),
            Message::PolicyResponse(r) => Envelope {
                status: Some(r.status),
                ..base(
                    Topic::policy(&r.policy_id, Criterion::Commands(r.action)),
                    r.headers.to_json(),
                    &r.path,
                    r.value.clone(),
                )
            },
            Message::Error(e) => {
                let topic = match &e.entity {
                    EntityId::Thing(id) => Topic::thing(id, Criterion::Errors),
                    EntityId::Policy(id) => Topic::policy(id, Criterion::Errors),
                    EntityId::Unknown => Topic::unknown_error(),
                };
                Envelope {
                    status: Some(e.error.status()),
                    ..base(topic, e.headers.to_json(), &e.path, Some(e.error.to_json()))
                }
            }
        }
    }

    /// Parses a Ditto Protocol message from JSON bytes: malformed JSON is `json.invalid`, a wrong
    /// shape or an unsupported message is `things:protocol.invalid`, a bad id, path or header
    /// gives that id's, path's or header's error.
    pub fn from_slice(bytes: &[u8]) -> Result<Message> {
        Message::from_envelope(Envelope::from_slice(bytes)?)
    }

    /// The message as Ditto Protocol JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        self.to_envelope().to_vec()
    }
}

fn base(
    topic: Topic,
    headers: Map<String, Value>,
    path: &Pointer,
    value: Option<Value>,
) -> Envelope {
    Envelope {
        topic: topic.to_string(),
        headers,
        path: path.to_string(),
        value,
        fields: None,
        extra: None,
        status: None,
        revision: None,
        timestamp: None,
    }
}

/// Headers as JSON; merge commands and merged events always say they carry a merge patch.
fn headers_json(headers: &Headers, merge: bool) -> Map<String, Value> {
    let mut map = headers.to_json();
    if merge {
        map.insert(
            CONTENT_TYPE.to_owned(),
            Value::String(MERGE_PATCH_CONTENT_TYPE.to_owned()),
        );
    }
    map
}

/// Drops the implied `content-type` of a merge command or merged event.
fn without_content_type(mut headers: Headers) -> Headers {
    headers.other.shift_remove(CONTENT_TYPE);
    headers
}

/// A 2xx status, or the error for a response that pretends to be a failure.
fn success_status(status: u16) -> Result<u16> {
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(protocol_invalid(format!(
            "A command response must have a 2xx status, not {status}; failures use the 'errors' criterion."
        )))
    }
}

/// Checks the value and path rules shared by thing and policy commands.
fn check_command(action: Action, path: &Pointer, value: &Option<Value>) -> Result<()> {
    if action == Action::Create && !path.is_root() {
        return Err(protocol_invalid(format!(
            "A create command is only allowed at path '/', not '{path}'; use modify to create a part of an entity."
        )));
    }
    match (action, value) {
        (Action::Create | Action::Modify | Action::Merge, None) => Err(protocol_invalid(format!(
            "A {} command needs a 'value'.",
            action.as_str()
        ))),
        (Action::Retrieve | Action::Delete, Some(_)) => Err(protocol_invalid(format!(
            "A {} command must not carry a 'value'.",
            action.as_str()
        ))),
        _ => Ok(()),
    }
}

fn thing_command(
    topic: &Topic,
    action: Action,
    path: Pointer,
    env: Envelope,
    headers: Headers,
) -> Result<Message> {
    if topic.is_placeholder() {
        return Err(protocol_invalid(format!(
            "The topic '{}' addresses several things (Ditto's RetrieveThings), which is not supported; \
             retrieve each thing on its own topic.",
            env.topic
        )));
    }
    let thing_id = topic.thing_id()?;
    if let Some(status) = env.status {
        return Ok(Message::ThingResponse(ThingResponse {
            thing_id,
            action,
            path,
            status: success_status(status)?,
            value: env.value,
            headers,
        }));
    }
    check_command(action, &path, &env.value)?;
    let fields = match (action, env.fields) {
        (Action::Retrieve, Some(f)) => Some(FieldSelector::parse(&f)?),
        _ => None,
    };
    let headers = if action == Action::Merge {
        without_content_type(headers)
    } else {
        headers
    };
    Ok(Message::ThingCommand(ThingCommand {
        thing_id,
        action,
        path,
        value: env.value,
        fields,
        headers,
    }))
}

fn thing_event(
    topic: &Topic,
    action: EventAction,
    path: Pointer,
    env: Envelope,
    headers: Headers,
) -> Result<Message> {
    let thing_id = topic.thing_id()?;
    let revision = env
        .revision
        .ok_or_else(|| protocol_invalid("An event needs a 'revision'."))?;
    match (action, &env.value) {
        (EventAction::Deleted, Some(_)) => {
            return Err(protocol_invalid(
                "A deleted event must not carry a 'value'.",
            ));
        }
        (EventAction::Created | EventAction::Modified | EventAction::Merged, None) => {
            return Err(protocol_invalid(format!(
                "A {} event needs a 'value'.",
                action.as_str()
            )));
        }
        _ => {}
    }
    let timestamp = match &env.timestamp {
        Some(t) => parse_timestamp(t)?,
        None => Timestamp::from_micros(0),
    };
    let headers = if action == EventAction::Merged {
        without_content_type(headers)
    } else {
        headers
    };
    Ok(Message::ThingEvent(ThingEvent {
        thing_id,
        action,
        path,
        value: env.value,
        revision,
        timestamp,
        headers,
        provenance: None,
    }))
}

fn policy_command(
    topic: &Topic,
    action: Action,
    path: Pointer,
    env: Envelope,
    headers: Headers,
) -> Result<Message> {
    if action == Action::Merge {
        return Err(protocol_invalid(format!(
            "The topic '{}' merges a policy, which is not supported; use modify.",
            env.topic
        )));
    }
    let policy_id = topic.policy_id()?;
    if let Some(status) = env.status {
        return Ok(Message::PolicyResponse(PolicyResponse {
            policy_id,
            action,
            path,
            status: success_status(status)?,
            value: env.value,
            headers,
        }));
    }
    check_command(action, &path, &env.value)?;
    if env.fields.is_some() {
        return Err(protocol_invalid(
            "Selecting 'fields' of a policy is not supported; retrieve the policy or a part of it by path.",
        ));
    }
    Ok(Message::PolicyCommand(PolicyCommand {
        policy_id,
        action,
        path,
        value: env.value,
        headers,
    }))
}

fn error_response(
    entity: EntityId,
    path: Pointer,
    env: Envelope,
    headers: Headers,
) -> Result<Message> {
    let error = env.value.as_ref().and_then(Error::from_json).ok_or_else(|| {
        protocol_invalid(
            "The 'value' of an error response must be a Ditto error: {\"status\": 404, \"error\": \"things:thing.notfound\", \"message\": \"...\"}.",
        )
    })?;
    Ok(Message::Error(ErrorResponse {
        entity,
        path,
        error,
        headers,
    }))
}

/// Parses an RFC 3339 timestamp with a `Z` or `±HH:MM` offset. ([`Timestamp::parse`] alone
/// ignores an offset, so it is applied here; a timestamp without a zone is ambiguous and rejected.)
fn parse_timestamp(s: &str) -> Result<Timestamp> {
    let invalid = || {
        Error::field_invalid(format!(
            "The timestamp '{}' is not valid: it must be RFC 3339 with a time zone, e.g. '2021-01-18T09:42:12Z'.",
            s.escape_debug()
        ))
    };
    let bytes = s.as_bytes();
    if let Some(utc) = s.strip_suffix(['Z', 'z']) {
        return Timestamp::parse(&format!("{utc}Z")).map_err(|_| invalid());
    }
    // `...±HH:MM`
    let n = bytes.len();
    if n < 7 || !matches!(bytes[n - 6], b'+' | b'-') || bytes[n - 3] != b':' {
        return Err(invalid());
    }
    let number = |range: std::ops::Range<usize>| {
        s.get(range)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok())
    };
    let (Some(hours), Some(minutes)) = (number(n - 5..n - 3), number(n - 2..n)) else {
        return Err(invalid());
    };
    if hours > 23 || minutes > 59 {
        return Err(invalid());
    }
    let local = Timestamp::parse(&format!("{}Z", &s[..n - 6])).map_err(|_| invalid())?;
    let offset = (hours * 3600 + minutes * 60) * 1_000_000;
    let micros = if bytes[n - 6] == b'+' {
        local.as_micros().checked_sub(offset)
    } else {
        local.as_micros().checked_add(offset)
    };
    micros.map(Timestamp::from_micros).ok_or_else(invalid)
}

/// Renders a field selector in its flat form: `thingId,attributes/location`.
fn render_fields(fields: &FieldSelector) -> String {
    let paths: Vec<String> = fields.paths().iter().map(|p| p.join("/")).collect();
    paths.join(",")
}

/// RFC 3339 in UTC the way Java's `Instant.toString()` (and so Ditto) writes it: no fraction when
/// it is zero, else milliseconds or microseconds.
fn render_timestamp(t: Timestamp) -> String {
    let micros = t.as_micros();
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros);
    let seconds = humantime::format_rfc3339_seconds(time).to_string();
    let fraction = micros % 1_000_000;
    let fraction = if fraction == 0 {
        String::new()
    } else if fraction.is_multiple_of(1000) {
        format!(".{:03}", fraction / 1000)
    } else {
        format!(".{fraction:06}")
    };
    match seconds.strip_suffix('Z') {
        Some(s) => format!("{s}{fraction}Z"),
        None => seconds,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::error::Level;
    use crate::model::{PolicyId, ThingId};

    fn parse(v: Value) -> Result<Message> {
        Message::from_slice(&serde_json::to_vec(&v).unwrap())
    }

    fn code(v: Value) -> String {
        parse(v.clone())
            .map(|m| format!("parsed: {m:?}"))
            .unwrap_or_else(|e| e.code().into_owned())
    }

    fn rendered(m: &Message) -> Value {
        serde_json::from_slice(&m.to_vec()).unwrap()
    }

    #[test]
    fn modify_command_round_trip() {
        let v = json!({
            "topic": "com.acme/car-1/things/twin/commands/modify",
            "headers": {"correlation-id": "c-1", "response-required": false},
            "path": "/features/lane/properties/offset",
            "value": 0.25
        });
        let Message::ThingCommand(c) = parse(v.clone()).unwrap() else {
            panic!("not a command")
        };
        assert_eq!(c.thing_id.as_str(), "com.acme:car-1");
        assert_eq!(c.action, Action::Modify);
        assert_eq!(c.path.to_string(), "/features/lane/properties/offset");
        assert_eq!(c.value, Some(json!(0.25)));
        assert_eq!(c.headers.correlation_id.as_deref(), Some("c-1"));
        assert!(!c.headers.response_required());
        assert_eq!(rendered(&Message::ThingCommand(c)), v);
    }

    #[test]
    fn null_value_is_not_absent() {
        let v = json!({
            "topic": "com.acme/car-1/things/twin/commands/merge",
            "headers": {"content-type": MERGE_PATCH_CONTENT_TYPE},
            "path": "/attributes/old",
            "value": null
        });
        let m = parse(v.clone()).unwrap();
        let Message::ThingCommand(c) = &m else {
            panic!("not a command")
        };
        assert_eq!(c.value, Some(Value::Null));
        assert_eq!(rendered(&m), v);
        // Absent value: a merge needs one.
        let mut absent = v;
        absent.as_object_mut().unwrap().remove("value");
        assert_eq!(code(absent), "things:protocol.invalid");
    }

    #[test]
    fn responses_are_commands_with_a_status() {
        let v = json!({
            "topic": "com.acme/car-1/things/twin/commands/retrieve",
            "headers": {"correlation-id": "c-2", "etag": "\"rev:3\""},
            "path": "/attributes",
            "value": {"a": 1},
            "status": 200
        });
        let m = parse(v.clone()).unwrap();
        let Message::ThingResponse(r) = &m else {
            panic!("not a response")
        };
        assert_eq!((r.action, r.status), (Action::Retrieve, 200));
        assert_eq!(r.headers.etag.as_deref(), Some("\"rev:3\""));
        assert_eq!(rendered(&m), v);
        let mut failed = v;
        failed["status"] = json!(404);
        let e = parse(failed).unwrap_err();
        assert_eq!(e.code(), "things:protocol.invalid");
        assert!(e.message().contains("2xx"), "{}", e.message());
    }

    #[test]
    fn event_round_trip_and_timestamps() {
        let v = json!({
            "topic": "com.acme/car-1/things/twin/events/modified",
            "headers": {"correlation-id": "c-3"},
            "path": "/features/lane/properties/offset",
            "value": 1,
            "revision": 7,
            "timestamp": "2026-01-18T09:42:12.123Z"
        });
        let m = parse(v.clone()).unwrap();
        let Message::ThingEvent(e) = &m else {
            panic!("not an event")
        };
        assert_eq!((e.action, e.revision), (EventAction::Modified, 7));
        assert_eq!(
            e.timestamp,
            Timestamp::parse("2026-01-18T09:42:12.123Z").unwrap()
        );
        assert_eq!(rendered(&m), v);

        let at = |s: &str| render_timestamp(Timestamp::parse(s).unwrap());
        assert_eq!(at("2021-01-18T09:42:12Z"), "2021-01-18T09:42:12Z");
        assert_eq!(at("2021-01-18T09:42:12.5Z"), "2021-01-18T09:42:12.500Z");
        assert_eq!(
            at("2021-01-18T09:42:12.000007Z"),
            "2021-01-18T09:42:12.000007Z"
        );
        let parsed = |s: &str| {
            parse_timestamp(s)
                .map(render_timestamp)
                .map_err(|e| e.code().into_owned())
        };
        assert_eq!(
            parsed("2021-01-18T10:42:12.25+01:00").unwrap(),
            "2021-01-18T09:42:12.250Z"
        );
        assert_eq!(
            parsed("2021-01-18T05:12:12-04:30").unwrap(),
            "2021-01-18T09:42:12Z"
        );
        assert_eq!(
            parsed("2021-01-18T09:42:12z").unwrap(),
            "2021-01-18T09:42:12Z"
        );
        for bad in [
            "2021-01-18T09:42:12",
            "2021-01-18T09:42:12+1:00",
            "2021-01-18T09:42:12+24:00",
            "+01:00",
            "2021-01-18T09:42:12+0a:00",
            "1970-01-01T00:00:00+01:00",
            "nonsense",
        ] {
            assert_eq!(parsed(bad).unwrap_err(), "json.field.invalid", "{bad}");
        }

        // No timestamp: the epoch, rendered as absent.
        let mut none = v;
        none.as_object_mut().unwrap().remove("timestamp");
        let m = parse(none.clone()).unwrap();
        let Message::ThingEvent(e) = &m else {
            panic!("not an event")
        };
        assert_eq!(e.timestamp.as_micros(), 0);
        assert_eq!(rendered(&m), none);
    }

    #[test]
    fn merge_content_type_is_implied() {
        let cmd = |headers: Value| {
            json!({
                "topic": "com.acme/car-1/things/twin/commands/merge",
                "headers": headers,
                "path": "/",
                "value": {"attributes": {"a": 1}}
            })
        };
        for headers in [
            json!({}),
            json!({"content-type": MERGE_PATCH_CONTENT_TYPE}),
            json!({"Content-Type": "application/json"}),
        ] {
            let m = parse(cmd(headers)).unwrap();
            let Message::ThingCommand(c) = &m else {
                panic!("not a command")
            };
            assert!(c.headers.other.is_empty(), "{:?}", c.headers);
            assert_eq!(
                rendered(&m),
                cmd(json!({"content-type": MERGE_PATCH_CONTENT_TYPE}))
            );
        }
        // Other messages keep their content-type as a pass-through header.
        let v = json!({
            "topic": "com.acme/car-1/things/twin/commands/modify",
            "headers": {"content-type": "application/json"},
            "path": "/attributes/a",
            "value": 1
        });
        assert_eq!(rendered(&parse(v.clone()).unwrap()), v);
        // A merge response carries no patch, so nothing is added.
        let v = json!({
            "topic": "com.acme/car-1/things/twin/commands/merge",
            "headers": {},
            "path": "/",
            "status": 204
        });
        assert_eq!(rendered(&parse(v.clone()).unwrap()), v);
    }

    #[test]
    fn retrieve_fields() {
        let v = json!({
            "topic": "com.acme/car-1/things/twin/commands/retrieve",
            "headers": {},
            "path": "/",
            "fields": "thingId,attributes(location,model)"
        });
        let m = parse(v).unwrap();
        let Message::ThingCommand(c) = &m else {
            panic!("not a command")
        };
        assert_eq!(
            c.fields,
            Some(FieldSelector::parse("thingId,attributes/location,attributes/model").unwrap())
        );
        assert_eq!(
            rendered(&m)["fields"],
            "thingId,attributes/location,attributes/model"
        );

        let bad = json!({
            "topic": "com.acme/car-1/things/twin/commands/retrieve",
            "headers": {},
            "path": "/",
            "fields": "attributes(location"
        });
        assert_eq!(code(bad), "json.fieldselector.invalid");
    }

    #[test]
    fn errors_round_trip() {
        let error = Error::not_found(Level::Property, "com.acme:car-1", "/speed");
        for entity in [
            EntityId::Thing(ThingId::new("com.acme:car-1").unwrap()),
            EntityId::Policy(PolicyId::new("com.acme:p").unwrap()),
            EntityId::Unknown,
        ] {
            let m = Message::Error(ErrorResponse {
                entity: entity.clone(),
                path: Pointer::root(),
                error: error.clone(),
                headers: Headers::with_correlation_id("c-4"),
            });
            let v = rendered(&m);
            assert_eq!(v["status"], 404);
            assert_eq!(v["value"]["error"], "things:feature.property.notfound");
            assert_eq!(Message::from_slice(&m.to_vec()).unwrap(), m);
            let topic = v["topic"].as_str().unwrap();
            match entity {
                EntityId::Thing(_) => assert_eq!(topic, "com.acme/car-1/things/twin/errors"),
                EntityId::Policy(_) => assert_eq!(topic, "com.acme/p/policies/errors"),
                EntityId::Unknown => assert_eq!(topic, "_/_/things/twin/errors"),
            }
        }
        assert_eq!(
            code(
                json!({"topic": "a/b/things/twin/errors", "headers": {}, "path": "/", "value": {"oops": 1}, "status": 400})
            ),
            "things:protocol.invalid"
        );
        assert_eq!(
            code(
                json!({"topic": "a/b/things/twin/errors", "headers": {}, "path": "/", "status": 400})
            ),
            "things:protocol.invalid"
        );
    }

    #[test]
    fn empty_namespace() {
        let v = json!({"topic": "/car/things/twin/commands/retrieve", "headers": {}, "path": "/"});
        let m = parse(v.clone()).unwrap();
        let Message::ThingCommand(c) = &m else {
            panic!("not a command")
        };
        assert_eq!(c.thing_id.as_str(), ":car");
        assert_eq!(rendered(&m), v);
    }

    #[test]
    fn validation_errors() {
        let msg = |topic: &str, path: &str, value: Option<Value>| {
            let mut v = json!({"topic": topic, "headers": {}, "path": path});
            if let Some(value) = value {
                v["value"] = value;
            }
            v
        };
        let t = "com.acme/car-1/things/twin/commands/";
        let p = "com.acme/p/policies/commands/";
        for (v, expected, needle) in [
            (
                msg(&format!("{t}create"), "/attributes", Some(json!({}))),
                "things:protocol.invalid",
                "only allowed at path '/'",
            ),
            (
                msg(&format!("{t}create"), "/", None),
                "things:protocol.invalid",
                "needs a 'value'",
            ),
            (
                msg(&format!("{t}modify"), "/attributes/a", None),
                "things:protocol.invalid",
                "needs a 'value'",
            ),
            (
                msg(&format!("{t}merge"), "/", None),
                "things:protocol.invalid",
                "needs a 'value'",
            ),
            (
                msg(&format!("{t}retrieve"), "/", Some(json!(1))),
                "things:protocol.invalid",
                "must not carry",
            ),
            (
                msg(&format!("{t}delete"), "/attributes", Some(json!(null))),
                "things:protocol.invalid",
                "must not carry",
            ),
            (
                msg(&format!("{t}patch"), "/", None),
                "things:protocol.invalid",
                "unknown command action 'patch'",
            ),
            (
                msg("com.acme/car-1/gizmos/twin/commands/modify", "/", None),
                "things:protocol.invalid",
                "unknown group",
            ),
            (
                msg("com.acme/car-1/things/twin/whatever", "/", None),
                "things:protocol.invalid",
                "unknown criterion",
            ),
            (
                msg("com.acme/car-1/things/live/commands/retrieve", "/", None),
                "things:protocol.invalid",
                "live channel",
            ),
            (
                msg(
                    "_/_/things/twin/commands/retrieve",
                    "/",
                    Some(json!({"thingIds": ["a:b"]})),
                ),
                "things:protocol.invalid",
                "several things",
            ),
            (
                msg(&format!("{p}merge"), "/", Some(json!({}))),
                "things:protocol.invalid",
                "merges a policy",
            ),
            (
                msg(&format!("{p}create"), "/entries", Some(json!({}))),
                "things:protocol.invalid",
                "only allowed at path '/'",
            ),
            (
                msg(&format!("{p}delete"), "/", Some(json!(1))),
                "things:protocol.invalid",
                "must not carry",
            ),
            (
                msg("com.acme/p/policies/events/created", "/", Some(json!({}))),
                "things:protocol.invalid",
                "policy event",
            ),
            (
                msg(
                    "com.acme/car-1/things/twin/events/modified",
                    "/attributes",
                    Some(json!(1)),
                ),
                "things:protocol.invalid",
                "revision",
            ),
            (
                msg("1bad/car/things/twin/commands/retrieve", "/", None),
                "things:id.invalid",
                "not valid",
            ),
            (
                msg("_/car/things/twin/commands/retrieve", "/", None),
                "things:id.invalid",
                "not valid",
            ),
            (
                msg("1bad/p/policies/commands/retrieve", "/", None),
                "policies:id.invalid",
                "not valid",
            ),
            (
                msg(
                    "1bad/car/things/twin/errors",
                    "/",
                    Some(json!({"status": 400, "error": "x", "message": "y"})),
                ),
                "things:id.invalid",
                "not valid",
            ),
            (
                msg(&format!("{t}retrieve"), "/attributes//a", None),
                "json.pointer.invalid",
                "empty segment",
            ),
            (
                msg(&format!("{t}retrieve"), "/a/", None),
                "json.pointer.invalid",
                "empty segment",
            ),
        ] {
            let e = parse(v.clone()).unwrap_err();
            assert_eq!(e.code(), expected, "{v}");
            assert!(e.message().contains(needle), "{v}: {}", e.message());
        }

        let event = |action: &str, value: Option<Value>, timestamp: &str| {
            let mut v = msg(
                &format!("com.acme/car-1/things/twin/events/{action}"),
                "/attributes/a",
                value,
            );
            v["revision"] = json!(3);
            v["timestamp"] = json!(timestamp);
            v
        };
        assert_eq!(
            code(event("deleted", Some(json!(1)), "2021-01-18T09:42:12Z")),
            "things:protocol.invalid"
        );
        assert_eq!(
            code(event("created", None, "2021-01-18T09:42:12Z")),
            "things:protocol.invalid"
        );
        assert_eq!(
            code(event("merged", None, "2021-01-18T09:42:12Z")),
            "things:protocol.invalid"
        );
        assert_eq!(
            code(event("modified", Some(json!(1)), "yesterday")),
            "json.field.invalid"
        );

        let mut bad_header = msg(&format!("{t}retrieve"), "/", None);
        bad_header["headers"] = json!({"timeout": "forever"});
        assert_eq!(code(bad_header), "header.invalid");

        let mut policy_fields = msg(&format!("{p}retrieve"), "/", None);
        policy_fields["fields"] = json!("policyId");
        assert_eq!(code(policy_fields), "things:protocol.invalid");

        // Irrelevant envelope fields are ignored, as Ditto does.
        let mut extra = msg(&format!("{t}modify"), "/attributes/a", Some(json!(1)));
        extra["revision"] = json!(4);
        extra["extra"] = json!({"attributes": {}});
        extra["unknownField"] = json!(true);
        extra["fields"] = json!("thingId");
        assert!(matches!(parse(extra), Ok(Message::ThingCommand(c)) if c.fields.is_none()));
    }

    #[test]
    fn bad_json_and_wrong_shapes() {
        for bytes in [&b"{"[..], b"", b"not json", b"{\"topic\": }", b"\xff\xfe"] {
            assert_eq!(
                Message::from_slice(bytes).unwrap_err().code(),
                "json.invalid",
                "{bytes:?}"
            );
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let nested = format!(
            r#"{{"topic":"a/b/things/twin/commands/modify","headers":{{}},"path":"/attributes/x","value":{deep}}}"#
        );
        assert_eq!(
            Message::from_slice(nested.as_bytes()).unwrap_err().code(),
            "json.invalid"
        );
        for v in [
            json!([]),
            json!("a string"),
            json!({"headers": {}, "path": "/"}),
            json!({"topic": 5, "headers": {}, "path": "/"}),
            json!({"topic": "a/b/things/twin/commands/retrieve", "headers": {}}),
            json!({"topic": "a/b/things/twin/commands/retrieve", "headers": [], "path": "/"}),
            json!({"topic": "a/b/things/twin/commands/retrieve", "headers": {}, "path": "/", "status": "200"}),
            json!({"topic": "a/b/things/twin/commands/retrieve", "headers": {}, "path": "/", "status": 70000}),
            json!({"topic": "a/b/things/twin/events/deleted", "headers": {}, "path": "/", "revision": -1}),
            json!({"topic": "a/b/things/twin/commands/retrieve", "headers": {}, "path": "/", "extra": 1}),
        ] {
            assert_eq!(code(v.clone()), "things:protocol.invalid", "{v}");
        }
    }

    // ---- property test: from_envelope(to_envelope(m)) == m ----

    fn thing_id() -> impl Strategy<Value = ThingId> {
        (
            "(|[a-z][a-z0-9_]{0,6}(\\.[a-z][a-z0-9]{0,4}){0,2})",
            "[a-zA-Z0-9_:.-]{1,16}",
        )
            .prop_map(|(ns, name)| ThingId::from_parts(&ns, &name).unwrap())
    }

    fn policy_id() -> impl Strategy<Value = PolicyId> {
        thing_id().prop_map(|t| PolicyId::from(&t))
    }

    fn pointer() -> impl Strategy<Value = Pointer> {
        proptest::collection::vec("[a-zA-Z0-9_:.-]{1,8}", 0..5)
            .prop_map(|segs| Pointer::from_segments(segs).unwrap())
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Floats with a short exact decimal form survive the text round trip.
            (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-zA-Z0-9_ -]{1,8}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn headers() -> impl Strategy<Value = Headers> {
        (
            proptest::option::of("[a-zA-Z0-9-]{1,12}"),
            proptest::option::of(any::<bool>()),
            proptest::option::of(prop_oneof![Just("*".to_owned()), "\"rev:[0-9]{1,4}\""]),
            proptest::option::of("eq\\(attributes/[a-z]{1,5},[0-9]{1,3}\\)"),
            proptest::option::of(proptest::collection::vec("[a-z-]{3,12}", 0..3)),
            proptest::option::of(0u64..=60_000),
            proptest::collection::vec(("x-[a-z]{1,6}", "\\PC{0,10}"), 0..3),
        )
            .prop_map(
                |(cid, rr, if_match, condition, acks, timeout, other)| Headers {
                    correlation_id: cid,
                    response_required: rr,
                    if_match,
                    condition,
                    requested_acks: acks,
                    timeout: timeout.map(Duration::from_millis),
                    other: other
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                    ..Headers::default()
                },
            )
    }

    fn action() -> impl Strategy<Value = Action> {
        proptest::sample::select(vec![
            Action::Create,
            Action::Retrieve,
            Action::Modify,
            Action::Merge,
            Action::Delete,
        ])
    }

    fn fields() -> impl Strategy<Value = FieldSelector> {
        proptest::collection::vec(
            proptest::collection::vec("([a-zA-Z0-9_]{1,6}|\\*)", 1..4),
            1..4,
        )
        .prop_map(|paths| {
            let text: Vec<String> = paths.iter().map(|p| p.join("/")).collect();
            FieldSelector::parse(&text.join(",")).unwrap()
        })
    }

    fn thing_command() -> impl Strategy<Value = Message> {
        (
            thing_id(),
            action(),
            pointer(),
            json_value(),
            fields(),
            headers(),
        )
            .prop_map(|(thing_id, action, path, value, fields, headers)| {
                let path = if action == Action::Create {
                    Pointer::root()
                } else {
                    path
                };
                let value = match action {
                    Action::Retrieve | Action::Delete => None,
                    _ => Some(value),
                };
                let fields = (action == Action::Retrieve).then_some(fields);
                Message::ThingCommand(ThingCommand {
                    thing_id,
                    action,
                    path,
                    value,
                    fields,
                    headers,
                })
            })
    }

    fn thing_response() -> impl Strategy<Value = Message> {
        (
            thing_id(),
            action(),
            pointer(),
            proptest::option::of(json_value()),
            200u16..300,
            headers(),
        )
            .prop_map(|(thing_id, action, path, value, status, headers)| {
                Message::ThingResponse(ThingResponse {
                    thing_id,
                    action,
                    path,
                    status,
                    value,
                    headers,
                })
            })
    }

    fn thing_event() -> impl Strategy<Value = Message> {
        let actions = vec![
            EventAction::Created,
            EventAction::Modified,
            EventAction::Merged,
            EventAction::Deleted,
        ];
        (
            thing_id(),
            proptest::sample::select(actions),
            pointer(),
            json_value(),
            any::<u64>(),
            // Any instant up to the year 9999, with microseconds.
            0u64..253_402_300_799_000_000,
            headers(),
        )
            .prop_map(
                |(thing_id, action, path, value, revision, micros, headers)| {
                    let value = (action != EventAction::Deleted).then_some(value);
                    let timestamp = Timestamp::from_micros(micros);
                    Message::ThingEvent(ThingEvent {
                        thing_id,
                        action,
                        path,
                        value,
                        revision,
                        timestamp,
                        headers,
                        provenance: None,
                    })
                },
            )
    }

    fn policy_message() -> impl Strategy<Value = Message> {
        let actions = vec![
            Action::Create,
            Action::Retrieve,
            Action::Modify,
            Action::Delete,
        ];
        (
            policy_id(),
            proptest::sample::select(actions),
            pointer(),
            json_value(),
            proptest::option::of(200u16..300),
            headers(),
        )
            .prop_map(
                |(policy_id, action, path, value, status, headers)| match status {
                    Some(status) => Message::PolicyResponse(PolicyResponse {
                        policy_id,
                        action,
                        path,
                        status,
                        value: Some(value),
                        headers,
                    }),
                    None => {
                        let path = if action == Action::Create {
                            Pointer::root()
                        } else {
                            path
                        };
                        let value =
                            matches!(action, Action::Create | Action::Modify).then_some(value);
                        Message::PolicyCommand(PolicyCommand {
                            policy_id,
                            action,
                            path,
                            value,
                            headers,
                        })
                    }
                },
            )
    }

    fn error_kind() -> impl Strategy<Value = ErrorKind> {
        use ErrorKind::*;
        let levels = Level::ALL.to_vec();
        prop_oneof![
            proptest::sample::select(ErrorKind::SIMPLE.to_vec()),
            proptest::sample::select(levels.clone()).prop_map(NotFound),
            proptest::sample::select(levels).prop_map(NotModifiable),
        ]
    }

    fn error_message() -> impl Strategy<Value = Message> {
        let entity = prop_oneof![
            thing_id().prop_map(EntityId::Thing),
            policy_id().prop_map(EntityId::Policy),
            Just(EntityId::Unknown),
        ];
        (
            entity,
            pointer(),
            error_kind(),
            "\\PC{0,30}",
            proptest::option::of("\\PC{0,30}"),
            headers(),
        )
            .prop_map(|(entity, path, kind, message, description, headers)| {
                let mut error = Error::new(kind, message);
                if let Some(d) = description {
                    error = error.with_description(d);
                }
                Message::Error(ErrorResponse {
                    entity,
                    path,
                    error,
                    headers,
                })
            })
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            thing_command(),
            thing_response(),
            thing_event(),
            policy_message(),
            error_message()
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn envelope_round_trip(m in message()) {
            prop_assert_eq!(Message::from_envelope(m.to_envelope())?, m.clone());
            prop_assert_eq!(Message::from_slice(&m.to_vec())?, m);
        }

        #[test]
        fn from_slice_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Message::from_slice(&bytes);
        }

        #[test]
        fn from_envelope_never_panics(
            topic in "(|[a-z_]{0,3}/[a-z_]{0,3}/(things/(twin|live)|policies|x)/(commands|events|errors)(/(create|retrieve|modify|merge|delete|created|modified|merged|deleted|x))?)",
            path in "[/a-z]{0,8}",
            value in proptest::option::of(json_value()),
            status in proptest::option::of(any::<u16>()),
            revision in proptest::option::of(any::<u64>()),
            fields in proptest::option::of("[a-z(),/*]{0,8}"),
        ) {
            let env = Envelope { topic, headers: Map::new(), path, value, fields, extra: None, status, revision, timestamp: None };
            if let Ok(m) = Message::from_envelope(env) {
                // Whatever parses, renders and parses back to itself.
                prop_assert_eq!(Message::from_envelope(m.to_envelope())?, m);
            }
        }
    }
}
