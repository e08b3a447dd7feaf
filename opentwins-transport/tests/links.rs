//! Distributed twins over links: convergence of 3 to 5 instances in P2P, star and tree
//! topologies under delayed, duplicated and reordered delivery; no update crossing a link twice;
//! outbox survival of a dropped instance; ownership; selection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentwins_core::model::PolicyId;
use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::store::{SledConfig, SledStore};
use opentwins_core::{EngineConfig, Pointer, ThingId, Twins};
use opentwins_transport::link::{Faults, LinkConfig, Links, Network, Wire};
use proptest::prelude::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

mod common;
use common::{instance, link_to, writer};

/// Links `a` and `b` both ways: `a` sends binary batches, `b` JSON commands (both forms in
/// every test that links instances so).
async fn connect(a: &Links, b: &Links) {
    let binary = LinkConfig {
        wire: Wire::Binary,
        ..link_to(b.instance_id())
    };
    a.add(binary).await.unwrap();
    b.add(link_to(a.instance_id())).await.unwrap();
}

#[derive(Debug, Clone, Copy)]
enum Topology {
    Mesh,
    Star,
    Tree,
}

/// Links `nodes` into `topology`: mesh = every pair; star = all to node 0; tree = node i to
/// node (i-1)/2.
async fn wire(nodes: &[Links], topology: Topology) {
    for i in 1..nodes.len() {
        match topology {
            Topology::Mesh => {
                for j in 0..i {
                    connect(&nodes[i], &nodes[j]).await;
                }
            }
            Topology::Star => connect(&nodes[i], &nodes[0]).await,
            Topology::Tree => connect(&nodes[i], &nodes[(i - 1) / 2]).await,
        }
    }
}

/// Waits until no outbox holds anything and nothing is in flight, several times in a row.
async fn quiesce(nodes: &[Links], network: &Network) {
    let mut calm = 0;
    while calm < 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if network.in_flight() == 0 && nodes.iter().all(Links::is_idle) {
            calm += 1;
        } else {
            calm = 0;
        }
    }
}

fn body(links: &Links, id: &str) -> Option<Value> {
    links
        .twins()
        .get_thing(&ThingId::new(id).unwrap())
        .map(|t| t.body().clone())
}

