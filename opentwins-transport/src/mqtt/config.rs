//! Configuration of the MQTT bridge. Every field has a default; see `docs/mqtt.md`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::MqttError;
use super::template::{EventTopic, TelemetryTemplate};

/// The MQTT 5 bridge of one twin instance: broker, session, inbound subscriptions and the
/// outbound event stream. Its `Debug` output hides the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// This instance's id: default client id, `{instance}` in topics.
    pub instance_id: String,
    /// Broker URL: `tcp://`, `mqtt://` (plain) or `ssl://`, `mqtts://` (TLS), host and port.
    pub broker: String,
    /// MQTT client id; default `opentwins-{instance_id}`. Must be stable across restarts for the
    /// persistent session to resume.
    pub client_id: Option<String>,
    /// User name for the broker.
    pub username: Option<String>,
    /// Password for the broker.
    pub password: Option<String>,
    /// TLS files (used with `ssl://` / `mqtts://`).
    pub tls: TlsConfig,
    /// MQTT 5 clean start. `false` (default) resumes the broker-side session, so QoS 1 messages
    /// published while the bridge was away are delivered when it is back.
    pub clean_start: bool,
    /// How long the broker keeps the session after a disconnect.
    #[serde(with = "duration_str")]
    pub session_expiry: Duration,
    /// MQTT keep-alive interval.
    #[serde(with = "duration_str")]
    pub keep_alive: Duration,
    /// Timeout of one connection attempt.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// First delay before reconnecting; doubled after each failure (whole seconds, at least 1s).
    #[serde(with = "duration_str")]
    pub reconnect_min: Duration,
    /// Cap of the reconnect delay.
    #[serde(with = "duration_str")]
    pub reconnect_max: Duration,
    /// Messages the client library buffers before they are sent (at least 1000: the library's
    /// default of 100 loses bursts).
    pub max_buffered_messages: usize,
    /// Largest MQTT payload accepted or published, in bytes (default 2 MiB: a 1280x720 JPEG as
    /// base64 fits). Also sent to the broker as the MQTT 5 Maximum Packet Size (plus headroom
    /// for topic and properties), so the broker drops bigger messages for us.
    pub max_message_size: usize,
    /// Inbound messages queued between the client library and the engine; when full, the
    /// library stops reading the socket (backpressure, nothing is dropped).
    pub inbound_queue: usize,
    /// Directory for the client library's file persistence of unacknowledged outgoing
    /// messages; `None` keeps them in memory (lost if the process dies).
    pub persistence_dir: Option<PathBuf>,
    /// The default subject inbound commands and outbound events are applied under.
    pub subject: Vec<String>,
    /// Retained online / offline status of this instance (offline is the last will).
    pub status: StatusConfig,
    /// Inbound subscriptions.
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Outbound events.
    pub outbound: OutboundConfig,
    /// Topic of each thing's desired/reported delta, published retained (QoS 1) whenever it
    /// changes and cleared (an empty retained payload) when it becomes empty. Placeholders
    /// `{namespace}`, `{name}`, `{thingId}`, `{instance}`. `None` or `""` disables it.
    pub delta_topic: Option<String>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            instance_id: "opentwins".into(),
            broker: "tcp://127.0.0.1:1883".into(),
            client_id: None,
            username: None,
            password: None,
            tls: TlsConfig::default(),
            clean_start: false,
            session_expiry: Duration::from_secs(3600),
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            max_buffered_messages: 10_000,
            max_message_size: 2 * 1024 * 1024,
            inbound_queue: 1024,
            persistence_dir: None,
            subject: vec!["opentwins:mqtt".into()],
            status: StatusConfig::default(),
            subscriptions: Vec::new(),
            outbound: OutboundConfig::default(),
            delta_topic: Some(DEFAULT_DELTA_TOPIC.into()),
        }
    }
}

/// The default [`MqttConfig::delta_topic`].
pub(crate) const DEFAULT_DELTA_TOPIC: &str = "opentwins/delta/{namespace}/{name}";

/// TLS client settings of the bridge and of links over MQTT. Its `Debug` output hides the key
/// password.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificates that sign the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client's private key.
    pub key_file: Option<PathBuf>,
    /// Password of the private key.
    pub key_password: Option<String>,
    /// Skip verifying the broker's certificate (testing only).
    pub insecure: bool,
}

