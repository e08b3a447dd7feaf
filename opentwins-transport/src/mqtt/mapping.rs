//! Inbound mappings: how one MQTT message becomes an engine command, and the reply it gets.
//! No client library types here, so the mappings are tested without a broker.

use base64::Engine as _;
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, ThingCommand};
use opentwins_core::{Error, Pointer, Twins};
use serde_json::{Map, Value, json};

use super::template::TelemetryTemplate;
use crate::protocol::{DEFAULT_TIMEOUT, dispatch};

/// The MQTT 5 content type of Ditto Protocol messages.
pub const DITTO_CONTENT_TYPE: &str = "application/vnd.eclipse.ditto+json";

/// An inbound MQTT message, reduced to what the mappings read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Incoming {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) content_type: Option<String>,
    pub(crate) response_topic: Option<String>,
    pub(crate) correlation_data: Option<Vec<u8>>,
}

/// A message to publish in answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) correlation_data: Option<Vec<u8>>,
}

/// How an inbound message ended (the telemetry mapping's too).
pub(crate) use crate::protocol::Outcome as Handled;

/// Applies a Ditto Protocol envelope ([`crate::protocol::dispatch`]) and frames its answer:
/// to the MQTT 5 response topic with the request's correlation data copied, else to the
/// envelope's `reply-to` header; only if `response-required` is not false. A message that is
/// not a command (unparseable, an event, a response, an error) is answered (with
/// `_/_/things/twin/errors`) only on a response topic, never on `reply-to` (no loops).
pub(crate) async fn ditto(
    twins: &Twins,
    auth: &AuthContext,
    msg: &Incoming,
) -> (Handled, Option<Reply>) {
    let reply_to = |headers: &Headers| {
        headers
            .other
            .get("reply-to")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    let answerable = |headers: Option<&Headers>| {
        msg.response_topic.is_some() || headers.and_then(reply_to).is_some()
    };
    let done = dispatch(twins, auth, &msg.payload, DEFAULT_TIMEOUT, answerable).await;
    let reply = done.reply.and_then(|payload| {
        let topic = msg
            .response_topic
            .clone()
            .or_else(|| done.headers.as_ref().and_then(reply_to))?;
        Some(Reply {
            topic,
            payload,
            correlation_data: msg.correlation_data.clone(),
        })
    });
    (done.outcome, reply)
}

/// The telemetry mapping's settings, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Telemetry {
    pub(crate) template: TelemetryTemplate,
    pub(crate) feature: Option<String>,
    pub(crate) binary_property: String,
}

impl Telemetry {
    /// The merge command for one telemetry message: the JSON object payload merged at
    /// `/features/{feature}/properties`, or a binary payload as `{binary_property: base64,
    /// contentType, size}`.
    pub(crate) fn command(&self, msg: &Incoming) -> Result<ThingCommand, Error> {
        let target = self.template.matches(&msg.topic)?;
        let feature = target
            .feature
            .or_else(|| self.feature.clone())
            .ok_or_else(|| Error::field_invalid("The telemetry topic names no feature."))?;
        opentwins_core::model::validate_feature_id(&feature)?;
        if msg.payload.is_empty() {
            return Err(Error::field_invalid("The telemetry payload is empty."));
        }
        let content_type = msg
            .content_type
            .as_deref()
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|c| !c.is_empty());
        let json_declared = content_type.as_deref().map(is_json);
        let value = match json_declared {
            Some(false) => self.binary(&msg.payload, content_type.as_deref()),
            Some(true) => {
                properties(serde_json::from_slice(&msg.payload).map_err(Error::json_invalid)?)?
            }
            None => match serde_json::from_slice::<Value>(&msg.payload) {
                Ok(v) => properties(v)?,
                Err(_) => self.binary(&msg.payload, None),
            },
        };
        let path = Pointer::from_segments(["features", feature.as_str(), "properties"])?;
        Ok(ThingCommand::new(
            target.thing_id,
            Action::Merge,
            path,
            Some(value),
        ))
    }

    fn binary(&self, payload: &[u8], content_type: Option<&str>) -> Value {
        let mut m = Map::new();
        m.insert(
            self.binary_property.clone(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(payload)),
        );
        m.insert(
            "contentType".into(),
            json!(content_type.unwrap_or("application/octet-stream")),
        );
        m.insert("size".into(), json!(payload.len()));
        Value::Object(m)
    }
}

fn is_json(content_type: &str) -> bool {
    content_type == "application/json"
        || content_type == "text/json"
        || content_type.ends_with("+json")
}

fn properties(v: Value) -> Result<Value, Error> {
    if v.is_object() {
        Ok(v)
    } else {
        Err(Error::field_invalid(
            "A JSON telemetry payload must be an object (the feature's properties).",
        ))
    }
}

