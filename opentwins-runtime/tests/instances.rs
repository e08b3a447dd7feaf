//! Instances assembled from configuration, in process, linked over HTTP the way separate
//! processes are: provisioned things and decisions reach the hub, frames do not.

use std::time::Duration;

use opentwins_runtime::{Instance, InstanceConfig, Role};
use opentwins_transport::link::{Direction, LinkConfig, PeerConfig};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

fn config(role: Role, id: &str, dir: &std::path::Path) -> InstanceConfig {
    let mut c = InstanceConfig::defaults(role);
    c.instance_id = id.into();
    c.data_dir = dir.join(id);
    c.listen = "127.0.0.1:0".into();
    c.enable.mqtt = false;
    c
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_sends_its_things_up_over_http() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = config(Role::Hub, "hub", dir.path());
        hub.links = vec![LinkConfig {
            direction: Direction::In,
            ..LinkConfig::new("car-1", PeerConfig::Inbox {})
        }];
        let hub = Instance::start(hub).await.unwrap();
        let mut edge = config(Role::Edge, "car-1", dir.path());
        edge.enable.processor = false;
        edge.hub.url = format!("http://{}", hub.http_addr().unwrap());
        edge.things = vec![json!({
            "thingId": "t:car-1",
            "policyId": "opentwins:fleet",
            "attributes": {"kind": "car"},
            "features": {"camera": {"properties": {}}, "speed": {"properties": {"v": 1}}}
        })];
        let edge = Instance::start(edge).await.unwrap();
        let id = opentwins_core::ThingId::new("t:car-1").unwrap();
        wait_for(|| hub.twins().get_thing(&id).is_some()).await;
        let at_hub = hub.twins().get_thing(&id).unwrap();
        assert_eq!(
            at_hub.body()["attributes"],
            json!({"kind": "car"}),
            "{}",
            at_hub.body()
        );
        assert_eq!(at_hub.body()["features"]["speed"]["properties"]["v"], 1);
        assert!(at_hub.body()["features"].get("camera").is_none());
        edge.shutdown().await.unwrap();
        hub.shutdown().await.unwrap();
    })
    .await
    .unwrap();
}
