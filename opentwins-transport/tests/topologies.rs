//! The example topology files load, start, and carry a write to every instance they should.

use std::time::Duration;

use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::{Pointer, ThingId};
use opentwins_transport::link::{Links, Network, Topology};
use serde_json::json;

mod common;
use common::{provision, writer};

async fn run(file: &str) -> Vec<(String, Vec<String>)> {
    let path = format!(
        "{}/../examples/topologies/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let topology: Topology = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let network = Network::new();
    let nodes = topology
        .start(&network, |t| async move { provision(&t).await })
        .await
        .unwrap();
    let at = topology.write_at.clone().unwrap();
    let writer_node = nodes.iter().find(|n| n.instance_id() == at).unwrap();
    let id = ThingId::new("t:car").unwrap();
    let body = json!({"policyId": "t:policy", "features": {
        "lane": {"properties": {"offset": 0.1}},
        "camera": {"properties": {"frame": "jpeg"}}
    }});
    let c = ThingCommand::new(id.clone(), Action::Modify, Pointer::root(), Some(body));
    writer_node.twins().apply(&writer(), c).await.unwrap();
    let mut calm = 0;
    while calm < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        calm = if nodes.iter().all(Links::is_idle) {
            calm + 1
        } else {
            0
        };
    }
    let held = nodes
        .iter()
        .map(|n| {
            let features = n.twins().get_thing(&id).map_or_else(Vec::new, |t| {
                let mut f: Vec<String> = t.body()["features"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect();
                f.sort();
                f
            });
            (n.instance_id().to_owned(), features)
        })
        .collect();
    for n in &nodes {
        n.shutdown().await;
    }
    held
}

fn has(held: &[(String, Vec<String>)], id: &str) -> Vec<String> {
    held.iter().find(|(i, _)| i == id).unwrap().1.clone()
}

#[tokio::test]
async fn every_example_topology_carries_a_write_where_it_should() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let both = vec!["camera".to_string(), "lane".to_string()];
        for (id, features) in run("p2p.toml").await {
            assert_eq!(features, both, "p2p: {id}");
        }
        for (id, features) in run("tree.toml").await {
            assert_eq!(features, both, "tree: {id}");
        }
        // Star: the camera stays on the vehicle that wrote it.
        let star = run("star.toml").await;
        assert_eq!(has(&star, "edge-1"), both);
        for id in ["hub", "edge-2", "edge-3"] {
            assert_eq!(has(&star, id), vec!["lane".to_string()], "star: {id}");
        }
        // Hybrid: both sites get the lane, no camera; the monitor too.
        let hybrid = run("hybrid.toml").await;
        for id in ["hub-north", "hub-south", "car-2", "car-3", "monitor"] {
            assert_eq!(has(&hybrid, id), vec!["lane".to_string()], "hybrid: {id}");
        }
    })
    .await
    .unwrap();
}
