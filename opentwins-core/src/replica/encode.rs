//! How a replica's clocks are written down: in a thing's stored record (`_clocks`, values taken
//! from the thing itself) and on links (a merge patch plus the clocks of its paths).
//!
//! The clocks are a JSON object from path to what the path holds: `v{stamp}` (a value),
//! `r{stamp}` (a removal), `o{stamp}` (an "is an object" mark), or a value/removal and a mark
//! separated by a space, e.g. `{"/features/lane/properties/offset": "v1764080000000.3@edge-1"}`.
//!
//! Links send the compact form ([`Replica::compact_clocks`]): the same object, but each stamp is
//! written relative to one base per message and without its instance when that is the
//! message's origin (`v3` is `{base + 3}.0@{origin}`, `o0.2@hub` is `{base}.2@hub`), and an "is
//! an object" mark is left out where it is implied: an ancestor of written paths whose mark is
//! the newest stamp below it, which is what writing below a path gives it. An ancestor of
//! written paths that has no clock at all is written as `""`, so nothing is implied there.
//!
//! Values are not in the clocks: a value cell's value is read from the JSON it stands beside
//! (the thing body, or the link's patch). A value cell never holds a non-empty object (a
//! non-empty object is written as `{}` plus its members), so an object found there reads as
//! `{}`. A value that is not visible any more cannot become visible again (the stamps that
//! hide it only grow), so reading it as `null` when the JSON no longer has it is exact.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Cell, Replica, Slot, Stamp};
use crate::error::{Error, Result};
use crate::model::Pointer;

/// One path's clock as written in the clocks JSON (`v…`, `r…`, `o…`, or both separated by a
/// space).
struct SlotText<'a>(&'a Slot);

impl std::fmt::Display for SlotText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((stamp, cell)) = &self.0.replace {
            let kind = if matches!(cell, Cell::Removed) {
                'r'
            } else {
                'v'
            };
            write!(f, "{kind}{stamp}")?;
            if self.0.object.is_some() {
                f.write_str(" ")?;
            }
        }
        if let Some(stamp) = &self.0.object {
            write!(f, "o{stamp}")?;
        }
        Ok(())
    }
}

/// Serialises [`Replica::clocks_json`] without building it (for stores).
pub struct ClocksJson<'a>(pub &'a Replica);

impl serde::Serialize for ClocksJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Text<T>(T);
        impl<T: std::fmt::Display> serde::Serialize for Text<T> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }
        let mut m = s.serialize_map(Some(self.0.slots.len()))?;
        for (path, slot) in &self.0.slots {
            m.serialize_entry(&Text(path), &Text(SlotText(slot)))?;
        }
        m.end()
    }
}

/// A stamp in the compact form: relative to `base`, without its instance if it is `origin`.
struct CompactStamp<'a> {
    stamp: &'a Stamp,
    base: u64,
    origin: &'a str,
}

impl std::fmt::Display for CompactStamp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.stamp.wall_ms - self.base)?;
        if self.stamp.counter != 0 {
            write!(f, ".{}", self.stamp.counter)?;
        }
        if *self.stamp.origin != *self.origin {
            write!(f, "@{}", self.stamp.origin)?;
        }
        Ok(())
    }
}

fn parse_compact_stamp(s: &str, base: u64, origin: &Arc<str>) -> Result<Stamp> {
    let invalid = || {
        Error::field_invalid(format!(
            "'{s}' is not a compact clock stamp like '3', '3.1' or '3.1@hub'."
        ))
    };
    let (time, instance) = match s.split_once('@') {
        Some((time, instance)) if super::valid_instance(instance) => (time, Arc::from(instance)),
        Some(_) => return Err(invalid()),
        None => (s, origin.clone()),
    };
    let (delta, counter) = time.split_once('.').unwrap_or((time, "0"));
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(delta) || !digits(counter) {
        return Err(invalid());
    }
    let delta: u64 = delta.parse().map_err(|_| invalid())?;
    Ok(Stamp {
        wall_ms: base.checked_add(delta).ok_or_else(invalid)?,
        counter: counter.parse().map_err(|_| invalid())?,
        origin: instance,
    })
}

pub(super) fn slot_stamps(slot: &Slot) -> impl Iterator<Item = &Stamp> {
    slot.replace
        .as_ref()
        .map(|(s, _)| s)
        .into_iter()
        .chain(&slot.object)
}

impl Replica {
    /// The clocks in the compact form links send (see the module docs), with the base its
    /// stamps are relative to (the oldest wall time; 0 when there are no stamps).
    pub fn compact_clocks(&self, origin: &str) -> (u64, Value) {
        let base = self.oldest_wall().unwrap_or(0);
        let compact = |stamp| CompactStamp {
            stamp,
            base,
            origin,
        };
        let mut out = Map::with_capacity(self.slots.len());
        // Ancestors of written paths without a clock of their own: "" (nothing implied).
        let bare = self.bare_ancestors();
        for (path, slot) in &self.slots {
            if self.implied(path, slot) {
                continue;
            }
            let mut text = String::new();
            if let Some((stamp, cell)) = &slot.replace {
                let kind = if matches!(cell, Cell::Removed) {
                    'r'
                } else {
                    'v'
                };
                text = format!("{kind}{}", compact(stamp));
            }
            if let Some(stamp) = &slot.object {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(&format!("o{}", compact(stamp)));
            }
            out.insert(path.to_string(), Value::String(text));
        }
        for path in bare {
            out.insert(path.to_string(), Value::String(String::new()));
        }
        (base, Value::Object(out))
    }

