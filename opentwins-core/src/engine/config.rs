//! Engine configuration.

use serde::{Deserialize, Serialize};

/// Limits and buffers of the engine. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Largest thing, in bytes of compact JSON (strings counted without escapes). Ditto's
    /// default is 100 kB; ours is 2 MiB so a 1280x720 camera frame (~270 kB as base64) fits.
    pub max_thing_bytes: usize,
    /// Largest value one command may carry, in bytes of compact JSON.
    pub max_value_bytes: usize,
    /// Events buffered per subscriber before a slow subscriber is told it lagged.
    pub event_buffer: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_thing_bytes: 2 * 1024 * 1024,
            max_value_bytes: 1024 * 1024,
            event_buffer: 4096,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_default_and_unknown_fields_fail() {
        let c: EngineConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, EngineConfig::default());
        assert!(serde_json::from_str::<EngineConfig>(r#"{"max_thing_byte": 1}"#).is_err());
    }
}
