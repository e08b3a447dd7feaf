//! How a replica's clocks are written down: in a thing's stored record (`_clocks`, values taken
//! from the thing itself) and on links (a merge patch plus the clocks of its paths).
//!
//! The clocks are a JSON object from path to what the path holds: `v{stamp}` (a value),
//! `r{stamp}` (a removal), `o{stamp}` (an "is an object" mark), or a value/removal and a mark
//! separated by a space, e.g. `{"/features/lane/properties/offset": "v1764080000000.3@edge-1"}`.
//!
//! Values are not in the clocks: a value cell's value is read from the JSON it stands beside
//! (the thing body, or the link's patch). A value cell never holds a non-empty object (a
//! non-empty object is written as `{}` plus its members), so an object found there reads as
//! `{}`. A value that is not visible any more cannot become visible again (the stamps that
//! hide it only grow), so reading it as `null` when the JSON no longer has it is exact.

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

impl Replica {
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
        let Value::Object(map) = clocks else {
            return Err(Error::field_invalid("The clocks must be a JSON object."));
        };
        let mut replica = Replica::new();
        for (path, spec) in map {
            if !path.starts_with('/') {
                return Err(Error::field_invalid(format!(
                    "The clock path '{path}' must start with '/'."
                )));
            }
            let pointer = Pointer::parse(path)?;
            let spec = spec.as_str().ok_or_else(|| {
                Error::field_invalid(format!("The clock of '{path}' must be a string."))
            })?;
            let mut slot = Slot::default();
            for part in spec.split(' ') {
                let (kind, stamp) = part.split_at(part.chars().next().map_or(0, char::len_utf8));
                let stamp = Stamp::parse(stamp)?;
                match kind {
                    "v" => {
                        let value = match extra.get(path) {
                            Some(v) => v.clone(),
                            None => value_at(&pointer, values),
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
            replica.slots.insert(pointer, slot);
        }
        Ok(replica)
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