#[derive(Debug, Clone)]
enum Op {
    Merge(u8, &'static str, Value),
    Modify(u8, &'static str, Value),
    Delete(u8, &'static str),
    DeleteThing(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let thing = 0u8..2;
    let path = prop::sample::select(vec![
        "/attributes",
        "/attributes/a",
        "/features/f/properties",
        "/features/f/properties/x",
        "/features/g",
    ]);
    let value = prop_oneof![
        (0i32..50).prop_map(|n| json!(n)),
        Just(json!({"x": 1, "y": {"z": 2}})),
        Just(json!({"x": null})),
        Just(json!({"properties": {"p": "v"}})),
        Just(Value::Null),
    ];
    prop_oneof![
        4 => (thing.clone(), path.clone(), value.clone()).prop_map(|(t, p, v)| Op::Merge(t, p, v)),
        2 => (thing.clone(), path.clone(), value).prop_map(|(t, p, v)| Op::Modify(t, p, v)),
        2 => (thing.clone(), path).prop_map(|(t, p)| Op::Delete(t, p)),
        1 => thing.prop_map(Op::DeleteThing),
    ]
}

async fn run(twins: &Twins, op: &Op) {
    let id = |t: &u8| ThingId::new(&format!("t:thing{t}")).unwrap();
    let p = |s: &str| Pointer::parse(s).unwrap();
    let cmd = match op {
        Op::Merge(t, path, v) => ThingCommand::new(id(t), Action::Merge, p(path), Some(v.clone())),
        Op::Modify(t, path, v) => {
            ThingCommand::new(id(t), Action::Modify, p(path), Some(v.clone()))
        }
        Op::Delete(t, path) => ThingCommand::new(id(t), Action::Delete, p(path), None),
        Op::DeleteThing(t) => ThingCommand::new(id(t), Action::Delete, Pointer::root(), None),
    };
    // Many commands fail (a path that is not there, a thing that does not exist yet): the
    // instance refuses them as it would any client's; only what succeeds replicates.
    if twins.apply(&writer(), cmd.clone()).await.is_err() && cmd.action == Action::Merge {
        let create = json!({"policyId": "t:policy", "attributes": {"created": true}});
        let c = ThingCommand::new(
            cmd.thing_id.clone(),
            Action::Modify,
            Pointer::root(),
            Some(create),
        );
        let _ = twins.apply(&writer(), c).await;
    }
}

fn converge_case(n: usize, topology: Topology, ops: Vec<(usize, Op, u8)>, seed: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        tokio::time::timeout(LIMIT, async move {
            let network = Network::with_faults(Faults {
                seed,
                max_delay: Duration::from_millis(15),
                duplicate: 0.2,
            });
            let mut nodes = Vec::new();
            for i in 0..n {
                nodes.push(instance(&format!("i{i}"), &network).await);
            }
            wire(&nodes, topology).await;
            for (at, op, pause) in &ops {
                run(nodes[at % n].twins(), op).await;
                tokio::time::sleep(Duration::from_millis(u64::from(*pause % 4))).await;
            }
            quiesce(&nodes, &network).await;
            for t in 0..2 {
                let id = format!("t:thing{t}");
                let first = body(&nodes[0], &id);
                for (i, node) in nodes.iter().enumerate().skip(1) {
                    assert_eq!(
                        body(node, &id),
                        first,
                        "instance i{i} differs from i0 on {id} ({topology:?})"
                    );
                }
            }
            for node in &nodes {
                node.shutdown().await;
            }
        })
        .await
        .expect("convergence test hung");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the writes, the topology and the delivery (delayed, duplicated, reordered):
    /// after quiescence every instance holds identical things.
    #[test]
    fn instances_converge_in_every_topology(
        n in 3usize..=5,
        topology in prop::sample::select(vec![Topology::Mesh, Topology::Star, Topology::Tree]),
        ops in prop::collection::vec((0usize..5, op(), any::<u8>()), 5..40),
        seed in any::<u64>(),
    ) {
        converge_case(n, topology, ops, seed);
    }
}

#[tokio::test]
async fn a_mesh_of_four_never_sends_an_update_twice_over_a_link() {
    tokio::time::timeout(LIMIT, async {
        let network = Network::new();
        let mut nodes = Vec::new();
        for i in 0..4 {
            nodes.push(instance(&format!("m{i}"), &network).await);
        }
        wire(&nodes, Topology::Mesh).await;
        let create = json!({"policyId": "t:policy", "attributes": {"n": 0}});
        let id = ThingId::new("t:mesh").unwrap();
        let c = ThingCommand::new(id.clone(), Action::Modify, Pointer::root(), Some(create));
        nodes[0].twins().apply(&writer(), c).await.unwrap();
        quiesce(&nodes, &network).await;
        for n in 1..=5 {
            let m = ThingCommand::new(
                id.clone(),
                Action::Merge,
                Pointer::parse("/attributes").unwrap(),
                Some(json!({"n": n})),
            );
            nodes[n % 4].twins().apply(&writer(), m).await.unwrap();
            quiesce(&nodes, &network).await;
        }
        for node in &nodes {
            assert_eq!(body(node, "t:mesh").unwrap()["attributes"]["n"], 5);
        }
        // 6 writes; each directed link (12 of them) carries each write at most once, and the
        // writer's own 3 links carry it exactly once.
        let mut total = 0;
        for node in &nodes {
            for s in node.status() {
                assert!(
                    s.messages_out <= 6,
                    "{} -> {}: {}",
                    node.instance_id(),
                    s.name,
                    s.messages_out
                );
                total += s.messages_out;
            }
        }
        assert!(total >= 6 * 3, "total {total}");
        assert!(total <= 6 * 12, "total {total}");
    })
    .await
    .unwrap();
}

/// Counts, in order, the values of `attributes/n` that arrive at an instance.
fn record_n(links: &Links) -> Arc<Mutex<Vec<i64>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    links.twins().add_sink(Arc::new(
        move |e: &opentwins_core::protocol::ThingEvent, _: Option<&opentwins_core::Thing>| {
            if let Some(n) = e
                .value
                .as_ref()
                .and_then(|v| v.pointer("/attributes/n"))
                .and_then(Value::as_i64)
            {
                s.lock().unwrap().push(n);
            }
        },
    ));
    seen
}

#[test]
fn an_outbox_survives_a_dropped_instance_and_delivers_the_last_state_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::new();
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (b, seen) = main.block_on(async {
        let b = instance("b", &network).await;
        b.add(link_to("a")).await.unwrap();
        let seen = record_n(&b);
        (b, seen)
    });
    network.set_down("b", true);
    let open_a = |network: Network, dir: std::path::PathBuf| async move {
        // sled's threads may hold the file lock a moment after the last handle is dropped.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let store = loop {
            match SledStore::open(SledConfig::new(&dir)) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("sled not ready yet ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot reopen the store: {e}"),
            }
        };
        let db = store.db().clone();
        let twins = Twins::open(
            EngineConfig {
                instance_id: "a".into(),
                ..EngineConfig::default()
            },
            Arc::new(store),
        )
        .unwrap();
        let links = Links::new(twins, db, Some(network));
        links.add(link_to("b")).await.unwrap();
        links
    };
    // Instance a writes 1,000 updates while b is down, then is dropped with its runtime (no
    // shutdown, its sender task killed mid-flight).
    let backlog = {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let backlog = rt.block_on(async {
            let a = open_a(network.clone(), dir.path().to_owned()).await;
            if a.twins()
                .get_policy(&PolicyId::new("t:policy").unwrap())
                .is_none()
            {
                common::provision(a.twins()).await;
            }
            let id = ThingId::new("t:car").unwrap();
            let create = json!({"policyId": "t:policy", "attributes": {"n": -1}});
            let mut c =
                ThingCommand::new(id.clone(), Action::Modify, Pointer::root(), Some(create));
            c.headers.requested_acks = Some(vec!["twin-persisted".into()]);
            a.twins().apply(&writer(), c).await.unwrap();
            for n in 0..1000 {
                let mut m = ThingCommand::new(
                    id.clone(),
                    Action::Merge,
                    Pointer::parse("/attributes").unwrap(),
                    Some(json!({"n": n})),
                );
                m.headers.requested_acks = Some(vec!["twin-persisted".into()]);
                a.twins().apply(&writer(), m).await.unwrap();
            }
            // The merges waited for b and merged into a few pending updates: one, plus one
            // for each failed send to b that a write overlapped (what was in flight takes no
            // merge until the failure), not one per write.
            let s = &a.status()[0];
            assert!(s.backlog <= 8, "{s:?}");
            assert!(s.coalesced + s.backlog >= 1000, "{s:?}");
            assert!(!s.connected);
            s.backlog
        });
        // Dropped with its runtime: tasks are killed, nothing is shut down.
        rt.shutdown_timeout(Duration::from_secs(5));
        backlog
    };
    // a starts again from its directory; b comes back.
    main.block_on(async {
        tokio::time::timeout(LIMIT, async {
            let a = open_a(network.clone(), dir.path().to_owned()).await;
            assert_eq!(a.status()[0].backlog, backlog, "the outbox did not survive");
            network.set_down("b", false);
            while !a.is_idle() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let seen = seen.lock().unwrap().clone();
            assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "out of order: {seen:?}"
            );
            assert_eq!(seen.last(), Some(&999));
            assert_eq!(b.status()[0].messages_in, backlog);
            assert_eq!(body(&b, "t:car").unwrap()["attributes"], json!({"n": 999}));
            a.shutdown().await;
        })
        .await
        .unwrap();
    });
}

