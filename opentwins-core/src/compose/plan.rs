//! Planning new twin trees without touching the engine: the type graph checks, tree sizes, the
//! ids and bodies of the twins an instantiation or a duplication creates.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::{COPY_OF, ComposeConfig, ComposeError, NewTree, PARENT, TYPE, child_types};
use crate::model::{PolicyId, ThingId};

/// One twin to create.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Planned {
    /// Its id.
    pub(super) id: ThingId,
    /// Its full body (with `policyId` when not the root's default).
    pub(super) body: Value,
}

/// A twin to copy: its id, the index of its parent among the originals (`None` for the root,
/// which comes first; parents come before children) and its content as the caller reads it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Original {
    pub(super) id: ThingId,
    pub(super) parent: Option<usize>,
    pub(super) content: Value,
}

/// Checks that the types below `root` form no cycle and are at most `max_depth` levels deep.
pub(super) fn check_type_graph(
    types: &HashMap<ThingId, Value>,
    root: &ThingId,
    max_depth: usize,
) -> Result<(), ComposeError> {
    // Height of each finished type; the types on the current path are `visiting`.
    fn visit(
        types: &HashMap<ThingId, Value>,
        id: &ThingId,
        parent: Option<&ThingId>,
        depth: usize,
        max_depth: usize,
        visiting: &mut HashSet<ThingId>,
        height: &mut HashMap<ThingId, usize>,
    ) -> Result<usize, ComposeError> {
        if let Some(h) = height.get(id) {
            return check_depth(depth + h, max_depth).map(|()| *h);
        }
        if !visiting.insert(id.clone()) {
            return Err(ComposeError::Cycle {
                child: id.clone(),
                parent: parent.unwrap_or(id).clone(),
            });
        }
        check_depth(depth + 1, max_depth)?;
        let mut h = 1;
        for c in types.get(id).map(child_types).unwrap_or_default() {
            let below = visit(
                types,
                &c.type_id,
                Some(id),
                depth + 1,
                max_depth,
                visiting,
                height,
            )?;
            h = h.max(below + 1);
        }
        visiting.remove(id);
        height.insert(id.clone(), h);
        Ok(h)
    }
    fn check_depth(levels: usize, max_depth: usize) -> Result<(), ComposeError> {
        if levels > max_depth {
            return Err(ComposeError::TooDeep { limit: max_depth });
        }
        Ok(())
    }
    let mut visiting = HashSet::new();
    let mut height = HashMap::new();
    visit(types, root, None, 0, max_depth, &mut visiting, &mut height)?;
    Ok(())
}

/// How many nodes the type tree below `root` unfolds to: each child type counted once
/// (`by_count = false`, the type tree) or `count` times (the twin tree an instantiation
/// creates). Saturates instead of overflowing. The graph must be acyclic.
pub(super) fn unfolded_size(
    types: &HashMap<ThingId, Value>,
    root: &ThingId,
    by_count: bool,
) -> usize {
    fn size(
        types: &HashMap<ThingId, Value>,
        id: &ThingId,
        by_count: bool,
        memo: &mut HashMap<ThingId, usize>,
    ) -> usize {
        if let Some(n) = memo.get(id) {
            return *n;
        }
        let mut n: usize = 1;
        for c in types.get(id).map(child_types).unwrap_or_default() {
            let times = if by_count { c.count as usize } else { 1 };
            n = n.saturating_add(times.saturating_mul(size(types, &c.type_id, by_count, memo)));
        }
        memo.insert(id.clone(), n);
        n
    }
    size(types, root, by_count, &mut HashMap::new())
}

