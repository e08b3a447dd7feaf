//! Topic templates: telemetry topics that name a thing and a feature, and the outbound event
//! topic pattern.

use opentwins_core::{Error, ErrorKind, ThingId};

use super::error::MqttError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Namespace,
    Name,
    ThingId,
    Feature,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// A telemetry topic template such as `telemetry/{namespace}:{name}/{feature}`: literal text and
/// placeholders, matched segment by segment. A placeholder matches up to the first occurrence of
/// the literal that follows it (a namespace never contains `:`), or to the end of the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TelemetryTemplate {
    segments: Vec<Vec<Part>>,
}

/// What a telemetry topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TelemetryTarget {
    pub(crate) thing_id: ThingId,
    pub(crate) feature: Option<String>,
}

impl TelemetryTemplate {
    pub(crate) fn parse(template: &str) -> Result<Self, MqttError> {
        let bad = |why: &str| MqttError::config(format!("telemetry template '{template}': {why}"));
        if template.contains(['+', '#']) {
            return Err(bad(
                "wildcards are not allowed; placeholders match segments",
            ));
        }
        let mut seen = Vec::new();
        let mut segments = Vec::new();
        for seg in template.split('/') {
            let mut parts = Vec::new();
            let mut rest = seg;
            while !rest.is_empty() {
                if let Some(open) = rest.find('{') {
                    if open > 0 {
                        parts.push(Part::Lit(rest[..open].to_owned()));
                    }
                    let close = rest[open..].find('}').ok_or_else(|| bad("unclosed '{'"))? + open;
                    let var = match &rest[open + 1..close] {
                        "namespace" => Var::Namespace,
                        "name" => Var::Name,
                        "thingId" => Var::ThingId,
                        "feature" => Var::Feature,
                        other => return Err(bad(&format!("unknown placeholder {{{other}}}"))),
                    };
                    if matches!(parts.last(), Some(Part::Var(_))) {
                        return Err(bad("two placeholders need a literal between them"));
                    }
                    if seen.contains(&var) {
                        return Err(bad("a placeholder appears twice"));
                    }
                    seen.push(var);
                    parts.push(Part::Var(var));
                    rest = &rest[close + 1..];
                } else {
                    parts.push(Part::Lit(rest.to_owned()));
                    rest = "";
                }
            }
            segments.push(parts);
        }
        let has = |v| seen.contains(&v);
        if !(has(Var::ThingId) || (has(Var::Namespace) && has(Var::Name))) {
            return Err(bad("needs {thingId} or both {namespace} and {name}"));
        }
        if has(Var::ThingId) && (has(Var::Namespace) || has(Var::Name)) {
            return Err(bad("use {thingId} or {namespace} and {name}, not both"));
        }
        Ok(TelemetryTemplate { segments })
    }

    pub(crate) fn has_feature(&self) -> bool {
        self.segments
            .iter()
            .flatten()
            .any(|p| *p == Part::Var(Var::Feature))
    }

