//! The fleet of docs/deployment.md, "Fleet on an authenticated broker", as configuration: a hub
//! and an edge through a private Mosquitto with TLS, a `password_file` and the documented ACL.
//! The hub's bridge and fleet links log in with `mqtt.username` / `mqtt.tls`, the edge's `hub`
//! link with `hub.username` / `hub.tls`. (TLS clients only in this binary: see mqtt_tls.rs.)

use std::time::Duration;

use opentwins_core::ThingId;
use opentwins_runtime::{Instance, InstanceConfig, Role};
use opentwins_transport::mqtt::ConnectionState;
use serde_json::json;

/// `mqtt_helpers::broker` of opentwins-transport's tests, shared rather than copied.
#[path = "../../opentwins-transport/tests/mqtt_helpers/broker.rs"]
#[allow(dead_code, unreachable_pub)]
mod broker;
use broker::{BrokerSpec, SecureBroker};

/// What `broker` needs of the transport tests' `common` module.
mod common {
    pub(crate) fn require_services() -> bool {
        std::env::var("OPENTWINS_REQUIRE_SERVICES").as_deref() == Ok("1")
    }
}

const LIMIT: Duration = Duration::from_secs(60);

/// The ACL of docs/deployment.md for a hub `hub` and its edges.
const ACL: &str = "\
user hub
topic read opentwins/links/+/up
topic write opentwins/links/hub/down
topic write opentwins/links/+/digest
topic read opentwins/commands/hub
topic read telemetry/hub/#
topic write opentwins/twin/events/#
topic write opentwins/delta/#
topic write opentwins/instances/hub/status

pattern write opentwins/links/%u/up
pattern read opentwins/links/hub/down
pattern read opentwins/links/%u/digest
";

fn config(role: Role, id: &str, dir: &std::path::Path) -> InstanceConfig {
    let mut c = InstanceConfig::defaults(role);
    c.instance_id = id.into();
    c.data_dir = dir.join(id);
    c.listen = "127.0.0.1:0".into();
    c
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_an_authenticated_tls_broker() {
    let Some(broker) = SecureBroker::start(&BrokerSpec {
        tls: Some(false),
        users: vec![
            ("hub".into(), "hub-secret".into()),
            ("car-1".into(), "car-1-secret".into()),
        ],
        acl: Some(ACL.into()),
    }) else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = config(Role::Hub, "hub", dir.path());
        hub.mqtt.broker = broker.url();
        hub.mqtt.username = Some("hub".into());
        hub.mqtt.password = Some("hub-secret".into());
        hub.mqtt.tls.ca_file = Some(broker.file("ca.crt"));
        assert!(hub.fleet_links.enabled);
        let hub = Instance::start(hub).await.unwrap();
        let bridge = hub.mqtt().expect("the hub's bridge");
        assert!(bridge.wait_connected(Duration::from_secs(20)).await);
        assert!(
            hub.links().wait_ready(Duration::from_secs(20)).await,
            "{:?}",
            hub.links().status()
        );

        let mut edge = config(Role::Edge, "car-1", dir.path());
        edge.enable.mqtt = false; // its bridge would talk to the vehicle's own broker
        edge.enable.processor = false;
        edge.hub.url = broker.url();
        edge.hub.username = Some("car-1".into());
        edge.hub.password = Some("car-1-secret".into());
        edge.hub.tls.ca_file = Some(broker.file("ca.crt"));
        edge.things = vec![
            json!({"thingId": "fleet:car-1", "policyId": "opentwins:fleet",
            "attributes": {"kind": "car"}}),
        ];
        let edge = Instance::start(edge).await.unwrap();
        assert!(
            edge.links().wait_ready(Duration::from_secs(20)).await,
            "{:?}",
            edge.links().status()
        );

        let id = ThingId::new("fleet:car-1").unwrap();
        wait_for("the edge's thing at the hub", || {
            hub.twins().get_thing(&id).is_some()
        })
        .await;
        assert_eq!(
            hub.twins().get_thing(&id).unwrap().body()["attributes"]["kind"],
            "car"
        );
        for s in hub
            .links()
            .status()
            .into_iter()
            .chain(edge.links().status())
        {
            assert!(s.connected, "{s:?}");
        }
        // Anti-entropy passes the ACL: the edge's request is answered on its own digest topic.
        wait_for("an answered anti-entropy round of the edge", || {
            edge.links()
                .status()
                .iter()
                .any(|s| s.anti_entropy_rounds >= 1)
        })
        .await;
        // Secrets stay out of the effective configuration's Debug output.
        let shown = format!("{:?} {:?}", hub.config(), edge.config());
        assert!(
            !shown.contains("hub-secret") && !shown.contains("car-1-secret"),
            "{shown}"
        );
        assert_eq!(bridge.state(), ConnectionState::Connected);
        edge.shutdown().await.unwrap();
        hub.shutdown().await.unwrap();
    })
    .await
    .expect("test hung");
}
