//! Cross-cutting policy tests: JSON round trips, every kind of bad policy, and properties of
//! enforcement checked against a naive reference implementation.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::model::parse_entries;
use super::*;
use crate::error::ErrorKind;
use crate::model::{Pointer, PolicyId, Timestamp};

fn pid() -> PolicyId {
    PolicyId::new("ns:p").unwrap()
}

fn admin() -> Value {
    json!({
        "subjects": {"nginx:ditto": {"type": "user"}},
        "resources": {"policy:/": {"grant": ["READ", "WRITE"], "revoke": []}}
    })
}

#[test]
fn auth_context_dedups_and_keeps_order() {
    let a = AuthContext::new(["b:2", "a:1", "b:2"]);
    assert_eq!(a.subjects(), ["b:2".to_owned(), "a:1".to_owned()]);
    assert_eq!(a.first_subject(), Some("b:2"));
    assert!(!a.is_system());
    let s = AuthContext::system();
    assert!(s.is_system());
    assert!(s.subjects().is_empty());
    assert_eq!(format!("{s:?}"), "AuthContext(system)");
    assert_ne!(s, AuthContext::new(Vec::<String>::new()));
}

#[test]
fn json_round_trip() {
    let body = json!({
        "policyId": "ns:p",
        "entries": {
            "owner": admin(),
            "devices": {
                "subjects": {
                    "instance:edge-1": {"type": "instance", "announcement": {"beforeExpiry": "1h"}},
                    "instance:edge-2": {"type": "instance", "expiry": "2099-01-01T00:00:00Z"}
                },
                "resources": {
                    "thing:/features": {"grant": ["WRITE", "READ"], "revoke": []},
                    "thing:features/lane/desiredProperties": {"grant": [], "revoke": ["WRITE"]},
                    "message:/inbox": {"grant": ["READ"], "revoke": []}
                }
            }
        }
    });
    let now = Timestamp::from_micros(1_700_000_000_000_000);
    let p = Policy::from_json(&pid(), &body, now).unwrap();
    let out = p.to_json();
    // Ditto order and normalised keys / permission order.
    let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["policyId", "entries"]);
    assert_eq!(
        out["entries"]["devices"]["resources"]["thing:/features"],
        json!({"grant": ["READ", "WRITE"], "revoke": []})
    );
    assert!(
        out["entries"]["devices"]["resources"]["thing:/features/lane/desiredProperties"]
            .is_object()
    );
    assert_eq!(
        out["entries"]["devices"]["subjects"]["instance:edge-1"],
        json!({"type": "instance", "announcement": {"beforeExpiry": "1h"}})
    );
    assert_eq!(
        p.entry("devices")
            .unwrap()
            .subject("instance:edge-2")
            .unwrap()
            .expiry(),
        Some(Timestamp::parse("2099-01-01T00:00:00Z").unwrap())
    );
    // Body without policyId works too, and parsing our own output gives the same policy.
    let mut no_id = out.clone();
    no_id.as_object_mut().unwrap().remove("policyId");
    assert_eq!(Policy::from_json(&pid(), &no_id, now).unwrap(), p);
    assert_eq!(Policy::from_json(&pid(), &out, now).unwrap(), p);

    // Full JSON round trip keeps revision and timestamps.
    let mut p2 = p.clone();
    p2.touch(Timestamp::from_micros(1_700_000_000_500_000));
    p2.touch(Timestamp::from_micros(1_700_000_001_000_000));
    let full = p2.full_json();
    assert_eq!(full["_revision"], json!(3));
    assert_eq!(full["_created"], json!("2023-11-14T22:13:20.000000Z"));
    let back = Policy::from_full_json(full).unwrap();
    assert_eq!(back, p2);
    assert_eq!(back.etag(), "\"rev:3\"");
    assert_eq!(back.full_json(), p2.full_json());
}