#[tokio::test]
async fn owned_paths_win_and_selection_keeps_paths_local() {
    tokio::time::timeout(LIMIT, async {
        let network = Network::new();
        let hub = instance("hub", &network).await;
        let edge = instance("edge", &network).await;
        // The edge owns reported state and never sends its camera; the hub owns desired state.
        hub.add(LinkConfig {
            owned: vec!["/features/*/desiredProperties".into()],
            ..link_to("edge")
        })
        .await
        .unwrap();
        edge.add(LinkConfig {
            owned: vec!["/features/*/properties".into()],
            exclude: vec!["/features/camera".into()],
            ..link_to("hub")
        })
        .await
        .unwrap();
        let id = ThingId::new("t:car").unwrap();
        let create = json!({"policyId": "t:policy", "features": {
            "camera": {"properties": {"frame": "jpeg..."}},
            "speed": {"properties": {"value": 10}, "desiredProperties": {"value": 10}}
        }});
        let c = ThingCommand::new(id.clone(), Action::Modify, Pointer::root(), Some(create));
        edge.twins().apply(&writer(), c).await.unwrap();
        quiesce(&[hub.clone(), edge.clone()], &network).await;
        let at_hub = body(&hub, "t:car").unwrap();
        assert!(
            at_hub["features"].get("camera").is_none(),
            "the camera crossed: {at_hub}"
        );
        assert_eq!(at_hub["features"]["speed"]["properties"]["value"], 10);

        // The hub writes both sections; the edge writes both too, later (newer clocks).
        let merge = |path: &str, v: Value| {
            ThingCommand::new(
                id.clone(),
                Action::Merge,
                Pointer::parse(path).unwrap(),
                Some(v),
            )
        };
        hub.twins()
            .apply(
                &writer(),
                merge(
                    "/features/speed",
                    json!({"desiredProperties": {"value": 30}, "properties": {"value": 99}}),
                ),
            )
            .await
            .unwrap();
        edge.twins()
            .apply(
                &writer(),
                merge(
                    "/features/speed",
                    json!({"desiredProperties": {"value": 5}, "properties": {"value": 12}}),
                ),
            )
            .await
            .unwrap();
        quiesce(&[hub.clone(), edge.clone()], &network).await;
        let speed = |l: &Links| body(l, "t:car").unwrap()["features"]["speed"].clone();
        // Desired: the hub's value, although the edge wrote later. Reported: the edge's.
        let expected = json!({"properties": {"value": 12}, "desiredProperties": {"value": 30}});
        assert_eq!(speed(&hub), expected);
        assert_eq!(speed(&edge), expected);
        assert_eq!(
            body(&edge, "t:car").unwrap()["features"]["camera"]["properties"]["frame"],
            "jpeg..."
        );
    })
    .await
    .unwrap();
}

