//! Instances assembled from configuration, in process, linked over HTTP the way separate
//! processes are: provisioned things and decisions reach the hub, frames do not.

mod common;

use std::time::Duration;

use common::config;

use opentwins_runtime::{Instance, Role};
use opentwins_transport::link::{Direction, LinkConfig, PeerConfig};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

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

/// The hub's dashboard page reads these answers (see `dashboard.html`): the fleet from a search
/// (`items` with `_revision`), the history chart from step buckets (`buckets` with `t`, `min`,
/// `max`, `avg`), the links table from `/api/2/connections` (`config.name`, `status`). The page
/// once read `points` from a stepped history answer and drew nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_gets_the_fields_it_reads() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = config(Role::Hub, "hub", dir.path());
        hub.things = vec![json!({
            "thingId": "t:car-1",
            "policyId": "opentwins:fleet",
            "features": {"lane": {"properties": {"offset": 0.1}}}
        })];
        hub.links = vec![LinkConfig {
            direction: Direction::In,
            ..LinkConfig::new("car-1", PeerConfig::Inbox {})
        }];
        let hub = Instance::start(hub).await.unwrap();
        let base = format!("http://{}", hub.http_addr().unwrap());
        let http = reqwest::Client::new();
        let page = http.get(format!("{base}/")).send().await.unwrap();
        let page = page.text().await.unwrap();
        let get = |path: &'static str| {
            // The page asks for this path (the query is the page's own).
            assert!(page.contains(path), "the page does not ask for {path}");
            let request = http.get(format!("{base}{path}")).send();
            async move {
                let r = request.await.unwrap();
                assert_eq!(r.status(), 200, "{path}");
                serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap()
            }
        };
        for v in [0.2, 0.3] {
            let put = http
                .put(format!(
                    "{base}/api/2/things/t:car-1/features/lane/properties/offset"
                ))
                .header("content-type", "application/json")
                .body(v.to_string())
                .send()
                .await
                .unwrap();
            assert!(put.status().is_success());
        }
        let fleet = get(
            "/api/2/search/things?option=size(200)&fields=thingId,attributes,features,_revision,_modified",
        )
        .await;
        assert_eq!(fleet["items"][0]["thingId"], "t:car-1");
        assert_eq!(fleet["items"][0]["_revision"], 3);
        // The page builds this URL from the selected thing and a series path.
        let history = http
            .get(format!(
                "{base}/api/2/history/things/t:car-1/features/lane/properties/offset\
                 ?from=2000-01-01T00:00:00Z&step=5s"
            ))
            .send()
            .await
            .unwrap();
        let history: serde_json::Value =
            serde_json::from_str(&history.text().await.unwrap()).unwrap();
        assert!(page.contains("/api/2/history/things/") && page.contains("&step=5s"));
        let bucket = &history["buckets"][0];
        assert!(page.contains("body.buckets"), "the page reads another key");
        for key in ["t", "min", "max", "avg"] {
            assert!(bucket.get(key).is_some(), "no {key} in {history}");
        }
        let links = get("/api/2/connections").await;
        assert_eq!(links[0]["config"]["name"], "car-1");
        assert!(links[0]["status"]["messages_in"].is_u64());
        hub.shutdown().await.unwrap();
    })
    .await
    .unwrap();
}

// Issue 14 (safe defaults): a fresh instance lets anonymous loopback callers work with things
// but not manage links; the token it generated at first start does, and stays the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_instance_is_not_an_open_admin() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let client = reqwest::Client::new();
        let link = json!({"peer": {"kind": "inbox"}, "direction": "in"}).to_string();
        let mut token = String::new();
        for start in 0..2 {
            let hub = Instance::start(config(Role::Hub, "hub", dir.path()))
                .await
                .unwrap();
            let url = format!("http://{}/api/2/connections/evil", hub.http_addr().unwrap());
            let anonymous = client
                .put(&url)
                .header("content-type", "application/json")
                .body(link.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(
                anonymous.status(),
                403,
                "{}",
                anonymous.text().await.unwrap()
            );
            let file = dir.path().join("hub").join("admin-token");
            let stored = std::fs::read_to_string(&file).unwrap().trim().to_owned();
            if start == 0 {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&file).unwrap().permissions().mode();
                assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
                token = stored;
            } else {
                assert_eq!(stored, token, "a restart keeps the token");
            }
            let admin = client
                .put(&url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(link.clone())
                .send()
                .await
                .unwrap();
            assert!(
                admin.status().is_success(),
                "{}",
                admin.text().await.unwrap()
            );
            let listed = client
                .get(format!(
                    "http://{}/api/2/connections",
                    hub.http_addr().unwrap()
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(listed.status(), 200);
            hub.shutdown().await.unwrap();
        }
    })
    .await
    .unwrap();
}
