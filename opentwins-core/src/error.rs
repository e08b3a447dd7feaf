//! The engine's one error type: what Ditto calls a `DittoRuntimeException`.
//!
//! Every error carries an HTTP-like status, a Ditto error code (`things:thing.notfound`), a message
//! and an optional description. The HTTP and MQTT layers only render it; callers branch on
//! [`Error::kind`], never on the message.

use std::borrow::Cow;

use serde_json::{Value, json};

/// The level of a thing resource, used to name level-specific error codes the way Ditto does
/// (`things:attribute.notfound`, `things:feature.property.notmodifiable`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// The whole thing.
    Thing,
    /// `/policyId`.
    PolicyId,
    /// `/definition`.
    Definition,
    /// `/attributes`.
    Attributes,
    /// `/attributes/{path}`.
    Attribute,
    /// `/features`.
    Features,
    /// `/features/{id}`.
    Feature,
    /// `/features/{id}/definition`.
    FeatureDefinition,
    /// `/features/{id}/properties`.
    Properties,
    /// `/features/{id}/properties/{path}`.
    Property,
    /// `/features/{id}/desiredProperties`.
    DesiredProperties,
    /// `/features/{id}/desiredProperties/{path}`.
    DesiredProperty,
}

impl Level {
    /// Every level, from the thing down.
    pub const ALL: [Level; 12] = [
        Level::Thing,
        Level::PolicyId,
        Level::Definition,
        Level::Attributes,
        Level::Attribute,
        Level::Features,
        Level::Feature,
        Level::FeatureDefinition,
        Level::Properties,
        Level::Property,
        Level::DesiredProperties,
        Level::DesiredProperty,
    ];

    /// The resource name Ditto uses inside error codes, e.g. `feature.property`.
    pub fn code_name(self) -> &'static str {
        match self {
            Level::Thing => "thing",
            Level::PolicyId => "policyId",
            Level::Definition => "definition",
            Level::Attributes => "attributes",
            Level::Attribute => "attribute",
            Level::Features => "features",
            Level::Feature => "feature",
            Level::FeatureDefinition => "feature.definition",
            Level::Properties => "feature.properties",
            Level::Property => "feature.property",
            Level::DesiredProperties => "feature.desiredProperties",
            Level::DesiredProperty => "feature.desiredProperty",
        }
    }

    /// Human words for messages, e.g. `Feature Property`.
    pub fn words(self) -> &'static str {
        match self {
            Level::Thing => "Thing",
            Level::PolicyId => "PolicyId",
            Level::Definition => "Definition",
            Level::Attributes => "Attributes",
            Level::Attribute => "Attribute",
            Level::Features => "Features",
            Level::Feature => "Feature",
            Level::FeatureDefinition => "Feature Definition",
            Level::Properties => "Feature Properties",
            Level::Property => "Feature Property",
            Level::DesiredProperties => "Feature Desired Properties",
            Level::DesiredProperty => "Feature Desired Property",
        }
    }
}