#[test]
fn stored_policies_need_their_underscore_fields() {
    let p = Policy::from_json(
        &pid(),
        &json!({"entries": {"owner": admin()}}),
        Timestamp::now(),
    )
    .unwrap();
    for field in ["_revision", "_created", "_modified", "policyId"] {
        let mut full = p.full_json();
        full.as_object_mut().unwrap().remove(field);
        assert_eq!(
            Policy::from_full_json(full).unwrap_err().kind(),
            ErrorKind::JsonFieldInvalid,
            "{field}"
        );
    }
    assert!(Policy::from_full_json(json!([])).is_err());
}

#[test]
fn bad_policies_are_rejected_with_ditto_kinds() {
    use ErrorKind::{JsonFieldInvalid as Field, PolicyIdInvalid as Id, PolicyInvalid as Invalid};
    let with_entry = |entry: Value| json!({"entries": {"owner": admin(), "e": entry}});
    let with_resource = |key: &str, r: Value| {
        with_entry(json!({"subjects": {"a:b": {"type": "t"}}, "resources": {key: r}}))
    };
    let with_subject =
        |id: &str, s: Value| with_entry(json!({"subjects": {id: s}, "resources": {}}));
    let cases: Vec<(&str, Value, ErrorKind)> = vec![
        ("not an object", json!([1]), Field),
        (
            "unknown top field",
            json!({"entries": {"owner": admin()}, "foo": 1}),
            Field,
        ),
        (
            "read-only field",
            json!({"entries": {"owner": admin()}, "_revision": 1}),
            Field,
        ),
        (
            "imports",
            json!({"entries": {"owner": admin()}, "imports": {}}),
            Invalid,
        ),
        (
            "policyId type",
            json!({"policyId": 5, "entries": {"owner": admin()}}),
            Field,
        ),
        (
            "policyId malformed",
            json!({"policyId": "nocolon", "entries": {"owner": admin()}}),
            Id,
        ),
        (
            "policyId differs",
            json!({"policyId": "ns:other", "entries": {"owner": admin()}}),
            Id,
        ),
        ("entries missing", json!({"policyId": "ns:p"}), Field),
        ("entries type", json!({"entries": []}), Field),
        (
            "label with slash",
            json!({"entries": {"owner": admin(), "a/b": admin()}}),
            Invalid,
        ),
        (
            "empty label",
            json!({"entries": {"owner": admin(), "": admin()}}),
            Invalid,
        ),
        ("entry type", with_entry(json!("x")), Field),
        (
            "entry unknown field",
            with_entry(json!({"subjects": {}, "resources": {}, "importable": "never"})),
            Field,
        ),
        (
            "entry without subjects",
            with_entry(json!({"resources": {}})),
            Field,
        ),
        (
            "entry without resources",
            with_entry(json!({"subjects": {}})),
            Field,
        ),
        (
            "subjects type",
            with_entry(json!({"subjects": [], "resources": {}})),
            Field,
        ),
        (
            "subject id without issuer",
            with_subject("ditto", json!({"type": "t"})),
            Invalid,
        ),
        (
            "subject id without subject",
            with_subject("nginx:", json!({"type": "t"})),
            Invalid,
        ),
        ("subject type", with_subject("a:b", json!("t")), Field),
        (
            "subject without type",
            with_subject("a:b", json!({})),
            Field,
        ),
        (
            "subject type not a string",
            with_subject("a:b", json!({"type": 1})),
            Field,
        ),
        (
            "subject expiry",
            with_subject("a:b", json!({"type": "t", "expiry": "tomorrow"})),
            Field,
        ),
        (
            "resources type",
            with_entry(json!({"subjects": {}, "resources": 1})),
            Field,
        ),
        (
            "resource key type",
            with_resource("device:/", json!({"grant": [], "revoke": []})),
            Invalid,
        ),
        (
            "resource key without colon",
            with_resource("/attributes", json!({"grant": [], "revoke": []})),
            Invalid,
        ),
        (
            "resource key empty segment",
            with_resource("thing:/a//b", json!({"grant": [], "revoke": []})),
            Invalid,
        ),
        (
            "resource type",
            with_resource("thing:/", json!(["READ"])),
            Field,
        ),
        (
            "grant type",
            with_resource("thing:/", json!({"grant": "READ", "revoke": []})),
            Field,
        ),
        (
            "grant item type",
            with_resource("thing:/", json!({"grant": [1], "revoke": []})),
            Field,
        ),
        (
            "unknown permission",
            with_resource("thing:/", json!({"grant": ["EXECUTE"], "revoke": []})),
            Invalid,
        ),
        (
            "lowercase permission",
            with_resource("thing:/", json!({"grant": [], "revoke": ["read"]})),
            Invalid,
        ),
        (
            "grant missing",
            with_resource("thing:/", json!({"revoke": []})),
            Field,
        ),
        (
            "revoke missing",
            with_resource("thing:/", json!({"grant": []})),
            Field,
        ),
        (
            "resource unknown field",
            with_resource("thing:/", json!({"grant": [], "revoke": [], "x": 1})),
            Field,
        ),
        (
            "duplicate key after normalisation",
            with_entry(json!({"subjects": {}, "resources": {
                "thing:/a": {"grant": [], "revoke": []},
                "thing:a": {"grant": [], "revoke": []}
            }})),
            Invalid,
        ),
        ("nobody may manage it", json!({"entries": {}}), Invalid),
        (
            "only an expiring manager",
            json!({"entries": {"e": {
                "subjects": {"a:b": {"type": "t", "expiry": "2099-01-01T00:00:00Z"}},
                "resources": {"policy:/": {"grant": ["WRITE"], "revoke": []}}
            }}}),
            Invalid,
        ),
        (
            "manager revoked by another entry",
            json!({"entries": {"owner": admin(), "deny": {
                "subjects": {"nginx:ditto": {"type": "t"}},
                "resources": {"policy:/": {"grant": [], "revoke": ["WRITE"]}}
            }}}),
            Invalid,
        ),
        (
            "WRITE below the policy root does not count",
            json!({"entries": {"e": {
                "subjects": {"a:b": {"type": "t"}},
                "resources": {"policy:/entries": {"grant": ["READ", "WRITE"], "revoke": []}}
            }}}),
            Invalid,
        ),
        (
            // Ditto's documentation example as printed: `resources` of entry `private` sits
            // inside its `subjects`, so it reads as a subject id without issuer.
            "Ditto doc example typo",
            json!({"entries": {"owner": admin(), "private": {
                "subjects": {
                    "nginx:some-users": {"type": "a group of users"},
                    "resources": {"thing:/x": {"grant": [], "revoke": ["READ"]}}
                }
            }}}),
            Invalid,
        ),
    ];
    for (what, body, kind) in cases {
        let e = Policy::from_json(&pid(), &body, Timestamp::now()).expect_err(what);
        assert_eq!(e.kind(), kind, "{what}: {e}");
        assert_eq!(e.status(), 400, "{what}");
        assert!(!e.message().is_empty());
    }
    // Codes as Ditto's.
    let e = Policy::from_json(&pid(), &json!({"entries": {}}), Timestamp::now()).unwrap_err();
    assert_eq!(e.code(), "policies:policy.invalid");
}