/// A link with `create = false` keeps only the things its instance holds: a hub broadcasting
/// the whole fleet's desired state does not fill a vehicle with other vehicles.
#[tokio::test]
async fn a_link_that_may_not_create_keeps_only_known_things() {
    tokio::time::timeout(LIMIT, async {
        let network = Network::new();
        let hub = instance("hub", &network).await;
        let edge = instance("edge", &network).await;
        hub.add(link_to("edge")).await.unwrap();
        edge.add(LinkConfig {
            create: false,
            ..link_to("hub")
        })
        .await
        .unwrap();
        let write = |l: &Links, id: &str, v: Value| {
            let c = ThingCommand::new(
                ThingId::new(id).unwrap(),
                Action::Merge,
                Pointer::root(),
                Some(v),
            );
            let twins = l.twins().clone();
            async move { twins.apply(&writer(), c).await.unwrap() }
        };
        let mine = json!({"policyId": "t:policy", "attributes": {"v": 1}});
        write(&edge, "t:mine", mine).await;
        quiesce(&[hub.clone(), edge.clone()], &network).await;
        write(
            &hub,
            "t:other",
            json!({"policyId": "t:policy", "attributes": {"v": 2}}),
        )
        .await;
        write(&hub, "t:mine", json!({"attributes": {"v": 3}})).await;
        quiesce(&[hub.clone(), edge.clone()], &network).await;
        assert!(
            body(&edge, "t:other").is_none(),
            "another vehicle's thing was created"
        );
        assert_eq!(body(&edge, "t:mine").unwrap()["attributes"]["v"], 3);
        assert_eq!(body(&hub, "t:mine").unwrap()["attributes"]["v"], 3);
    })
    .await
    .unwrap();
}