/// The twins an instantiation of `root` creates, parents before children.
pub(super) fn instantiate(
    types: &HashMap<ThingId, Value>,
    root: &ThingId,
    spec: &NewTree,
    config: &ComposeConfig,
) -> Result<Vec<Planned>, ComposeError> {
    if unfolded_size(types, root, true) > config.max_tree_things {
        return Err(ComposeError::TooLarge {
            limit: config.max_tree_things,
        });
    }
    let shared = spec
        .policy_id
        .clone()
        .unwrap_or_else(|| PolicyId::from(&spec.thing_id));
    let mut out = Vec::new();
    let ctx = Expand {
        types,
        shared: &shared,
    };
    ctx.expand(root, &spec.thing_id, None, Some(spec), &mut out)?;
    unique(&out)?;
    Ok(out)
}

struct Expand<'a> {
    types: &'a HashMap<ThingId, Value>,
    shared: &'a PolicyId,
}

impl Expand<'_> {
    fn expand(
        &self,
        type_id: &ThingId,
        twin_id: &ThingId,
        parent: Option<&ThingId>,
        root: Option<&NewTree>,
        out: &mut Vec<Planned>,
    ) -> Result<(), ComposeError> {
        let ty = &self.types[type_id];
        let mut markers = vec![(TYPE, Value::String(type_id.to_string()))];
        if let Some(p) = parent {
            markers.push((PARENT, Value::String(p.to_string())));
        }
        let policy = match root {
            Some(spec) => spec.policy_id.as_ref(),
            None => Some(self.shared),
        };
        let body = body(ty, root.map(|s| &s.patch), &markers, policy)?;
        out.push(Planned {
            id: twin_id.clone(),
            body,
        });
        for c in child_types(ty) {
            for i in 1..=c.count {
                let name = if c.count == 1 {
                    c.type_id.name().to_owned()
                } else {
                    format!("{}_{i}", c.type_id.name())
                };
                let id = child_id(twin_id, &name)?;
                self.expand(&c.type_id, &id, Some(twin_id), None, out)?;
            }
        }
        Ok(())
    }
}

/// The twins a duplication of `originals` (root first, parents before children) creates, in
/// the same order.
pub(super) fn duplicate(
    originals: &[Original],
    spec: &NewTree,
) -> Result<Vec<Planned>, ComposeError> {
    let shared = spec
        .policy_id
        .clone()
        .unwrap_or_else(|| PolicyId::from(&spec.thing_id));
    let mut out: Vec<Planned> = Vec::with_capacity(originals.len());
    for o in originals {
        let (id, parent) = match o.parent {
            None => (spec.thing_id.clone(), None),
            Some(p) => {
                let orig_parent = &originals[p].id;
                let new_parent = &out[p].id;
                let prefix = format!("{orig_parent}:");
                let local = o.id.as_str().strip_prefix(&prefix).unwrap_or(o.id.name());
                (child_id(new_parent, local)?, Some(new_parent.clone()))
            }
        };
        let mut content = o.content.clone();
        if let Some(Value::Object(features)) = content.get_mut("features") {
            for f in features.values_mut() {
                for part in ["properties", "desiredProperties"] {
                    if let Some(v) = f.get_mut(part) {
                        null_leaves(v);
                    }
                }
            }
        }
        let mut markers = vec![(COPY_OF, Value::String(o.id.to_string()))];
        if let Some(t) = o.content.get("attributes").and_then(|a| a.get(TYPE)) {
            markers.push((TYPE, t.clone()));
        }
        if let Some(p) = &parent {
            markers.push((PARENT, Value::String(p.to_string())));
        }
        let is_root = o.parent.is_none();
        let policy = if is_root {
            spec.policy_id.as_ref()
        } else {
            Some(&shared)
        };
        let patch = is_root.then_some(&spec.patch);
        out.push(Planned {
            body: body(&content, patch, &markers, policy)?,
            id,
        });
    }
    unique(&out)?;
    Ok(out)
}