// ---- properties ----

const POOL: [&str; 4] = ["s:1", "s:2", "s:3", "s:4"];
const SEGS: [&str; 2] = ["a", "b"];
const TYPES: [ResourceType; 2] = [ResourceType::Thing, ResourceType::Policy];

fn arb_path(max: usize) -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(&SEGS[..]), 0..=max)
}

fn perms_json(bits: u8) -> Value {
    Value::Array(
        Permission::ALL
            .iter()
            .filter(|p| bits & p.bit() != 0)
            .map(|p| Value::String(p.as_str().into()))
            .collect(),
    )
}

fn arb_entry() -> impl Strategy<Value = Value> {
    let subjects = prop::collection::btree_set(prop::sample::select(&POOL[..]), 0..=3);
    let resource = (0usize..2, arb_path(3), 0u8..4, 0u8..4);
    let resources = prop::collection::vec(resource, 0..=5);
    (subjects, resources).prop_map(|(subjects, resources)| {
        let subjects: serde_json::Map<String, Value> = subjects
            .into_iter()
            .map(|s| (s.to_owned(), json!({"type": "t"})))
            .collect();
        let mut res = serde_json::Map::new();
        for (t, path, grant, revoke) in resources {
            let key = format!("{}:/{}", TYPES[t].as_str(), path.join("/"));
            res.insert(
                key,
                json!({"grant": perms_json(grant), "revoke": perms_json(revoke)}),
            );
        }
        json!({"subjects": subjects, "resources": res})
    })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    prop::collection::vec(arb_entry(), 0..=5).prop_map(|entries| {
        let obj: serde_json::Map<String, Value> = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| (format!("e{i}"), e))
            .collect();
        let entries = parse_entries(&Value::Object(obj)).unwrap();
        Policy::new(pid(), entries, Timestamp::from_micros(1))
    })
}

