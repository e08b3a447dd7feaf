//! Reading and changing a policy at the paths of Ditto's policy commands:
//! `/`, `/entries`, `/entries/{label}`, `/entries/{label}/subjects[/{subjectId}]`,
//! `/entries/{label}/resources[/{type}:{path}]`.
//!
//! A resource key contains `/`, so it spans several pointer segments: everything after
//! `resources` is joined with `/` and parsed as the key. `/entries/L/resources/thing:/attributes`
//! gives segments `["thing:", "attributes"]`, key `thing:/attributes`. The root key `thing:/`
//! cannot end a pointer with `/` (empty segments are invalid), so it is addressed as
//! `/entries/L/resources/thing:` (segments `["thing:"]`); see [`ResourceKey::to_segments`].
//! Subject ids that contain `/` are joined the same way.

use std::sync::Arc;

use serde_json::Value;

use super::model::{
    Policy, PolicyEntry, Resource, ResourceKey, Subject, check_manageable, parse_body,
    parse_entries, parse_resources, parse_subjects, validate_label, validate_subject_id,
};
use crate::error::{Error, ErrorKind, Result};
use crate::model::Pointer;

/// What a policy path names.
enum Target<'a> {
    Root,
    Entries,
    Entry(&'a str),
    Subjects(&'a str),
    Subject(&'a str, String),
    Resources(&'a str),
    Resource(&'a str, ResourceKey),
}

fn target(path: &Pointer) -> Result<Target<'_>> {
    let s = path.segments();
    let t = match s {
        [] => Target::Root,
        [e] if e == "entries" => Target::Entries,
        [e, label] if e == "entries" => Target::Entry(label),
        [e, label, k] if e == "entries" && k == "subjects" => Target::Subjects(label),
        [e, label, k, rest @ ..] if e == "entries" && k == "subjects" => {
            Target::Subject(label, rest.join("/"))
        }
        [e, label, k] if e == "entries" && k == "resources" => Target::Resources(label),
        [e, label, k, rest @ ..] if e == "entries" && k == "resources" => {
            Target::Resource(label, ResourceKey::from_segments(rest)?)
        }
        _ => return Err(unknown_path(path)),
    };
    Ok(t)
}

fn unknown_path(path: &Pointer) -> Error {
    Error::new(ErrorKind::PathUnknown, format!("The path '{path}' does not name a resource of a Policy."))
        .with_description(
            "Valid paths: /, /entries, /entries/{label}, /entries/{label}/subjects[/{subjectId}], /entries/{label}/resources[/{type}:{path}].",
        )
}

impl Policy {
    fn entry_not_found(&self, label: &str) -> Error {
        Error::new(
            ErrorKind::PolicyEntryNotFound,
            format!(
                "The PolicyEntry with Label '{label}' on the Policy with ID '{}' could not be found or requester had insufficient permissions to access it.",
                self.id
            ),
        )
        .with_description("Check if the ID of the Policy and the Label of your requested PolicyEntry was correct.")
    }

    fn subject_not_found(&self, label: &str, subject: &str) -> Error {
        Error::new(
            ErrorKind::PolicyEntryNotFound,
            format!(
                "The Subject with ID '{subject}' of the PolicyEntry with Label '{label}' on the Policy with ID '{}' could not be found or requester had insufficient permissions to access it.",
                self.id
            ),
        )
        .with_description("Check if the ID of the Policy, the Label and the Subject ID were correct.")
    }

    fn resource_not_found(&self, label: &str, key: &ResourceKey) -> Error {
        Error::new(
            ErrorKind::PolicyEntryNotFound,
            format!(
                "The Resource with key '{key}' of the PolicyEntry with Label '{label}' on the Policy with ID '{}' could not be found or requester had insufficient permissions to access it.",
                self.id
            ),
        )
        .with_description("Check if the ID of the Policy, the Label and the Resource key were correct.")
    }

    fn find_entry(&self, label: &str) -> Result<&PolicyEntry> {
        self.entry(label).ok_or_else(|| self.entry_not_found(label))
    }

    /// The JSON at `path` (`policies:entry.notfound` if an entry, subject or resource is
    /// missing; `things:path.unknown` for a path that names nothing in a policy).
    pub fn get_at(&self, path: &Pointer) -> Result<Value> {
        Ok(match target(path)? {
            Target::Root => self.to_json(),
            Target::Entries => self.entries_json(),
            Target::Entry(label) => self.find_entry(label)?.to_json(),
            Target::Subjects(label) => self.find_entry(label)?.subjects_json(),
            Target::Subject(label, id) => self
                .find_entry(label)?
                .subject(&id)
                .ok_or_else(|| self.subject_not_found(label, &id))?
                .to_json(),
            Target::Resources(label) => self.find_entry(label)?.resources_json(),
            Target::Resource(label, key) => self
                .find_entry(label)?
                .resource(&key)
                .ok_or_else(|| self.resource_not_found(label, &key))?
                .to_json(),
        })
    }

    /// Puts `value` at `path`; returns whether something was created (an entry, subject or
    /// resource that did not exist) rather than replaced.
    ///
    /// `/` replaces all entries (a `policyId` in the body must match). Subjects and resources
    /// can only be changed in an existing entry (`policies:entry.notfound` otherwise).
    /// The value is validated as in [`Policy::from_json`]. A change that would leave nobody able
    /// to manage the policy is refused with `policies:policy.notmodifiable` (403, Ditto's
    /// status for this case) and changes nothing; so is a change that would make the policy
    /// larger than [`crate::Limits::max_policy_bytes`] (`policies:policy.toolarge`). The
    /// revision is not touched: call [`Policy::touch`].
    pub fn modify_at(&mut self, path: &Pointer, value: Value) -> Result<bool> {
        let target = target(path)?;
        let whole = matches!(target, Target::Root | Target::Entries);
        // A replacement of every entry is checked before anything is built from it, and needs
        // no copy of the entries it replaces.
        let mut entries = if whole {
            super::model::check_policy_size(crate::model::schema::json_size(&value))?;
            Vec::new()
        } else {
            (*self.entries).clone()
        };
        let created = match target {
            Target::Root => {
                entries = parse_body(&self.id, &value)?;
                false
            }
            Target::Entries => {
                entries = parse_entries(&value)?;
                false
            }
            Target::Entry(label) => {
                validate_label(label)?;
                let entry = PolicyEntry::from_json(label, &value)?;
                match entries.iter_mut().find(|(l, _)| l == label) {
                    Some(slot) => {
                        slot.1 = entry;
                        false
                    }
                    None => {
                        entries.push((label.to_owned(), entry));
                        true
                    }
                }
            }
            Target::Subjects(label) => {
                let subjects = parse_subjects(label, &value)?;
                *self.entry_in(&mut entries, label)?.subjects_mut() = subjects;
                false
            }
            Target::Subject(label, id) => {
                let entry = self.entry_in(&mut entries, label)?;
                validate_subject_id(&id)?;
                let subject = Subject::from_json(&id, &value)?;
                entry.set_subject(id, subject)?
            }
            Target::Resources(label) => {
                let resources = parse_resources(label, &value)?;
                *self.entry_in(&mut entries, label)?.resources_mut() = resources;
                false
            }
            Target::Resource(label, key) => {
                let entry = self.entry_in(&mut entries, label)?;
                let resource = Resource::from_json(&key, &value)?;
                entry.set_resource(key, resource)
            }
        };
        self.commit(entries)?;
        Ok(created)
    }

    /// Deletes the entry, subject or resource at `path` (`policies:entry.notfound` if it
    /// is missing). Deleting `/`, `/entries`, `/entries/{label}/subjects` or
    /// `/entries/{label}/resources` is not a Ditto command and fails with
    /// `things:path.unknown`: the engine deletes a whole policy itself. A deletion that would
    /// leave nobody able to manage the policy is refused with `policies:policy.notmodifiable`.
    /// The revision is not touched: call [`Policy::touch`].
    pub fn delete_at(&mut self, path: &Pointer) -> Result<()> {
        let mut entries = (*self.entries).clone();
        match target(path)? {
            Target::Root | Target::Entries | Target::Subjects(_) | Target::Resources(_) => {
                return Err(Error::new(
                    ErrorKind::PathUnknown,
                    format!("The path '{path}' of a Policy cannot be deleted."),
                )
                .with_description(
                    "Delete single entries, subjects or resources; delete the whole Policy at its root through the Policy API.",
                ));
            }
            Target::Entry(label) => {
                let i = entries
                    .iter()
                    .position(|(l, _)| l == label)
                    .ok_or_else(|| self.entry_not_found(label))?;
                entries.remove(i);
            }
            Target::Subject(label, id) => {
                if self
                    .entry_in(&mut entries, label)?
                    .remove_subject(&id)
                    .is_none()
                {
                    return Err(self.subject_not_found(label, &id));
                }
            }
            Target::Resource(label, key) => {
                if self
                    .entry_in(&mut entries, label)?
                    .remove_resource(&key)
                    .is_none()
                {
                    return Err(self.resource_not_found(label, &key));
                }
            }
        }
        self.commit(entries)
    }

    fn entry_in<'e>(
        &self,
        entries: &'e mut [(String, PolicyEntry)],
        label: &str,
    ) -> Result<&'e mut PolicyEntry> {
        entries
            .iter_mut()
            .find(|(l, _)| l == label)
            .map(|(_, e)| e)
            .ok_or_else(|| self.entry_not_found(label))
    }

    /// Installs edited entries if the policy stays manageable.
    fn commit(&mut self, entries: Vec<(String, PolicyEntry)>) -> Result<()> {
        if let Err(e) = check_manageable(&entries) {
            return Err(Error::new(
                ErrorKind::PolicyNotModifiable,
                format!(
                    "The Policy with ID '{}' could not be modified as the resulting Policy would be invalid.",
                    self.id
                ),
            )
            .with_description(e.message().to_owned()));
        }
        let before = std::mem::replace(&mut self.entries, Arc::new(entries));
        if let Err(e) = self.check_size() {
            self.entries = before;
            return Err(e);
        }
        self.invalidate();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{PolicyId, Timestamp};
    use crate::policy::{AuthContext, Permission, ResourceType};

    fn ptr(s: &str) -> Pointer {
        Pointer::parse(s).unwrap()
    }

    fn base() -> Policy {
        let body = json!({"policyId": "ns:p", "entries": {
            "owner": {
                "subjects": {"nginx:ditto": {"type": "user"}},
                "resources": {
                    "policy:/": {"grant": ["READ", "WRITE"], "revoke": []},
                    "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
                    "thing:/attributes/secret": {"grant": [], "revoke": ["READ"]}
                }
            },
            "reader": {
                "subjects": {"instance:edge-1": {"type": "instance"}},
                "resources": {"thing:/features": {"grant": ["READ"], "revoke": []}}
            }
        }});
        Policy::from_json(
            &PolicyId::new("ns:p").unwrap(),
            &body,
            Timestamp::from_micros(1),
        )
        .unwrap()
    }

    #[test]
    fn get_at_every_level() {
        let p = base();
        assert_eq!(p.get_at(&Pointer::root()).unwrap(), p.to_json());
        assert_eq!(p.get_at(&ptr("/entries")).unwrap(), p.to_json()["entries"]);
        assert_eq!(
            p.get_at(&ptr("/entries/reader")).unwrap(),
            p.to_json()["entries"]["reader"]
        );
        assert_eq!(
            p.get_at(&ptr("/entries/owner/subjects")).unwrap(),
            json!({"nginx:ditto": {"type": "user"}})
        );
        assert_eq!(
            p.get_at(&ptr("/entries/owner/subjects/nginx:ditto"))
                .unwrap(),
            json!({"type": "user"})
        );
        assert_eq!(
            p.get_at(&ptr("/entries/owner/resources/thing:/attributes/secret"))
                .unwrap(),
            json!({"grant": [], "revoke": ["READ"]})
        );
        // The root key `thing:/` is addressed as `.../resources/thing:`.
        assert_eq!(
            p.get_at(&ptr("/entries/owner/resources/thing:")).unwrap(),
            json!({"grant": ["READ", "WRITE"], "revoke": []})
        );
        let key = ResourceKey::parse("thing:/").unwrap();
        let segs = ["entries".to_owned(), "owner".into(), "resources".into()]
            .into_iter()
            .chain(key.to_segments());
        assert!(p.get_at(&Pointer::from_segments(segs).unwrap()).is_ok());
        assert_eq!(
            p.get_at(&ptr("/entries/owner/resources")).unwrap()["thing:/attributes/secret"],
            json!({"grant": [], "revoke": ["READ"]})
        );
    }

    #[test]
    fn get_at_errors() {
        let p = base();
        for (path, kind) in [
            ("/entries/nope", ErrorKind::PolicyEntryNotFound),
            ("/entries/nope/subjects", ErrorKind::PolicyEntryNotFound),
            (
                "/entries/owner/subjects/nginx:nobody",
                ErrorKind::PolicyEntryNotFound,
            ),
            (
                "/entries/owner/resources/thing:/features",
                ErrorKind::PolicyEntryNotFound,
            ),
            (
                "/entries/owner/resources/bogus:/x",
                ErrorKind::PolicyInvalid,
            ),
            ("/policyId", ErrorKind::PathUnknown),
            ("/entries/owner/other", ErrorKind::PathUnknown),
        ] {
            let e = p.get_at(&ptr(path)).unwrap_err();
            assert_eq!(e.kind(), kind, "{path}");
        }
        let e = p.get_at(&ptr("/entries/nope")).unwrap_err();
        assert_eq!(e.status(), 404);
        assert_eq!(e.code(), "policies:entry.notfound");
    }

    #[test]
    fn modify_at_creates_and_replaces() {
        let mut p = base();
        let edge = AuthContext::new(["instance:edge-1"]);
        // New resource with a slash-containing key.
        assert!(
            p.modify_at(
                &ptr("/entries/reader/resources/thing:/attributes/location"),
                json!({"grant": ["READ"], "revoke": []}),
            )
            .unwrap()
        );
        assert!(p.has_permission(
            &edge,
            ResourceType::Thing,
            &ptr("/attributes/location/lat"),
            Permission::Read
        ));
        // Replace it.
        assert!(
            !p.modify_at(
                &ptr("/entries/reader/resources/thing:/attributes/location"),
                json!({"grant": ["READ", "WRITE"], "revoke": []}),
            )
            .unwrap()
        );
        assert!(p.has_permission(
            &edge,
            ResourceType::Thing,
            &ptr("/attributes/location"),
            Permission::Write
        ));
        // Root resource key.
        assert!(
            p.modify_at(
                &ptr("/entries/reader/resources/thing:"),
                json!({"grant": [], "revoke": ["WRITE"]})
            )
            .unwrap()
        );
        assert_eq!(
            p.get_at(&ptr("/entries/reader/resources")).unwrap()["thing:/"],
            json!({"grant": [], "revoke": ["WRITE"]})
        );
        // Subject.
        assert!(
            p.modify_at(
                &ptr("/entries/reader/subjects/instance:edge-2"),
                json!({"type": "instance"})
            )
            .unwrap()
        );
        assert!(
            !p.modify_at(
                &ptr("/entries/reader/subjects/instance:edge-2"),
                json!({"type": "renamed", "x": 1})
            )
            .unwrap()
        );
        assert_eq!(
            p.get_at(&ptr("/entries/reader/subjects/instance:edge-2"))
                .unwrap(),
            json!({"type": "renamed", "x": 1})
        );
        // Whole subjects / resources.
        assert!(
            !p.modify_at(
                &ptr("/entries/reader/subjects"),
                json!({"instance:edge-3": {"type": "i"}})
            )
            .unwrap()
        );
        assert_eq!(p.entry("reader").unwrap().subjects().len(), 1);
        assert!(
            !p.modify_at(&ptr("/entries/reader/resources"), json!({}))
                .unwrap()
        );
        assert!(p.entry("reader").unwrap().resources().is_empty());
        // New entry, replaced entry.
        let entry = json!({"subjects": {"a:b": {"type": "t"}}, "resources": {"message:/inbox": {"grant": ["WRITE"], "revoke": []}}});
        assert!(p.modify_at(&ptr("/entries/new"), entry.clone()).unwrap());
        assert!(!p.modify_at(&ptr("/entries/new"), entry.clone()).unwrap());
        assert_eq!(p.get_at(&ptr("/entries/new")).unwrap(), entry);
        // Revision untouched until touch().
        assert_eq!(p.revision(), 1);
        p.touch(Timestamp::from_micros(9));
        assert_eq!(p.revision(), 2);
        assert_eq!(p.modified(), Timestamp::from_micros(9));
        assert_eq!(p.created(), Timestamp::from_micros(1));
    }

    #[test]
    fn modify_at_root_and_entries() {
        let mut p = base();
        let mut body = p.to_json();
        body["entries"].as_object_mut().unwrap().remove("reader");
        assert!(!p.modify_at(&Pointer::root(), body.clone()).unwrap());
        assert!(p.entry("reader").is_none());
        body["policyId"] = json!("ns:other");
        assert_eq!(
            p.modify_at(&Pointer::root(), body).unwrap_err().kind(),
            ErrorKind::PolicyIdInvalid
        );
        let entries = json!({"only": {"subjects": {"x:y": {"type": "t"}},
            "resources": {"policy:/": {"grant": ["WRITE"], "revoke": []}}}});
        assert!(!p.modify_at(&ptr("/entries"), entries.clone()).unwrap());
        assert_eq!(p.get_at(&ptr("/entries")).unwrap(), entries);
    }

    #[test]
    fn modify_at_errors_change_nothing() {
        let mut p = base();
        let before = p.clone();
        for (path, value, kind) in [
            (
                "/entries/nope/subjects/a:b",
                json!({"type": "t"}),
                ErrorKind::PolicyEntryNotFound,
            ),
            (
                "/entries/nope/resources/thing:/x",
                json!({"grant": [], "revoke": []}),
                ErrorKind::PolicyEntryNotFound,
            ),
            (
                "/entries/nope/subjects",
                json!({}),
                ErrorKind::PolicyEntryNotFound,
            ),
            (
                "/entries/owner/subjects/nocolon",
                json!({"type": "t"}),
                ErrorKind::PolicyInvalid,
            ),
            (
                "/entries/owner/subjects/a:b",
                json!({"kind": "t"}),
                ErrorKind::JsonFieldInvalid,
            ),
            (
                "/entries/owner/resources/thing:/x",
                json!({"grant": ["EXECUTE"], "revoke": []}),
                ErrorKind::PolicyInvalid,
            ),
            (
                "/entries/owner/resources/thing:/x",
                json!({"grant": ["READ"]}),
                ErrorKind::JsonFieldInvalid,
            ),
            (
                "/entries/owner/resources/nope:/x",
                json!({"grant": [], "revoke": []}),
                ErrorKind::PolicyInvalid,
            ),
            ("/entries/owner", json!([]), ErrorKind::JsonFieldInvalid),
            (
                "/entries/x",
                json!({"subjects": {}}),
                ErrorKind::JsonFieldInvalid,
            ),
            ("/entries", json!({"a": 1}), ErrorKind::JsonFieldInvalid),
            ("/foo", json!(1), ErrorKind::PathUnknown),
            // Would lock everybody out.
            (
                "/entries/owner/resources/policy:",
                json!({"grant": ["READ"], "revoke": []}),
                ErrorKind::PolicyNotModifiable,
            ),
            (
                "/entries/owner/subjects",
                json!({}),
                ErrorKind::PolicyNotModifiable,
            ),
            (
                "/entries/owner",
                json!({"subjects": {}, "resources": {}}),
                ErrorKind::PolicyNotModifiable,
            ),
        ] {
            let e = p.modify_at(&ptr(path), value.clone()).unwrap_err();
            assert_eq!(e.kind(), kind, "{path} {value}");
            assert_eq!(p, before, "{path}");
        }
        // Revoking WRITE on policy:/ in another entry is fine while it does not name the owner...
        p.modify_at(
            &ptr("/entries/reader/resources/policy:"),
            json!({"grant": [], "revoke": ["WRITE"]}),
        )
        .unwrap();
        // ...but locks out once that entry names the owner subject too.
        let e = p
            .modify_at(
                &ptr("/entries/reader/subjects/nginx:ditto"),
                json!({"type": "user"}),
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PolicyNotModifiable);
        assert_eq!(e.status(), 403);
    }

    #[test]
    fn delete_at() {
        let mut p = base();
        let ditto = AuthContext::new(["nginx:ditto"]);
        assert!(!p.has_permission(
            &ditto,
            ResourceType::Thing,
            &ptr("/attributes/secret"),
            Permission::Read
        ));
        p.delete_at(&ptr("/entries/owner/resources/thing:/attributes/secret"))
            .unwrap();
        assert!(p.has_permission(
            &ditto,
            ResourceType::Thing,
            &ptr("/attributes/secret"),
            Permission::Read
        ));
        assert_eq!(
            p.delete_at(&ptr("/entries/owner/resources/thing:/attributes/secret"))
                .unwrap_err()
                .kind(),
            ErrorKind::PolicyEntryNotFound
        );
        p.delete_at(&ptr("/entries/reader/subjects/instance:edge-1"))
            .unwrap();
        assert_eq!(
            p.delete_at(&ptr("/entries/reader/subjects/instance:edge-1"))
                .unwrap_err()
                .kind(),
            ErrorKind::PolicyEntryNotFound
        );
        p.delete_at(&ptr("/entries/reader")).unwrap();
        assert!(p.entry("reader").is_none());
        assert_eq!(
            p.delete_at(&ptr("/entries/reader")).unwrap_err().kind(),
            ErrorKind::PolicyEntryNotFound
        );
        for path in [
            "/",
            "/entries",
            "/entries/owner/subjects",
            "/entries/owner/resources",
        ] {
            assert_eq!(
                p.delete_at(&ptr(path)).unwrap_err().kind(),
                ErrorKind::PathUnknown,
                "{path}"
            );
        }
        // Lock-out is refused.
        let before = p.clone();
        for path in [
            "/entries/owner",
            "/entries/owner/subjects/nginx:ditto",
            "/entries/owner/resources/policy:",
        ] {
            assert_eq!(
                p.delete_at(&ptr(path)).unwrap_err().kind(),
                ErrorKind::PolicyNotModifiable,
                "{path}"
            );
            assert_eq!(p, before);
        }
    }
}
