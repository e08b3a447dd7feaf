//! Ditto Protocol conformance: every example Ditto publishes in its documentation for twin
//! commands, responses, events and errors (and a set of policy messages) is parsed into a
//! [`Message`], checked against what the example's name says it is, rendered back and compared
//! with the original JSON (as `serde_json::Value`, so key order does not matter).
//!
//! Vectors live in `tests/vectors/ditto-protocol/` (see its README for sources and license).
//! A vector may carry `rendered`: the JSON we legitimately produce instead (with a `note` saying
//! why); it must differ from the original and must parse back to the same message.

use std::collections::BTreeSet;
use std::path::PathBuf;

use opentwins_core::protocol::{Action, EntityId, EventAction, Message};
use serde_json::Value;

struct Vector {
    file: String,
    name: String,
    expect: Value,
    message: Value,
    rendered: Option<Value>,
}

fn vectors() -> Vec<Vector> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/ditto-protocol");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(doc["license"], "EPL-2.0", "{}", path.display());
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for v in doc["vectors"].as_array().expect("a 'vectors' array") {
            out.push(Vector {
                file: file.clone(),
                name: v["name"].as_str().expect("a name").to_owned(),
                expect: v["expect"].clone(),
                message: v["message"].clone(),
                rendered: v.get("rendered").cloned(),
            });
        }
    }
    out
}

fn action_of(m: &Message) -> Option<&'static str> {
    Some(match m {
        Message::ThingCommand(c) => c.action.as_str(),
        Message::ThingResponse(r) => r.action.as_str(),
        Message::ThingEvent(e) => e.action.as_str(),
        Message::PolicyCommand(c) => c.action.as_str(),
        Message::PolicyResponse(r) => r.action.as_str(),
        Message::Error(_) => return None,
    })
}

fn variant_of(m: &Message) -> &'static str {
    match m {
        Message::ThingCommand(_) => "ThingCommand",
        Message::ThingResponse(_) => "ThingResponse",
        Message::ThingEvent(_) => "ThingEvent",
        Message::PolicyCommand(_) => "PolicyCommand",
        Message::PolicyResponse(_) => "PolicyResponse",
        Message::Error(_) => "Error",
    }
}

fn path_of(m: &Message) -> String {
    match m {
        Message::ThingCommand(c) => c.path.to_string(),
        Message::ThingResponse(r) => r.path.to_string(),
        Message::ThingEvent(e) => e.path.to_string(),
        Message::PolicyCommand(c) => c.path.to_string(),
        Message::PolicyResponse(r) => r.path.to_string(),
        Message::Error(e) => e.path.to_string(),
    }
}

/// Checks one vector; returns a description of every mismatch.
fn check(v: &Vector) -> Vec<String> {
    let mut problems = Vec::new();
    let bytes = serde_json::to_vec(&v.message).unwrap();
    let parsed = Message::from_slice(&bytes);
    if let Some(code) = v.expect.get("error") {
        match parsed {
            Ok(m) => problems.push(format!("expected error {code}, parsed {m:?}")),
            Err(e) if e.code() != code.as_str().unwrap() => problems.push(format!(
                "expected error {code}, got {} ({})",
                e.code(),
                e.message()
            )),
            Err(_) => {}
        }
        return problems;
    }
    let m = match parsed {
        Ok(m) => m,
        Err(e) => return vec![format!("does not parse: {e}")],
    };
    let want = |key: &str| v.expect.get(key).cloned().unwrap_or(Value::Null);
    if want("variant") != variant_of(&m) {
        problems.push(format!(
            "variant: expected {}, got {}",
            want("variant"),
            variant_of(&m)
        ));
    }
    if let Some(action) = v.expect.get("action")
        && action_of(&m) != action.as_str()
    {
        problems.push(format!(
            "action: expected {action}, got {:?}",
            action_of(&m)
        ));
    }
    if want("path") != path_of(&m) {
        problems.push(format!(
            "path: expected {}, got {}",
            want("path"),
            path_of(&m)
        ));
    }
    match (&m, v.expect.get("status")) {
        (Message::ThingResponse(r), Some(s)) if s != r.status => {
            problems.push(format!("status: expected {s}, got {}", r.status))
        }
        (Message::PolicyResponse(r), Some(s)) if s != r.status => {
            problems.push(format!("status: expected {s}, got {}", r.status))
        }
        _ => {}
    }
    if let (Message::ThingEvent(e), Some(rev)) = (&m, v.expect.get("revision"))
        && rev != e.revision
    {
        problems.push(format!("revision: expected {rev}, got {}", e.revision));
    }
    if let Message::Error(e) = &m {
        let entity = match &e.entity {
            EntityId::Thing(id) => serde_json::json!({ "thing": id.as_str() }),
            EntityId::Policy(id) => serde_json::json!({ "policy": id.as_str() }),
            EntityId::Unknown => Value::from("unknown"),
        };
        if want("entity") != entity {
            problems.push(format!("entity: expected {}, got {entity}", want("entity")));
        }
        // The original error value names the same status and code unless the vector says it normalises.
        if v.rendered.is_none() {
            if e.error.status() != v.message["status"] {
                problems.push(format!(
                    "error status {} != {}",
                    e.error.status(),
                    v.message["status"]
                ));
            }
            if e.error.code() != v.message["value"]["error"].as_str().unwrap_or_default() {
                problems.push(format!(
                    "error code {} != {}",
                    e.error.code(),
                    v.message["value"]["error"]
                ));
            }
        }
    }

    let out: Value = serde_json::from_slice(&m.to_vec()).unwrap();
    let expected = v.rendered.as_ref().unwrap_or(&v.message);
    if &out != expected {
        problems.push(format!(
            "rendered JSON differs:\n  got      {out}\n  expected {expected}"
        ));
    }
    if let Some(rendered) = &v.rendered {
        if rendered == &v.message {
            problems.push("'rendered' equals the original: drop it".into());
        }
        match Message::from_slice(&serde_json::to_vec(rendered).unwrap()) {
            Ok(again) if again == m => {}
            Ok(again) => problems.push(format!(
                "'rendered' parses to a different message: {again:?}"
            )),
            Err(e) => problems.push(format!("'rendered' does not parse: {e}")),
        }
    }
    problems
}

