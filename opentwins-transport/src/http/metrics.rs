//! The metrics registry, re-exported from [`crate::metrics`] (where it lives since MQTT and other
//! components register into it too).

pub use crate::metrics::*;
