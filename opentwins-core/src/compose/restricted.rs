//! The reserved attributes that carry composition, and the rules that keep users from setting
//! or removing them outside the composition operations.

use serde_json::{Map, Value};

use super::ComposeError;
use crate::model::Thing;
use crate::protocol::{Action, ThingCommand};

/// `attributes/_isType`: `true` on a type.
pub const IS_TYPE: &str = "_isType";
/// `attributes/_children` on a type: `{childTypeId: count}`, the types it is made of.
pub const CHILDREN: &str = "_children";
/// `attributes/_parent` on a twin: the id of its parent twin.
pub const PARENT: &str = "_parent";
/// `attributes/_type` on a twin: the type it was instantiated from.
pub const TYPE: &str = "_type";
/// `attributes/_copyOf` on a twin: the twin it was duplicated from.
pub const COPY_OF: &str = "_copyOf";

/// Every reserved attribute: only the composition operations write them.
pub const RESERVED: [&str; 5] = [IS_TYPE, CHILDREN, PARENT, TYPE, COPY_OF];

/// Whether `key` is a reserved attribute.
pub fn is_reserved(key: &str) -> bool {
    RESERVED.contains(&key)
}

/// Refuses an attributes object that names a reserved attribute.
pub fn check_attributes(attributes: &Value) -> Result<(), ComposeError> {
    if let Value::Object(m) = attributes
        && let Some(k) = m.keys().find(|k| is_reserved(k))
    {
        return Err(ComposeError::Restricted(k.clone()));
    }
    Ok(())
}

/// Refuses a thing body (as given to create, replace or merge at the root) whose `attributes`
/// name a reserved attribute.
pub fn check_body(body: &Value) -> Result<(), ComposeError> {
    match body.get("attributes") {
        Some(a) => check_attributes(a),
        None => Ok(()),
    }
}

/// The reserved attributes a thing holds (empty object when none).
pub fn markers_of(thing: &Thing) -> Map<String, Value> {
    markers(thing.body())
}

