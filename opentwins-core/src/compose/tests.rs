//! The composition operations against a real in-memory engine, as callers with and without
//! permissions.

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::engine::EngineConfig;
use crate::error::Error;
use crate::protocol::PolicyCommand;

fn id(s: &str) -> ThingId {
    ThingId::new(s).unwrap()
}

fn alice() -> AuthContext {
    AuthContext::new(["test:alice"])
}

fn bob() -> AuthContext {
    AuthContext::new(["test:bob"])
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("test timed out")
}

fn composer() -> Composer {
    let twins = Twins::in_memory(EngineConfig::default());
    twins.enable_composition();
    Composer::new(twins, ComposeConfig::default())
}

/// car = wheel x2 (each bolt x3) + camera x1, all alice's.
async fn car_types(c: &Composer) {
    let a = alice();
    for (t, model) in [
        ("ns:car", "sedan"),
        ("ns:wheel", "R17"),
        ("ns:bolt", "M12"),
        ("ns:camera", "cam"),
    ] {
        let body = json!({"attributes": {"model": model}, "features": {"state": {"properties": {"ok": true}}}});
        let out = c.put_type(&a, &id(t), body).await.unwrap();
        assert_eq!(out.response.status, 201);
    }
    c.set_type_child(&a, &id("ns:car"), &id("ns:wheel"), 2)
        .await
        .unwrap();
    c.set_type_child(&a, &id("ns:car"), &id("ns:camera"), 1)
        .await
        .unwrap();
    c.set_type_child(&a, &id("ns:wheel"), &id("ns:bolt"), 3)
        .await
        .unwrap();
}

fn attr(c: &Composer, thing: &str, key: &str) -> Option<Value> {
    c.twins()
        .get_thing(&id(thing))
        .and_then(|t| t.body()["attributes"].get(key).cloned())
}

fn ids(page: &SearchResult) -> Vec<String> {
    page.items
        .iter()
        .map(|t| t["thingId"].as_str().unwrap().to_owned())
        .collect()
}

fn tree_ids(n: &TreeNode) -> Value {
    json!({ n.thing_id.as_str(): n.children.iter().map(tree_ids).collect::<Vec<_>>() })
}