fn arb_auth() -> impl Strategy<Value = AuthContext> {
    prop::collection::vec(
        prop::sample::select(&["s:1", "s:2", "s:3", "s:4", "s:unknown"][..]),
        0..=3,
    )
    .prop_map(AuthContext::new)
}

fn ptr(segs: &[&str]) -> Pointer {
    Pointer::from_segments(segs.iter().copied()).unwrap()
}

/// The definition, spelled out: the deepest applicable key mentioning `p` decides, revoke wins
/// at equal depth, no mention denies.
fn naive(
    p: &Policy,
    auth: &AuthContext,
    t: ResourceType,
    path: &Pointer,
    perm: Permission,
) -> bool {
    let mut best: Option<(usize, bool)> = None;
    for (_, e) in p.entries() {
        if !e
            .subjects()
            .iter()
            .any(|(s, _)| auth.subjects().contains(s))
        {
            continue;
        }
        for (k, r) in e.resources() {
            if k.resource_type() != t || !path.starts_with(k.path()) {
                continue;
            }
            if !(r.grant.contains(perm) || r.revoke.contains(perm)) {
                continue;
            }
            let (d, v) = (k.path().len(), !r.revoke.contains(perm));
            best = Some(match best {
                Some((bd, bv)) if bd > d => (bd, bv),
                Some((bd, bv)) if bd == d => (d, bv && v),
                _ => (d, v),
            });
        }
    }
    best.is_some_and(|(_, v)| v)
}

/// Paths of every key of type `t` strictly below `path`.
fn keys_below(p: &Policy, t: ResourceType, path: &Pointer) -> Vec<Pointer> {
    p.entries()
        .iter()
        .flat_map(|(_, e)| e.resources())
        .filter(|(k, _)| {
            k.resource_type() == t && k.path().len() > path.len() && k.path().starts_with(path)
        })
        .map(|(k, _)| k.path().clone())
        .collect()
}

fn arb_value(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(Value::from),
        Just(json!([1, 2])),
        Just(json!({}))
    ];
    leaf.prop_recursive(depth, 24, 3, |inner| {
        prop::collection::btree_map(prop::sample::select(&SEGS[..]), inner, 0..=3)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    })
}

