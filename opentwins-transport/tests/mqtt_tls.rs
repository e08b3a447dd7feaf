//! The MQTT bridge and links over MQTT, over TLS and mutual TLS, against private `mosquitto`
//! processes with certificates made by `openssl` at test time (`mqtt_helpers::broker`). In a test binary of its own: paho's C library
//! with OpenSSL, torn down while plain clients of other tests run in the same process, aborted
//! the process now and then (glibc: "unaligned tcache chunk detected" at thread shutdown).

use std::time::Duration;

use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::{EngineConfig, Pointer, ThingId, Twins};
use opentwins_transport::link::{Links, Network};
use opentwins_transport::mqtt::{
    ConnectionState, Mapping, MqttBridge, MqttConfig, MqttHandle, SubscriptionConfig, TlsConfig,
};

mod common;
mod mqtt_helpers;
use common::{instance, prefix, writer};
use mqtt_helpers::broker::{BrokerSpec, SecureBroker};
use mqtt_helpers::*;
use paho_mqtt as paho;
use serde_json::json;

/// A private broker with a TLS listener (and the client certificate required or not).
fn tls_broker(require_certificate: bool) -> Option<SecureBroker> {
    SecureBroker::start(&BrokerSpec {
        tls: Some(require_certificate),
        ..BrokerSpec::default()
    })
}

/// A test-side client over TLS with the right CA and the client certificate.
async fn tls_client(broker: &SecureBroker, id: &str) -> Client {
    let ssl = paho::SslOptionsBuilder::new()
        .trust_store(broker.file("ca.crt"))
        .unwrap()
        .key_store(broker.file("client.crt"))
        .unwrap()
        .private_key(broker.file("client.key"))
        .unwrap()
        .finalize();
    let opts = paho::ConnectOptionsBuilder::new_v5()
        .clean_start(true)
        .ssl_options(ssl)
        .finalize();
    Client::connect_with(&broker.uri(), id, opts).await
}

/// A bridge config for `broker` with a Ditto command subscription under `p`.
fn tls_config(broker: &SecureBroker, p: &str, ca: &str, client_cert: bool) -> MqttConfig {
    let mut c = config(&broker.url(), p);
    c.connect_timeout = Duration::from_secs(3);
    c.tls = tls_files(broker, ca, client_cert);
    c.subscriptions.push(SubscriptionConfig {
        filter: format!("{p}/commands"),
        mapping: Mapping::Ditto,
        ..SubscriptionConfig::default()
    });
    c
}

/// The CA file `ca` of `broker`, and its client certificate and key if `client_cert`.
fn tls_files(broker: &SecureBroker, ca: &str, client_cert: bool) -> TlsConfig {
    TlsConfig {
        ca_file: Some(broker.file(ca)),
        cert_file: client_cert.then(|| broker.file("client.crt")),
        key_file: client_cert.then(|| broker.file("client.key")),
        ..TlsConfig::default()
    }
}

/// A create sent over TLS to the bridge's command subscription is answered with 201.
async fn tls_round_trip(broker: &SecureBroker, p: &str, bridge: &MqttHandle) {
    let client = tls_client(broker, &format!("{p}-client")).await;
    client.subscribe(&format!("{p}/responses")).await;
    let mut props = paho::Properties::new();
    props
        .push_string(paho::PropertyCode::ResponseTopic, &format!("{p}/responses"))
        .unwrap();
    let create = json!({"topic": "test.tls/car/things/twin/commands/create", "path": "/",
        "headers": {"correlation-id": "tls-1"}, "value": {"attributes": {"secure": true}}});
    client
        .publish(
            paho::MessageBuilder::new()
                .topic(format!("{p}/commands"))
                .payload(create.to_string())
                .qos(1)
                .properties(props)
                .finalize(),
        )
        .await;
    let v = json_of(&client.next(10).await);
    assert_eq!(v["status"], 201, "{v}");
    assert_eq!(v["headers"]["correlation-id"], "tls-1");
    assert_eq!(v["value"]["attributes"]["secure"], true, "{v}");
    wait_metrics(bridge, |m| m.commands_applied == 1).await;
    client.cli.disconnect(None).await.unwrap();
}

/// A bridge that must not connect: `wait_connected` is false, shutdown still returns.
async fn must_not_connect(config: MqttConfig, what: &str) {
    let tw = Twins::in_memory(EngineConfig::default());
    let (bridge, join) = MqttBridge::spawn(config, tw).unwrap();
    assert!(
        !bridge.wait_connected(Duration::from_secs(4)).await,
        "the bridge connected with {what}"
    );
    assert_eq!(bridge.metrics().connects, 0);
    bridge.shutdown().await;
    join.await.expect("the driver panicked");
    assert_eq!(bridge.state(), ConnectionState::Disconnected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_ca_connects_and_a_wrong_ca_does_not() {
    let Some(broker) = tls_broker(false) else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("tls");
        let tw = Twins::in_memory(EngineConfig::default());
        let bridge = start(tls_config(&broker, &p, "ca.crt", false), &tw).await;
        tls_round_trip(&broker, &p, &bridge).await;
        bridge.shutdown().await;

        let p = prefix("tls-wrong-ca");
        must_not_connect(tls_config(&broker, &p, "other-ca.crt", false), "a wrong CA").await;
    })
    .await
    .expect("test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let Some(broker) = tls_broker(true) else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("mtls");
        let tw = Twins::in_memory(EngineConfig::default());
        let bridge = start(tls_config(&broker, &p, "ca.crt", true), &tw).await;
        tls_round_trip(&broker, &p, &bridge).await;
        bridge.shutdown().await;

        let p = prefix("mtls-no-cert");
        must_not_connect(
            tls_config(&broker, &p, "ca.crt", false),
            "no client certificate",
        )
        .await;
        let p = prefix("mtls-wrong-ca");
        must_not_connect(tls_config(&broker, &p, "other-ca.crt", true), "a wrong CA").await;
    })
    .await
    .expect("test hung");
}

