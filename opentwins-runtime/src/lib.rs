//! One OpenTwins-rs instance assembled from the crates, as the `opentwins-edge` and
//! `opentwins-hub` binaries run it and as vehicle software or the demo embeds it: the engine on
//! a sled store, the HTTP API, the MQTT bridge, links (the edge's link to its hub, the hub's
//! fleet links), the lane processor, and the configuration, CLI and orderly shutdown they share.
//! The two binaries differ only in their defaults ([`Role`]).

pub mod cli;
pub mod config;
pub mod dashboard;
pub mod instance;
pub mod process;

pub use config::{InstanceConfig, Role, StoreConfig};
pub use instance::Instance;
