//! Replication rules for distributed twins: hybrid logical clocks ([`Clock`], [`Stamp`]) and a
//! per-path last-writer-wins state ([`Replica`]) that any number of instances converge on,
//! whatever the order, delay or duplication with which they receive each other's changes.
//!
//! A command is turned into [`Change`]s, one per path it sets or removes, all carrying the
//! command's stamp. A [`Replica`] keeps, per path, the change with the greatest stamp (a
//! join-semilattice: applying a set of changes in any order, any number of times, gives the same
//! state). The JSON it stands for is [`Replica::materialize`]: a value at a path is visible
//! unless an ancestor path holds a newer change (a newer write replaces the subtree, a newer
//! removal deletes it); removals leave tombstones so late, older writes stay dead.
//!
//! This module is pure: the engine and the links use it (see docs/distribution.md).

mod clock;
mod encode;
mod update;
mod wire;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use clock::{Clock, Stamp};
pub use encode::ClocksJson;
pub use update::{Provenance, Update, valid_instance};
pub use wire::{MAGIC, decode_batch, encode_batch, is_binary_batch};

use crate::model::Pointer;

/// What a change leaves at its path.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// The path holds this value, replacing whatever was there and below (a scalar, an array or
    /// an empty object; a non-empty object is written as an empty object plus one change per
    /// member).
    Value(Value),
    /// The path and everything below it was removed (a tombstone).
    Removed,
    /// The path is an object (a merge patch made it one if it was not); what is below stays.
    Object,
}

/// One path set or removed at one stamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Where, inside the thing.
    pub path: Pointer,
    /// What.
    pub cell: Cell,
    /// When and by whom.
    pub stamp: Stamp,
}

/// What one path holds: the newest replacing change (value or removal), which hides older
/// changes below it, and the newest "is an object" mark of merges, which hides nothing.
#[derive(Debug, Clone, Default, PartialEq)]
struct Slot {
    replace: Option<(Stamp, Cell)>,
    object: Option<Stamp>,
}

/// The per-path last-writer-wins state of one thing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replica {
    slots: BTreeMap<Pointer, Slot>,
}

impl Replica {
    /// An empty replica (a thing nobody wrote yet).
    pub fn new() -> Self {
        Replica::default()
    }

    /// Applies one change if it is newer than what the path holds and not hidden by a newer
    /// value or removal at an ancestor. Returns whether the state changed (false for
    /// duplicates, for changes that lost, and for changes that could never be visible).
    ///
    /// Equal stamps are the same change (a clock never gives one stamp to two different
    /// changes of one path), so they are duplicates whatever the cell says. A replacing change
    /// drops what it hides below it, so the state holds no dead entries.
    pub fn apply(&mut self, change: Change) -> bool {
        if self.hidden(&change.path, &change.stamp) {
            return false;
        }
        let Change { path, cell, stamp } = change;
        let slot = match self.slots.get_mut(&path) {
            Some(slot) => slot,
            None => self.slots.entry(path.clone()).or_default(),
        };
        match cell {
            Cell::Object => {
                if slot.object.as_ref().is_some_and(|o| *o >= stamp) {
                    return false;
                }
                slot.object = Some(stamp);
            }
            cell => {
                if slot.replace.as_ref().is_some_and(|(s, _)| *s >= stamp) {
                    return false;
                }
                slot.replace = Some((stamp.clone(), cell));
                self.drop_hidden_below(&path, &stamp);
            }
        }
        true
    }

