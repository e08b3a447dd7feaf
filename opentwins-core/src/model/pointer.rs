//! Paths inside a thing, Ditto style: `/features/lane/properties/offset`.
//!
//! Ditto's JSON pointers have no escaping: keys cannot contain `/`, and empty segments are
//! invalid. `/` (or the empty string) is the root.

use std::fmt;

use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result, excerpt};
use crate::limits::Limits;

/// A parsed path: a list of non-empty keys.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Pointer {
    segments: Vec<String>,
}

impl Pointer {
    /// The root pointer `/`.
    pub fn root() -> Self {
        Pointer::default()
    }

    /// Parses `/a/b/c` (the leading `/` is optional). `/` and `""` are the root.
    /// Empty segments (`/a//b`, `/a/`), control characters and more keys than
    /// [`Limits::max_pointer_segments`] are rejected.
    pub fn parse(s: &str) -> Result<Self> {
        let body = s.strip_prefix('/').unwrap_or(s);
        if body.is_empty() {
            return Ok(Pointer::root());
        }
        let count = body.bytes().filter(|&b| b == b'/').count() + 1;
        let max = Limits::get().max_pointer_segments;
        if count > max {
            return Err(Error::new(
                ErrorKind::PointerInvalid,
                format!(
                    "The JSON pointer '{}' is not valid: it has {count} keys, at most {max} are accepted.",
                    excerpt(s)
                ),
            ));
        }
        let mut segments = Vec::with_capacity(count);
        for seg in body.split('/') {
            if seg.is_empty() {
                return Err(Error::new(
                    ErrorKind::PointerInvalid,
                    format!(
                        "The JSON pointer '{}' is not valid: it contains an empty segment.",
                        excerpt(s)
                    ),
                )
                .with_description("Paths must not contain '//' nor end with '/'."));
            }
            if seg.chars().any(char::is_control) {
                return Err(Error::new(
                    ErrorKind::PointerInvalid,
                    format!(
                        "The JSON pointer '{}' contains a control character.",
                        excerpt(s).escape_debug()
                    ),
                ));
            }
            segments.push(seg.to_owned());
        }
        Ok(Pointer { segments })
    }

    /// Builds a pointer from keys, checking each as [`Pointer::parse`] would.
    pub fn from_segments<I, S>(segments: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let segments: Vec<String> = segments.into_iter().map(Into::into).collect();
        let max = Limits::get().max_pointer_segments;
        if segments.len() > max {
            return Err(Error::new(
                ErrorKind::PointerInvalid,
                format!(
                    "The JSON pointer has {} keys, at most {max} are accepted.",
                    segments.len()
                ),
            ));
        }
        for s in &segments {
            validate_key(s)?;
        }
        Ok(Pointer { segments })
    }

    /// The keys.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether this is the root (clippy's companion of `len`).
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// This pointer followed by `other`.
    pub fn join(&self, other: &Pointer) -> Pointer {
        let mut segments = self.segments.clone();
        segments.extend(other.segments.iter().cloned());
        Pointer { segments }
    }

    /// This pointer followed by one key (not validated).
    pub fn child(&self, key: &str) -> Pointer {
        let mut segments = self.segments.clone();
        segments.push(key.to_owned());
        Pointer { segments }
    }

    /// The pointer without its last key; `None` for the root.
    pub fn parent(&self) -> Option<Pointer> {
        let (_, rest) = self.segments.split_last()?;
        Some(Pointer {
            segments: rest.to_vec(),
        })
    }

    /// The last key.
    pub fn last(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &Pointer) -> bool {
        self.segments.starts_with(&other.segments)
    }

    /// The part of `self` after `prefix`, if `self` starts with it.
    pub fn strip_prefix(&self, prefix: &Pointer) -> Option<Pointer> {
        self.segments
            .strip_prefix(prefix.segments.as_slice())
            .map(|rest| Pointer {
                segments: rest.to_vec(),
            })
    }

