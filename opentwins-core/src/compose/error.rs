//! What a composition operation can fail with: [`ComposeError`], and how it becomes the engine's
//! Ditto-style [`Error`] (status and error code) for the transports.

use crate::error::{Error, ErrorKind, Level};
use crate::model::ThingId;

/// Why a composition operation failed. Callers branch on the variant; transports render it
/// through `Error::from` with a Ditto status and error code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComposeError {
    /// A body or command tries to set or remove a reserved attribute (400 `json.field.invalid`).
    #[error(
        "The attribute '{0}' is reserved for composition and cannot be set or removed this way."
    )]
    Restricted(String),
    /// The thing exists but is not a type (404 `things:thing.notfound`).
    #[error("The Thing with ID '{0}' is not a type.")]
    NotAType(ThingId),
    /// The thing exists but is a type, not a twin (404 `things:thing.notfound`).
    #[error("The Thing with ID '{0}' is a type, not a twin.")]
    NotATwin(ThingId),
    /// A type cannot be written over an existing thing that is not a type (409
    /// `things:thing.conflict`).
    #[error("The Thing with ID '{0}' exists and is not a type.")]
    ExistsAsTwin(ThingId),
    /// The link would make a thing its own ancestor (409 `things:thing.conflict`).
    #[error("'{child}' cannot become a child of '{parent}': '{child}' would be its own ancestor.")]
    Cycle {
        /// The would-be child.
        child: ThingId,
        /// The would-be parent.
        parent: ThingId,
    },
    /// The twin has no parent (404 `things:attribute.notfound`).
    #[error("The twin '{0}' has no parent.")]
    NoParent(ThingId),
    /// The type does not list this child type (404 `things:attribute.notfound`).
    #[error("The type '{child}' is not a child of the type '{parent}'.")]
    NotAChild {
        /// The parent type.
        parent: ThingId,
        /// The child type it does not list.
        child: ThingId,
    },
    /// The type is a child of other types and cannot be deleted (409 `things:thing.conflict`).
    #[error("The type '{id}' is a child of {parents:?}; remove it from them first.")]
    InUse {
        /// The type.
        id: ThingId,
        /// The types that list it as a child (those the caller may read).
        parents: Vec<ThingId>,
    },
    /// The tree would hold more things than allowed (413 `things:thing.toolarge`).
    #[error("The tree would hold more than {limit} things.")]
    TooLarge {
        /// `max_tree_things`.
        limit: usize,
    },
    /// The tree is deeper than allowed (413 `things:thing.toolarge`).
    #[error("The tree is deeper than {limit} levels.")]
    TooDeep {
        /// `max_depth`.
        limit: usize,
    },
    /// Two things of a new tree would get the same id (409 `things:thing.conflict`).
    #[error("Two things of the new tree would both get the ID '{0}'.")]
    IdClash(ThingId),
    /// The request is malformed (400 `json.field.invalid`).
    #[error("{0}")]
    Invalid(String),
    /// A multi-thing operation failed part way and could not undo what it had changed: `cause`
    /// is the failure, `changed` the things it left changed (status and code of `cause`).
    #[error("{cause} The operation stopped part way; these things were changed: {changed:?}.")]
    Incomplete {
        /// What failed.
        cause: Error,
        /// The things the operation changed (created, deleted or unlinked) and did not restore.
        changed: Vec<ThingId>,
    },
    /// An engine error (not found, not modifiable, conflict, ...), unchanged.
    #[error(transparent)]
    Engine(#[from] Error),
}

const HINT: &str = "Composition markers (attributes _isType, _children, _parent, _type, _copyOf) \
                    are managed by /api/2/types and /api/2/twins.";

impl From<ComposeError> for Error {
    fn from(e: ComposeError) -> Self {
        let message = e.to_string();
        match e {
            ComposeError::Engine(e) => e,
            ComposeError::Incomplete { cause, changed } => {
                let list: Vec<&str> = changed.iter().map(ThingId::as_str).collect();
                Error::new(cause.kind(), message).with_description(format!(
                    "Changed and not restored: {}. Retry or clean up with the composition API.",
                    list.join(", ")
                ))
            }
            ComposeError::Restricted(_) => {
                Error::new(ErrorKind::JsonFieldInvalid, message).with_description(HINT)
            }
            ComposeError::Invalid(_) => Error::new(ErrorKind::JsonFieldInvalid, message)
                .with_description("Check the request body against docs/composition.md."),
            ComposeError::NotAType(_) | ComposeError::NotATwin(_) => {
                Error::new(ErrorKind::NotFound(Level::Thing), message).with_description(
                    "Types are things with attributes/_isType = true; every other thing is a twin.",
                )
            }
            ComposeError::NoParent(_) | ComposeError::NotAChild { .. } => {
                Error::new(ErrorKind::NotFound(Level::Attribute), message)
            }
            ComposeError::ExistsAsTwin(_)
            | ComposeError::Cycle { .. }
            | ComposeError::InUse { .. }
            | ComposeError::IdClash(_) => Error::new(ErrorKind::ThingConflict, message),
            ComposeError::TooLarge { .. } | ComposeError::TooDeep { .. } => {
                Error::new(ErrorKind::ThingTooLarge, message)
                    .with_description("Raise the composition limits or build a smaller tree.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_ditto_status_and_code() {
        let id = ThingId::new("ns:a").unwrap();
        let other = ThingId::new("ns:b").unwrap();
        let cases = [
            (
                ComposeError::Restricted("_parent".into()),
                400,
                "json.field.invalid",
            ),
            (
                ComposeError::NotAType(id.clone()),
                404,
                "things:thing.notfound",
            ),
            (
                ComposeError::NotATwin(id.clone()),
                404,
                "things:thing.notfound",
            ),
            (
                ComposeError::ExistsAsTwin(id.clone()),
                409,
                "things:thing.conflict",
            ),
            (
                ComposeError::Cycle {
                    child: id.clone(),
                    parent: other.clone(),
                },
                409,
                "things:thing.conflict",
            ),
            (
                ComposeError::NoParent(id.clone()),
                404,
                "things:attribute.notfound",
            ),
            (
                ComposeError::TooLarge { limit: 3 },
                413,
                "things:thing.toolarge",
            ),
            (
                ComposeError::IdClash(id.clone()),
                409,
                "things:thing.conflict",
            ),
            (
                ComposeError::Incomplete {
                    cause: Error::not_modifiable(Level::Thing, "ns:b", "/"),
                    changed: vec![id.clone()],
                },
                403,
                "things:thing.notmodifiable",
            ),
        ];
        for (e, status, code) in cases {
            let text = e.to_string();
            let e = Error::from(e);
            assert_eq!((e.status(), e.code().as_ref()), (status, code), "{text}");
            assert_eq!(e.message(), text);
        }
        let e = Error::from(ComposeError::Incomplete {
            cause: Error::field_invalid("x"),
            changed: vec![id, other],
        });
        assert!(e.description().unwrap().contains("ns:a, ns:b"));
    }
}
