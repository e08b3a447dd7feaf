//! The Ditto Protocol 2: typed commands, responses, events and errors, and their JSON envelopes.

mod headers;
mod message;

pub use headers::{Headers, TWIN_PERSISTED, parse_timeout};
pub use message::{
    Action, EntityId, ErrorResponse, EventAction, Message, PolicyCommand, PolicyResponse,
    ThingCommand, ThingEvent, ThingResponse,
};