    /// The value at this pointer.
    pub fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.segments
            .iter()
            .try_fold(value, |v, key| v.as_object()?.get(key))
    }

    /// The value at this pointer, mutably.
    pub fn get_mut<'a>(&self, value: &'a mut Value) -> Option<&'a mut Value> {
        self.segments
            .iter()
            .try_fold(value, |v, key| v.as_object_mut()?.get_mut(key))
    }

    /// Puts `new` at this pointer, creating intermediate objects (and replacing non-objects on the
    /// way). Returns the previous value. At the root, replaces the whole value.
    pub fn set(&self, target: &mut Value, new: Value) -> Option<Value> {
        let Some((last, parents)) = self.segments.split_last() else {
            return Some(std::mem::replace(target, new));
        };
        let mut cur = target;
        for key in parents {
            cur = object_mut(cur)
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        object_mut(cur).insert(last.clone(), new)
    }

    /// Removes the value at this pointer and returns it. The root cannot be removed.
    pub fn remove(&self, target: &mut Value) -> Option<Value> {
        let (last, parents) = self.segments.split_last()?;
        let mut cur = target;
        for key in parents {
            cur = cur.as_object_mut()?.get_mut(key)?;
        }
        cur.as_object_mut()?.shift_remove(last)
    }

    /// Wraps `value` in objects so that it sits at this pointer: `/a/b` + 1 → `{"a":{"b":1}}`.
    pub fn wrap(&self, value: Value) -> Value {
        self.segments.iter().rev().fold(value, |v, key| {
            let mut m = Map::new();
            m.insert(key.clone(), v);
            Value::Object(m)
        })
    }
}

/// Makes `v` an object if it is not one, and returns its map.
fn object_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// Checks one key of a JSON object addressed by pointers: non-empty, no `/`, no control chars.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.contains('/') || key.chars().any(char::is_control) {
        return Err(Error::new(
            ErrorKind::JsonFieldInvalid,
            format!(
                "The JSON key '{}' is not valid: keys must not be empty and must not contain '/' or control characters.",
                key.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// Lets ordered maps keyed by pointers be searched by a prefix of segments without allocating
/// (the derived order of `Pointer` is the order of its segment slice).
impl std::borrow::Borrow<[String]> for Pointer {
    fn borrow(&self) -> &[String] {
        &self.segments
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pointer({self})")
    }
}

impl std::str::FromStr for Pointer {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Pointer::parse(s)
    }
}

impl serde::Serialize for Pointer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Pointer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Pointer::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parse_and_display() {
        assert!(Pointer::parse("/").unwrap().is_root());
        assert!(Pointer::parse("").unwrap().is_root());
        let p = Pointer::parse("/features/lane/properties/offset").unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p.to_string(), "/features/lane/properties/offset");
        assert_eq!(
            Pointer::parse("attributes/x").unwrap().to_string(),
            "/attributes/x"
        );
        for bad in ["//", "/a//b", "/a/", "/a/\u{1}"] {
            assert_eq!(
                Pointer::parse(bad).unwrap_err().code(),
                "json.pointer.invalid",
                "{bad}"
            );
        }
    }

    // Finding 2 of issue 14: 10,000 keys made a write cost minutes of CPU and gigabytes.
    #[test]
    fn the_number_of_keys_is_bounded() {
        let max = Limits::get().max_pointer_segments;
        let path = |n: usize| "/a".repeat(n);
        assert_eq!(Pointer::parse(&path(max)).unwrap().len(), max);
        let e = Pointer::parse(&path(10_000)).unwrap_err();
        assert_eq!(e.code(), "json.pointer.invalid");
        assert!(e.message().len() < 300, "{e}");
        assert!(Pointer::parse(&path(max + 1)).is_err());
        assert!(Pointer::from_segments(vec!["a"; max + 1]).is_err());
    }

    #[test]
    fn get_set_remove() {
        let mut v = json!({"a": {"b": 1}, "c": 2});
        let p = Pointer::parse("/a/b").unwrap();
        assert_eq!(p.get(&v), Some(&json!(1)));
        assert_eq!(p.set(&mut v, json!(5)), Some(json!(1)));
        assert_eq!(Pointer::parse("/c/d").unwrap().set(&mut v, json!(3)), None);
        assert_eq!(v, json!({"a": {"b": 5}, "c": {"d": 3}}));
        assert_eq!(p.remove(&mut v), Some(json!(5)));
        assert_eq!(Pointer::parse("/x/y").unwrap().remove(&mut v), None);
        assert_eq!(v, json!({"a": {}, "c": {"d": 3}}));
        assert_eq!(
            Pointer::parse("/a/b").unwrap().wrap(json!(1)),
            json!({"a": {"b": 1}})
        );
    }
}