/// A selective link sends nothing for a change outside its selection: not even the "is an
/// object" marks above the paths it carries (a hub's desired-state link stays quiet while
/// vehicles report). Creating and removing a thing still cross.
#[tokio::test]
async fn changes_outside_a_selection_send_nothing() {
    tokio::time::timeout(LIMIT, async {
        let network = Network::new();
        let hub = instance("hub", &network).await;
        let edge = instance("edge", &network).await;
        hub.add(LinkConfig {
            include: vec!["/features/*/desiredProperties".into()],
            ..link_to("edge")
        })
        .await
        .unwrap();
        edge.add(link_to("hub")).await.unwrap();
        let id = ThingId::new("t:car").unwrap();
        let apply = |action: Action, v: Option<Value>| {
            let c = ThingCommand::new(id.clone(), action, Pointer::root(), v);
            let twins = hub.twins().clone();
            async move { twins.apply(&writer(), c).await.unwrap() }
        };
        let create = json!({"policyId": "t:policy", "features": {
            "speed": {"desiredProperties": {"value": 10}}}});
        apply(Action::Modify, Some(create)).await;
        quiesce(&[hub.clone(), edge.clone()], &network).await;
        assert_eq!(
            hub.status()[0].messages_out,
            1,
            "the creation carries desired state"
        );
        // A thing created with nothing the link selects still exists at the peer.
        let empty = ThingCommand::new(
            ThingId::new("t:empty").unwrap(),
            Action::Modify,
            Pointer::root(),
            Some(json!({"policyId": "t:policy", "attributes": {"a": 1}})),
        );
        hub.twins().apply(&writer(), empty).await.unwrap();
        quiesce(&[hub.clone(), edge.clone()], &network).await;
        assert_eq!(body(&edge, "t:empty").unwrap()["thingId"], "t:empty");
        let sent = hub.status()[0].messages_out;
        assert_eq!(sent, 2);
        let reported = json!({"features": {"lane": {"properties": {"offset": 0.1}}}});
        apply(Action::Merge, Some(reported)).await;
        quiesce(&[hub.clone(), edge.clone()], &network).await;
        assert_eq!(
            hub.status()[0].messages_out,
            sent,
            "an unselected change was sent"
        );
        assert!(
            body(&edge, "t:car").unwrap()["features"]
                .get("lane")
                .is_none()
        );
        let desired = json!({"features": {"speed": {"desiredProperties": {"value": 20}}}});
        apply(Action::Merge, Some(desired)).await;
        apply(Action::Delete, None).await;
        quiesce(&[hub.clone(), edge.clone()], &network).await;
        // Two updates, or one if the removal merged into the waiting change.
        let out = hub.status()[0].messages_out;
        assert!((sent + 1..=sent + 2).contains(&out), "{out}");
        assert!(body(&edge, "t:car").is_none(), "the removal did not cross");
    })
    .await
    .unwrap();
}

// Issue 15, item 6: a link added to an instance that already held things sent none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_link_sends_the_things_held_before_it_was_added() {
    tokio::time::timeout(LIMIT, async {
        let network = Network::new();
        let (edge, hub) = (
            instance("edge", &network).await,
            instance("hub", &network).await,
        );
        let ids: Vec<ThingId> = (0..1000)
            .map(|n| ThingId::new(&format!("t:car-{n}")).unwrap())
            .collect();
        for (n, id) in ids.iter().enumerate() {
            let body = json!({"policyId": "t:policy", "attributes": {"n": n}});
            let create = ThingCommand::new(id.clone(), Action::Modify, Pointer::root(), Some(body));
            edge.twins().apply(&writer(), create).await.unwrap();
        }
        connect(&edge, &hub).await;
        quiesce(&[edge.clone(), hub.clone()], &network).await;
        assert_eq!(hub.twins().thing_count(), 1000);
        for (n, id) in ids.iter().enumerate() {
            let thing = hub.twins().get_thing(id).expect("synced");
            assert_eq!(thing.body()["attributes"]["n"], n, "{id}");
        }
        // Re-adding a link under its name keeps its outbox: no second full sync.
        let sent = edge.status()[0].messages_out;
        edge.add(link_to("hub")).await.unwrap();
        quiesce(&[edge.clone(), hub.clone()], &network).await;
        assert_eq!(
            edge.status()[0].messages_out,
            0,
            "a fresh status, nothing re-sent"
        );
        assert!(sent >= 1000);
    })
    .await
    .expect("test hung");
}