/// What went wrong; decides the status and the error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A thing id is malformed (`things:id.invalid`, 400).
    ThingIdInvalid,
    /// The `thingId` of a body differs from the request's (`things:id.notsettable`, 400).
    ThingIdNotSettable,
    /// A policy id is malformed (`policies:id.invalid`, 400).
    PolicyIdInvalid,
    /// The body is not valid JSON (`json.invalid`, 400).
    JsonInvalid,
    /// The JSON is well formed but a field has the wrong type, is unknown or not allowed
    /// (`json.field.invalid`, 400).
    JsonFieldInvalid,
    /// A path (JSON pointer) is malformed, e.g. has empty segments (`json.pointer.invalid`, 400).
    PointerInvalid,
    /// A path does not name a thing resource (`things:path.unknown`, 404).
    PathUnknown,
    /// A header has an invalid value (`header.invalid`, 400).
    HeaderInvalid,
    /// An RQL filter cannot be parsed (`rql.expression.invalid`, 400).
    RqlInvalid,
    /// A search option (`sort`, `size`, `cursor`) is invalid (`things-search:option.invalid`, 400).
    OptionInvalid,
    /// A `fields` selector is invalid (`json.fieldselector.invalid`, 400).
    FieldSelectorInvalid,
    /// The resource does not exist or the subject may not read it (`things:{level}.notfound`, 404).
    NotFound(Level),
    /// The subject may read but not write the resource (`things:{level}.notmodifiable`, 403).
    NotModifiable(Level),
    /// The subject may not create the thing (`things:thing.notcreatable`, 403).
    ThingNotCreatable,
    /// A thing with this id exists already (`things:thing.conflict`, 409).
    ThingConflict,
    /// The thing (or a value) exceeds the configured size limit (`things:thing.toolarge`, 413).
    ThingTooLarge,
    /// An `if-match` or `if-none-match` precondition failed (`things:precondition.failed`,
    /// 412).
    PreconditionFailed,
    /// A `condition` (RQL on the thing) does not hold (`things:condition.failed`, 412).
    ConditionFailed,
    /// `if-none-match` matched on a retrieve (`things:precondition.notmodified`, 304).
    PreconditionNotModified,
    /// The policy does not exist or the subject may not read it (`policies:policy.notfound`, 404).
    PolicyNotFound,
    /// The subject may not modify the policy (`policies:policy.notmodifiable`, 403).
    PolicyNotModifiable,
    /// A policy with this id exists already (`policies:policy.conflict`, 409).
    PolicyConflict,
    /// A policy is structurally invalid (`policies:policy.invalid`, 400).
    PolicyInvalid,
    /// A policy exceeds [`crate::Limits::max_policy_bytes`] (`policies:policy.toolarge`, 413).
    PolicyTooLarge,
    /// A policy entry does not exist (`policies:entry.notfound`, 404).
    PolicyEntryNotFound,
    /// The store failed or is unreachable (`things:thing.unavailable`, 503).
    Unavailable,
    /// A store write lost a compare-and-set race (`things:thing.conflict`, 409).
    RevisionConflict,
    /// A Ditto Protocol message cannot be understood (`things:protocol.invalid`, 400).
    ProtocolInvalid,
}

impl ErrorKind {
    /// The kinds that name no level, each once. `RevisionConflict` is left out: it shares
    /// `things:thing.conflict` with `ThingConflict`, which is what that code reads back as.
    pub const SIMPLE: [ErrorKind; 25] = [
        ErrorKind::ThingIdInvalid,
        ErrorKind::ThingIdNotSettable,
        ErrorKind::PolicyIdInvalid,
        ErrorKind::JsonInvalid,
        ErrorKind::JsonFieldInvalid,
        ErrorKind::PointerInvalid,
        ErrorKind::PathUnknown,
        ErrorKind::HeaderInvalid,
        ErrorKind::RqlInvalid,
        ErrorKind::OptionInvalid,
        ErrorKind::FieldSelectorInvalid,
        ErrorKind::ThingNotCreatable,
        ErrorKind::ThingConflict,
        ErrorKind::ThingTooLarge,
        ErrorKind::PreconditionFailed,
        ErrorKind::ConditionFailed,
        ErrorKind::PreconditionNotModified,
        ErrorKind::PolicyNotFound,
        ErrorKind::PolicyNotModifiable,
        ErrorKind::PolicyConflict,
        ErrorKind::PolicyInvalid,
        ErrorKind::PolicyTooLarge,
        ErrorKind::PolicyEntryNotFound,
        ErrorKind::Unavailable,
        ErrorKind::ProtocolInvalid,
    ];

    /// Every kind whose code reads back as itself: [`ErrorKind::SIMPLE`] and the level kinds.
    pub fn all() -> impl Iterator<Item = ErrorKind> {
        Self::SIMPLE.into_iter().chain(
            Level::ALL
                .into_iter()
                .flat_map(|l| [ErrorKind::NotFound(l), ErrorKind::NotModifiable(l)]),
        )
    }

