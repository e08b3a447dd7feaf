//! What crosses a link: an [`Update`] (changes of one thing with their clocks, the instance they
//! come from and the instances they crossed), written as a Ditto merge command so a peer that
//! knows nothing of clocks still applies it sensibly.
//!
//! On the wire it is `{ns}/{name}/things/twin/commands/merge` at `/` whose value is the merge
//! patch of the changes, with these headers:
//!
//! | header | value |
//! |---|---|
//! | `opentwins-origin` | the instance that made the changes |
//! | `opentwins-hops` | the instances that applied them, in order, origin first |
//! | `opentwins-clocks` | the clock of every changed path, compact ([`Replica::compact_clocks`]) |
//! | `opentwins-base` | the wall time (ms) the compact clocks are relative to; without it the clocks are absolute ([`Replica::clocks_json`], as earlier versions sent) |
//! | `opentwins-values` | values the patch cannot hold, by path (rare; absent when empty) |
//! | `opentwins-policy` | the thing's policy id at the sender (used when the update creates the thing) |

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Change, Replica};
use crate::error::{Error, Result};
use crate::model::{Pointer, PolicyId, ThingId};
use crate::protocol::{Action, Headers, ThingCommand};

const ORIGIN: &str = "opentwins-origin";
const HOPS: &str = "opentwins-hops";
const CLOCKS: &str = "opentwins-clocks";
const BASE: &str = "opentwins-base";
const VALUES: &str = "opentwins-values";
const POLICY: &str = "opentwins-policy";

/// Where an event's changes come from and which changes they are: what a link forwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// The instance that made the changes.
    pub origin: Arc<str>,
    /// The instances that applied them, in order, origin first; the last is this instance.
    pub hops: Vec<Arc<str>>,
    /// The changes that took effect here, with their clocks and values.
    pub changes: Replica,
}

impl Provenance {
    /// Whether `instance` has applied these changes already (a link must not send them there).
    pub fn crossed(&self, instance: &str) -> bool {
        self.hops.iter().any(|h| &**h == instance)
    }
}

/// Changes of one thing on their way from one instance to another.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The thing.
    pub thing_id: ThingId,
    /// The instance that made the changes.
    pub origin: Arc<str>,
    /// The instances that applied them, origin first.
    pub hops: Vec<Arc<str>>,
    /// The thing's policy at the sender.
    pub policy_id: Option<PolicyId>,
    /// The changes (a replica holds a set of changes; joining two sets is coalescing them).
    pub changes: Replica,
}

impl Update {
    /// Adds the changes of `newer` (same thing, same route) to this update: per path the
    /// newest change wins, so sending the result equals sending both. `false` (and nothing
    /// changes) if the two updates differ in thing, origin or hops.
    pub fn absorb(&mut self, newer: &Update) -> bool {
        if self.thing_id != newer.thing_id || self.origin != newer.origin || self.hops != newer.hops
        {
            return false;
        }
        for change in newer.changes.changes() {
            self.changes.apply(change);
        }
        if newer.policy_id.is_some() {
            self.policy_id.clone_from(&newer.policy_id);
        }
        true
    }

    /// The same update with each change passed through `f`: kept as it is, changed, or
    /// left out (`None`). Links select what they carry with it.
    pub fn map_changes(&self, f: impl Fn(Change) -> Option<Change>) -> Update {
        let mut changes = Replica::new();
        for change in self.changes.changes().filter_map(f) {
            changes.apply(change);
        }
        Update {
            thing_id: self.thing_id.clone(),
            origin: self.origin.clone(),
            hops: self.hops.clone(),
            policy_id: self.policy_id.clone(),
            changes,
        }
    }

    /// The merge command that carries this update.
    pub fn to_command(&self) -> ThingCommand {
        let (patch, extra) = self.changes.patch();
        let mut headers = Headers::default();
        let other = &mut headers.other;
        other.insert(ORIGIN.into(), Value::String(self.origin.to_string()));
        other.insert(
            HOPS.into(),
            Value::Array(
                self.hops
                    .iter()
                    .map(|h| Value::String(h.to_string()))
                    .collect(),
            ),
        );
        let (base, clocks) = self.changes.compact_clocks(&self.origin);
        other.insert(BASE.into(), Value::from(base));
        other.insert(CLOCKS.into(), clocks);
        if !extra.is_empty() {
            other.insert(VALUES.into(), Value::Object(extra));
        }
        if let Some(p) = &self.policy_id {
            other.insert(POLICY.into(), Value::String(p.to_string()));
        }
        headers.response_required = Some(false);
        let mut cmd = ThingCommand::new(
            self.thing_id.clone(),
            Action::Merge,
            Pointer::root(),
            Some(patch),
        );
        cmd.headers = headers;
        cmd
    }