/// Waits (polling, at most [`LIMIT`]) until `done` holds.
async fn until(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status(links: &Links, name: &str) -> opentwins_transport::link::LinkStatus {
    links.status().into_iter().find(|s| s.name == name).unwrap()
}

async fn create_cars(links: &Links, count: usize) -> Vec<ThingId> {
    let ids: Vec<ThingId> = (0..count)
        .map(|n| ThingId::new(&format!("t:car-{n:04}")).unwrap())
        .collect();
    for (n, id) in ids.iter().enumerate() {
        let body = json!({"policyId": "t:policy", "attributes": {"n": n},
            "features": {"lane": {"properties": {"offset": 0.5}}}});
        let create = ThingCommand::new(id.clone(), Action::Modify, Pointer::root(), Some(body));
        links.twins().apply(&writer(), create).await.unwrap();
    }
    ids
}

async fn set_n(links: &Links, id: &ThingId, n: i64) {
    let m = ThingCommand::new(
        id.clone(),
        Action::Merge,
        Pointer::parse("/attributes").unwrap(),
        Some(json!({ "n": n })),
    );
    links.twins().apply(&writer(), m).await.unwrap();
}

// Issue 15, item 6: a link that was not running while things changed never learnt of the
// changes (nothing was queued for it); its first anti-entropy round finds the things whose
// digests differ and sends those alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_missed_changes_catches_up_by_digests_sending_only_what_differs() {
    tokio::time::timeout(LIMIT, async {
        let network = Network::new();
        let (edge, hub) = (
            instance("edge", &network).await,
            instance("hub", &network).await,
        );
        let ids = create_cars(&edge, 300).await;
        connect(&edge, &hub).await;
        quiesce(&[edge.clone(), hub.clone()], &network).await;
        until(|| status(&edge, "to-hub").anti_entropy_rounds >= 1).await;
        assert_eq!(
            status(&edge, "to-hub").repaired,
            0,
            "in sync: nothing to repair"
        );

        assert!(edge.remove("to-hub").await.unwrap());
        let changed: Vec<&ThingId> = ids.iter().step_by(60).collect();
        for (k, id) in changed.iter().enumerate() {
            set_n(&edge, id, 1000 + k as i64).await;
        }
        assert_eq!(edge.status().len(), 0, "the edge runs no link to the hub");
        edge.add(link_to("hub")).await.unwrap();
        until(|| status(&edge, "to-hub").anti_entropy_rounds >= 1).await;
        quiesce(&[edge.clone(), hub.clone()], &network).await;
        for (k, id) in changed.iter().enumerate() {
            let thing = hub.twins().get_thing(id).unwrap();
            assert_eq!(thing.body()["attributes"]["n"], 1000 + k as i64, "{id}");
        }
        let s = status(&edge, "to-hub");
        assert_eq!(s.repaired, changed.len() as u64, "{s:?}");
        assert_eq!(
            s.messages_out,
            changed.len() as u64,
            "only what differed: {s:?}"
        );
        for id in &ids {
            assert_eq!(body(&edge, id.as_str()), body(&hub, id.as_str()), "{id}");
        }
    })
    .await
    .expect("test hung");
}

// A peer that lost its state (a hub restored empty) while the link's outbox had nothing left
// to send is brought back by the periodic round; once equal, rounds find nothing to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_lost_its_state_is_repaired_by_the_next_round() {
    tokio::time::timeout(LIMIT, async {
        let network = Network::new();
        let edge = instance("edge", &network).await;
        let hub = instance("hub", &network).await;
        let ids = create_cars(&edge, 200).await;
        let fast = LinkConfig {
            anti_entropy_secs: 1,
            ..link_to("hub")
        };
        edge.add(fast).await.unwrap();
        hub.add(link_to("edge")).await.unwrap();
        quiesce(&[edge.clone(), hub.clone()], &network).await;
        assert_eq!(hub.twins().thing_count(), 200);

        hub.shutdown().await;
        drop(hub);
        let hub = instance("hub", &network).await;
        hub.add(link_to("edge")).await.unwrap();
        assert_eq!(hub.twins().thing_count(), 0);
        until(|| hub.twins().thing_count() == 200).await;
        quiesce(&[edge.clone(), hub.clone()], &network).await;
        for id in &ids {
            assert_eq!(body(&edge, id.as_str()), body(&hub, id.as_str()), "{id}");
        }
        let repaired = status(&edge, "to-hub").repaired;
        assert_eq!(repaired, 200);
        // Two more rounds over equal state: nothing differs, nothing is sent.
        let rounds = status(&edge, "to-hub").anti_entropy_rounds;
        let sent = status(&edge, "to-hub").messages_out;
        until(|| status(&edge, "to-hub").anti_entropy_rounds >= rounds + 2).await;
        let s = status(&edge, "to-hub");
        assert_eq!((s.repaired, s.messages_out), (repaired, sent), "{s:?}");
    })
    .await
    .expect("test hung");
}