/// `Some("***")` for a secret that is set: what `Debug` shows of it.
pub(crate) fn redact(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "***")
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let TlsConfig {
            ca_file,
            cert_file,
            key_file,
            key_password,
            insecure,
        } = self;
        f.debug_struct("TlsConfig")
            .field("ca_file", ca_file)
            .field("cert_file", cert_file)
            .field("key_file", key_file)
            .field("key_password", &redact(key_password))
            .field("insecure", insecure)
            .finish()
    }
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured without `..`: a new field does not compile until it is shown here.
        let MqttConfig {
            instance_id,
            broker,
            client_id,
            username,
            password,
            tls,
            clean_start,
            session_expiry,
            keep_alive,
            connect_timeout,
            reconnect_min,
            reconnect_max,
            max_buffered_messages,
            max_message_size,
            inbound_queue,
            persistence_dir,
            subject,
            status,
            subscriptions,
            outbound,
            delta_topic,
        } = self;
        f.debug_struct("MqttConfig")
            .field("instance_id", instance_id)
            .field("broker", broker)
            .field("client_id", client_id)
            .field("username", username)
            .field("password", &redact(password))
            .field("tls", tls)
            .field("clean_start", clean_start)
            .field("session_expiry", session_expiry)
            .field("keep_alive", keep_alive)
            .field("connect_timeout", connect_timeout)
            .field("reconnect_min", reconnect_min)
            .field("reconnect_max", reconnect_max)
            .field("max_buffered_messages", max_buffered_messages)
            .field("max_message_size", max_message_size)
            .field("inbound_queue", inbound_queue)
            .field("persistence_dir", persistence_dir)
            .field("subject", subject)
            .field("status", status)
            .field("subscriptions", subscriptions)
            .field("outbound", outbound)
            .field("delta_topic", delta_topic)
            .finish()
    }
}

/// The retained status message of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// Publish the status at all.
    pub enabled: bool,
    /// Topic; `{instance}` is replaced by the instance id.
    pub topic: String,
    /// Payload while connected.
    pub online: String,
    /// Payload after a clean shutdown and as the last will.
    pub offline: String,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            enabled: true,
            topic: "opentwins/instances/{instance}/status".into(),
            online: "online".into(),
            offline: "offline".into(),
        }
    }
}

/// How an inbound message becomes commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mapping {
    /// The payload is a Ditto Protocol command envelope (thing or policy).
    #[default]
    Ditto,
    /// The topic names thing and feature (see `template`); the payload is the feature's
    /// properties as JSON, or a binary frame stored as base64.
    Telemetry,
}

/// One inbound subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// MQTT topic filter. For `telemetry`, empty means "derived from the template" (each
    /// placeholder segment becomes `+`). `{instance}` is replaced by the instance id.
    pub filter: String,
    /// Subscription QoS (0, 1 or 2).
    pub qos: u8,
    /// `ditto` or `telemetry`.
    pub mapping: Mapping,
    /// Telemetry: the topic template, with `{namespace}`, `{name}`, `{thingId}` and `{feature}`
    /// (e.g. `telemetry/{namespace}:{name}/{feature}` or `telemetry/{namespace}/{name}/{feature}`).
    pub template: String,
    /// Telemetry: the feature when the template has no `{feature}`.
    pub feature: Option<String>,
    /// Telemetry: the property a binary payload is stored under (as base64), next to
    /// `contentType` and `size`.
    pub binary_property: String,
    /// The subject the commands are applied under; empty means the bridge's `subject`.
    pub subject: Vec<String>,
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        SubscriptionConfig {
            filter: String::new(),
            qos: 1,
            mapping: Mapping::Ditto,
            template: "telemetry/{namespace}:{name}/{feature}".into(),
            feature: None,
            binary_property: "frame".into(),
            subject: Vec::new(),
        }
    }
}

/// Outbound events: engine events published as Ditto Protocol event envelopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Publish events at all.
    pub enabled: bool,
    /// Topic pattern with `{channel}`, `{criterion}`, `{action}`, `{namespace}`, `{name}`,
    /// `{thingId}` and `{instance}`. The default is OpenTwins' Ditto target address.
    pub topic: String,
    /// QoS of the events (0, 1 or 2).
    pub qos: u8,
    /// Retain the events.
    pub retain: bool,
    /// RQL filter over the changed part of the thing (as Ditto's event filter).
    pub filter: Option<String>,
    /// Extra fields of the thing added to each event as `extra` (Ditto's `extraFields`), e.g.
    /// `thingId,attributes/_parents`.
    pub extra_fields: Option<String>,
    /// Field selection of each event (Ditto's `fields`, e.g. `features/*/properties/speed`):
    /// the event's value is placed at its path inside the thing, reduced to the selected
    /// fields, and published with path `/`. Events where nothing is selected are not published
    /// (counted in `events_unselected`).
    pub fields: Option<String>,
    /// The subject whose view of the events is published; empty means the bridge's `subject`.
    pub subject: Vec<String>,
    /// Publish every event unfiltered by policy (the engine's system context). Off by default.
    pub system: bool,
    /// Publishes awaiting the broker's acknowledgement at most.
    pub max_pending: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            enabled: true,
            topic: "opentwins/{channel}/{criterion}/{namespace}/{name}".into(),
            qos: 1,
            retain: false,
            filter: None,
            extra_fields: None,
            fields: None,
            subject: Vec::new(),
            system: false,
            max_pending: 1000,
        }
    }
}

