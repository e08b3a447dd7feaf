//! The MQTT 5 bridge of a twin instance (paho-mqtt underneath; its types appear only in
//! [`keep_connected`], which other paho clients of the workspace reconnect with).
//!
//! - Inbound: subscriptions whose messages are Ditto Protocol commands (`ditto` mapping, with
//!   replies on the MQTT 5 response topic or the `reply-to` header) or raw device telemetry
//!   (`telemetry` mapping: the topic names thing and feature, the payload is the properties JSON
//!   or a binary frame stored as base64).
//! - Outbound: the engine's events as Ditto Protocol event envelopes on a topic pattern
//!   (OpenTwins' `opentwins/{channel}/{criterion}/{namespace}/{name}` by default).
//! - A persistent session (`clean_start = false`, session expiry), reconnects with capped
//!   exponential backoff ([`keep_connected`]), and a retained `online` / `offline` status with
//!   `offline` as the last will.
//!
//! [`MqttBridge::start`] returns a cloneable [`MqttHandle`] (state, counters, shutdown) and the
//! [`MqttDriver`] to run. See `docs/mqtt.md`.

mod bridge;
mod config;
pub(crate) mod connect;
mod error;
pub(crate) mod mapping;
mod template;

pub use bridge::{ConnectionState, MqttBridge, MqttDriver, MqttHandle, MqttMetrics};
pub(crate) use config::redact;
pub use config::{
    Mapping, MqttConfig, OutboundConfig, StatusConfig, SubscriptionConfig, TlsConfig,
};
pub use connect::keep_connected;
pub use error::MqttError;
pub use mapping::DITTO_CONTENT_TYPE;