/// A new twin's body: `source` without its id, policy and reserved attributes, `patch` merged
/// over it, then `markers` set and the policy named.
fn body(
    source: &Value,
    patch: Option<&Value>,
    markers: &[(&str, Value)],
    policy: Option<&PolicyId>,
) -> Result<Value, ComposeError> {
    let mut v = match source {
        Value::Object(m) => Value::Object(m.clone()),
        _ => Value::Object(Map::new()),
    };
    let m = v.as_object_mut().expect("an object");
    for k in [
        "thingId",
        "policyId",
        "_revision",
        "_created",
        "_modified",
        "_metadata",
    ] {
        m.shift_remove(k);
    }
    if let Some(Value::Object(a)) = m.get_mut("attributes") {
        a.retain(|k, _| !super::is_reserved(k));
    }
    if let Some(p) = patch {
        if !p.is_object() {
            return Err(ComposeError::Invalid(
                "The patch must be a JSON object.".into(),
            ));
        }
        crate::patch::merge(&mut v, p);
    }
    let m = v.as_object_mut().expect("an object patch keeps an object");
    let attributes = m
        .entry("attributes")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(a) = attributes else {
        return Err(ComposeError::Invalid(
            "'attributes' must be a JSON object.".into(),
        ));
    };
    for (k, val) in markers {
        a.insert((*k).to_owned(), val.clone());
    }
    if let Some(p) = policy {
        m.insert("policyId".into(), Value::String(p.to_string()));
    }
    Ok(v)
}

/// `{parent}:{name}`, a valid thing id (the name of `parent` gains `:{name}`).
fn child_id(parent: &ThingId, name: &str) -> Result<ThingId, ComposeError> {
    Ok(ThingId::new(&format!("{parent}:{name}"))?)
}

/// Sets every leaf (anything but an object with members) below `v` to `null`, keeping the
/// shape: a copy starts without the original's readings.
fn null_leaves(v: &mut Value) {
    match v {
        Value::Object(m) if !m.is_empty() => m.values_mut().for_each(null_leaves),
        Value::Object(_) => {}
        leaf => *leaf = Value::Null,
    }
}

