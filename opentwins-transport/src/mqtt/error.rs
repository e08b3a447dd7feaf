//! The bridge's typed errors.

/// Why the bridge could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The configuration is invalid.
    #[error("invalid MQTT configuration: {0}")]
    Config(String),
    /// The client library refused an operation.
    #[error("MQTT client error: {0}")]
    Client(String),
    /// An RQL filter of the outbound events is invalid.
    #[error("invalid outbound filter: {0}")]
    Filter(#[from] opentwins_core::Error),
}

impl MqttError {
    pub(crate) fn config(msg: impl Into<String>) -> Self {
        MqttError::Config(msg.into())
    }

    pub(crate) fn client(e: impl std::fmt::Display) -> Self {
        MqttError::Client(e.to_string())
    }
}
