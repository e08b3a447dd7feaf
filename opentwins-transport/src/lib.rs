//! How commands and events cross process boundaries: the Ditto Protocol over MQTT 5 (`mqtt`) and
//! the Ditto-compatible HTTP API v2 with server-sent events and WebSocket (`http`). Both only
//! translate: every command goes through [`opentwins_core::Twins`] and its policy checks, and
//! every error is the engine's Ditto-style error, rendered.

pub mod http;
pub mod link;
pub mod metrics;
pub mod mqtt;
mod protocol;
