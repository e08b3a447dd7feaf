//! Path patterns: JSON pointers whose segments may be `*` (any one key), naming a set of
//! subtrees of a thing: `/features/*/properties` names the properties of every feature.
//!
//! A pattern *covers* a path at or below what it names, and lies *below* a path that is a
//! proper prefix of something it names (so a walk down a thing knows which subtrees to enter).
//! A literal key `*` cannot be told apart from the wildcard.

use std::fmt;

use serde_json::Value;

use super::Pointer;
use crate::error::Result;

/// A JSON pointer whose segments may be `*`, which matches any one key.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct PathPattern {
    segments: Vec<String>,
}

impl PathPattern {
    /// Parses `/features/*/properties` with the rules of [`Pointer::parse`] (no empty
    /// segments, no control characters); `/` names the whole thing.
    pub fn parse(s: &str) -> Result<Self> {
        let p = Pointer::parse(s)?;
        Ok(PathPattern {
            segments: p.segments().to_vec(),
        })
    }

    /// The segments, `*` standing for any key.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Whether the first `n` segments of the pattern match the first `n` keys of `path`.
    fn prefix_matches(&self, path: &Pointer, n: usize) -> bool {
        self.segments
            .iter()
            .zip(path.segments())
            .take(n)
            .all(|(p, s)| p == "*" || p == s)
    }

    /// Whether `path` is at or below what the pattern names.
    pub fn covers(&self, path: &Pointer) -> bool {
        path.len() >= self.segments.len() && self.prefix_matches(path, self.segments.len())
    }

    /// Whether `path` is strictly above something the pattern names (the pattern lies below
    /// `path`): a walk down from `path` may still reach covered paths.
    pub fn is_below(&self, path: &Pointer) -> bool {
        path.len() < self.segments.len() && self.prefix_matches(path, path.len())
    }

    /// Whether the pattern is `/` (names everything).
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// Removes from `value`, the value found at `base`, everything the pattern names below it.
    /// With `prune`, objects left empty by a removal are removed too (never `value` itself).
    /// Returns whether anything was removed. Nothing happens unless `base` is strictly above
    /// what the pattern names.
    pub fn remove_below(&self, base: &Pointer, value: &mut Value, prune: bool) -> bool {
        if !self.is_below(base) {
            return false;
        }
        remove_rest(&self.segments[base.len()..], value, prune)
    }
}

/// Removes what `rest` names inside `value`; with `prune`, drops objects it leaves empty.
fn remove_rest(rest: &[String], value: &mut Value, prune: bool) -> bool {
    let Value::Object(map) = value else {
        return false;
    };
    let (first, tail) = match rest {
        [] => return false,
        [first, tail @ ..] => (first, tail),
    };
    if tail.is_empty() {
        return if first == "*" {
            let any = !map.is_empty();
            map.clear();
            any
        } else {
            map.shift_remove(first).is_some()
        };
    }
    let mut removed = false;
    let mut emptied = Vec::new();
    for (key, child) in map.iter_mut() {
        if (first == "*" || first == key) && remove_rest(tail, child, prune) {
            removed = true;
            if prune && child.as_object().is_some_and(|m| m.is_empty()) {
                emptied.push(key.clone());
            }
        }
    }
    for key in emptied {
        map.shift_remove(&key);
    }
    removed
}

impl fmt::Display for PathPattern {
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

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({self})")
    }
}

impl std::str::FromStr for PathPattern {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> Result<Self> {
        PathPattern::parse(s)
    }
}

impl serde::Serialize for PathPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PathPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        PathPattern::parse(&s).map_err(|e| {
            serde::de::Error::custom(format!("'{s}' is not a path pattern: {}", e.message()))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(s: &str) -> Pointer {
        Pointer::parse(s).unwrap()
    }

    #[test]
    fn covers_and_is_below() {
        let pat = PathPattern::parse("/features/*/properties").unwrap();
        assert_eq!(pat.to_string(), "/features/*/properties");
        assert!(pat.covers(&p("/features/lane/properties")));
        assert!(pat.covers(&p("/features/lane/properties/offset/x")));
        assert!(!pat.covers(&p("/features/lane/desiredProperties/offset")));
        assert!(!pat.covers(&p("/features/lane")));
        assert!(!pat.covers(&p("/attributes/lane/properties")));

        assert!(pat.is_below(&p("/")));
        assert!(pat.is_below(&p("/features")));
        assert!(pat.is_below(&p("/features/lane")));
        assert!(!pat.is_below(&p("/features/lane/properties")), "covered");
        assert!(!pat.is_below(&p("/attributes")));
        assert!(!pat.is_below(&p("/features/lane/definition")));

        let root = PathPattern::parse("/").unwrap();
        assert!(root.covers(&p("/")));
        assert!(root.covers(&p("/a/b")));
        assert!(!root.is_below(&p("/")));
    }

    #[test]
    fn parse_rejects_what_pointers_reject_and_round_trips_through_serde() {
        for bad in ["/a//b", "/a/", "/a/\u{1}"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        let pat: PathPattern = serde_json::from_str("\"/features/*/properties/x\"").unwrap();
        assert_eq!(
            serde_json::to_string(&pat).unwrap(),
            "\"/features/*/properties/x\""
        );
        let err = serde_json::from_str::<PathPattern>("\"/a//b\"").unwrap_err();
        assert!(err.to_string().contains("is not a path pattern"), "{err}");
    }

    #[test]
    fn removal_below_a_base_prunes_only_what_it_emptied() {
        let pat = PathPattern::parse("/features/*/properties/frame").unwrap();
        let mut v = json!({
            "features": {
                "cam": {"properties": {"frame": "AAA", "seq": 1}},
                "cam2": {"properties": {"frame": "BBB"}},
                "lane": {"properties": {}}
            }
        });
        assert!(pat.remove_below(&p("/"), &mut v, true));
        assert_eq!(
            v,
            json!({"features": {"cam": {"properties": {"seq": 1}}, "lane": {"properties": {}}}})
        );
        // Without pruning, the emptied objects stay.
        let mut v = json!({"properties": {"frame": "BBB"}});
        assert!(pat.remove_below(&p("/features/cam2"), &mut v, false));
        assert_eq!(v, json!({"properties": {}}));
        // A base at or below the pattern, or beside it: nothing to do.
        let mut v = json!("AAA");
        assert!(!pat.remove_below(&p("/features/cam/properties/frame"), &mut v, true));
        let mut v = json!({"frame": 1});
        assert!(!pat.remove_below(&p("/attributes"), &mut v, true));
        assert_eq!(v, json!({"frame": 1}));
    }

    #[test]
    fn a_trailing_wildcard_empties_the_object() {
        let pat = PathPattern::parse("/features/raw/properties/*").unwrap();
        let mut v = json!({"raw": {"properties": {"a": 1, "b": 2}}, "x": {}});
        assert!(pat.remove_below(&p("/features"), &mut v, true));
        assert_eq!(v, json!({"x": {}}));
    }
}