    /// The update a merge command carries, `None` if it carries no clocks (a plain merge, e.g.
    /// from a Ditto peer), or an error if its replication headers are malformed.
    pub fn from_command(cmd: &ThingCommand) -> Result<Option<Update>> {
        let other = &cmd.headers.other;
        let Some(clocks) = header(other, CLOCKS) else {
            return Ok(None);
        };
        if cmd.action != Action::Merge || !cmd.path.is_root() {
            return Err(Error::field_invalid(
                "Replicated changes must come as a merge command at '/'.",
            ));
        }
        let text = |name: &str| -> Result<Arc<str>> {
            match header(other, name) {
                Some(Value::String(s)) if valid_instance(s) => Ok(Arc::from(s.as_str())),
                _ => Err(Error::field_invalid(format!(
                    "The header '{name}' must name an instance (letters, digits, '.', '_', '-', ':')."
                ))),
            }
        };
        let origin = text(ORIGIN)?;
        let hops = match header(other, HOPS) {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|h| match h.as_str() {
                    Some(s) if valid_instance(s) => Ok(Arc::from(s)),
                    _ => Err(Error::field_invalid(format!(
                        "The header '{HOPS}' must list instance ids."
                    ))),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => {
                return Err(Error::field_invalid(format!(
                    "The header '{HOPS}' must be a non-empty array of instance ids."
                )));
            }
        };
        let empty = Map::new();
        let extra = match header(other, VALUES) {
            None => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(Error::field_invalid(format!(
                    "The header '{VALUES}' must be a JSON object."
                )));
            }
        };
        let policy_id = match header(other, POLICY) {
            None => None,
            Some(Value::String(s)) => Some(PolicyId::new(s)?),
            Some(_) => {
                return Err(Error::field_invalid(format!(
                    "The header '{POLICY}' must be a policy id."
                )));
            }
        };
        let values = cmd.value.clone().unwrap_or(Value::Null);
        let changes = match header(other, BASE) {
            None => Replica::from_clocks(clocks, &values, extra)?,
            Some(base) => {
                let base = base.as_u64().ok_or_else(|| {
                    Error::field_invalid(format!(
                        "The header '{BASE}' must be a wall time in milliseconds."
                    ))
                })?;
                Replica::from_compact_clocks(clocks, base, &origin, &values, extra)?
            }
        };
        for change in changes.changes() {
            if let Some(first) = change.path.segments().first()
                && (first == "thingId" || first == "policyId")
            {
                return Err(Error::field_invalid(format!(
                    "'{}' is not replicated; an update cannot change it.",
                    change.path
                )));
            }
        }
        Ok(Some(Update {
            thing_id: cmd.thing_id.clone(),
            origin,
            hops,
            policy_id,
            changes,
        }))
    }
}

