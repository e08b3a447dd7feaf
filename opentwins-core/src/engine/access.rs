//! What one caller may do with one thing: the policy checks the engine needs, with the system
//! subject's bypass and "no policy means no access" in one place.

use serde_json::Value;

use crate::model::Pointer;
use crate::policy::{AuthContext, Permission, Policy, ResourceType};
use crate::protocol::ThingEvent;

/// A caller's view of one thing's policy.
#[derive(Clone, Copy)]
pub(super) struct Access<'a> {
    auth: &'a AuthContext,
    policy: Option<&'a Policy>,
}

impl<'a> Access<'a> {
    pub(super) fn new(auth: &'a AuthContext, policy: Option<&'a Policy>) -> Self {
        Access { auth, policy }
    }

    fn check(&self, f: impl FnOnce(&Policy) -> bool) -> bool {
        if self.auth.is_system() {
            return true;
        }
        self.policy.is_some_and(f)
    }

    /// May read something at or below `path`.
    pub(super) fn read_partial(&self, path: &Pointer) -> bool {
        self.check(|p| p.has_partial(self.auth, ResourceType::Thing, path, Permission::Read))
    }

    /// May read everything at and below `path`.
    pub(super) fn read_all(&self, path: &Pointer) -> bool {
        self.check(|p| p.has_unrestricted(self.auth, ResourceType::Thing, path, Permission::Read))
    }

    /// May write everything at and below `path`.
    pub(super) fn write_all(&self, path: &Pointer) -> bool {
        self.check(|p| p.has_unrestricted(self.auth, ResourceType::Thing, path, Permission::Write))
    }

    /// May write at `path` itself.
    pub(super) fn write_at(&self, path: &Pointer) -> bool {
        self.check(|p| p.has_permission(self.auth, ResourceType::Thing, path, Permission::Write))
    }

    /// The readable part of `value`, which sits at `path`; `None` if nothing is readable.
    pub(super) fn filter(&self, path: &Pointer, value: &Value) -> Option<Value> {
        if self.read_all(path) {
            return Some(value.clone());
        }
        let policy = self.policy?;
        policy.filter_readable(self.auth, ResourceType::Thing, path, value)
    }

    /// The event as this caller may see it, or `None` if it may see nothing of it.
    /// Provenance (clocks and values of every change, for links) is never passed on.
    pub(super) fn filter_event(&self, event: ThingEvent) -> Option<ThingEvent> {
        let event = ThingEvent {
            provenance: None,
            ..event
        };
        if self.read_all(&event.path) {
            return Some(event);
        }
        if !self.read_partial(&event.path) {
            return None;
        }
        let value = match &event.value {
            // A deletion is visible to whoever may read something of what was deleted.
            None => None,
            Some(v) => Some(self.filter(&event.path, v)?),
        };
        Some(ThingEvent { value, ..event })
    }
}
