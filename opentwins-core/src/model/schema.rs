//! What a value may look like at each level of a thing, for full values and for merge patches.
//!
//! The engine validates the *value a command brings* at the level of its path before it touches
//! the thing, so a rejected command changes nothing and validation costs O(size of the value),
//! not O(size of the thing).

use serde_json::Value;

use super::id::{PolicyId, ThingId, validate_feature_id};
use super::pointer::{Pointer, validate_key};
use crate::error::{Error, ErrorKind, Level, Result};

impl Level {
    /// The level of a command path inside a thing. Paths that name no thing resource (for
    /// example `/thingId`, `/features/f/unknown`) give `things:path.unknown` (404).
    pub fn of(path: &Pointer) -> Result<Level> {
        let s: Vec<&str> = path.segments().iter().map(String::as_str).collect();
        let level = match s.as_slice() {
            [] => Level::Thing,
            ["policyId"] => Level::PolicyId,
            ["definition"] => Level::Definition,
            ["attributes"] => Level::Attributes,
            ["attributes", ..] => Level::Attribute,
            ["features"] => Level::Features,
            ["features", _] => Level::Feature,
            ["features", _, "definition"] => Level::FeatureDefinition,
            ["features", _, "properties"] => Level::Properties,
            ["features", _, "properties", ..] => Level::Property,
            ["features", _, "desiredProperties"] => Level::DesiredProperties,
            ["features", _, "desiredProperties", ..] => Level::DesiredProperty,
            _ => {
                return Err(Error::new(
                    ErrorKind::PathUnknown,
                    format!("The path '{path}' does not name a resource of a Thing."),
                )
                .with_description(
                    "Valid paths: /, /policyId, /definition, /attributes[/..], /features[/{id}[/definition|/properties[/..]|/desiredProperties[/..]]].",
                ));
            }
        };
        if let Some(feature_id) = s.get(1).filter(|_| s[0] == "features") {
            validate_feature_id(feature_id)?;
        }
        Ok(level)
    }

    /// The level of `key` inside a value of this level.
    fn child(self, key: &str) -> Option<Level> {
        Some(match (self, key) {
            (Level::Thing, "policyId") => Level::PolicyId,
            (Level::Thing, "definition") => Level::Definition,
            (Level::Thing, "attributes") => Level::Attributes,
            (Level::Thing, "features") => Level::Features,
            (Level::Attributes | Level::Attribute, _) => Level::Attribute,
            (Level::Features, _) => Level::Feature,
            (Level::Feature, "definition") => Level::FeatureDefinition,
            (Level::Feature, "properties") => Level::Properties,
            (Level::Feature, "desiredProperties") => Level::DesiredProperties,
            (Level::Properties | Level::Property, _) => Level::Property,
            (Level::DesiredProperties | Level::DesiredProperty, _) => Level::DesiredProperty,
            _ => return None,
        })
    }
}

/// Whether the value is a whole value or an RFC 7396 merge patch (where `null` deletes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The value replaces the resource.
    Full,
    /// The value is merged into the resource.
    Patch,
}