    /// The HTTP status Ditto answers with.
    pub fn status(self) -> u16 {
        use ErrorKind::*;
        match self {
            ThingIdInvalid | ThingIdNotSettable | PolicyIdInvalid | JsonInvalid
            | JsonFieldInvalid | PointerInvalid | HeaderInvalid | RqlInvalid | OptionInvalid
            | FieldSelectorInvalid | PolicyInvalid | ProtocolInvalid => 400,
            NotModifiable(_) | ThingNotCreatable | PolicyNotModifiable => 403,
            NotFound(_) | PathUnknown | PolicyNotFound | PolicyEntryNotFound => 404,
            ThingConflict | PolicyConflict | RevisionConflict => 409,
            PreconditionFailed | ConditionFailed => 412,
            ThingTooLarge | PolicyTooLarge => 413,
            PreconditionNotModified => 304,
            Unavailable => 503,
        }
    }

    /// The Ditto error code, e.g. `things:feature.property.notfound`.
    pub fn code(self) -> Cow<'static, str> {
        use ErrorKind::*;
        Cow::Borrowed(match self {
            NotFound(level) => return Cow::Owned(format!("things:{}.notfound", level.code_name())),
            NotModifiable(level) => {
                return Cow::Owned(format!("things:{}.notmodifiable", level.code_name()));
            }
            ThingIdInvalid => "things:id.invalid",
            ThingIdNotSettable => "things:id.notsettable",
            PolicyIdInvalid => "policies:id.invalid",
            JsonInvalid => "json.invalid",
            JsonFieldInvalid => "json.field.invalid",
            PointerInvalid => "json.pointer.invalid",
            PathUnknown => "things:path.unknown",
            HeaderInvalid => "header.invalid",
            RqlInvalid => "rql.expression.invalid",
            OptionInvalid => "things-search:option.invalid",
            FieldSelectorInvalid => "json.fieldselector.invalid",
            ThingNotCreatable => "things:thing.notcreatable",
            ThingConflict | RevisionConflict => "things:thing.conflict",
            ThingTooLarge => "things:thing.toolarge",
            PreconditionFailed => "things:precondition.failed",
            ConditionFailed => "things:condition.failed",
            PreconditionNotModified => "things:precondition.notmodified",
            PolicyNotFound => "policies:policy.notfound",
            PolicyNotModifiable => "policies:policy.notmodifiable",
            PolicyConflict => "policies:policy.conflict",
            PolicyInvalid => "policies:policy.invalid",
            PolicyTooLarge => "policies:policy.toolarge",
            PolicyEntryNotFound => "policies:entry.notfound",
            Unavailable => "things:thing.unavailable",
            ProtocolInvalid => "things:protocol.invalid",
        })
    }
}