fn unique(planned: &[Planned]) -> Result<(), ComposeError> {
    let mut seen = HashSet::new();
    for p in planned {
        if !seen.insert(&p.id) {
            return Err(ComposeError::IdClash(p.id.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn id(s: &str) -> ThingId {
        ThingId::new(s).unwrap()
    }

    fn types(list: &[(&str, Value)]) -> HashMap<ThingId, Value> {
        list.iter()
            .map(|(i, children)| {
                (
                    id(i),
                    json!({"thingId": i, "policyId": "ns:lib", "attributes": {"_isType": true, "_children": children, "model": i}}),
                )
            })
            .collect()
    }

    #[test]
    fn an_instantiation_plans_ids_parents_and_policies() {
        let t = types(&[
            ("ns:car", json!({"ns:wheel": 2, "lib:camera": 1})),
            ("ns:wheel", json!({"ns:bolt": 3})),
            ("lib:camera", json!({})),
            ("ns:bolt", json!({})),
        ]);
        assert_eq!(unfolded_size(&t, &id("ns:car"), true), 1 + 2 * 4 + 1);
        assert_eq!(unfolded_size(&t, &id("ns:car"), false), 4);
        let mut spec = NewTree::new(id("fleet:car-1"));
        spec.patch = json!({"attributes": {"plate": "X"}});
        let plan = instantiate(&t, &id("ns:car"), &spec, &ComposeConfig::default()).unwrap();
        let ids: Vec<&str> = plan.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "fleet:car-1",
                "fleet:car-1:wheel_1",
                "fleet:car-1:wheel_1:bolt_1",
                "fleet:car-1:wheel_1:bolt_2",
                "fleet:car-1:wheel_1:bolt_3",
                "fleet:car-1:wheel_2",
                "fleet:car-1:wheel_2:bolt_1",
                "fleet:car-1:wheel_2:bolt_2",
                "fleet:car-1:wheel_2:bolt_3",
                "fleet:car-1:camera",
            ]
        );
        // The root: the type's content, the patch, its type; no policy (Ditto's default).
        assert_eq!(
            plan[0].body,
            json!({"attributes": {"model": "ns:car", "plate": "X", "_type": "ns:car"}})
        );
        // The others: their parent, and the root's policy.
        assert_eq!(
            plan[2].body,
            json!({"attributes": {"model": "ns:bolt", "_type": "ns:bolt", "_parent": "fleet:car-1:wheel_1"}, "policyId": "fleet:car-1"})
        );
        let limited = ComposeConfig {
            max_tree_things: 9,
            ..ComposeConfig::default()
        };
        assert_eq!(
            instantiate(&t, &id("ns:car"), &spec, &limited).unwrap_err(),
            ComposeError::TooLarge { limit: 9 }
        );
    }

    #[test]
    fn the_type_graph_is_checked_for_cycles_depth_and_clashes() {
        let cyclic = types(&[
            ("ns:a", json!({"ns:b": 1})),
            ("ns:b", json!({"ns:c": 1})),
            ("ns:c", json!({"ns:a": 1})),
        ]);
        assert!(matches!(
            check_type_graph(&cyclic, &id("ns:a"), 32),
            Err(ComposeError::Cycle { .. })
        ));
        // A diamond is no cycle, and its height is what counts.
        let diamond = types(&[
            ("ns:a", json!({"ns:b": 1, "ns:c": 1})),
            ("ns:b", json!({"ns:d": 1})),
            ("ns:c", json!({"ns:d": 1})),
            ("ns:d", json!({})),
        ]);
        check_type_graph(&diamond, &id("ns:a"), 3).unwrap();
        assert_eq!(
            check_type_graph(&diamond, &id("ns:a"), 2),
            Err(ComposeError::TooDeep { limit: 2 })
        );
        // Two child types with the same name would give two twins the same id.
        let clash = types(&[
            ("ns:a", json!({"x:wheel": 1, "y:wheel": 1})),
            ("x:wheel", json!({})),
            ("y:wheel", json!({})),
        ]);
        let spec = NewTree::new(id("ns:t"));
        assert_eq!(
            instantiate(&clash, &id("ns:a"), &spec, &ComposeConfig::default()),
            Err(ComposeError::IdClash(id("ns:t:wheel")))
        );
    }

    #[test]
    fn a_duplication_renames_the_tree_and_clears_readings() {
        let originals = vec![
            Original {
                id: id("ns:car-1"),
                parent: None,
                content: json!({"thingId": "ns:car-1", "policyId": "ns:car-1", "attributes": {"_type": "ns:car", "plate": "A"}, "features": {"gps": {"properties": {"lat": 1.5, "fix": {"ok": true}, "e": {}}}}}),
            },
            Original {
                id: id("ns:car-1:wheel_1"),
                parent: Some(0),
                content: json!({"attributes": {"_parent": "ns:car-1", "_type": "ns:wheel"}}),
            },
            Original {
                id: id("other:spare"),
                parent: Some(0),
                content: json!({"attributes": {"_parent": "ns:car-1"}}),
            },
        ];
        let mut spec = NewTree::new(id("ns:car-2"));
        spec.patch = json!({"attributes": {"plate": "B"}});
        spec.policy_id = Some(PolicyId::new("ns:fleet").unwrap());
        let plan = duplicate(&originals, &spec).unwrap();
        assert_eq!(
            plan[0].body,
            json!({"attributes": {"plate": "B", "_copyOf": "ns:car-1", "_type": "ns:car"}, "features": {"gps": {"properties": {"lat": null, "fix": {"ok": null}, "e": {}}}}, "policyId": "ns:fleet"})
        );
        assert_eq!(plan[1].id, id("ns:car-2:wheel_1"));
        assert_eq!(
            plan[1].body["attributes"],
            json!({"_copyOf": "ns:car-1:wheel_1", "_type": "ns:wheel", "_parent": "ns:car-2"})
        );
        assert_eq!(plan[1].body["policyId"], "ns:fleet");
        assert_eq!(plan[2].id, id("ns:car-2:spare"));
    }
}