/// Creates `id` (under the test policy) at `links`' engine and waits until `hub` holds it.
async fn delivered(links: &Links, hub: &Links, id: &str) {
    let body = json!({"policyId": "t:policy", "attributes": {"secure": true}});
    let cmd = ThingCommand::new(
        ThingId::new(id).unwrap(),
        Action::Create,
        Pointer::root(),
        Some(body),
    );
    links.twins().apply(&writer(), cmd).await.unwrap();
    wait_thing(hub.twins(), id, "the update over TLS", |t| {
        t["attributes"]["secure"] == true
    })
    .await;
    // The broker's acknowledgement may reach the sender after the hub applied the update.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !links.is_idle() {
        assert!(std::time::Instant::now() < deadline, "{:?}", links.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `id` at `links`' engine, which cannot reach the broker: the update waits.
async fn stranded(links: &Links, id: &str) {
    let body = json!({"policyId": "t:policy", "attributes": {"secure": false}});
    let cmd = ThingCommand::new(
        ThingId::new(id).unwrap(),
        Action::Create,
        Pointer::root(),
        Some(body),
    );
    links.twins().apply(&writer(), cmd).await.unwrap();
}

/// A hub reading `t/edge/+` over TLS with `tls`.
async fn tls_hub(broker: &SecureBroker, network: &Network, tls: TlsConfig) -> Links {
    let hub = instance("hub", network).await;
    hub.add(mqtt_link(
        "edges",
        &broker.url(),
        "t/hub",
        Some("t/edge/+"),
        None,
        tls,
    ))
    .await
    .unwrap();
    assert!(
        hub.wait_ready(Duration::from_secs(20)).await,
        "{:?}",
        hub.status()
    );
    hub
}

/// An edge `id` whose link `hub` publishes to `t/edge/{id}` over TLS with `tls`.
async fn tls_edge(broker: &SecureBroker, network: &Network, id: &str, tls: TlsConfig) -> Links {
    let edge = instance(id, network).await;
    let up = format!("t/edge/{id}");
    edge.add(mqtt_link(
        "hub",
        &broker.url(),
        &up,
        Some("t/hub"),
        None,
        tls,
    ))
    .await
    .unwrap();
    edge
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_over_tls_needs_the_ca_of_the_broker() {
    let Some(broker) = tls_broker(false) else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let network = Network::new();
        let hub = tls_hub(&broker, &network, tls_files(&broker, "ca.crt", false)).await;
        let edge = tls_edge(&broker, &network, "e1", tls_files(&broker, "ca.crt", false)).await;
        assert!(
            edge.wait_ready(Duration::from_secs(20)).await,
            "{:?}",
            edge.status()
        );
        delivered(&edge, &hub, "t:tls-car").await;
        let s = link_status(&edge, "hub");
        assert!(s.connected && s.messages_out >= 1, "{s:?}");
        assert!(link_status(&hub, "edges").connected);

        // The broker's certificate is not signed by this CA: no connection, nothing sent.
        let bad = tls_edge(
            &broker,
            &network,
            "e2",
            tls_files(&broker, "other-ca.crt", false),
        )
        .await;
        stranded(&bad, "t:untrusted").await;
        let s = refused_link(&bad, "hub", "a wrong CA").await;
        assert_eq!((s.messages_out, s.backlog), (0, 1), "{s:?}");
        assert!(thing_json(hub.twins(), "t:untrusted").is_none());
        for l in [&hub, &edge, &bad] {
            l.shutdown().await;
        }
    })
    .await
    .expect("test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_over_mutual_tls_needs_the_client_certificate() {
    let Some(broker) = tls_broker(true) else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let network = Network::new();
        let hub = tls_hub(&broker, &network, tls_files(&broker, "ca.crt", true)).await;
        let edge = tls_edge(&broker, &network, "e1", tls_files(&broker, "ca.crt", true)).await;
        assert!(
            edge.wait_ready(Duration::from_secs(20)).await,
            "{:?}",
            edge.status()
        );
        delivered(&edge, &hub, "t:mtls-car").await;

        // The right CA but no client certificate: the broker refuses the handshake.
        let bad = tls_edge(&broker, &network, "e2", tls_files(&broker, "ca.crt", false)).await;
        stranded(&bad, "t:anonymous").await;
        let s = refused_link(&bad, "hub", "no client certificate").await;
        assert_eq!((s.messages_out, s.backlog), (0, 1), "{s:?}");
        assert!(thing_json(hub.twins(), "t:anonymous").is_none());
        for l in [&hub, &edge, &bad] {
            l.shutdown().await;
        }
    })
    .await
    .expect("test hung");
}
