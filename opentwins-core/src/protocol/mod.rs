//! The Ditto Protocol 2: typed commands, responses, events and errors, and their JSON envelopes.

mod envelope;
mod headers;
mod message;
mod topic;

pub use envelope::{Envelope, MERGE_PATCH_CONTENT_TYPE};
pub use headers::{Headers, TWIN_PERSISTED, parse_timeout};
pub use message::{
    Action, EntityId, ErrorResponse, EventAction, Message, PolicyCommand, PolicyResponse,
    ThingCommand, ThingEvent, ThingResponse,
};
pub use topic::{Channel, Criterion, Group, PLACEHOLDER, Topic};