fn header<'a>(other: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    other
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Whether `id` may name an instance: 1 to 64 of letters, digits, `.`, `_`, `-`, `:`.
pub fn valid_instance(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

impl From<Vec<Change>> for Replica {
    fn from(changes: Vec<Change>) -> Replica {
        let mut r = Replica::new();
        for c in changes {
            r.apply(c);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protocol::Message;
    use crate::replica::{Stamp, changes_for_merge, changes_for_modify};

    fn stamp(ms: u64, origin: &str) -> Stamp {
        Stamp {
            wall_ms: ms,
            counter: 0,
            origin: Arc::from(origin),
        }
    }

    fn sample() -> Update {
        let mut changes = changes_for_modify(
            &Pointer::parse("/features/lane").unwrap(),
            &json!({"properties": {"offset": 0.1, "k": [1, 2]}}),
            &stamp(10, "edge-1"),
        );
        changes.extend(changes_for_merge(
            &Pointer::parse("/attributes").unwrap(),
            &json!({"gone": null}),
            &stamp(11, "edge-1"),
        ));
        Update {
            thing_id: ThingId::new("fleet:car-1").unwrap(),
            origin: Arc::from("edge-1"),
            hops: vec![Arc::from("edge-1"), Arc::from("hub")],
            policy_id: Some(PolicyId::new("fleet:policy").unwrap()),
            changes: Replica::from(changes),
        }
    }

    #[test]
    fn an_update_survives_the_wire_and_reads_as_a_ditto_merge() {
        let u = sample();
        let bytes = Message::ThingCommand(u.to_command()).to_vec();
        let Message::ThingCommand(cmd) = Message::from_slice(&bytes).unwrap() else {
            panic!("not a command")
        };
        // A Ditto peer sees a merge at '/' with the new values and the removal.
        assert_eq!(cmd.action, Action::Merge);
        assert_eq!(
            cmd.value.as_ref().unwrap(),
            &json!({"attributes": {"gone": null},
                    "features": {"lane": {"properties": {"offset": 0.1, "k": [1, 2]}}}})
        );
        assert_eq!(Update::from_command(&cmd).unwrap(), Some(u));
    }

    /// The byte-level example of docs/distribution.md ("What crosses a link").
    #[test]
    fn a_one_property_update_is_compact_on_the_wire() {
        let stamp = Stamp {
            wall_ms: 1_764_080_000_000,
            counter: 3,
            origin: Arc::from("edge-1"),
        };
        let update = Update {
            thing_id: ThingId::new("fleet:car-1").unwrap(),
            origin: Arc::from("edge-1"),
            hops: vec![Arc::from("edge-1")],
            policy_id: Some(PolicyId::new("fleet:policy").unwrap()),
            changes: Replica::from(changes_for_merge(
                &Pointer::parse("/features/lane/properties").unwrap(),
                &json!({"offset": 0.12}),
                &stamp,
            )),
        };
        let bytes = Message::ThingCommand(update.to_command()).to_vec();
        let text = String::from_utf8(bytes.clone()).unwrap();
        println!("{} bytes: {text}", bytes.len());
        let Message::ThingCommand(cmd) = Message::from_slice(&bytes).unwrap() else {
            panic!("not a command")
        };
        assert_eq!(Update::from_command(&cmd).unwrap(), Some(update));
    }

    #[test]
    fn plain_merges_carry_no_update_and_bad_headers_are_refused() {
        let plain = ThingCommand::new(
            ThingId::new("a:b").unwrap(),
            Action::Merge,
            Pointer::root(),
            Some(json!({"attributes": {"x": 1}})),
        );
        assert_eq!(Update::from_command(&plain).unwrap(), None);
        let good = sample().to_command();
        let broken: [(&str, Value); 13] = [
            (ORIGIN, json!("no spaces allowed")),
            (ORIGIN, json!(7)),
            (HOPS, json!([])),
            (HOPS, json!("edge-1")),
            (CLOCKS, json!({"/attributes/x": "v10@x/y"})),
            (CLOCKS, json!({"/attributes/x": "v-1"})),
            (CLOCKS, json!({"/attributes/x": "v1@"})),
            (CLOCKS, json!({"/attributes/x": "v+1"})),
            (CLOCKS, json!({"/attributes/x": "v18446744073709551615"})),
            (BASE, json!("10")),
            (BASE, json!(-1)),
            (CLOCKS, json!({"/thingId": "v10.0@edge-1"})),
            (POLICY, json!("not a policy id")),
        ];
        for (name, value) in broken {
            let mut cmd = good.clone();
            cmd.headers.other.insert(name.into(), value.clone());
            let err = Update::from_command(&cmd).expect_err(&format!("{name}: {value}"));
            assert_eq!(err.status(), 400, "{name}: {value}: {err}");
        }
        let mut at_path = good.clone();
        at_path.path = Pointer::parse("/attributes").unwrap();
        assert!(Update::from_command(&at_path).is_err());
    }

    #[test]
    fn absorbing_keeps_the_newest_change_per_path_on_one_route_only() {
        let mut a = sample();
        let mut b = sample();
        b.changes = Replica::from(changes_for_merge(
            &Pointer::parse("/features/lane/properties").unwrap(),
            &json!({"offset": 0.3}),
            &stamp(20, "edge-1"),
        ));
        assert!(a.absorb(&b));
        assert_eq!(
            a.changes.materialize()["features"]["lane"]["properties"],
            json!({"offset": 0.3, "k": [1, 2]})
        );
        let mut other_route = sample();
        other_route.hops.push(Arc::from("x"));
        assert!(!a.absorb(&other_route));
    }
}