    /// Forgets what a replacing change at `path` stamped `stamp` hides below it.
    fn drop_hidden_below(&mut self, path: &Pointer, stamp: &Stamp) {
        let below: Vec<Pointer> = self
            .slots
            .range(path.clone()..)
            .skip(1)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            let Some(slot) = self.slots.get_mut(&p) else {
                continue;
            };
            if slot.replace.as_ref().is_some_and(|(s, _)| s < stamp) {
                slot.replace = None;
            }
            if slot.object.as_ref().is_some_and(|s| s < stamp) {
                slot.object = None;
            }
            if slot.replace.is_none() && slot.object.is_none() {
                self.slots.remove(&p);
            }
        }
    }

    /// Whether the value or removal that decides `path` (at the path, or else at the nearest
    /// ancestor holding one) was written by `origin`.
    pub fn written_by(&self, path: &Pointer, origin: &str) -> bool {
        let segments = path.segments();
        (0..=segments.len())
            .rev()
            .find_map(|n| match self.slots.get(&segments[..n]) {
                Some(Slot {
                    replace: Some((stamp, _)),
                    ..
                }) => Some(&*stamp.origin == origin),
                _ => None,
            })
            .unwrap_or(false)
    }

    /// Whether applying `change` would change the state (without applying it).
    pub fn would_take(&self, change: &Change) -> bool {
        if self.hidden(&change.path, &change.stamp) {
            return false;
        }
        let slot = self.slots.get(&change.path);
        match change.cell {
            Cell::Object => slot
                .and_then(|s| s.object.as_ref())
                .is_none_or(|o| *o < change.stamp),
            _ => slot
                .and_then(|s| s.replace.as_ref())
                .is_none_or(|(s, _)| *s < change.stamp),
        }
    }

    /// Whether nothing was ever written.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Number of paths with a stamp.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every change the state holds, parents before children: what a peer needs to catch up.
    pub fn changes(&self) -> impl Iterator<Item = Change> + '_ {
        self.slots.iter().flat_map(|(path, slot)| {
            let replace = slot.replace.as_ref().map(|(s, c)| Change {
                path: path.clone(),
                cell: c.clone(),
                stamp: s.clone(),
            });
            let object = slot.object.as_ref().map(|s| Change {
                path: path.clone(),
                cell: Cell::Object,
                stamp: s.clone(),
            });
            replace.into_iter().chain(object)
        })
    }

    /// The greatest stamp held, if any.
    pub fn latest(&self) -> Option<&Stamp> {
        self.slots
            .values()
            .flat_map(|s| {
                s.replace
                    .as_ref()
                    .map(|(s, _)| s)
                    .into_iter()
                    .chain(s.object.as_ref())
            })
            .max()
    }

    /// Whether something stamped `stamp` at `path` is hidden by a newer value or removal at an
    /// ancestor.
    fn hidden(&self, path: &Pointer, stamp: &Stamp) -> bool {
        let segments = path.segments();
        (0..segments.len()).any(|n| {
            matches!(
                self.slots.get(&segments[..n]),
                Some(Slot { replace: Some((s, _)), .. }) if s > stamp
            )
        })
    }

    /// The JSON this state stands for (`Value::Null` if nothing is visible).
    pub fn materialize(&self) -> Value {
        let mut out = Value::Null;
        for (path, slot) in &self.slots {
            let replace = slot.replace.as_ref().filter(|(s, _)| !self.hidden(path, s));
            let object = slot.object.as_ref().filter(|o| !self.hidden(path, o));
            let is_object = match (object, replace) {
                (Some(o), Some((r, _))) => o > r,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let value = if is_object {
                match path.get(&out) {
                    Some(Value::Object(_)) => continue,
                    _ => Value::Object(Map::new()),
                }
            } else {
                match replace {
                    Some((_, Cell::Value(v))) => v.clone(),
                    _ => continue,
                }
            };
            if path.is_root() {
                out = value;
            } else {
                path.set(&mut out, value);
            }
        }
        out
    }
}

/// The changes of putting `value` at `path` (a modify): the path is replaced as a whole.
pub fn changes_for_modify(path: &Pointer, value: &Value, stamp: &Stamp) -> Vec<Change> {
    let mut out = ancestors_are_objects(path, stamp);
    decompose(path, value, stamp, &mut out);
    out
}

/// Writing below the root makes every ancestor an object (creating it if missing), as
/// [`Pointer::set`] does; the marks keep those objects when their members are removed later.
fn ancestors_are_objects(path: &Pointer, stamp: &Stamp) -> Vec<Change> {
    let mut marks = Vec::with_capacity(path.len() + 4);
    let mut ancestor = path.parent();
    while let Some(p) = ancestor {
        ancestor = p.parent();
        marks.push(Change {
            path: p,
            cell: Cell::Object,
            stamp: stamp.clone(),
        });
    }
    marks.reverse();
    marks
}

fn decompose(path: &Pointer, value: &Value, stamp: &Stamp, out: &mut Vec<Change>) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push(change(path, Cell::Value(Value::Object(Map::new())), stamp));
            for (k, v) in m {
                decompose(&path.child(k), v, stamp, out);
            }
        }
        _ => out.push(change(path, Cell::Value(value.clone()), stamp)),
    }
}

/// The changes of merging `patch` at `path` (RFC 7396): an object patch marks the path as an
/// object and merges its members, `null` removes, anything else replaces.
pub fn changes_for_merge(path: &Pointer, patch: &Value, stamp: &Stamp) -> Vec<Change> {
    // Merging `null` removes without creating anything on the way.
    let mut out = if patch.is_null() {
        Vec::new()
    } else {
        ancestors_are_objects(path, stamp)
    };
    merge_changes(path, patch, stamp, &mut out);
    out
}

fn merge_changes(path: &Pointer, patch: &Value, stamp: &Stamp, out: &mut Vec<Change>) {
    match patch {
        Value::Null => out.push(change(path, Cell::Removed, stamp)),
        Value::Object(m) => {
            out.push(change(path, Cell::Object, stamp));
            for (k, v) in m {
                merge_changes(&path.child(k), v, stamp, out);
            }
        }
        _ => out.push(change(path, Cell::Value(patch.clone()), stamp)),
    }
}

/// The change of deleting `path`.
pub fn change_for_delete(path: &Pointer, stamp: &Stamp) -> Change {
    change(path, Cell::Removed, stamp)
}

fn change(path: &Pointer, cell: Cell, stamp: &Stamp) -> Change {
    Change {
        path: path.clone(),
        cell,
        stamp: stamp.clone(),
    }
}

#[cfg(test)]
mod tests;
