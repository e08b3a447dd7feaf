//! Path patterns: JSON pointers whose segments may be `*` (any one key), used to name parts of
//! things in configuration (transient paths, link selections, recorded history).

use std::fmt;

use serde_json::Value;

use super::Pointer;
use crate::error::{Error, Result};

/// A pointer whose segments may be `*`, e.g. `/features/*/properties/frame`.
#[derive(Clone, PartialEq, Eq)]
pub struct PathPattern(Vec<String>);

impl PathPattern {
    /// Parses a pattern (a JSON pointer; a segment `*` matches any key).
    pub fn parse(s: &str) -> Result<PathPattern> {
        let p = Pointer::parse(s)
            .map_err(|e| Error::field_invalid(format!("'{s}' is not a path pattern: {e}")))?;
        Ok(PathPattern(p.segments().to_vec()))
    }

    /// Whether the pattern is `/` (names everything).
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `path` is at or below what the pattern names.
    pub fn covers(&self, path: &Pointer) -> bool {
        let segs = path.segments();
        segs.len() >= self.0.len() && self.matches_prefix(segs)
    }

    /// Whether `path` is strictly above something the pattern names.
    pub fn is_below(&self, path: &Pointer) -> bool {
        let segs = path.segments();
        segs.len() < self.0.len() && self.matches_prefix(segs)
    }

    fn matches_prefix(&self, segs: &[String]) -> bool {
        self.0.iter().zip(segs).all(|(p, s)| p == "*" || p == s)
    }

    /// Removes from `value`, the value found at `base`, everything the pattern names below it.
    /// With `prune`, objects left empty by a removal are removed too (never `value` itself).
    /// Returns whether anything was removed. Nothing happens unless `base` is strictly above
    /// what the pattern names.
    pub fn remove_below(&self, base: &Pointer, value: &mut Value, prune: bool) -> bool {
        if !self.is_below(base) {
            return false;
        }
        remove_rest(&self.0[base.len()..], value, prune)
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
        if self.0.is_empty() {
            return f.write_str("/");
        }
        for s in &self.0 {
            write!(f, "/{}", s.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({self})")
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
    fn wildcards_match_one_segment() {
        let pat = PathPattern::parse("/features/*/properties/frame").unwrap();
        assert!(pat.covers(&p("/features/cam/properties/frame")));
        assert!(pat.covers(&p("/features/cam/properties/frame/data")));
        assert!(!pat.covers(&p("/features/cam/properties")));
        assert!(!pat.covers(&p("/features/cam/properties/seq")));
        assert!(pat.is_below(&p("/features/cam")));
        assert!(pat.is_below(&p("/")));
        assert!(!pat.is_below(&p("/attributes")));
        assert!(!pat.is_below(&p("/features/cam/properties/frame")));
        assert_eq!(pat.to_string(), "/features/*/properties/frame");
        assert!(PathPattern::parse("/features//x").is_err());
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
