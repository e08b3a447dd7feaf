//! Policies: who may read and write which part of a thing, a policy or a message.
//!
//! A [`Policy`] is Ditto's policy: labelled *entries*, each naming *subjects* (caller ids such as
//! `nginx:ditto` or `instance:edge-1`) and *resources* (`thing:/features/lane`, `policy:/`,
//! `message:/inbox`) with permissions granted or revoked on them.
//!
//! Enforcement ([`Policy::has_permission`] and friends) follows Ditto's rules:
//!
//! - The entries that apply to a caller are those naming any of the caller's subjects.
//! - For permission `P` on resource type `T` at path `X`, look at every resource key of those
//!   entries on the chain from the root of `T` down to `X`. The **deepest** key that mentions `P`
//!   (in `grant` or in `revoke`) decides; at equal depth **revoke wins** over grant (also across
//!   entries). If no key mentions `P`, it is denied.
//! - "Unrestricted" means granted at `X` and nowhere revoked below it (needed to read or write a
//!   whole subtree); "partial" means granted at `X` or at some key below it (the caller may see
//!   a filtered view, see [`Policy::filter_readable`]).
//!
//! [`AuthContext::system`] is the engine's internal superuser: it bypasses every check. It is
//! never built from anything that arrives over the network.
//!
//! Editing at sub-paths (`/entries/{label}/resources/thing:/attributes`, ...) lives in
//! [`Policy::get_at`], [`Policy::modify_at`] and [`Policy::delete_at`].

mod edit;
mod enforce;
mod model;

use std::sync::Arc;

pub use model::{
    DEFAULT_LABEL, MAX_RESOURCE_DEPTH, Permission, Permissions, Policy, PolicyEntry, Resource,
    ResourceKey, ResourceType, Subject, validate_label, validate_subject_id,
};

/// The caller of a command: the subject ids it authenticated as (Ditto's authorization context),
/// e.g. `["nginx:ditto"]`, `["google:1234", "google:group-admins"]`, `["instance:edge-1"]`.
///
/// The first subject is the caller's *default* subject: Ditto uses it for the default policy of a
/// thing created without one and to resolve `{{ request:subjectId }}`.
///
/// Cloning is cheap (the subjects are shared).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AuthContext {
    subjects: Arc<[String]>,
    system: bool,
}

impl AuthContext {
    /// A caller with these subject ids (duplicates are dropped, order is kept).
    pub fn new<I, S>(subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut list: Vec<String> = Vec::new();
        for s in subjects {
            let s = s.into();
            if !list.contains(&s) {
                list.push(s);
            }
        }
        AuthContext {
            subjects: list.into(),
            system: false,
        }
    }

    /// The engine's internal superuser: every permission check passes for it.
    ///
    /// Only code inside the process builds it (replication from a peer the operator configured,
    /// start-up tasks, tests). Transports must never map anything that arrives over the network
    /// to it: they build callers with [`AuthContext::new`].
    pub fn system() -> Self {
        AuthContext {
            subjects: Arc::from(Vec::new()),
            system: true,
        }
    }

    /// Whether this is [`AuthContext::system`].
    pub fn is_system(&self) -> bool {
        self.system
    }

    /// The subject ids (empty for the system context).
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }

    /// The first (default) subject, if any.
    pub fn first_subject(&self) -> Option<&str> {
        self.subjects.first().map(String::as_str)
    }
}

impl std::fmt::Debug for AuthContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.system {
            f.write_str("AuthContext(system)")
        } else {
            write!(f, "AuthContext({:?})", &*self.subjects)
        }
    }
}

#[cfg(test)]
mod tests;
