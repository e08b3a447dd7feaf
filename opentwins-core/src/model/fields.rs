//! Field selection like Ditto's `fields` parameter:
//! `thingId,attributes/location,features/*/properties/speed` or `attributes(model,location)`.
//! `*` matches any key at its level (Ditto uses it for feature ids).

use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result, excerpt};
use crate::limits::Limits;

/// A parsed `fields` selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSelector {
    paths: Vec<Vec<String>>,
}

impl FieldSelector {
    /// Parses a selector; empty paths, unbalanced parentheses and empty segments are errors,
    /// and so is a selector beyond the [`Limits`] (parentheses nested deeper than
    /// `max_selector_depth`, more than `max_selector_paths` paths, a path with more than
    /// `max_pointer_segments` keys). The nesting is checked before anything recurses.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::new(
                ErrorKind::FieldSelectorInvalid,
                format!("The field selector '{}' is not valid: {why}.", excerpt(s)),
            )
            .with_description("Use comma-separated paths such as 'thingId,attributes/location,features/*/properties'.")
        };
        let limits = Limits::get();
        let depth = nesting(s).map_err(invalid)?;
        if depth > limits.max_selector_depth {
            return Err(invalid(&format!(
                "its parentheses nest {depth} deep, at most {} are accepted",
                limits.max_selector_depth
            )));
        }
        let mut paths = Vec::new();
        expand("", s, &mut paths, limits.max_selector_paths).map_err(invalid)?;
        let mut parsed = Vec::with_capacity(paths.len());
        for p in paths {
            let p = p.trim_matches('/');
            if p.is_empty() {
                return Err(invalid("it contains an empty path"));
            }
            let segs: Vec<String> = p.split('/').map(str::to_owned).collect();
            if segs.iter().any(String::is_empty) {
                return Err(invalid("a path contains an empty segment"));
            }
            if segs.len() > limits.max_pointer_segments {
                return Err(invalid(&format!(
                    "a path has {} keys, at most {} are accepted",
                    segs.len(),
                    limits.max_pointer_segments
                )));
            }
            parsed.push(segs);
        }
        Ok(FieldSelector { paths: parsed })
    }

    /// The selected paths (segments; `*` is a wildcard).
    pub fn paths(&self) -> &[Vec<String>] {
        &self.paths
    }

    /// Whether the selector names the top-level key `key` (or a path below it).
    pub fn selects_top(&self, key: &str) -> bool {
        self.paths.iter().any(|p| p[0] == key || p[0] == "*")
    }

    /// Keeps only the selected parts of `source` (an object). Missing paths are left out.
    pub fn apply(&self, source: &Value) -> Value {
        let mut out = Value::Object(Map::new());
        for path in &self.paths {
            copy_selected(source, path, &mut out);
        }
        out
    }
}

/// Copies the parts of `src` at `path` into `dst`, building the same structure. Branches that
/// hold nothing selected are not created.
fn copy_selected(src: &Value, path: &[String], dst: &mut Value) {
    let Some((head, rest)) = path.split_first() else {
        *dst = src.clone();
        return;
    };
    let Value::Object(src_map) = src else { return };
    let matches: Vec<(&String, &Value)> = if head == "*" {
        src_map.iter().collect()
    } else {
        src_map.get_key_value(head).into_iter().collect()
    };
    for (key, child) in matches {
        let existing = dst.as_object_mut().and_then(|m| m.shift_remove(key));
        let mut slot = existing.unwrap_or(Value::Null);
        copy_selected(child, rest, &mut slot);
        if !slot.is_null() || rest.is_empty() {
            if !dst.is_object() {
                *dst = Value::Object(Map::new());
            }
            if let Value::Object(m) = dst {
                m.insert(key.clone(), slot);
            }
        }
    }
}

/// The deepest nesting of parentheses in `s`, or why they do not balance.
fn nesting(s: &str) -> std::result::Result<usize, &'static str> {
    let (mut depth, mut deepest) = (0usize, 0);
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' => depth = depth.checked_sub(1).ok_or("it has an unbalanced ')'")?,
            _ => {}
        }
    }
    if depth != 0 {
        return Err("it has an unbalanced '('");
    }
    Ok(deepest)
}