/// Leaves of `v` (non-objects and empty objects) with their paths below `at`.
fn leaves(v: &Value, at: &Pointer, out: &mut Vec<(Pointer, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                leaves(c, &at.child(k), out);
            }
        }
        _ => out.push((at.clone(), v.clone())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn enforcement_matches_the_definition(
        p in arb_policy(),
        auth in arb_auth(),
        t in 0usize..2,
        path in arb_path(5),
        write in any::<bool>(),
    ) {
        let (t, path) = (TYPES[t], ptr(&path));
        let perm = if write { Permission::Write } else { Permission::Read };
        let has = p.has_permission(&auth, t, &path, perm);
        let unrestricted = p.has_unrestricted(&auth, t, &path, perm);
        let partial = p.has_partial(&auth, t, &path, perm);
        prop_assert!(!unrestricted || has, "unrestricted without permission");
        prop_assert!(!has || partial, "permission without partial");

        let below = keys_below(&p, t, &path);
        prop_assert_eq!(has, naive(&p, &auth, t, &path, perm));
        prop_assert_eq!(unrestricted, has && below.iter().all(|k| naive(&p, &auth, t, k, perm)));
        prop_assert_eq!(partial, has || below.iter().any(|k| naive(&p, &auth, t, k, perm)));

        let sys = AuthContext::system();
        prop_assert!(p.has_unrestricted(&sys, t, &path, perm));
    }

    #[test]
    fn filter_readable_keeps_exactly_the_readable_leaves(
        p in arb_policy(),
        auth in arb_auth(),
        path in arb_path(2),
        value in arb_value(4),
    ) {
        let t = ResourceType::Thing;
        let path = ptr(&path);
        let out = p.filter_readable(&auth, t, &path, &value);
        if p.has_unrestricted(&auth, t, &path, Permission::Read) {
            prop_assert_eq!(out.as_ref(), Some(&value));
        }
        if !p.has_partial(&auth, t, &path, Permission::Read) {
            prop_assert_eq!(out.as_ref(), None);
        }
        let mut kept = Vec::new();
        if let Some(out) = &out {
            leaves(out, &path, &mut kept);
        }
        for (at, v) in &kept {
            prop_assert!(naive(&p, &auth, t, at, Permission::Read), "leaked {}", at);
            if !(v.is_object()) {
                let rel = at.strip_prefix(&path).unwrap();
                prop_assert_eq!(rel.get(&value), Some(v));
            }
        }
        let mut all = Vec::new();
        leaves(&value, &path, &mut all);
        for (at, v) in all {
            if !v.is_object() && naive(&p, &auth, t, &at, Permission::Read) {
                let rel = at.strip_prefix(&path).unwrap();
                let got = out.as_ref().and_then(|o| rel.get(o));
                prop_assert_eq!(got, Some(&v), "dropped {}", at);
            }
        }
    }

    #[test]
    fn policies_round_trip(p in arb_policy()) {
        let back = Policy::from_full_json(p.full_json()).unwrap();
        prop_assert_eq!(&back, &p);
        for (label, entry) in p.entries() {
            for (key, r) in entry.resources() {
                let segs = ["entries".to_owned(), label.clone(), "resources".into()]
                    .into_iter()
                    .chain(key.to_segments());
                let at = Pointer::from_segments(segs).unwrap();
                prop_assert_eq!(p.get_at(&at).unwrap(), r.to_json());
            }
        }
    }

    #[test]
    fn resource_keys_never_panic_and_normalise(s in "[a-z:/]{0,12}") {
        if let Ok(k) = ResourceKey::parse(&s) {
            prop_assert_eq!(ResourceKey::parse(&k.to_string()).unwrap(), k.clone());
            prop_assert_eq!(ResourceKey::from_segments(&k.to_segments()).unwrap(), k);
        }
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let _ = Policy::from_json(&pid(), &v, Timestamp::from_micros(1));
        let _ = Policy::from_full_json(v.clone());
        let mut p = Policy::default_for(pid(), &AuthContext::new(["a:b"]), Timestamp::from_micros(1));
        for path in ["/", "/entries", "/entries/DEFAULT", "/entries/DEFAULT/subjects",
                     "/entries/DEFAULT/subjects/a:b", "/entries/DEFAULT/resources",
                     "/entries/DEFAULT/resources/thing:/x"] {
            let path = Pointer::parse(path).unwrap();
            let before = p.clone();
            if p.modify_at(&path, v.clone()).is_err() {
                prop_assert_eq!(&p, &before);
            }
            let _ = p.get_at(&path);
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(&["READ", "WRITE", "thing:/", "a:b", "x", ""][..])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        let keys = prop::sample::select(
            &[
                "policyId",
                "entries",
                "subjects",
                "resources",
                "grant",
                "revoke",
                "type",
                "thing:/",
                "a:b",
                "DEFAULT",
                "x",
            ][..],
        );
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..4).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}