/// Validates `value` placed at a resource of `level` of thing `id`.
pub fn validate(id: &ThingId, level: Level, value: &Value, mode: Mode) -> Result<()> {
    if mode == Mode::Patch && value.is_null() {
        return match level {
            Level::Thing => Err(Error::field_invalid(
                "A merge patch of a whole Thing must not be null.",
            )),
            Level::PolicyId => Err(Error::field_invalid(
                "The policyId of a Thing cannot be removed.",
            )),
            _ => Ok(()),
        };
    }
    match level {
        Level::Thing => {
            let obj = expect_object(value, "The Thing")?;
            for (key, v) in obj {
                match key.as_str() {
                    "thingId" => {
                        let s = v.as_str().ok_or_else(|| {
                            Error::field_invalid("The field 'thingId' must be a string.")
                        })?;
                        if s != id.as_str() {
                            return Err(Error::new(
                                ErrorKind::ThingIdNotSettable,
                                format!(
                                    "The thingId '{s}' in the body differs from the Thing ID '{id}' of the request."
                                ),
                            )
                            .with_description(
                                "Leave thingId out of the body, or give the one of the request.",
                            ));
                        }
                    }
                    _ => match Level::Thing.child(key) {
                        Some(child) => validate(id, child, v, mode)?,
                        None => {
                            return Err(Error::field_invalid(format!(
                                "The field '{key}' is not allowed in a Thing."
                            ))
                            .with_description(
                                "Allowed fields: thingId, policyId, definition, attributes, features.",
                            ));
                        }
                    },
                }
            }
            Ok(())
        }
        Level::PolicyId => {
            let s = value
                .as_str()
                .ok_or_else(|| Error::field_invalid("The field 'policyId' must be a string."))?;
            PolicyId::new(s).map(drop)
        }
        Level::Definition => match value {
            Value::String(s) if !s.is_empty() => Ok(()),
            _ => Err(Error::field_invalid(
                "The Thing definition must be a non-empty string such as 'namespace:name:version'.",
            )),
        },
        Level::Attributes | Level::Properties | Level::DesiredProperties => {
            let obj = expect_object(value, level.words())?;
            for (k, v) in obj {
                validate_key(k)?;
                validate_keys_deep(v)?;
            }
            Ok(())
        }
        Level::Attribute | Level::Property | Level::DesiredProperty => validate_keys_deep(value),
        Level::Features => {
            let obj = expect_object(value, "Features")?;
            for (k, v) in obj {
                validate_feature_id(k)?;
                validate(id, Level::Feature, v, mode)?;
            }
            Ok(())
        }
        Level::Feature => {
            let obj = expect_object(value, "A Feature")?;
            for (key, v) in obj {
                match Level::Feature.child(key) {
                    Some(child) => validate(id, child, v, mode)?,
                    None => {
                        return Err(Error::field_invalid(format!(
                            "The field '{key}' is not allowed in a Feature."
                        ))
                        .with_description(
                            "Allowed fields: definition, properties, desiredProperties.",
                        ));
                    }
                }
            }
            Ok(())
        }
        Level::FeatureDefinition => match value {
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
                Ok(())
            }
            _ => Err(Error::field_invalid(
                "A Feature definition must be a non-empty array of strings such as 'namespace:name:version'.",
            )),
        },
    }
}

fn expect_object<'a>(value: &'a Value, what: &str) -> Result<&'a serde_json::Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| Error::field_invalid(format!("{what} must be a JSON object.")))
}

/// Checks every key of nested objects inside an attribute or property value.
fn validate_keys_deep(v: &Value) -> Result<()> {
    match v {
        Value::Object(m) => m.iter().try_for_each(|(k, v)| {
            validate_key(k)?;
            validate_keys_deep(v)
        }),
        Value::Array(items) => items.iter().try_for_each(validate_keys_deep),
        _ => Ok(()),
    }
}

/// Whether a value placed at a path of `keys` keys nests deeper than
/// [`Limits::max_json_depth`](crate::Limits) below the thing (the keys plus the value's own
/// depth; a scalar is 0 deep, `{"a":1}` and `[1]` 1): such a thing could not be parsed again.
pub fn check_depth(keys: usize, v: &Value) -> Result<()> {
    let max = crate::Limits::get().max_json_depth;
    let room = max.checked_sub(keys);
    if room.is_none_or(|room| deeper_than(v, room)) {
        return Err(Error::field_invalid(format!(
            "The value nests deeper than {max} levels below the Thing."
        ))
        .with_description("Flatten the value, or write it at a shallower path."));
    }
    Ok(())
}

/// Whether `v` is more than `max` levels deep (recursion stops at `max`).
fn deeper_than(v: &Value, max: usize) -> bool {
    match v {
        Value::Object(m) => max == 0 || m.values().any(|c| deeper_than(c, max - 1)),
        Value::Array(a) => max == 0 || a.iter().any(|c| deeper_than(c, max - 1)),
        _ => false,
    }
}