#[tokio::test]
async fn a_three_level_type_instantiates_into_a_twin_tree() {
    within(async {
        let c = composer();
        let a = alice();
        car_types(&c).await;
        assert_eq!(
            c.type_children(&a, &id("ns:car")).await.unwrap(),
            [
                ChildType {
                    type_id: id("ns:wheel"),
                    count: 2
                },
                ChildType {
                    type_id: id("ns:camera"),
                    count: 1
                }
            ]
        );
        assert_eq!(
            c.type_parents(&a, &id("ns:bolt")).await.unwrap(),
            [ChildType {
                type_id: id("ns:wheel"),
                count: 3
            }]
        );
        let tt = c.type_tree(&a, &id("ns:car")).await.unwrap();
        assert_eq!(
            serde_json::to_value(&tt).unwrap(),
            json!({"thingId": "ns:car", "children": [
                {"thingId": "ns:wheel", "count": 2, "children": [{"thingId": "ns:bolt", "count": 3, "children": []}]},
                {"thingId": "ns:camera", "count": 1, "children": []}
            ]})
        );

        let spec = NewTree::from_body(
            json!({"thingId": "fleet:car-1", "attributes": {"plate": "1234"}}),
        )
        .unwrap();
        let created = c.instantiate(&a, &id("ns:car"), spec).await.unwrap();
        assert_eq!(created.thing_id, id("fleet:car-1"));
        assert_eq!(created.created.len(), 1 + 2 * (1 + 3) + 1);
        assert_eq!(c.twins().thing_count(), 4 + 10);

        // The root: the type's content, the patch, where it came from; no parent.
        let root = c.get_twin(&a, &id("fleet:car-1"), None).await.unwrap();
        assert_eq!(
            root["attributes"],
            json!({"model": "sedan", "plate": "1234", "_type": "ns:car"})
        );
        assert_eq!(root["features"], json!({"state": {"properties": {"ok": true}}}));
        assert_eq!(root["policyId"], "fleet:car-1");
        // A grandchild: its parent, its type, the root's policy.
        let bolt = c
            .get_twin(&a, &id("fleet:car-1:wheel_2:bolt_3"), None)
            .await
            .unwrap();
        assert_eq!(
            bolt["attributes"],
            json!({"model": "M12", "_type": "ns:bolt", "_parent": "fleet:car-1:wheel_2"})
        );
        assert_eq!(bolt["policyId"], "fleet:car-1");

        let kids = c
            .children(&a, &id("fleet:car-1"), None, None, None)
            .await
            .unwrap();
        assert_eq!(
            ids(&kids),
            ["fleet:car-1:camera", "fleet:car-1:wheel_1", "fleet:car-1:wheel_2"]
        );
        let narrowed = c
            .children(
                &a,
                &id("fleet:car-1"),
                Some("eq(attributes/_type,\"ns:wheel\")"),
                Some("size(1)"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(ids(&narrowed), ["fleet:car-1:wheel_1"]);
        assert!(narrowed.cursor.is_some());
        assert_eq!(
            c.parent(&a, &id("fleet:car-1:wheel_1:bolt_1")).await.unwrap(),
            id("fleet:car-1:wheel_1")
        );
        assert_eq!(
            c.parent(&a, &id("fleet:car-1")).await,
            Err(ComposeError::NoParent(id("fleet:car-1")))
        );
        let tree = c.twin_tree(&a, &id("fleet:car-1")).await.unwrap();
        assert_eq!(
            tree_ids(&tree),
            json!({"fleet:car-1": [
                {"fleet:car-1:camera": []},
                {"fleet:car-1:wheel_1": [{"fleet:car-1:wheel_1:bolt_1": []}, {"fleet:car-1:wheel_1:bolt_2": []}, {"fleet:car-1:wheel_1:bolt_3": []}]},
                {"fleet:car-1:wheel_2": [{"fleet:car-1:wheel_2:bolt_1": []}, {"fleet:car-1:wheel_2:bolt_2": []}, {"fleet:car-1:wheel_2:bolt_3": []}]},
            ]})
        );
        // Types and roots are listed apart.
        assert_eq!(
            ids(&c.list_types(&a, None, None, None).unwrap()),
            ["ns:bolt", "ns:camera", "ns:car", "ns:wheel"]
        );
        assert_eq!(
            ids(&c.list_roots(&a, None, None, None).unwrap()),
            ["fleet:car-1"]
        );
        // Instantiating onto an existing id creates nothing.
        let again = c
            .instantiate(&a, &id("ns:wheel"), NewTree::new(id("fleet:car-1:wheel_1")))
            .await
            .unwrap_err();
        assert_eq!(Error::from(again).status(), 409);
        assert_eq!(c.twins().thing_count(), 14);
    })
    .await;
}

#[tokio::test]
async fn links_that_would_make_a_cycle_are_refused() {
    within(async {
        let c = composer();
        let a = alice();
        car_types(&c).await;
        // Types: bolt cannot contain car (car > wheel > bolt), nor itself.
        for (parent, child) in [
            ("ns:bolt", "ns:car"),
            ("ns:wheel", "ns:car"),
            ("ns:car", "ns:car"),
        ] {
            assert_eq!(
                c.set_type_child(&a, &id(parent), &id(child), 1)
                    .await
                    .unwrap_err(),
                ComposeError::Cycle {
                    child: id(child),
                    parent: id(parent)
                }
            );
        }
        // A shared child type is no cycle.
        c.put_type(&a, &id("ns:bike"), json!({})).await.unwrap();
        c.set_type_child(&a, &id("ns:bike"), &id("ns:wheel"), 2)
            .await
            .unwrap();
        assert_eq!(c.type_parents(&a, &id("ns:wheel")).await.unwrap().len(), 2);

        c.instantiate(&a, &id("ns:car"), NewTree::new(id("ns:c1")))
            .await
            .unwrap();
        for (child, parent) in [
            ("ns:c1", "ns:c1:wheel_1:bolt_2"),
            ("ns:c1", "ns:c1"),
            ("ns:c1:wheel_1", "ns:c1:wheel_1:bolt_1"),
        ] {
            assert_eq!(
                c.link(&a, &id(child), &id(parent)).await.unwrap_err(),
                ComposeError::Cycle {
                    child: id(child),
                    parent: id(parent)
                }
            );
        }
        assert_eq!(attr(&c, "ns:c1", PARENT), None);
        // Moving a bolt to the other wheel is fine; so is unlinking it.
        let out = c
            .link(&a, &id("ns:c1:wheel_1:bolt_1"), &id("ns:c1:wheel_2"))
            .await
            .unwrap();
        assert_eq!(out.response.status, 204);
        assert_eq!(
            attr(&c, "ns:c1:wheel_1:bolt_1", PARENT),
            Some(json!("ns:c1:wheel_2"))
        );
        c.unlink(&a, &id("ns:c1:wheel_1:bolt_1")).await.unwrap();
        assert_eq!(attr(&c, "ns:c1:wheel_1:bolt_1", PARENT), None);
        assert_eq!(
            c.unlink(&a, &id("ns:c1:wheel_1:bolt_1")).await,
            Err(ComposeError::NoParent(id("ns:c1:wheel_1:bolt_1")))
        );
        let out = c
            .link(&a, &id("ns:c1:wheel_1:bolt_1"), &id("ns:c1"))
            .await
            .unwrap();
        assert_eq!(out.response.status, 201);
        // Kinds are kept apart: a type is no twin's parent, a twin no type's child.
        assert_eq!(
            c.link(&a, &id("ns:c1"), &id("ns:car")).await,
            Err(ComposeError::NotATwin(id("ns:car")))
        );
        assert_eq!(
            c.set_type_child(&a, &id("ns:car"), &id("ns:c1"), 1)
                .await
                .unwrap_err(),
            ComposeError::NotAType(id("ns:c1"))
        );
        assert!(matches!(
            c.set_type_child(&a, &id("ns:car"), &id("ns:bolt"), 0).await,
            Err(ComposeError::Invalid(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn duplicate_copies_a_tree_under_new_ids() {
    within(async {
        let c = composer();
        let a = alice();
        car_types(&c).await;
        c.instantiate(&a, &id("ns:car"), NewTree::new(id("ns:c1")))
            .await
            .unwrap();
        // A reading on the original, which the copy must not inherit.
        let set = ThingCommand::new(
            id("ns:c1:camera"),
            Action::Modify,
            Pointer::parse("/features/state/properties/ok").unwrap(),
            Some(json!(false)),
        );
        c.twins().apply(&a, set).await.unwrap();

        let spec = NewTree::from_body(json!({"thingId": "ns:c2", "attributes": {"plate": "B"}})).unwrap();
        let created = c.duplicate(&a, &id("ns:c1"), spec, true).await.unwrap();
        assert_eq!(created.created.len(), 10);
        assert_eq!(created.created[0], id("ns:c2"));
        assert!(created.created.contains(&id("ns:c2:wheel_2:bolt_3")));
        let cam = c.get_twin(&a, &id("ns:c2:camera"), None).await.unwrap();
        assert_eq!(
            cam["attributes"],
            json!({"model": "cam", "_copyOf": "ns:c1:camera", "_type": "ns:camera", "_parent": "ns:c2"})
        );
        assert_eq!(cam["features"], json!({"state": {"properties": {"ok": null}}}));
        assert_eq!(cam["policyId"], "ns:c2");
        let root = c.get_twin(&a, &id("ns:c2"), None).await.unwrap();
        assert_eq!(root["attributes"]["plate"], "B");
        assert_eq!(root["attributes"].get(PARENT), None);
        // The original is untouched.
        assert_eq!(
            c.twins().get_thing(&id("ns:c1:camera")).unwrap().body()["features"]["state"]["properties"]["ok"],
            false
        );
        // Not recursive: the twin alone, as a root.
        let one = c
            .duplicate(&a, &id("ns:c1:wheel_1"), NewTree::new(id("ns:spare")), false)
            .await
            .unwrap();
        assert_eq!(one.created, [id("ns:spare")]);
        assert_eq!(attr(&c, "ns:spare", PARENT), None);
        assert_eq!(attr(&c, "ns:spare", COPY_OF), Some(json!("ns:c1:wheel_1")));
        // Types are instantiated, not duplicated.
        assert_eq!(
            c.duplicate(&a, &id("ns:car"), NewTree::new(id("ns:x")), true).await,
            Err(ComposeError::NotATwin(id("ns:car")))
        );
        // A tree larger than the limit is refused before anything is created.
        let small = Composer::new(
            c.twins().clone(),
            ComposeConfig {
                max_tree_things: 9,
                ..ComposeConfig::default()
            },
        );
        let before = c.twins().thing_count();
        assert_eq!(
            small.duplicate(&a, &id("ns:c1"), NewTree::new(id("ns:c3")), true).await,
            Err(ComposeError::TooLarge { limit: 9 })
        );
        assert_eq!(
            small.instantiate(&a, &id("ns:car"), NewTree::new(id("ns:c3"))).await,
            Err(ComposeError::TooLarge { limit: 9 })
        );
        assert_eq!(c.twins().thing_count(), before);
    })
    .await;
}

#[tokio::test]
async fn delete_removes_a_subtree_leaves_first_or_unlinks_the_children() {
    within(async {
        let c = composer();
        let a = alice();
        car_types(&c).await;
        c.instantiate(&a, &id("ns:car"), NewTree::new(id("ns:c1")))
            .await
            .unwrap();
        // Recursive: the wheel and its bolts, leaves first.
        let gone = c.delete_twin(&a, &id("ns:c1:wheel_1"), true).await.unwrap();
        assert_eq!(
            gone.deleted,
            [
                id("ns:c1:wheel_1:bolt_3"),
                id("ns:c1:wheel_1:bolt_2"),
                id("ns:c1:wheel_1:bolt_1"),
                id("ns:c1:wheel_1")
            ]
        );
        assert_eq!(c.twins().thing_count(), 4 + 6);
        // Alone: the children become roots.
        let gone = c
            .delete_twin(&a, &id("ns:c1:wheel_2"), false)
            .await
            .unwrap();
        assert_eq!(gone.deleted, [id("ns:c1:wheel_2")]);
        assert_eq!(gone.unlinked.len(), 3);
        assert_eq!(attr(&c, "ns:c1:wheel_2:bolt_1", PARENT), None);
        let roots = c.list_roots(&a, None, None, None).unwrap();
        assert_eq!(ids(&roots).len(), 4);
        // The rest of the car.
        let gone = c.delete_twin(&a, &id("ns:c1"), true).await.unwrap();
        assert_eq!(gone.deleted, [id("ns:c1:camera"), id("ns:c1")]);
        assert_eq!(
            c.delete_twin(&a, &id("ns:car"), true).await,
            Err(ComposeError::NotATwin(id("ns:car")))
        );
        // A type in use cannot be deleted; once unused it can.
        assert!(matches!(
            c.delete_type(&a, &id("ns:bolt")).await,
            Err(ComposeError::InUse { .. })
        ));
        c.remove_type_child(&a, &id("ns:wheel"), &id("ns:bolt"))
            .await
            .unwrap();
        assert_eq!(
            c.remove_type_child(&a, &id("ns:wheel"), &id("ns:bolt"))
                .await,
            Err(ComposeError::NotAChild {
                parent: id("ns:wheel"),
                child: id("ns:bolt")
            })
        );
        c.delete_type(&a, &id("ns:bolt")).await.unwrap();
        assert!(c.twins().get_thing(&id("ns:bolt")).is_none());
    })
    .await;
}

#[tokio::test]
async fn reserved_attributes_are_refused_and_kept() {
    within(async {
        let c = composer();
        let a = alice();
        car_types(&c).await;
        assert_eq!(
            c.put_type(&a, &id("ns:x"), json!({"attributes": {"_isType": false}}))
                .await
                .unwrap_err(),
            ComposeError::Restricted("_isType".into())
        );
        assert_eq!(
            NewTree::from_body(json!({"thingId": "ns:t", "attributes": {"_parent": "ns:c"}})),
            Err(ComposeError::Restricted("_parent".into()))
        );
        assert!(matches!(
            NewTree::from_body(json!({"attributes": {}})),
            Err(ComposeError::Invalid(_))
        ));
        // Replacing a type keeps its composition.
        let out = c
            .put_type(&a, &id("ns:car"), json!({"attributes": {"model": "coupe"}}))
            .await
            .unwrap();
        assert_eq!(out.response.status, 204);
        assert_eq!(
            attr(&c, "ns:car", CHILDREN),
            Some(json!({"ns:wheel": 2, "ns:camera": 1}))
        );
        assert_eq!(attr(&c, "ns:car", "model"), Some(json!("coupe")));

        // The things API, guarded by the engine.
        c.instantiate(&a, &id("ns:car"), NewTree::new(id("ns:c1")))
            .await
            .unwrap();
        let cmd = |action, path: &str, value: Option<Value>| {
            ThingCommand::new(
                id("ns:c1:camera"),
                action,
                Pointer::parse(path).unwrap(),
                value,
            )
        };
        for refused in [
            cmd(Action::Modify, "/attributes/_parent", Some(json!("ns:x"))),
            cmd(Action::Delete, "/attributes/_parent", None),
            cmd(
                Action::Merge,
                "/",
                Some(json!({"attributes": {"_type": null}})),
            ),
            cmd(Action::Delete, "/attributes", None),
            cmd(Action::Merge, "/attributes", Some(json!(null))),
        ] {
            assert!(
                c.twins()
                    .apply(&a, refused.clone())
                    .await
                    .is_err_and(|e| e.code() == "json.field.invalid"),
                "{refused:?}"
            );
        }
        // Replacing the whole thing or all attributes carries the markers over.
        c.twins()
            .apply(
                &a,
                cmd(Action::Modify, "/", Some(json!({"attributes": {"n": 1}}))),
            )
            .await
            .unwrap();
        assert_eq!(attr(&c, "ns:c1:camera", PARENT), Some(json!("ns:c1")));
        assert_eq!(attr(&c, "ns:c1:camera", "n"), Some(json!(1)));
        c.twins()
            .apply(
                &a,
                cmd(Action::Modify, "/attributes", Some(json!({"m": 2}))),
            )
            .await
            .unwrap();
        assert_eq!(
            c.twins().get_thing(&id("ns:c1:camera")).unwrap().body()["attributes"],
            json!({"m": 2, "_type": "ns:camera", "_parent": "ns:c1"})
        );
        // Ordinary writes pass; a thing without markers may lose all its attributes.
        c.twins()
            .apply(&a, cmd(Action::Merge, "/attributes", Some(json!({"m": 3}))))
            .await
            .unwrap();
        let plain = ThingCommand::new(
            id("ns:plain"),
            Action::Create,
            Pointer::root(),
            Some(json!({"attributes": {"a": 1}})),
        );
        c.twins().apply(&a, plain).await.unwrap();
        let wipe = ThingCommand::new(
            id("ns:plain"),
            Action::Delete,
            Pointer::parse("/attributes").unwrap(),
            None,
        );
        assert_eq!(
            c.twins().apply(&a, wipe).await.unwrap().response.status,
            204
        );
    })
    .await;
}

/// Creates `policy_id` giving alice everything and `extra` READ on things.
async fn shared_policy(c: &Composer, policy_id: &str, extra: &str) {
    let cmd = PolicyCommand {
        policy_id: PolicyId::new(policy_id).unwrap(),
        action: Action::Create,
        path: Pointer::root(),
        value: Some(json!({"entries": {
            "OWNER": {"subjects": {"test:alice": {"type": "t"}}, "resources": {
                "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
                "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}}},
            "READER": {"subjects": {extra: {"type": "t"}}, "resources": {
                "thing:/": {"grant": ["READ"], "revoke": []}}}
        }})),
        headers: Headers::default(),
    };
    c.twins().apply_policy(&alice(), cmd).await.unwrap();
}

#[tokio::test]
async fn callers_see_and_change_only_what_policies_allow() {
    within(async {
        let c = composer();
        let (a, b) = (alice(), bob());
        car_types(&c).await;
        c.instantiate(&a, &id("ns:car"), NewTree::new(id("ns:c1")))
            .await
            .unwrap();
        let before = c.twins().thing_count();
        // Bob may read nothing of alice's: every operation is a not-found, nothing changes.
        assert!(c.list_types(&b, None, None, None).unwrap().items.is_empty());
        assert!(c.list_roots(&b, None, None, None).unwrap().items.is_empty());
        let not_found = |r: Result<_, ComposeError>| {
            let e = Error::from(r.expect_err("refused"));
            assert_eq!(
                (e.status(), e.code()),
                (404, "things:thing.notfound".into()),
                "{e}"
            );
        };
        not_found(c.get_type(&b, &id("ns:car"), None).await.map(drop));
        not_found(c.type_children(&b, &id("ns:car")).await.map(drop));
        not_found(
            c.instantiate(&b, &id("ns:car"), NewTree::new(id("bob:car")))
                .await
                .map(drop),
        );
        not_found(
            c.children(&b, &id("ns:c1"), None, None, None)
                .await
                .map(drop),
        );
        not_found(c.twin_tree(&b, &id("ns:c1")).await.map(drop));
        not_found(
            c.duplicate(&b, &id("ns:c1"), NewTree::new(id("bob:c")), true)
                .await
                .map(drop),
        );
        not_found(c.delete_twin(&b, &id("ns:c1"), true).await.map(drop));
        not_found(c.unlink(&b, &id("ns:c1:camera")).await.map(drop));
        not_found(c.delete_type(&b, &id("ns:bolt")).await.map(drop));
        not_found(
            c.set_type_child(&b, &id("ns:car"), &id("ns:bolt"), 1)
                .await
                .map(drop),
        );
        // Bob's own twin cannot hang below alice's, nor can he touch the markers of hers.
        c.twins()
            .apply(
                &b,
                ThingCommand::new(
                    id("bob:t"),
                    Action::Create,
                    Pointer::root(),
                    Some(json!({})),
                ),
            )
            .await
            .unwrap();
        not_found(c.link(&b, &id("bob:t"), &id("ns:c1")).await.map(drop));
        assert_eq!(attr(&c, "bob:t", PARENT), None);
        assert_eq!(c.twins().thing_count(), before + 1);

        // A reader sees a tree but cannot delete it: refused at the first leaf, nothing gone.
        shared_policy(&c, "ns:shared", "test:bob").await;
        let spec =
            NewTree::from_body(json!({"thingId": "ns:c2", "policyId": "ns:shared"})).unwrap();
        c.instantiate(&a, &id("ns:car"), spec).await.unwrap();
        assert_eq!(
            attr(&c, "ns:c2:wheel_1:bolt_1", PARENT),
            Some(json!("ns:c2:wheel_1"))
        );
        let tree = c.twin_tree(&b, &id("ns:c2")).await.unwrap();
        assert_eq!(tree.children.len(), 3);
        assert_eq!(c.list_roots(&b, None, None, None).unwrap().items.len(), 2);
        let e = Error::from(c.delete_twin(&b, &id("ns:c2"), true).await.unwrap_err());
        assert_eq!(e.status(), 403);
        let e = Error::from(c.unlink(&b, &id("ns:c2:camera")).await.unwrap_err());
        assert_eq!(e.status(), 403);
        assert_eq!(c.twins().thing_count(), before + 1 + 10);
        // Bob may copy what he reads into a tree of his own.
        let copy = c
            .duplicate(&b, &id("ns:c2"), NewTree::new(id("bob:c2")), true)
            .await
            .unwrap();
        assert_eq!(copy.created.len(), 10);
        assert_eq!(
            c.twins()
                .get_thing(&id("bob:c2:camera"))
                .unwrap()
                .policy_id()
                .as_str(),
            "bob:c2"
        );
        c.delete_twin(&b, &id("bob:c2"), true).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_creation_that_fails_half_way_is_undone() {
    within(async {
        let limit = 2048;
        let c = Composer::new(
            Twins::in_memory(EngineConfig {
                max_thing_bytes: limit,
                ..EngineConfig::default()
            }),
            ComposeConfig::default(),
        );
        let a = alice();
        c.put_type(&a, &id("ns:car"), json!({})).await.unwrap();
        // A child type that fits as a type but not as a twin (which gains _type, _parent and a
        // longer id).
        c.put_type(&a, &id("ns:big"), json!({"attributes": {"pad": ""}}))
            .await
            .unwrap();
        let size =
            crate::model::schema::json_size(c.twins().get_thing(&id("ns:big")).unwrap().body());
        let pad = "x".repeat(limit - size - 8);
        c.put_type(&a, &id("ns:big"), json!({"attributes": {"pad": pad}}))
            .await
            .unwrap();
        c.put_type(&a, &id("ns:small"), json!({})).await.unwrap();
        c.set_type_child(&a, &id("ns:car"), &id("ns:small"), 2)
            .await
            .unwrap();
        c.set_type_child(&a, &id("ns:car"), &id("ns:big"), 1)
            .await
            .unwrap();
        let before = c.twins().thing_count();
        let e = c
            .instantiate(&a, &id("ns:car"), NewTree::new(id("ns:c1")))
            .await
            .unwrap_err();
        assert_eq!(Error::from(e).status(), 413);
        assert_eq!(c.twins().thing_count(), before);
        assert!(c.twins().get_thing(&id("ns:c1:small_1")).is_none());
    })
    .await;
}
