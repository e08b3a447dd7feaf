//! JSON merge patch, exactly as RFC 7396 defines it, at the root or at any path.

use serde_json::{Map, Value};

use crate::model::Pointer;

/// Applies `patch` to `target` in place (RFC 7396, section 2).
///
/// An object patch merges key by key, `null` removes a key; any other patch replaces the target.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        unreachable!("just made an object")
    };
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.shift_remove(key);
        } else {
            merge(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Applies `patch` at `path` of `target`, as Ditto's merge command does: the patch behaves as if
/// wrapped in objects up to the root (`merge(target, path.wrap(patch))`), without building the
/// wrapper. Intermediate objects are created; a `null` patch removes the value at `path` and,
/// unlike the wrapped merge, creates no empty intermediate objects when `path` does not exist.
pub fn merge_at(target: &mut Value, path: &Pointer, patch: &Value) {
    if path.is_root() {
        return merge(target, patch);
    }
    if patch.is_null() {
        path.remove(target);
        return;
    }
    match path.get_mut(target) {
        Some(slot) => merge(slot, patch),
        None => {
            let mut fresh = Value::Null;
            merge(&mut fresh, patch);
            path.set(target, fresh);
        }
    }
}

/// Removes `null` members recursively: what a merge patch leaves when applied to nothing.
/// Handy for turning a patch into the value it creates.
pub fn strip_nulls(v: &Value) -> Value {
    let mut out = Value::Null;
    merge(&mut out, v);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Every example of RFC 7396, Appendix A.
    #[test]
    fn rfc7396_appendix_a() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            let mut t = target.clone();
            merge(&mut t, &patch);
            assert_eq!(t, expected, "merge({target}, {patch})");
        }
    }

    /// The RFC's section 3 example.
    #[test]
    fn rfc7396_section_3() {
        let mut doc = json!({
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged"
        });
        let patch = json!({
            "title": "Hello!", "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null}, "tags": ["example"]
        });
        merge(&mut doc, &patch);
        assert_eq!(
            doc,
            json!({
                "title": "Hello!",
                "author": {"givenName": "John"},
                "tags": ["example"],
                "content": "This will be unchanged",
                "phoneNumber": "+01-123-456-7890"
            })
        );
    }

    #[test]
    fn merge_at_path_equals_wrapped_merge() {
        let base = json!({"features": {"f": {"properties": {"a": 1, "b": {"c": 2}}}}, "x": 5});
        for (path, patch) in [
            ("/features/f/properties", json!({"a": null, "b": {"d": 3}})),
            (
                "/features/g/properties/z",
                json!({"k": {"n": null, "m": 1}}),
            ),
            ("/x/y", json!(1)),
            ("/features/f", json!(null)),
            ("/", json!({"x": null})),
        ] {
            let p = Pointer::parse(path).unwrap();
            let mut a = base.clone();
            merge_at(&mut a, &p, &patch);
            let mut b = base.clone();
            merge(&mut b, &p.wrap(patch.clone()));
            assert_eq!(a, b, "{path} {patch}");
        }
    }

    #[test]
    fn null_at_missing_path_changes_nothing() {
        let mut v = json!({"a": 1});
        merge_at(&mut v, &Pointer::parse("/b/c").unwrap(), &Value::Null);
        assert_eq!(v, json!({"a": 1}));
    }

    #[test]
    fn strip_nulls_removes_deep_nulls() {
        assert_eq!(
            strip_nulls(&json!({"a": null, "b": {"c": null, "d": 1}})),
            json!({"b": {"d": 1}})
        );
    }
}