/// Applies one telemetry message.
pub(crate) async fn telemetry(
    twins: &Twins,
    auth: &AuthContext,
    mapping: &Telemetry,
    msg: &Incoming,
) -> Handled {
    match mapping.command(msg) {
        Err(e) => Handled::Invalid(e),
        Ok(cmd) => match twins.apply(auth, cmd).await {
            Ok(_) => Handled::Applied,
            Err(e) => Handled::Refused(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use opentwins_core::{EngineConfig, ThingId};

    use super::*;

    fn tel(template: &str) -> Telemetry {
        Telemetry {
            template: TelemetryTemplate::parse(template).unwrap(),
            feature: None,
            binary_property: "frame".into(),
        }
    }

    fn incoming(topic: &str, payload: &[u8], ct: Option<&str>) -> Incoming {
        Incoming {
            topic: topic.into(),
            payload: payload.to_vec(),
            content_type: ct.map(str::to_owned),
            ..Incoming::default()
        }
    }

    #[test]
    fn telemetry_json_and_binary() {
        let t = tel("telemetry/{namespace}:{name}/{feature}");
        let c = t
            .command(&incoming("telemetry/ns:car/gps", br#"{"lat": 1}"#, None))
            .unwrap();
        assert_eq!(c.thing_id.as_str(), "ns:car");
        assert_eq!(c.action, Action::Merge);
        assert_eq!(c.path.to_string(), "/features/gps/properties");
        assert_eq!(c.value, Some(json!({"lat": 1})));

        let c = t
            .command(&incoming(
                "telemetry/ns:car/cam",
                &[0xff, 0xd8, 0xff],
                Some("image/jpeg"),
            ))
            .unwrap();
        assert_eq!(
            c.value,
            Some(json!({"frame": "/9j/", "contentType": "image/jpeg", "size": 3}))
        );
        // Not JSON and no content type: binary.
        let c = t
            .command(&incoming("telemetry/ns:car/cam", b"\x00\x01", None))
            .unwrap();
        assert_eq!(c.value.unwrap()["contentType"], "application/octet-stream");
        // Declared JSON that is not: invalid; JSON that is not an object: invalid.
        for (p, ct) in [
            (&b"{oops"[..], Some("application/json")),
            (b"[1]", None),
            (b"", None),
        ] {
            assert!(t.command(&incoming("telemetry/ns:car/x", p, ct)).is_err());
        }
        assert!(
            t.command(&incoming("telemetry/bad/x", b"{}", None))
                .is_err()
        );
    }

    #[tokio::test]
    async fn ditto_replies_with_correlation() {
        let tw = Twins::in_memory(EngineConfig::default());
        let auth = AuthContext::new(["test:a"]);
        let env = json!({"topic": "ns/t1/things/twin/commands/create", "path": "/",
            "headers": {"correlation-id": "c-1"}, "value": {"attributes": {"a": 1}}});
        let mut m = incoming("in", env.to_string().as_bytes(), None);
        m.response_topic = Some("resp".into());
        m.correlation_data = Some(b"xyz".to_vec());
        let (h, r) = ditto(&tw, &auth, &m).await;
        assert!(matches!(h, Handled::Applied));
        let r = r.unwrap();
        assert_eq!(r.topic, "resp");
        assert_eq!(r.correlation_data.as_deref(), Some(&b"xyz"[..]));
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["status"], 201);
        assert_eq!(v["headers"]["correlation-id"], "c-1");
        assert!(tw.get_thing(&ThingId::new("ns:t1").unwrap()).is_some());

        // Again: conflict, answered with the error envelope.
        let (h, r) = ditto(&tw, &auth, &m).await;
        assert!(matches!(h, Handled::Refused(_)));
        let v: Value = serde_json::from_slice(&r.unwrap().payload).unwrap();
        assert_eq!(v["topic"], "ns/t1/things/twin/errors");
        assert_eq!(v["status"], 409);

        // reply-to header, response-required false: no reply.
        let env = json!({"topic": "ns/t1/things/twin/commands/retrieve", "path": "/",
            "headers": {"reply-to": "r2", "response-required": false}});
        let (_, r) = ditto(
            &tw,
            &auth,
            &incoming("in", env.to_string().as_bytes(), None),
        )
        .await;
        assert!(r.is_none());
        let env = json!({"topic": "ns/t1/things/twin/commands/retrieve", "path": "/",
            "headers": {"reply-to": "r2"}});
        let (_, r) = ditto(
            &tw,
            &auth,
            &incoming("in", env.to_string().as_bytes(), None),
        )
        .await;
        assert_eq!(r.unwrap().topic, "r2");

        // Garbage: invalid, answered on the response topic with the unknown-entity topic.
        let mut g = incoming("in", br#"{"headers": {"correlation-id": "g"}}"#, None);
        g.response_topic = Some("resp".into());
        let (h, r) = ditto(&tw, &auth, &g).await;
        assert!(matches!(h, Handled::Invalid(_)));
        let v: Value = serde_json::from_slice(&r.unwrap().payload).unwrap();
        assert_eq!(v["topic"], "_/_/things/twin/errors");
        assert_eq!(v["headers"]["correlation-id"], "g");
    }
}