/// The reserved attributes of a thing's JSON.
pub(super) fn markers(body: &Value) -> Map<String, Value> {
    body.get("attributes")
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter(|(k, _)| is_reserved(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// What the guard does with a command of the plain things API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// Nothing reserved is touched.
    Pass,
    /// A replacement of the whole thing (`/`) or of `/attributes`: the reserved attributes the
    /// thing has are carried over into the new value.
    CarryOver,
    /// A removal of every attribute (`DELETE /attributes`, a merge setting `attributes` to
    /// `null`): refused when the thing has reserved attributes.
    RefuseIfMarked,
}

/// Classifies a command of the plain things API: refuses one that writes a reserved attribute.
pub(crate) fn classify(cmd: &ThingCommand) -> Result<Guard, ComposeError> {
    if cmd.action == Action::Retrieve {
        return Ok(Guard::Pass);
    }
    let value = cmd.value.as_ref();
    match cmd.path.segments() {
        [] => match cmd.action {
            Action::Delete => Ok(Guard::Pass),
            action => {
                if let Some(v) = value {
                    check_body(v)?;
                }
                let attributes = value.and_then(|v| v.get("attributes"));
                Ok(match action {
                    Action::Modify => Guard::CarryOver,
                    Action::Merge if attributes.is_some_and(Value::is_null) => {
                        Guard::RefuseIfMarked
                    }
                    _ => Guard::Pass,
                })
            }
        },
        [a] if a == "attributes" => {
            if let Some(v) = value {
                check_attributes(v)?;
            }
            Ok(match cmd.action {
                Action::Modify => Guard::CarryOver,
                Action::Delete => Guard::RefuseIfMarked,
                Action::Merge if value.is_some_and(Value::is_null) => Guard::RefuseIfMarked,
                _ => Guard::Pass,
            })
        }
        [a, key, ..] if a == "attributes" && is_reserved(key) => {
            Err(ComposeError::Restricted(key.clone()))
        }
        _ => Ok(Guard::Pass),
    }
}

/// Puts `markers` into the value of a [`Guard::CarryOver`] command (at `attributes` for the
/// root, at the top for `/attributes`). A value of the wrong shape is left for the engine to
/// refuse.
pub(crate) fn carry_over(cmd: &mut ThingCommand, markers: Map<String, Value>) {
    if markers.is_empty() {
        return;
    }
    let at_root = cmd.path.is_root();
    let Some(Value::Object(value)) = cmd.value.as_mut() else {
        return;
    };
    let target = if at_root {
        let attributes = value
            .entry("attributes")
            .or_insert_with(|| Value::Object(Map::new()));
        match attributes {
            Value::Object(m) => m,
            _ => return,
        }
    } else {
        value
    };
    for (k, v) in markers {
        target.insert(k, v);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{Pointer, ThingId};

    fn cmd(action: Action, path: &str, value: Option<Value>) -> ThingCommand {
        ThingCommand::new(
            ThingId::new("ns:t").unwrap(),
            action,
            Pointer::parse(path).unwrap(),
            value,
        )
    }

    #[test]
    fn reserved_attributes_are_refused_wherever_a_command_writes_them() {
        let refused = [
            cmd(
                Action::Create,
                "/",
                Some(json!({"attributes": {"_parent": "ns:p"}})),
            ),
            cmd(
                Action::Modify,
                "/",
                Some(json!({"attributes": {"_isType": true}})),
            ),
            cmd(
                Action::Merge,
                "/",
                Some(json!({"attributes": {"_children": null}})),
            ),
            cmd(
                Action::Modify,
                "/attributes",
                Some(json!({"a": 1, "_type": "x"})),
            ),
            cmd(Action::Merge, "/attributes", Some(json!({"_copyOf": "x"}))),
            cmd(Action::Modify, "/attributes/_parent", Some(json!("ns:p"))),
            cmd(Action::Merge, "/attributes/_children/ns:x", Some(json!(2))),
            cmd(Action::Delete, "/attributes/_parent", None),
        ];
        for c in refused {
            assert!(
                matches!(classify(&c), Err(ComposeError::Restricted(_))),
                "{c:?}"
            );
        }
        let cases = [
            (
                cmd(Action::Retrieve, "/attributes/_parent", None),
                Guard::Pass,
            ),
            (
                cmd(Action::Create, "/", Some(json!({"attributes": {"a": 1}}))),
                Guard::Pass,
            ),
            (cmd(Action::Modify, "/", Some(json!({}))), Guard::CarryOver),
            (
                cmd(Action::Modify, "/attributes", Some(json!({"a": 1}))),
                Guard::CarryOver,
            ),
            (
                cmd(Action::Merge, "/", Some(json!({"attributes": null}))),
                Guard::RefuseIfMarked,
            ),
            (
                cmd(Action::Merge, "/attributes", Some(json!(null))),
                Guard::RefuseIfMarked,
            ),
            (
                cmd(Action::Delete, "/attributes", None),
                Guard::RefuseIfMarked,
            ),
            (
                cmd(Action::Merge, "/attributes", Some(json!({"a": null}))),
                Guard::Pass,
            ),
            (
                cmd(Action::Modify, "/attributes/_parents", Some(json!(1))),
                Guard::Pass,
            ),
            (
                cmd(
                    Action::Modify,
                    "/features/f/properties/_parent",
                    Some(json!(1)),
                ),
                Guard::Pass,
            ),
            (cmd(Action::Delete, "/", None), Guard::Pass),
        ];
        for (c, want) in cases {
            assert_eq!(classify(&c).unwrap(), want, "{c:?}");
        }
    }

    #[test]
    fn carry_over_keeps_the_markers_in_a_replacement() {
        let markers: Map<String, Value> = json!({"_parent": "ns:p", "_type": "ns:ty"})
            .as_object()
            .unwrap()
            .clone();
        let mut root = cmd(Action::Modify, "/", Some(json!({"features": {}})));
        carry_over(&mut root, markers.clone());
        assert_eq!(
            root.value.unwrap(),
            json!({"features": {}, "attributes": {"_parent": "ns:p", "_type": "ns:ty"}})
        );
        let mut attrs = cmd(Action::Modify, "/attributes", Some(json!({"a": 1})));
        carry_over(&mut attrs, markers.clone());
        assert_eq!(
            attrs.value.unwrap(),
            json!({"a": 1, "_parent": "ns:p", "_type": "ns:ty"})
        );
        // A value of the wrong shape is the engine's to refuse.
        let mut bad = cmd(Action::Modify, "/attributes", Some(json!(3)));
        carry_over(&mut bad, markers);
        assert_eq!(bad.value.unwrap(), json!(3));
    }
}