/// The size of `v` as compact JSON, counting strings without escape overhead. Used for size
/// limits; cheap (no allocation, strings are not scanned).
pub fn json_size(v: &Value) -> usize {
    match v {
        Value::Null => 4,
        Value::Bool(b) => 4 + usize::from(!*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                digits(i.unsigned_abs()) + usize::from(i < 0)
            } else if let Some(u) = n.as_u64() {
                digits(u)
            } else {
                // Floats print as up to 17 significant digits plus sign, point and exponent.
                24
            }
        }
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.len().saturating_sub(1) + a.iter().map(json_size).sum::<usize>(),
        Value::Object(m) => {
            2 + m.len().saturating_sub(1)
                + m.iter()
                    .map(|(k, v)| k.len() + 3 + json_size(v))
                    .sum::<usize>()
        }
    }
}

/// `v` with every object and array rebuilt at exactly its length: values parsed from JSON or
/// built key by key carry spare capacity (a one-key object holds room for four), which adds up
/// over thousands of things kept in memory.
pub fn compacted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::with_capacity(m.len());
            for (k, v) in m {
                out.insert(k, compacted(v));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(compacted).collect()),
        other => other,
    }
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn id() -> ThingId {
        ThingId::new("ns:car").unwrap()
    }

    fn level(p: &str) -> Result<Level> {
        Level::of(&Pointer::parse(p).unwrap())
    }

    #[test]
    fn levels_of_paths() {
        assert_eq!(level("/").unwrap(), Level::Thing);
        assert_eq!(level("/attributes/a/b").unwrap(), Level::Attribute);
        assert_eq!(level("/features/f").unwrap(), Level::Feature);
        assert_eq!(
            level("/features/f/properties/x/y").unwrap(),
            Level::Property
        );
        assert_eq!(
            level("/features/f/desiredProperties").unwrap(),
            Level::DesiredProperties
        );
        assert_eq!(
            level("/features/f/definition").unwrap(),
            Level::FeatureDefinition
        );
        assert_eq!(level("/thingId").unwrap_err().code(), "things:path.unknown");
        assert_eq!(level("/features/f/definition/0").unwrap_err().status(), 404);
        assert_eq!(level("/foo").unwrap_err().status(), 404);
    }

    #[test]
    fn full_values() {
        let ok = json!({
            "thingId": "ns:car", "policyId": "ns:p", "definition": "a:b:1",
            "attributes": {"a": {"b": [1, {"c": null}]}},
            "features": {"f": {"definition": ["x:y:1"], "properties": {"p": 1}, "desiredProperties": {}}}
        });
        validate(&id(), Level::Thing, &ok, Mode::Full).unwrap();
        for bad in [
            json!([]),
            json!({"thingId": "ns:other"}),
            json!({"thingId": 5}),
            json!({"unknown": 1}),
            json!({"policyId": "nocolon"}),
            json!({"attributes": []}),
            json!({"attributes": {"a/b": 1}}),
            json!({"attributes": {"a": {"": 1}}}),
            json!({"features": {"f": {"props": {}}}}),
            json!({"features": {"f": {"definition": "x"}}}),
            json!({"features": {"f": []}}),
            json!({"definition": 3}),
        ] {
            let e = validate(&id(), Level::Thing, &bad, Mode::Full).unwrap_err();
            assert_eq!(e.status(), 400, "{bad}: {e}");
        }
    }

    #[test]
    fn patches() {
        validate(
            &id(),
            Level::Thing,
            &json!({"attributes": {"a": null}, "features": null}),
            Mode::Patch,
        )
        .unwrap();
        validate(&id(), Level::Attribute, &Value::Null, Mode::Patch).unwrap();
        assert!(validate(&id(), Level::Thing, &Value::Null, Mode::Patch).is_err());
        assert!(validate(&id(), Level::Thing, &json!({"thingId": null}), Mode::Patch).is_err());
        assert!(validate(&id(), Level::Thing, &json!({"policyId": null}), Mode::Patch).is_err());
        assert!(validate(&id(), Level::Attributes, &json!(5), Mode::Patch).is_err());
    }

    #[test]
    fn size_matches_serialisation_for_plain_values() {
        for v in [
            json!({"a": [1, -22, true, false, null, "xy"], "b": {"c": {}}, "d": []}),
            json!(12345678901u64),
            json!({}),
        ] {
            assert_eq!(
                json_size(&v),
                serde_json::to_string(&v).unwrap().len(),
                "{v}"
            );
        }
    }
}