/// Expands `a(b,c(d)),e` under `prefix` into full paths, at most `max` of them (recursion
/// follows the nesting, which the caller has bounded).
fn expand(
    prefix: &str,
    s: &str,
    out: &mut Vec<String>,
    max: usize,
) -> std::result::Result<(), &'static str> {
    for item in split_top(s)? {
        let item = item.trim();
        if item.is_empty() {
            return Err("it contains an empty path");
        }
        match item.find('(') {
            None if out.len() >= max => return Err("it selects too many paths"),
            None => out.push(join(prefix, item)),
            Some(open) => {
                if !item.ends_with(')') {
                    return Err("text follows a closing parenthesis");
                }
                let head = &item[..open];
                if head.trim().is_empty() {
                    return Err("a parenthesis has no path before it");
                }
                expand(
                    &join(prefix, head.trim()),
                    &item[open + 1..item.len() - 1],
                    out,
                    max,
                )?;
            }
        }
    }
    Ok(())
}

fn join(prefix: &str, p: &str) -> String {
    if prefix.is_empty() {
        p.to_owned()
    } else {
        format!("{}/{}", prefix, p.trim_start_matches('/'))
    }
}

/// Splits at commas that are not inside parentheses.
fn split_top(s: &str) -> std::result::Result<Vec<&str>, &'static str> {
    let (mut depth, mut start, mut parts) = (0usize, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("it has an unbalanced ')'")?,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("it has an unbalanced '('");
    }
    parts.push(&s[start..]);
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn thing() -> Value {
        json!({
            "thingId": "ns:car", "policyId": "ns:car",
            "attributes": {"location": {"lat": 1}, "model": "x", "other": 2},
            "features": {
                "gps": {"properties": {"speed": 3, "alt": 4}},
                "lane": {"properties": {"offset": 0.1}},
                "empty": {}
            },
            "_revision": 7
        })
    }

    #[test]
    fn selects_paths_and_wildcards() {
        let sel = FieldSelector::parse(
            "thingId,attributes/location,features/*/properties/speed,_revision",
        )
        .unwrap();
        assert_eq!(
            sel.apply(&thing()),
            json!({
                "thingId": "ns:car",
                "attributes": {"location": {"lat": 1}},
                "features": {"gps": {"properties": {"speed": 3}}},
                "_revision": 7
            })
        );
    }

    #[test]
    fn parentheses_expand() {
        let sel =
            FieldSelector::parse("attributes(model,location/lat),features/gps(properties/alt)")
                .unwrap();
        assert_eq!(
            sel.apply(&thing()),
            json!({
                "attributes": {"model": "x", "location": {"lat": 1}},
                "features": {"gps": {"properties": {"alt": 4}}}
            })
        );
        assert!(sel.selects_top("features"));
        assert!(!sel.selects_top("thingId"));
    }

    #[test]
    fn missing_paths_give_empty_object() {
        let sel = FieldSelector::parse("attributes/nothing").unwrap();
        assert_eq!(sel.apply(&thing()), json!({}));
    }

    #[test]
    fn invalid_selectors() {
        for bad in ["", ",", "a,,b", "a(b", "a)b", "(b)", "a(b)c", "a//b"] {
            let e = FieldSelector::parse(bad).unwrap_err();
            assert_eq!(e.code(), "json.fieldselector.invalid", "{bad}");
        }
    }

    // Finding 1 of issue 14: 15,000 nested parentheses overflowed a worker's stack.
    #[test]
    fn nesting_and_size_are_bounded_before_recursing() {
        let deep = |n: usize| format!("{}b{}", "a(".repeat(n), ")".repeat(n));
        let limits = Limits::get();
        let at_limit = FieldSelector::parse(&deep(limits.max_selector_depth)).unwrap();
        assert_eq!(at_limit.paths()[0].len(), limits.max_selector_depth + 1);
        for bad in [
            deep(limits.max_selector_depth + 1),
            deep(15_000),
            vec!["a"; limits.max_selector_paths + 1].join(","),
            vec!["a"; limits.max_pointer_segments + 1].join("/"),
        ] {
            let e = FieldSelector::parse(&bad).unwrap_err();
            assert_eq!(e.code(), "json.fieldselector.invalid");
            assert!(e.message().len() < 400, "the error echoes the input: {e}");
        }
    }
}
