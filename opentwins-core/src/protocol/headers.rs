//! Ditto Protocol headers: the ones the engine understands are typed, the rest pass through.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result};

/// The acknowledgement label that asks for an answer only after the write is durable.
pub const TWIN_PERSISTED: &str = "twin-persisted";

/// Headers of a command, response or event.
///
/// Known headers are parsed into fields; every other header is kept in `other` unchanged, so a
/// reply can echo what it must (Ditto echoes e.g. `reply-to`, `content-type`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers {
    /// `correlation-id`: ties a response to its command.
    pub correlation_id: Option<String>,
    /// `response-required`: `None` means Ditto's default (`true`).
    pub response_required: Option<bool>,
    /// `if-match`: `*` or a list of entity tags such as `"rev:3"`.
    pub if_match: Option<String>,
    /// `if-none-match`: `*` or a list of entity tags.
    pub if_none_match: Option<String>,
    /// `condition`: an RQL filter over the current thing.
    pub condition: Option<String>,
    /// `requested-acks`: e.g. `["twin-persisted"]`.
    pub requested_acks: Option<Vec<String>>,
    /// `timeout`: how long the caller waits (`10s`, `500ms`, `1m`).
    pub timeout: Option<Duration>,
    /// `ETag` of a response: `"rev:N"`.
    pub etag: Option<String>,
    /// All other headers, unchanged.
    pub other: Map<String, Value>,
}

impl Headers {
    /// Headers that only carry a correlation id.
    pub fn with_correlation_id(id: impl Into<String>) -> Self {
        Headers {
            correlation_id: Some(id.into()),
            ..Headers::default()
        }
    }

    /// Whether the caller wants a response (Ditto's default: yes).
    pub fn response_required(&self) -> bool {
        self.response_required.unwrap_or(true)
    }

    /// Whether the caller asked to be answered only once the write is durable.
    pub fn wants_persisted(&self) -> bool {
        self.requested_acks
            .as_ref()
            .is_some_and(|acks| acks.iter().any(|a| a == TWIN_PERSISTED))
    }

    /// Parses headers from a JSON object; names are case-insensitive as in HTTP.
    pub fn from_json(map: &Map<String, Value>) -> Result<Self> {
        let mut h = Headers::default();
        for (name, value) in map {
            let lower = name.to_ascii_lowercase();
            let text = || -> Result<String> {
                match value {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    Value::Bool(b) => Ok(b.to_string()),
                    _ => Err(invalid(name, "must be a string")),
                }
            };
            match lower.as_str() {
                "correlation-id" => h.correlation_id = Some(text()?),
                "response-required" => {
                    h.response_required = Some(match value {
                        Value::Bool(b) => *b,
                        Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                        Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                        _ => return Err(invalid(name, "must be true or false")),
                    })
                }
                "if-match" => h.if_match = Some(text()?),
                "if-none-match" => h.if_none_match = Some(text()?),
                "condition" => h.condition = Some(text()?),
                "requested-acks" => h.requested_acks = Some(parse_acks(name, value)?),
                "timeout" => {
                    h.timeout = Some(parse_timeout(&text()?).ok_or_else(|| {
                        invalid(
                            name,
                            "must be a duration such as '10s', '500ms' or '1m' (at most 60s)",
                        )
                    })?)
                }
                "etag" => h.etag = Some(text()?),
                _ => {
                    h.other.insert(lower, value.clone());
                }
            }
        }
        Ok(h)
    }

    /// Renders the headers as a JSON object (lower-case names).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put(
            "correlation-id",
            self.correlation_id.clone().map(Value::String),
        );
        put("response-required", self.response_required.map(Value::Bool));
        put("if-match", self.if_match.clone().map(Value::String));
        put(
            "if-none-match",
            self.if_none_match.clone().map(Value::String),
        );
        put("condition", self.condition.clone().map(Value::String));
        put(
            "requested-acks",
            self.requested_acks.as_ref().map(|a| Value::from(a.clone())),
        );
        put(
            "timeout",
            self.timeout
                .map(|t| Value::String(format!("{}ms", t.as_millis()))),
        );
        put("etag", self.etag.clone().map(Value::String));
        for (k, v) in &self.other {
            m.insert(k.clone(), v.clone());
        }
        m
    }

    /// The headers a response or an event carries over from its command: correlation id and
    /// the pass-through headers (not the preconditions).
    pub fn for_reply(&self) -> Headers {
        Headers {
            correlation_id: self.correlation_id.clone(),
            other: self.other.clone(),
            ..Headers::default()
        }
    }
}

fn invalid(name: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::HeaderInvalid,
        format!("The value of the header '{name}' is invalid: it {why}."),
    )
}

fn parse_acks(name: &str, v: &Value) -> Result<Vec<String>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(name, "must list strings"))
            })
            .collect(),
        // HTTP style: comma-separated, or a JSON array inside a string.
        Value::String(s) if s.trim_start().starts_with('[') => {
            serde_json::from_str::<Vec<String>>(s)
                .map_err(|_| invalid(name, "must be a JSON array of strings"))
        }
        Value::String(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        _ => Err(invalid(name, "must be an array of acknowledgement labels")),
    }
}

/// Parses Ditto's timeout syntax: `500ms`, `10s`, `1m`, or bare seconds. At most 60 s.
pub fn parse_timeout(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (d <= Duration::from_secs(60)).then_some(d)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parse_known_and_pass_through() {
        let m = json!({
            "Correlation-Id": "c1", "response-required": "false", "if-match": "\"rev:3\"",
            "requested-acks": "twin-persisted, other", "timeout": "500ms", "reply-to": "r/x"
        });
        let h = Headers::from_json(m.as_object().unwrap()).unwrap();
        assert_eq!(h.correlation_id.as_deref(), Some("c1"));
        assert!(!h.response_required());
        assert!(h.wants_persisted());
        assert_eq!(h.timeout, Some(Duration::from_millis(500)));
        assert_eq!(h.other["reply-to"], "r/x");
        let back = Headers::from_json(&h.to_json()).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn invalid_headers() {
        for m in [
            json!({"response-required": "maybe"}),
            json!({"timeout": "10 years"}),
            json!({"timeout": "61s"}),
            json!({"requested-acks": 5}),
            json!({"correlation-id": {}}),
        ] {
            let e = Headers::from_json(m.as_object().unwrap()).unwrap_err();
            assert_eq!(e.code(), "header.invalid", "{m}");
        }
    }
}