/// Headroom over `max_message_size` for topic and properties in the Maximum Packet Size.
pub(crate) const PACKET_HEADROOM: usize = 64 * 1024;

impl MqttConfig {
    /// The client id in use.
    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("opentwins-{}", self.instance_id))
    }

    /// The status topic with the instance id filled in.
    pub fn status_topic(&self) -> String {
        self.status.topic.replace("{instance}", &self.instance_id)
    }

    /// The delta topic pattern, when deltas are published.
    pub(crate) fn delta_pattern(&self) -> Option<&str> {
        self.delta_topic.as_deref().filter(|t| !t.is_empty())
    }

    /// The broker URL as the client library wants it (`mqtt://` → `tcp://`, `mqtts://` →
    /// `ssl://`), and whether it uses TLS.
    pub(crate) fn broker_uri(&self) -> Result<(String, bool), MqttError> {
        super::connect::broker_uri(&self.broker)
    }

    /// Checks everything that can be checked without a broker.
    pub fn validate(&self) -> Result<(), MqttError> {
        let (_, tls) = self.broker_uri()?;
        self.tls.validate(tls)?;
        if self.instance_id.is_empty() {
            return Err(MqttError::config("instance_id must not be empty"));
        }
        if self.max_buffered_messages < 1000 {
            return Err(MqttError::config(
                "max_buffered_messages must be at least 1000 (the library's default of 100 loses bursts)",
            ));
        }
        if self.max_message_size == 0 || self.inbound_queue == 0 || self.outbound.max_pending == 0 {
            return Err(MqttError::config(
                "max_message_size, inbound_queue and outbound.max_pending must be positive",
            ));
        }
        if self.reconnect_min > self.reconnect_max {
            return Err(MqttError::config(
                "reconnect_min must not exceed reconnect_max",
            ));
        }
        if self.outbound.qos > 2 {
            return Err(MqttError::config("outbound.qos must be 0, 1 or 2"));
        }
        EventTopic::parse(&self.outbound.topic)?;
        if let Some(t) = self.delta_pattern() {
            EventTopic::parse(t).map_err(|e| match e {
                MqttError::Config(m) => {
                    MqttError::config(m.replacen("outbound topic", "delta_topic", 1))
                }
                e => e,
            })?;
            if ["{channel}", "{criterion}", "{action}"]
                .iter()
                .any(|v| t.contains(v))
            {
                return Err(MqttError::config(format!(
                    "delta_topic '{t}': only {{namespace}}, {{name}}, {{thingId}} and {{instance}} apply"
                )));
            }
        }
        if let Some(f) = &self.outbound.extra_fields {
            opentwins_core::FieldSelector::parse(f)
                .map_err(|e| MqttError::config(format!("outbound.extra_fields: {e}")))?;
        }
        if let Some(f) = &self.outbound.fields {
            opentwins_core::FieldSelector::parse(f)
                .map_err(|e| MqttError::config(format!("outbound.fields: {e}")))?;
        }
        for (i, s) in self.subscriptions.iter().enumerate() {
            if s.qos > 2 {
                return Err(MqttError::config(format!(
                    "subscriptions[{i}].qos must be 0, 1 or 2"
                )));
            }
            match s.mapping {
                Mapping::Ditto if s.filter.is_empty() => {
                    return Err(MqttError::config(format!(
                        "subscriptions[{i}] (ditto) needs a filter"
                    )));
                }
                Mapping::Ditto => {}
                Mapping::Telemetry => {
                    let t = TelemetryTemplate::parse(
                        &s.template.replace("{instance}", &self.instance_id),
                    )?;
                    if !t.has_feature() && s.feature.is_none() {
                        return Err(MqttError::config(format!(
                            "subscriptions[{i}]: the template has no {{feature}} and no feature is set"
                        )));
                    }
                    if s.binary_property.is_empty() {
                        return Err(MqttError::config(format!(
                            "subscriptions[{i}].binary_property must not be empty"
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Durations as human-readable strings: `"1h"`, `"30s"`, `"500ms"`.
mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_default_and_round_trips() {
        let c: MqttConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, MqttConfig::default());
        let text = serde_json::to_string(&c).unwrap();
        let back: MqttConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        c.validate().unwrap();
        assert!(serde_json::from_str::<MqttConfig>(r#"{"brokr": "x"}"#).is_err());
        assert!(
            serde_json::from_str::<MqttConfig>(r#"{"subscriptions": [{"filtr": "x"}]}"#).is_err()
        );
    }

    #[test]
    fn debug_hides_the_password_and_the_key_password() {
        let c = MqttConfig {
            username: Some("edge-a".into()),
            password: Some("hunter2-secret".into()),
            broker: "mqtts://h:8883".into(),
            tls: TlsConfig {
                ca_file: Some("/etc/ca.crt".into()),
                cert_file: Some("/etc/c.crt".into()),
                key_file: Some("/etc/c.key".into()),
                key_password: Some("key-secret".into()),
                insecure: false,
            },
            ..MqttConfig::default()
        };
        let text = format!("{c:?} {c:#?}");
        assert!(
            !text.contains("hunter2-secret") && !text.contains("key-secret"),
            "{text}"
        );
        assert!(text.contains("edge-a") && text.contains("/etc/ca.crt") && text.contains("***"));
        c.validate().unwrap();
        let plain = MqttConfig {
            broker: "mqtt://h:1883".into(),
            ..c
        };
        assert!(
            plain.validate().is_err(),
            "TLS files with a plain broker URL"
        );
    }

    #[test]
    fn durations_read_human_strings() {
        let c: MqttConfig =
            serde_json::from_str(r#"{"session_expiry": "2h", "reconnect_min": "500ms"}"#).unwrap();
        assert_eq!(c.session_expiry, Duration::from_secs(7200));
        assert_eq!(c.reconnect_min, Duration::from_millis(500));
    }

    #[test]
    fn broker_schemes() {
        let with = |b: &str| MqttConfig {
            broker: b.into(),
            ..MqttConfig::default()
        };
        assert_eq!(
            with("mqtt://h:1883").broker_uri().unwrap(),
            ("tcp://h:1883".into(), false)
        );
        assert_eq!(
            with("mqtts://h:8883").broker_uri().unwrap(),
            ("ssl://h:8883".into(), true)
        );
        assert_eq!(
            with("tcp://h:1").broker_uri().unwrap(),
            ("tcp://h:1".into(), false)
        );
        assert!(with("http://h").validate().is_err());
        assert!(with("h:1883").validate().is_err());
    }

    #[test]
    fn validation_catches_mistakes() {
        let mut c = MqttConfig {
            max_buffered_messages: 100,
            ..MqttConfig::default()
        };
        assert!(c.validate().is_err());
        c.max_buffered_messages = 1000;
        c.subscriptions.push(SubscriptionConfig::default());
        assert!(c.validate().is_err(), "ditto without a filter");
        c.subscriptions[0].mapping = Mapping::Telemetry;
        c.validate().unwrap();
        c.subscriptions[0].template = "t/{namespace}:{name}".into();
        assert!(c.validate().is_err(), "no feature");
        c.subscriptions[0].feature = Some("f".into());
        c.validate().unwrap();
        c.outbound.fields = Some("features/*/properties/speed".into());
        c.validate().unwrap();
        c.outbound.fields = Some("features(gps".into());
        assert!(c.validate().is_err(), "invalid fields");
        c.outbound.fields = None;
        c.outbound.topic = "x/{nope}".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn delta_topic_defaults_on_and_can_be_disabled() {
        let c = MqttConfig::default();
        assert_eq!(c.delta_pattern(), Some(DEFAULT_DELTA_TOPIC));
        let off: MqttConfig = serde_json::from_str(r#"{"delta_topic": null}"#).unwrap();
        assert_eq!(off.delta_pattern(), None);
        let off: MqttConfig = serde_json::from_str(r#"{"delta_topic": ""}"#).unwrap();
        assert_eq!(off.delta_pattern(), None);
        off.validate().unwrap();
        for bad in [
            "d/{action}/{thingId}",
            "d/{nope}",
            "d/#",
            "d/{channel}/{name}",
        ] {
            let c = MqttConfig {
                delta_topic: Some(bad.into()),
                ..MqttConfig::default()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
        let c = MqttConfig {
            delta_topic: Some("{instance}/delta/{thingId}".into()),
            ..MqttConfig::default()
        };
        c.validate().unwrap();
    }
}
