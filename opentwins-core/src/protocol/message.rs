//! The typed messages the engine consumes and produces. [`super::Envelope`] converts them from
//! and to Ditto Protocol JSON.

use serde_json::Value;

use super::Headers;
use crate::error::Error;
use crate::model::{FieldSelector, Pointer, PolicyId, ThingId, Timestamp};

/// What a command does (the last topic segment of a command).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `create`: only at the root; 409 if it exists.
    Create,
    /// `retrieve`.
    Retrieve,
    /// `modify`: put a value (creates it if absent).
    Modify,
    /// `merge`: RFC 7396 merge patch.
    Merge,
    /// `delete`.
    Delete,
}

impl Action {
    /// The topic word: `create`, `retrieve`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Retrieve => "retrieve",
            Action::Modify => "modify",
            Action::Merge => "merge",
            Action::Delete => "delete",
        }
    }

    /// Parses the topic word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "create" => Action::Create,
            "retrieve" => Action::Retrieve,
            "modify" => Action::Modify,
            "merge" => Action::Merge,
            "delete" => Action::Delete,
            _ => return None,
        })
    }

    /// Whether the action changes state.
    pub fn is_write(self) -> bool {
        !matches!(self, Action::Retrieve)
    }
}

/// What happened (the last topic segment of an event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventAction {
    /// `created`.
    Created,
    /// `modified`.
    Modified,
    /// `merged`.
    Merged,
    /// `deleted`.
    Deleted,
}

impl EventAction {
    /// The topic word.
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Created => "created",
            EventAction::Modified => "modified",
            EventAction::Merged => "merged",
            EventAction::Deleted => "deleted",
        }
    }

    /// Parses the topic word.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => EventAction::Created,
            "modified" => EventAction::Modified,
            "merged" => EventAction::Merged,
            "deleted" => EventAction::Deleted,
            _ => return None,
        })
    }
}

/// A twin command on one thing: `{ns}/{name}/things/twin/commands/{action}` at `path`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThingCommand {
    /// The thing.
    pub thing_id: ThingId,
    /// What to do.
    pub action: Action,
    /// Where inside the thing (`/` for the whole thing).
    pub path: Pointer,
    /// The value for create / modify / merge.
    pub value: Option<Value>,
    /// For retrieve: which fields to return.
    pub fields: Option<FieldSelector>,
    /// Headers.
    pub headers: Headers,
}

impl ThingCommand {
    /// A command without headers.
    pub fn new(thing_id: ThingId, action: Action, path: Pointer, value: Option<Value>) -> Self {
        ThingCommand {
            thing_id,
            action,
            path,
            value,
            fields: None,
            headers: Headers::default(),
        }
    }
}

/// The successful answer to a [`ThingCommand`].
#[derive(Debug, Clone, PartialEq)]
pub struct ThingResponse {
    /// The thing.
    pub thing_id: ThingId,
    /// The command's action.
    pub action: Action,
    /// The command's path.
    pub path: Pointer,
    /// 200 retrieved, 201 created, 204 modified / merged / deleted.
    pub status: u16,
    /// The value (retrieve, or what was created).
    pub value: Option<Value>,
    /// Headers (correlation id, `etag`).
    pub headers: Headers,
}

/// An event: something changed in a thing.
#[derive(Debug, Clone, PartialEq)]
pub struct ThingEvent {
    /// The thing.
    pub thing_id: ThingId,
    /// What happened.
    pub action: EventAction,
    /// Where inside the thing.
    pub path: Pointer,
    /// The new value (the patch for `merged`; absent for `deleted`).
    pub value: Option<Value>,
    /// The thing's revision after the change.
    pub revision: u64,
    /// When it happened.
    pub timestamp: Timestamp,
    /// Headers (the command's correlation id and pass-through headers).
    pub headers: Headers,
    /// Where the change comes from and its clocks, for links (set by the engine for sinks;
    /// never on the wire, and removed from what subscribers receive).
    pub provenance: Option<std::sync::Arc<crate::replica::Provenance>>,
}

/// A command on a policy: `{ns}/{name}/policies/commands/{action}` at `path`
/// (`/`, `/entries`, `/entries/{label}`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyCommand {
    /// The policy.
    pub policy_id: PolicyId,
    /// What to do (`merge` is not supported on policies).
    pub action: Action,
    /// Where inside the policy.
    pub path: Pointer,
    /// The value for create / modify.
    pub value: Option<Value>,
    /// Headers.
    pub headers: Headers,
}

/// The successful answer to a [`PolicyCommand`].
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyResponse {
    /// The policy.
    pub policy_id: PolicyId,
    /// The command's action.
    pub action: Action,
    /// The command's path.
    pub path: Pointer,
    /// 200, 201 or 204.
    pub status: u16,
    /// The value, if any.
    pub value: Option<Value>,
    /// Headers.
    pub headers: Headers,
}

/// The entity an error response is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityId {
    /// A thing: topic `{ns}/{name}/things/twin/errors`.
    Thing(ThingId),
    /// A policy: topic `{ns}/{name}/policies/errors`.
    Policy(PolicyId),
    /// Unknown (the command could not even be parsed): topic `_/_/things/twin/errors`.
    Unknown,
}

/// A failed command's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorResponse {
    /// What the error is about.
    pub entity: EntityId,
    /// The path of the failed command (`/` when unknown).
    pub path: Pointer,
    /// The error.
    pub error: Error,
    /// Headers (correlation id).
    pub headers: Headers,
}

/// Any Ditto Protocol message we understand.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A twin command.
    ThingCommand(ThingCommand),
    /// A twin command response.
    ThingResponse(ThingResponse),
    /// A twin event.
    ThingEvent(ThingEvent),
    /// A policy command.
    PolicyCommand(PolicyCommand),
    /// A policy command response.
    PolicyResponse(PolicyResponse),
    /// An error response.
    Error(ErrorResponse),
}