    /// The oldest wall time of any stamp.
    pub(super) fn oldest_wall(&self) -> Option<u64> {
        self.slots
            .values()
            .flat_map(slot_stamps)
            .map(|s| s.wall_ms)
            .min()
    }

    /// Whether the compact forms leave `path`'s `slot` out: only an "is an object" mark, and
    /// the newest stamp below the path ([`Replica::add_implied_marks`] gives it back).
    pub(super) fn implied(&self, path: &Pointer, slot: &Slot) -> bool {
        slot.replace.is_none()
            && slot.object.as_ref().is_some_and(|mark| {
                self.slots
                    .range::<Pointer, _>((Bound::Excluded(path), Bound::Unbounded))
                    .take_while(|(p, _)| p.starts_with(path))
                    .flat_map(|(_, s)| slot_stamps(s))
                    .max()
                    == Some(mark)
            })
    }

    /// The ancestors of written paths that have no slot (the compact forms write them as
    /// such, so no mark is implied there).
    pub(super) fn bare_ancestors(&self) -> BTreeSet<Pointer> {
        let mut bare = BTreeSet::new();
        for path in self.slots.keys() {
            let mut up = path.parent();
            while let Some(p) = up {
                if self.slots.contains_key(&p) || !bare.insert(p.clone()) {
                    break;
                }
                up = p.parent();
            }
        }
        bare
    }

    /// Gives back the marks [`Replica::implied`] left out: each ancestor of a written path
    /// that has no slot and is not in `bare` gets the newest stamp below it.
    pub(super) fn add_implied_marks(&mut self, bare: &BTreeSet<Pointer>) -> Result<()> {
        let mut implied: BTreeMap<Pointer, Stamp> = BTreeMap::new();
        for (path, slot) in &self.slots {
            let Some(newest) = slot_stamps(slot).max() else {
                continue;
            };
            let segments = path.segments();
            for up in (0..segments.len()).rev().map(|n| &segments[..n]) {
                if self.slots.contains_key(up) || bare.contains(up) {
                    continue;
                }
                match implied.get_mut(up) {
                    Some(mark) if *mark < *newest => *mark = newest.clone(),
                    Some(_) => {}
                    None => {
                        implied.insert(Pointer::from_segments(up.to_vec())?, newest.clone());
                    }
                }
            }
        }
        for (path, mark) in implied {
            self.slots.insert(
                path,
                Slot {
                    replace: None,
                    object: Some(mark),
                },
            );
        }
        Ok(())
    }

    /// Rebuilds a replica from [`Replica::compact_clocks`] (its stamps relative to `base`,
    /// `origin` where they name no instance), reading value cells from `extra` (by path) or
    /// else from `values`.
    pub fn from_compact_clocks(
        clocks: &Value,
        base: u64,
        origin: &Arc<str>,
        values: &Value,
        extra: &Map<String, Value>,
    ) -> Result<Replica> {
        let stamp = |s: &str| parse_compact_stamp(s, base, origin);
        let (mut replica, bare) = read_clocks(clocks, values, extra, stamp, true)?;
        replica.add_implied_marks(&bare)?;
        Ok(replica)
    }

    /// The clocks of every path, without values.
    pub fn clocks_json(&self) -> Value {
        let mut out = Map::with_capacity(self.slots.len());
        for (path, slot) in &self.slots {
            out.insert(path.to_string(), Value::String(SlotText(slot).to_string()));
        }
        Value::Object(out)
    }

    /// Rebuilds a replica from [`Replica::clocks_json`], reading value cells from `extra` (by
    /// path) or else from `values`.
    pub fn from_clocks(
        clocks: &Value,
        values: &Value,
        extra: &Map<String, Value>,
    ) -> Result<Replica> {
        read_clocks(clocks, values, extra, Stamp::parse, false).map(|(replica, _)| replica)
    }

    /// Forgets the values of value cells (they are read back from the body with
    /// [`Replica::fill_values`]), so a thing does not hold its values twice.
    pub fn strip_values(&mut self) {
        for slot in self.slots.values_mut() {
            if let Some((_, cell @ Cell::Value(_))) = &mut slot.replace {
                *cell = Cell::Value(Value::Null);
            }
        }
    }

    /// Reads the values of value cells from `body`, the JSON this replica stands for.
    pub fn fill_values(&mut self, body: &Value) {
        for (path, slot) in &mut self.slots {
            if let Some((_, cell @ Cell::Value(_))) = &mut slot.replace {
                *cell = Cell::Value(value_at(path, body));
            }
        }
    }

