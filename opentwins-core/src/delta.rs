//! The desired/reported delta of a feature or a thing, as a JSON merge patch (RFC 7396).
//!
//! A feature's `desiredProperties` say what its `properties` should be; the delta is the merge
//! patch that, applied to `properties` with [`crate::patch::merge`], makes every path present in
//! `desiredProperties` equal to its desired value. The rules (also in `docs/semantics.md`):
//!
//! - Paths of `properties` that `desiredProperties` does not mention are ignored (never in the
//!   delta), as in AWS IoT shadows, whose `state.delta` holds only desired keys.
//! - Objects are compared key by key, recursively. A desired object is met by an object (with
//!   its desired paths met); a missing or non-object reported value is not (the delta then
//!   carries the object, without its `null` members).
//! - Arrays, strings, booleans and numbers are compared whole; numbers by value (`20 == 20.0`),
//!   as RQL compares them.
//! - A desired `null` means "should be absent": the delta has `null` there (a merge patch
//!   deletion) when `properties` has the key, and nothing when it does not. AWS differs here: a
//!   `null` in an AWS desired document deletes the desired key, so it never reaches the delta.
//! - `None` (or `{}` for a thing) when nothing differs.

use serde_json::{Map, Number, Value};

/// The merge patch for `feature["properties"]` that makes every path present in
/// `feature["desiredProperties"]` equal to its desired value; `None` when they already agree
/// (or the feature has no `desiredProperties`). Missing or non-object `properties` count as `{}`.
pub fn feature_delta(feature: &Value) -> Option<Value> {
    let Some(Value::Object(desired)) = feature.get("desiredProperties") else {
        return None;
    };
    let reported = feature.get("properties").and_then(Value::as_object);
    let empty = Map::new();
    let out = object_delta(reported.unwrap_or(&empty), desired);
    (!out.is_empty()).then_some(Value::Object(out))
}

/// `{"features": {featureId: delta, ...}}` with the [`feature_delta`] of every feature of the
/// thing `body` whose delta is not empty; `{}` when no feature has one. Each feature's delta
/// is a patch for that feature's `properties` (send it as a merge of
/// `/features/{featureId}/properties`).
pub fn thing_delta(body: &Value) -> Value {
    let mut features = Map::new();
    if let Some(Value::Object(fs)) = body.get("features") {
        for (id, feature) in fs {
            if let Some(d) = feature_delta(feature) {
                features.insert(id.clone(), d);
            }
        }
    }
    let mut out = Map::new();
    if !features.is_empty() {
        out.insert("features".into(), Value::Object(features));
    }
    Value::Object(out)
}

/// The delta of the members of a reported object against a desired object.
fn object_delta(reported: &Map<String, Value>, desired: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, want) in desired {
        let have = reported.get(key);
        let d = match want {
            Value::Null => have.map(|_| Value::Null),
            _ => value_delta(have, want),
        };
        if let Some(d) = d {
            out.insert(key.clone(), d);
        }
    }
    out
}

/// The patch for one reported value (`None`: missing) against a non-null desired value.
fn value_delta(have: Option<&Value>, want: &Value) -> Option<Value> {
    match (have, want) {
        (Some(Value::Object(h)), Value::Object(w)) => {
            let out = object_delta(h, w);
            (!out.is_empty()).then_some(Value::Object(out))
        }
        // Not an object yet: the patch (an object) replaces it by `{}` and merges the desired
        // members into it, so it is needed even when it has no members.
        (_, Value::Object(w)) => Some(Value::Object(object_delta(&Map::new(), w))),
        (Some(h), w) if json_eq(h, w) => None,
        (_, w) => Some(w.clone()),
    }
}

/// JSON equality with numbers compared by value (`1 == 1.0`); keys in any order.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Exact between integers, and between an integer and a float holding the same integer.
fn number_eq(a: &Number, b: &Number) -> bool {
    fn int(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x == y,
        (Some(i), None) => b.as_f64().is_some_and(|f| float_is_int(f, i)),
        (None, Some(i)) => a.as_f64().is_some_and(|f| float_is_int(f, i)),
        (None, None) => a.as_f64() == b.as_f64(),
    }
}