#[test]
fn ditto_examples_parse_and_render_back() {
    let vectors = vectors();
    assert!(vectors.len() >= 200, "only {} vectors found", vectors.len());
    let mut failures = Vec::new();
    for v in &vectors {
        for p in check(v) {
            failures.push(format!("{} / {}: {p}", v.file, v.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn normalisations_are_few_and_explained() {
    let vectors = vectors();
    let normalised: Vec<&str> = vectors
        .iter()
        .filter(|v| v.rendered.is_some())
        .map(|v| v.name.as_str())
        .collect();
    // Every other vector renders back byte-for-byte equal as JSON; keep this list honest.
    assert!(normalised.len() <= 12, "{normalised:?}");
}

/// Which resource of a thing a path names (the levels Ditto documents separately).
fn level(path: &str) -> &'static str {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [] => "thing",
        ["policyId"] => "policyId",
        ["definition"] => "definition",
        ["attributes"] => "attributes",
        ["attributes", ..] => "attribute",
        ["features"] => "features",
        ["features", _] => "feature",
        ["features", _, "definition"] => "featureDefinition",
        ["features", _, "properties"] => "properties",
        ["features", _, "properties", ..] => "property",
        ["features", _, "desiredProperties"] => "desiredProperties",
        ["features", _, "desiredProperties", ..] => "desiredProperty",
        _ => "other",
    }
}

#[test]
fn vectors_cover_every_level() {
    const LEVELS: [&str; 12] = [
        "thing",
        "policyId",
        "definition",
        "attributes",
        "attribute",
        "features",
        "feature",
        "featureDefinition",
        "properties",
        "property",
        "desiredProperties",
        "desiredProperty",
    ];
    let mut seen = BTreeSet::new();
    for v in vectors() {
        let Ok(m) = Message::from_slice(&serde_json::to_vec(&v.message).unwrap()) else {
            continue;
        };
        if let Some(action) = action_of(&m) {
            seen.insert((variant_of(&m), action, level(&path_of(&m))));
        }
    }
    let mut missing = Vec::new();
    let mut need = |variant: &'static str, action: &'static str, level: &'static str| {
        if !seen.contains(&(variant, action, level)) {
            missing.push(format!("{variant} {action} {level}"));
        }
    };
    for variant in ["ThingCommand", "ThingResponse"] {
        need(variant, Action::Create.as_str(), "thing");
        for level in LEVELS {
            for action in [Action::Retrieve, Action::Modify, Action::Merge] {
                need(variant, action.as_str(), level);
            }
            // A thing's policyId cannot be deleted.
            if level != "policyId" {
                need(variant, Action::Delete.as_str(), level);
            }
        }
    }
    for level in LEVELS {
        for action in [
            EventAction::Created,
            EventAction::Modified,
            EventAction::Merged,
        ] {
            need("ThingEvent", action.as_str(), level);
        }
        if level != "policyId" {
            need("ThingEvent", EventAction::Deleted.as_str(), level);
        }
    }
    // Policies: every action at the root ("thing" is the root level of `level`).
    for action in [
        Action::Create,
        Action::Retrieve,
        Action::Modify,
        Action::Delete,
    ] {
        need("PolicyCommand", action.as_str(), "thing");
        need("PolicyResponse", action.as_str(), "thing");
    }
    assert!(missing.is_empty(), "no vector for: {missing:?}");
    let errors = vectors()
        .iter()
        .filter(|v| v.expect["variant"] == "Error")
        .count();
    assert!(errors >= 20, "only {errors} error vectors");
}