    /// The MQTT filter that receives every topic the template can match.
    pub(crate) fn filter(&self) -> String {
        self.segments
            .iter()
            .map(|parts| match parts.as_slice() {
                [Part::Lit(l)] => l.clone(),
                [] => String::new(),
                _ => "+".to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Reads thing and feature from a topic, or explains why the topic does not fit.
    pub(crate) fn matches(&self, topic: &str) -> Result<TelemetryTarget, Error> {
        let mismatch = || {
            Error::new(
                ErrorKind::ProtocolInvalid,
                format!(
                    "The topic '{}' does not match the telemetry template.",
                    topic.escape_debug()
                ),
            )
        };
        let segs: Vec<&str> = topic.split('/').collect();
        if segs.len() != self.segments.len() {
            return Err(mismatch());
        }
        let (mut ns, mut name, mut id, mut feature) = (None, None, None, None);
        for (parts, seg) in self.segments.iter().zip(segs) {
            let mut rest = seg;
            for (i, part) in parts.iter().enumerate() {
                match part {
                    Part::Lit(l) => rest = rest.strip_prefix(l.as_str()).ok_or_else(mismatch)?,
                    Part::Var(v) => {
                        let end = match parts.get(i + 1) {
                            Some(Part::Lit(next)) => {
                                rest.find(next.as_str()).ok_or_else(mismatch)?
                            }
                            _ => rest.len(),
                        };
                        let value = &rest[..end];
                        if value.is_empty() {
                            return Err(mismatch());
                        }
                        rest = &rest[end..];
                        match v {
                            Var::Namespace => ns = Some(value),
                            Var::Name => name = Some(value),
                            Var::ThingId => id = Some(value),
                            Var::Feature => feature = Some(value.to_owned()),
                        }
                    }
                }
            }
            if !rest.is_empty() {
                return Err(mismatch());
            }
        }
        let thing_id = match (id, ns, name) {
            (Some(id), _, _) => ThingId::new(id)?,
            (None, Some(ns), Some(name)) => ThingId::from_parts(ns, name)?,
            _ => return Err(mismatch()),
        };
        Ok(TelemetryTarget { thing_id, feature })
    }
}

/// The outbound event topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventTopic {
    pattern: String,
}

const EVENT_VARS: [&str; 7] = [
    "channel",
    "criterion",
    "action",
    "namespace",
    "name",
    "thingId",
    "instance",
];

impl EventTopic {
    pub(crate) fn parse(pattern: &str) -> Result<Self, MqttError> {
        let bad = |why: String| MqttError::config(format!("outbound topic '{pattern}': {why}"));
        if pattern.is_empty() || pattern.contains(['+', '#']) {
            return Err(bad("must be a non-empty topic without wildcards".into()));
        }
        let mut rest = pattern;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| bad("unclosed '{'".into()))?
                + open;
            let var = &rest[open + 1..close];
            if !EVENT_VARS.contains(&var) {
                return Err(bad(format!("unknown placeholder {{{var}}}")));
            }
            rest = &rest[close + 1..];
        }
        Ok(EventTopic {
            pattern: pattern.to_owned(),
        })
    }

    /// The topic for an event of `thing` with `action` (`created`, `merged`, ...).
    pub(crate) fn render(&self, thing: &ThingId, action: &str, instance: &str) -> String {
        self.pattern
            .replace("{channel}", "twin")
            .replace("{criterion}", "events")
            .replace("{action}", action)
            .replace("{namespace}", thing.namespace())
            .replace("{name}", thing.name())
            .replace("{thingId}", thing.as_str())
            .replace("{instance}", instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_form() {
        let t = TelemetryTemplate::parse("telemetry/{namespace}:{name}/{feature}").unwrap();
        assert_eq!(t.filter(), "telemetry/+/+");
        let m = t.matches("telemetry/org.acme:car:1/camera").unwrap();
        assert_eq!(m.thing_id.as_str(), "org.acme:car:1");
        assert_eq!(m.feature.as_deref(), Some("camera"));
        assert!(t.matches("telemetry/nocolon/camera").is_err());
        assert!(t.matches("telemetry/a:b").is_err());
        assert!(t.matches("other/a:b/c").is_err());
        assert!(t.matches("telemetry/:b/c").is_err());
    }

    #[test]
    fn segment_form_and_thing_id() {
        let t = TelemetryTemplate::parse("dev/{namespace}/{name}/{feature}/data").unwrap();
        assert_eq!(t.filter(), "dev/+/+/+/data");
        let m = t.matches("dev/ns/car/gps/data").unwrap();
        assert_eq!(m.thing_id.as_str(), "ns:car");
        assert!(t.matches("dev/ns/car/gps/datax").is_err());
        let t = TelemetryTemplate::parse("t/{thingId}").unwrap();
        assert!(!t.has_feature());
        assert_eq!(t.matches("t/a:b").unwrap().thing_id.as_str(), "a:b");
        assert!(t.matches("t/not-an-id").is_err());
    }

    #[test]
    fn bad_templates() {
        for t in [
            "t/{namespace}{name}/{feature}",
            "t/{namespace}/{feature}",
            "t/+/{namespace}:{name}",
            "t/{namespace}:{name}/{nope}",
            "t/{namespace:{name}",
            "t/{thingId}/{name}",
        ] {
            assert!(TelemetryTemplate::parse(t).is_err(), "{t}");
        }
    }

    #[test]
    fn event_topic() {
        let e = EventTopic::parse("opentwins/{channel}/{criterion}/{namespace}/{name}").unwrap();
        let id = ThingId::new("ns:car-1").unwrap();
        assert_eq!(
            e.render(&id, "merged", "edge"),
            "opentwins/twin/events/ns/car-1"
        );
        let e = EventTopic::parse("{instance}/{thingId}/{action}").unwrap();
        assert_eq!(e.render(&id, "merged", "edge"), "edge/ns:car-1/merged");
        assert!(EventTopic::parse("a/{bad}").is_err());
        assert!(EventTopic::parse("a/#").is_err());
    }
}