/// A Ditto-style error: status, error code, message, description.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} ({}): {message}", kind.code(), kind.status())]
pub struct Error {
    kind: ErrorKind,
    message: String,
    description: Option<String>,
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            description: None,
        }
    }

    /// Adds the description Ditto shows under the message.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// HTTP-like status.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// Ditto error code.
    pub fn code(&self) -> Cow<'static, str> {
        self.kind.code()
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The error as Ditto renders it: `{"status", "error", "message", "description"}`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "status": self.status(),
            "error": self.code(),
            "message": self.message,
        });
        if let Some(d) = &self.description {
            v["description"] = Value::String(d.clone());
        }
        v
    }

    /// Parses an error rendered by [`Error::to_json`] (for example from a peer's response).
    /// Unknown codes map to the closest kind by status.
    pub fn from_json(v: &Value) -> Option<Self> {
        let status = v.get("status")?.as_u64()? as u16;
        let code = v.get("error")?.as_str()?;
        let message = v.get("message").and_then(Value::as_str).unwrap_or_default();
        let kind = kind_from_code(code).unwrap_or(match status {
            304 => ErrorKind::PreconditionNotModified,
            403 => ErrorKind::NotModifiable(Level::Thing),
            404 => ErrorKind::NotFound(Level::Thing),
            409 => ErrorKind::ThingConflict,
            412 => ErrorKind::PreconditionFailed,
            413 => ErrorKind::ThingTooLarge,
            400..=499 => ErrorKind::JsonFieldInvalid,
            _ => ErrorKind::Unavailable,
        });
        let mut e = Error::new(kind, message);
        e.description = v
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(e)
    }

    // ---- constructors for the common cases, with Ditto's wording ----

    /// `things:thing.notfound` or a level-specific not-found for `thing_id`.
    pub fn not_found(level: Level, thing_id: &str, path: &str) -> Self {
        let message = if level == Level::Thing {
            format!(
                "The Thing with ID '{thing_id}' could not be found or requester had insufficient permissions to access it."
            )
        } else {
            format!(
                "The {} '{path}' of the Thing with ID '{thing_id}' could not be found or requester had insufficient permissions to access it.",
                level.words()
            )
        };
        Error::new(ErrorKind::NotFound(level), message).with_description(
            "Check if the ID of your requested Thing was correct and you have sufficient permissions.",
        )
    }

    /// A level-specific not-modifiable error.
    pub fn not_modifiable(level: Level, thing_id: &str, path: &str) -> Self {
        let message = if level == Level::Thing {
            format!(
                "The Thing with ID '{thing_id}' could not be modified as the requester had insufficient permissions to modify it."
            )
        } else {
            format!(
                "The {} '{path}' of the Thing with ID '{thing_id}' could not be modified as the requester had insufficient permissions to modify it.",
                level.words()
            )
        };
        Error::new(ErrorKind::NotModifiable(level), message)
            .with_description("Check if you have sufficient permissions to modify the resource.")
    }

    /// `json.field.invalid` with a message.
    pub fn field_invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::JsonFieldInvalid, message)
    }

    /// `json.invalid` for a body that does not parse.
    pub fn json_invalid(err: impl std::fmt::Display) -> Self {
        Error::new(
            ErrorKind::JsonInvalid,
            format!("Failed to parse JSON: {err}"),
        )
        .with_description("Check if the JSON was valid and if it was in required format.")
    }

    /// `things:thing.unavailable` for a store failure.
    pub fn unavailable(err: impl std::fmt::Display) -> Self {
        Error::new(
            ErrorKind::Unavailable,
            format!("The store is unavailable: {err}"),
        )
        .with_description("Retry later; the write was not applied.")
    }
}

fn kind_from_code(code: &str) -> Option<ErrorKind> {
    ErrorKind::all().find(|k| k.code() == code)
}

/// `s`, shortened for an error message (input echoed back must not make errors large).
pub(crate) fn excerpt(s: &str) -> String {
    const MAX: usize = 120;
    match s.char_indices().nth(MAX) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_codes_follow_ditto() {
        assert_eq!(
            ErrorKind::NotFound(Level::Thing).code(),
            "things:thing.notfound"
        );
        assert_eq!(
            ErrorKind::NotFound(Level::Property).code(),
            "things:feature.property.notfound"
        );
        assert_eq!(
            ErrorKind::NotModifiable(Level::Attribute).code(),
            "things:attribute.notmodifiable"
        );
        assert_eq!(ErrorKind::NotModifiable(Level::Attribute).status(), 403);
    }

    #[test]
    fn json_round_trip() {
        let e = Error::not_found(Level::Property, "a:b", "/speed");
        let back = Error::from_json(&e.to_json()).unwrap();
        assert_eq!(back, e);
        let v = e.to_json();
        assert_eq!(v["status"], 404);
        assert_eq!(v["error"], "things:feature.property.notfound");
    }
}