    /// The values of this replica's value cells as a merge patch (with `null` where it
    /// removes), plus the values the patch cannot hold (a value under a path the patch holds
    /// as a scalar, or a value hidden by a newer "is an object" mark), keyed by path. Sent
    /// beside [`Replica::clocks_json`]; a peer that ignores the clocks still gets a sensible
    /// merge, and [`Replica::from_clocks`] with both gets every value back exactly.
    pub fn patch(&self) -> (Value, Map<String, Value>) {
        let mut patch = Value::Null;
        let mut extra = Map::new();
        // Whether the root holds something (a `null` patch may also mean "nothing yet").
        let mut root_set = false;
        for (path, slot) in &self.slots {
            let object_wins = match (&slot.object, &slot.replace) {
                (Some(o), Some((r, _))) => o > r,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let value = match &slot.replace {
                _ if object_wins => {
                    if let Some((_, Cell::Value(v))) = &slot.replace
                        && !is_empty_object(v)
                    {
                        extra.insert(path.to_string(), v.clone());
                    }
                    match path.get(&patch) {
                        Some(Value::Object(_)) => continue,
                        _ => Value::Object(Map::new()),
                    }
                }
                Some((_, Cell::Value(v))) => v.clone(),
                Some((_, Cell::Removed)) if path.get(&patch).is_none() => Value::Null,
                _ => continue,
            };
            if path.is_root() {
                patch = value;
                root_set = true;
            } else if (!root_set && patch.is_null()) || parent_is_object(path, &patch) {
                path.set(&mut patch, value);
            } else if !object_wins && matches!(&slot.replace, Some((_, Cell::Value(_)))) {
                extra.insert(path.to_string(), value);
            }
        }
        (patch, extra)
    }
}

/// The entries of a clocks object, stamps read by `stamp`; with `bare`, an empty clock text is
/// an ancestor without clocks (returned apart), else an error.
fn read_clocks(
    clocks: &Value,
    values: &Value,
    extra: &Map<String, Value>,
    stamp: impl Fn(&str) -> Result<Stamp>,
    bare: bool,
) -> Result<(Replica, BTreeSet<Pointer>)> {
    let Value::Object(map) = clocks else {
        return Err(Error::field_invalid("The clocks must be a JSON object."));
    };
    let mut replica = Replica::new();
    let mut bare_paths = BTreeSet::new();
    for (path, spec) in map {
        let (pointer, spec) = clock_entry(path, spec)?;
        if bare && spec.is_empty() {
            bare_paths.insert(pointer);
            continue;
        }
        let slot = parse_slot(spec, path, &pointer, values, extra, &stamp)?;
        replica.slots.insert(pointer, slot);
    }
    Ok((replica, bare_paths))
}

/// One entry of a clocks object: its path and its clock text.
fn clock_entry<'a>(path: &str, spec: &'a Value) -> Result<(Pointer, &'a str)> {
    if !path.starts_with('/') {
        return Err(Error::field_invalid(format!(
            "The clock path '{path}' must start with '/'."
        )));
    }
    let pointer = Pointer::parse(path)?;
    let spec = spec
        .as_str()
        .ok_or_else(|| Error::field_invalid(format!("The clock of '{path}' must be a string.")))?;
    Ok((pointer, spec))
}

/// A path's clock text (`v…`, `r…`, `o…`, or a value/removal and a mark), its stamps read by
/// `stamp`; value cells read from `extra` or else from `values`.
fn parse_slot(
    spec: &str,
    path: &str,
    pointer: &Pointer,
    values: &Value,
    extra: &Map<String, Value>,
    stamp: impl Fn(&str) -> Result<Stamp>,
) -> Result<Slot> {
    let mut slot = Slot::default();
    for part in spec.split(' ') {
        let (kind, text) = part.split_at(part.chars().next().map_or(0, char::len_utf8));
        let stamp = stamp(text)?;
        match kind {
            "v" => {
                let value = match extra.get(path) {
                    Some(v) => v.clone(),
                    None => value_at(pointer, values),
                };
                slot.replace = Some((stamp, Cell::Value(value)));
            }
            "r" => slot.replace = Some((stamp, Cell::Removed)),
            "o" => slot.object = Some(stamp),
            _ => {
                return Err(Error::field_invalid(format!(
                    "The clock '{part}' of '{path}' must start with v, r or o."
                )));
            }
        }
    }
    Ok(slot)
}

fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty)
}

/// Whether `path` can be set in `patch` without replacing a value on the way (missing
/// ancestors are created as objects).
fn parent_is_object(path: &Pointer, patch: &Value) -> bool {
    let mut node = patch;
    for seg in &path.segments()[..path.len() - 1] {
        match node {
            Value::Object(m) => match m.get(seg) {
                Some(next) => node = next,
                None => return true,
            },
            _ => return false,
        }
    }
    node.is_object()
}

fn value_at(path: &Pointer, values: &Value) -> Value {
    match path.get(values) {
        Some(Value::Object(_)) => Value::Object(Map::new()),
        Some(v) => v.clone(),
        None => Value::Null,
    }
}
