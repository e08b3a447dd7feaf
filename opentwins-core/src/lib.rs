//! The OpenTwins-rs twin engine: Ditto-compatible Things, the Ditto Protocol, RFC 7396 merge
//! patches, RQL queries, policies, storage and the engine that applies commands. No network code
//! lives here; `opentwins-transport` carries commands and events across process boundaries.

pub mod compose;
pub mod delta;
pub mod engine;
pub mod error;
pub mod history;
pub mod limits;
pub mod model;
pub mod patch;
pub mod policy;
pub mod protocol;
pub mod query;
pub mod replica;
pub mod sink;
pub mod store;

pub use engine::{EngineConfig, Outcome, Twins};
pub use error::{Error, ErrorKind, Level, Result};
pub use limits::Limits;
pub use model::{FieldSelector, Pointer, PolicyId, Thing, ThingId, Timestamp};