fn float_is_int(f: f64, i: i128) -> bool {
    // i64/u64 values are far below 1e30; beyond it (and for non-integral floats) no match.
    f.fract() == 0.0 && f.abs() < 1.0e30 && f as i128 == i
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::patch::merge;

    fn delta(properties: Value, desired: Value) -> Option<Value> {
        feature_delta(&json!({"properties": properties, "desiredProperties": desired}))
    }

    #[test]
    fn scalars_arrays_and_missing_keys() {
        assert_eq!(delta(json!({"a": 1}), json!({"a": 1})), None);
        assert_eq!(
            delta(json!({"a": 1}), json!({"a": 2})),
            Some(json!({"a": 2}))
        );
        assert_eq!(delta(json!({}), json!({"a": "x"})), Some(json!({"a": "x"})));
        // Arrays are compared whole.
        assert_eq!(
            delta(json!({"a": [1, 2, 3]}), json!({"a": [1, 2]})),
            Some(json!({"a": [1, 2]}))
        );
        assert_eq!(
            delta(json!({"a": [1, {"b": 2}]}), json!({"a": [1, {"b": 2}]})),
            None
        );
        // Reported-only keys are not the delta's business.
        assert_eq!(delta(json!({"a": 1, "extra": true}), json!({"a": 1})), None);
        assert_eq!(
            delta(json!({"extra": true}), json!({"a": false})),
            Some(json!({"a": false}))
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        assert_eq!(delta(json!({"t": 20.0}), json!({"t": 20})), None);
        assert_eq!(delta(json!({"t": 20}), json!({"t": 20.0})), None);
        assert_eq!(
            delta(json!({"t": 20.5}), json!({"t": 20})),
            Some(json!({"t": 20}))
        );
        assert_eq!(delta(json!({"t": -3}), json!({"t": -3})), None);
        assert_eq!(
            delta(json!({"t": u64::MAX}), json!({"t": i64::MAX})),
            Some(json!({"t": i64::MAX}))
        );
        assert_eq!(
            delta(json!({"t": "20"}), json!({"t": 20})),
            Some(json!({"t": 20}))
        );
    }

    #[test]
    fn nested_objects_recurse() {
        let reported = json!({"cfg": {"mode": "eco", "limits": {"v": 30, "a": 2}, "x": 1}});
        let desired = json!({"cfg": {"mode": "sport", "limits": {"v": 30}}});
        assert_eq!(
            delta(reported.clone(), desired),
            Some(json!({"cfg": {"mode": "sport"}}))
        );
        // A desired object where the reported value is a scalar or missing: the whole object
        // (without nulls), also when it is empty.
        assert_eq!(
            delta(json!({"cfg": 5}), json!({"cfg": {"a": 1, "gone": null}})),
            Some(json!({"cfg": {"a": 1}}))
        );
        assert_eq!(
            delta(json!({}), json!({"cfg": {}})),
            Some(json!({"cfg": {}}))
        );
        assert_eq!(delta(json!({"cfg": {"z": 1}}), json!({"cfg": {}})), None);
        // A desired scalar where an object is reported replaces it.
        assert_eq!(delta(reported, json!({"cfg": 0})), Some(json!({"cfg": 0})));
    }

    #[test]
    fn desired_null_means_absent() {
        assert_eq!(
            delta(json!({"a": 1}), json!({"a": null})),
            Some(json!({"a": null}))
        );
        assert_eq!(delta(json!({"b": 1}), json!({"a": null})), None);
        assert_eq!(
            delta(json!({"o": {"k": 1, "l": 2}}), json!({"o": {"k": null}})),
            Some(json!({"o": {"k": null}}))
        );
        // A stored null is still present: it should be removed.
        assert_eq!(
            delta(json!({"a": null}), json!({"a": null})),
            Some(json!({"a": null}))
        );
    }

    #[test]
    fn features_without_desired_or_properties() {
        assert_eq!(feature_delta(&json!({"properties": {"a": 1}})), None);
        assert_eq!(feature_delta(&json!({"desiredProperties": {}})), None);
        assert_eq!(
            feature_delta(&json!({"desiredProperties": {"a": 1, "b": null}})),
            Some(json!({"a": 1}))
        );
        assert_eq!(feature_delta(&json!({})), None);
        assert_eq!(feature_delta(&json!(null)), None);
        assert_eq!(feature_delta(&json!({"desiredProperties": 3})), None);
    }

    #[test]
    fn thing_delta_lists_only_features_that_differ() {
        let thing = json!({
            "thingId": "ns:car",
            "attributes": {"desiredProperties": {"ignored": 1}},
            "features": {
                "ac": {"properties": {"on": false}, "desiredProperties": {"on": true}},
                "gps": {"properties": {"lat": 1}},
                "seat": {"properties": {"pos": 3}, "desiredProperties": {"pos": 3}}
            }
        });
        assert_eq!(
            thing_delta(&thing),
            json!({"features": {"ac": {"on": true}}})
        );
        assert_eq!(thing_delta(&json!({"thingId": "ns:car"})), json!({}));
        let synced = json!({"features": {"seat": thing["features"]["seat"].clone()}});
        assert_eq!(thing_delta(&synced), json!({}));
    }

    /// The specification, written independently of the implementation: every path present in
    /// `desired` holds in `reported` (desired `null`: absent; desired object: an object whose
    /// desired paths hold; anything else: equal by value).
    fn holds(reported: Option<&Value>, desired: &Value) -> bool {
        match desired {
            Value::Object(w) => match reported {
                Some(Value::Object(h)) => w.iter().all(|(k, v)| match v {
                    Value::Null => !h.contains_key(k),
                    _ => holds(h.get(k), v),
                }),
                _ => false,
            },
            want => reported.is_some_and(|have| same(have, want)),
        }
    }

    /// Value equality with numbers as f64 (the generated numbers are small).
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..3).prop_map(Value::from),
            // Integral floats, so `1` and `1.0` meet.
            (-3i64..3).prop_map(|i| Value::from(i as f64)),
            Just(json!(0.5)),
            prop_oneof![Just("x"), Just("y")].prop_map(Value::from),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![Just("a"), Just("b"), Just("c")],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    fn object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")],
            value(),
            0..4,
        )
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    }

    /// A second, related pair: `desired` built from `reported` by changing some members, so
    /// agreeing pairs are common.
    fn pair() -> impl Strategy<Value = (Value, Value)> {
        prop_oneof![
            (object(), object()),
            (object(), object(), any::<u8>()).prop_map(|(reported, extra, mask)| {
                let mut desired = Map::new();
                if let Value::Object(r) = &reported {
                    for (i, (k, v)) in r.iter().enumerate() {
                        if mask & (1 << i) != 0 {
                            desired.insert(k.clone(), v.clone());
                        }
                    }
                }
                if mask & 0x80 != 0 {
                    let mut d = Value::Object(desired);
                    merge(&mut d, &extra);
                    return (reported, d);
                }
                (reported, Value::Object(desired))
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn applying_the_delta_meets_the_desired_state((reported, desired) in pair()) {
            let feature = json!({"properties": reported.clone(), "desiredProperties": desired.clone()});
            let d = feature_delta(&feature);
            // None iff the desired state already holds.
            prop_assert_eq!(d.is_none(), holds(Some(&reported), &desired), "delta {:?}", d);
            let mut after = reported.clone();
            if let Some(d) = &d {
                merge(&mut after, d);
            }
            prop_assert!(holds(Some(&after), &desired), "after {} delta {:?}", after, d);
            // Members the desired state does not mention are untouched.
            for (k, v) in reported.as_object().unwrap() {
                if !desired.as_object().unwrap().contains_key(k) {
                    prop_assert_eq!(after.get(k), Some(v));
                }
            }
            // Once applied, nothing is left to do.
            let feature = json!({"properties": after, "desiredProperties": desired});
            prop_assert_eq!(feature_delta(&feature), None);
        }
    }
}
