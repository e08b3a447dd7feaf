//! A fleet on an authenticated broker (docs/deployment.md, "Fleet on an authenticated broker"):
//! a private `mosquitto` with `allow_anonymous false`, a `password_file` made by
//! `mosquitto_passwd` and an `acl_file` that lets each edge write only its own up-topic. The
//! hub applies what arrives on `opentwins/links/{edge}/up` as `link:{edge}`, so the ACL is what
//! makes the topic, and with it the subject, the edge's own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentwins_core::model::PolicyId;
use opentwins_core::protocol::{Action, Headers, PolicyCommand, ThingCommand};
use opentwins_core::{EngineConfig, Pointer, ThingId, Twins};
use opentwins_transport::link::{Direction, Links};
use opentwins_transport::mqtt::TlsConfig;
use paho_mqtt as paho;
use serde_json::{Value, json};

mod common;
mod mqtt_helpers;
use common::writer;
use mqtt_helpers::broker::{BrokerSpec, SecureBroker};
use mqtt_helpers::*;

/// The ACL of the documentation: the hub reads every edge's up-topic and writes the down
/// topic; each edge (its broker user is its instance id) writes its own up-topic only and
/// reads the down topic.
const ACL: &str = "\
# the hub
user hub
topic read opentwins/links/+/up
topic write opentwins/links/hub/down

# every edge, by its user name
pattern write opentwins/links/%u/up
pattern read opentwins/links/hub/down
";

const USERS: [(&str, &str); 3] = [
    ("hub", "hub-secret"),
    ("edge-a", "edge-a-secret"),
    ("edge-b", "edge-b-secret"),
];

fn broker() -> Option<SecureBroker> {
    SecureBroker::start(&BrokerSpec {
        tls: None,
        users: USERS
            .iter()
            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
            .collect(),
        acl: Some(ACL.into()),
    })
}

/// The fleet policy `t:fleet`: the test writer and both edges may read and write every thing
/// here, so the broker's ACL is the only thing that keeps edge-a from writing as edge-b.
async fn provision(twins: &Twins) {
    let subject = |kind: &str| json!({"type": kind});
    let policy = json!({"entries": {"all": {
        "subjects": {"test:writer": subject("test"), "link:edge-a": subject("link"),
                     "link:edge-b": subject("link")},
        "resources": {
            "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
            "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}
        }
    }}});
    let cmd = PolicyCommand {
        policy_id: PolicyId::new("t:fleet").unwrap(),
        action: Action::Create,
        path: Pointer::root(),
        value: Some(policy),
        headers: Headers::default(),
    };
    twins.apply_policy(&writer(), cmd).await.unwrap();
}

async fn node(id: &str) -> Links {
    let twins = Twins::in_memory(EngineConfig {
        instance_id: id.into(),
        ..EngineConfig::default()
    });
    provision(&twins).await;
    let db = sled::Config::new().temporary(true).open().unwrap();
    Links::new(twins, db, None)
}

/// The hub: one link reads `opentwins/links/+/up` as user `hub`, each edge its own subject.
async fn hub(broker: &SecureBroker) -> Links {
    let hub = node("hub").await;
    let mut link = mqtt_link(
        "fleet-up",
        &broker.url(),
        "opentwins/links/hub/down",
        Some("opentwins/links/+/up"),
        Some(("hub", "hub-secret")),
        TlsConfig::default(),
    );
    link.direction = Direction::In;
    link.subject = "link:{peer}".into();
    hub.add(link).await.unwrap();
    hub
}

/// An edge whose link `hub` logs in as `user` with `password` and publishes to its up-topic.
async fn edge(broker: &SecureBroker, id: &str, user: &str, password: &str) -> Links {
    let edge = node(id).await;
    let mut link = mqtt_link(
        "hub",
        &broker.url(),
        &format!("opentwins/links/{id}/up"),
        Some("opentwins/links/hub/down"),
        Some((user, password)),
        TlsConfig::default(),
    );
    link.peer_instance = Some("hub".into());
    edge.add(link).await.unwrap();
    edge
}

async fn create(links: &Links, id: &str, attributes: Value) {
    let body = json!({"policyId": "t:fleet", "attributes": attributes});
    let cmd = ThingCommand::new(
        ThingId::new(id).unwrap(),
        Action::Create,
        Pointer::root(),
        Some(body),
    );
    links.twins().apply(&writer(), cmd).await.unwrap();
}

/// A link update as `origin` sends it (docs/distribution.md): a merge of `attributes` into
/// `thing` with a fresh clock per attribute.
fn update(origin: &str, thing: &str, attributes: &Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let (namespace, name) = thing.split_once(':').unwrap();
    let clocks: serde_json::Map<String, Value> = attributes
        .as_object()
        .unwrap()
        .keys()
        .map(|k| {
            (
                format!("/attributes/{k}"),
                json!(format!("v{now}.0@{origin}")),
            )
        })
        .collect();
    json!({
        "topic": format!("{namespace}/{name}/things/twin/commands/merge"),
        "path": "/",
        "value": {"attributes": attributes},
        "headers": {"opentwins-origin": origin, "opentwins-hops": [origin],
                    "opentwins-clocks": clocks, "response-required": false}
    })
    .to_string()
}

/// A raw MQTT 5 client logged in as `user`: what a compromised edge could run.
async fn raw_client(broker: &SecureBroker, user: &str, password: &str) -> paho::AsyncClient {
    let cli = paho::CreateOptionsBuilder::new()
        .server_uri(broker.uri())
        .client_id(format!("raw-{user}"))
        .mqtt_version(paho::MQTT_VERSION_5)
        .create_client()
        .unwrap();
    let opts = paho::ConnectOptionsBuilder::new_v5()
        .clean_start(true)
        .user_name(user)
        .password(password)
        .finalize();
    cli.connect(opts).await.unwrap();
    cli
}

/// Publishes `payload` on `topic` (QoS 1); the broker's answer, for the log: a v5 broker may
/// acknowledge a publish its ACL denies with "not authorized", or as a success and drop it.
async fn publish(cli: &paho::AsyncClient, topic: &str, payload: String) -> Result<(), String> {
    cli.publish(paho::Message::new(topic, payload, 1))
        .await
        .map_err(|e| e.to_string())
}

/// The hub and edges `edge-a` and `edge-b` on `broker`, connected, each edge's car (`by` its
/// edge) at the hub.
async fn fleet(broker: &SecureBroker) -> (Links, Links, Links) {
    let hub = hub(broker).await;
    let a = edge(broker, "edge-a", "edge-a", "edge-a-secret").await;
    let b = edge(broker, "edge-b", "edge-b", "edge-b-secret").await;
    for l in [&hub, &a, &b] {
        assert!(
            l.wait_ready(Duration::from_secs(20)).await,
            "{:?}",
            l.status()
        );
    }
    create(&a, "t:car-a", json!({"by": "edge-a"})).await;
    create(&b, "t:car-b", json!({"by": "edge-b"})).await;
    for (id, by) in [("t:car-a", "edge-a"), ("t:car-b", "edge-b")] {
        wait_thing(hub.twins(), id, "the edges' cars", |t| {
            t["attributes"]["by"] == by
        })
        .await;
    }
    (hub, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_with_their_credentials_deliver_and_a_wrong_password_does_not_connect() {
    let Some(broker) = broker() else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let (hub, a, b) = fleet(&broker).await;
        let s = link_status(&hub, "fleet-up");
        assert!(
            s.connected && s.messages_in >= 2 && s.rejected == 0,
            "{s:?}"
        );
        assert!(link_status(&a, "hub").connected);

        // The right user, a wrong password: the broker refuses, the status says so, nothing
        // leaves the outbox.
        let wrong = edge(&broker, "edge-c", "edge-a", "not-the-password").await;
        create(&wrong, "t:car-c", json!({"by": "edge-c"})).await;
        let s = refused_link(&wrong, "hub", "a wrong password").await;
        assert_eq!((s.messages_out, s.backlog), (0, 1), "{s:?}");
        // No user at all: refused too (`allow_anonymous false`).
        let anonymous = node("edge-d").await;
        let mut link = mqtt_link(
            "hub",
            &broker.url(),
            "opentwins/links/edge-d/up",
            None,
            None,
            TlsConfig::default(),
        );
        link.direction = Direction::Out;
        anonymous.add(link).await.unwrap();
        create(&anonymous, "t:car-d", json!({"by": "edge-d"})).await;
        refused_link(&anonymous, "hub", "no credentials").await;
        // What edge-a sends after them still arrives; theirs never did.
        a.twins()
            .apply(
                &writer(),
                ThingCommand::new(
                    ThingId::new("t:car-a").unwrap(),
                    Action::Merge,
                    Pointer::parse("/attributes").unwrap(),
                    Some(json!({"after": true})),
                ),
            )
            .await
            .unwrap();
        wait_thing(hub.twins(), "t:car-a", "edge-a's later write", |t| {
            t["attributes"]["after"] == true
        })
        .await;
        assert!(thing_json(hub.twins(), "t:car-c").is_none());
        assert!(thing_json(hub.twins(), "t:car-d").is_none());
        for l in [&hub, &a, &b, &wrong, &anonymous] {
            l.shutdown().await;
        }
    })
    .await
    .expect("test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_keeps_an_edge_from_publishing_as_another_edge() {
    let Some(broker) = broker() else {
        return;
    };
    tokio::time::timeout(LIMIT, async {
        let (hub, a, b) = fleet(&broker).await;

        // edge-a's credentials, edge-b's topic: the hub would apply it as link:edge-b (which
        // may write t:car-b), but the broker drops it. Then a permitted marker on edge-a's own
        // topic, on the same connection: once the hub has it, the forbidden update, published
        // before it, would have arrived too.
        let rogue = raw_client(&broker, "edge-a", "edge-a-secret").await;
        let forged = update("edge-a", "t:car-b", &json!({"owner": "edge-a"}));
        let denied = publish(&rogue, "opentwins/links/edge-b/up", forged.clone()).await;
        eprintln!("the broker answered the forbidden publish with {denied:?}");
        let marker = update("edge-a", "t:car-a", &json!({"marker": 1}));
        publish(&rogue, "opentwins/links/edge-a/up", marker)
            .await
            .expect("edge-a may publish on its own topic");
        wait_thing(hub.twins(), "t:car-a", "the marker", |t| {
            t["attributes"]["marker"] == 1
        })
        .await;
        let car_b = thing_json(hub.twins(), "t:car-b").unwrap();
        assert!(
            car_b["attributes"].get("owner").is_none(),
            "the hub applied edge-a's update on edge-b's topic: {car_b}"
        );

        // The same update from edge-b's own login is applied: the payload was valid and only
        // the ACL stopped it.
        let own = raw_client(&broker, "edge-b", "edge-b-secret").await;
        publish(&own, "opentwins/links/edge-b/up", forged)
            .await
            .expect("edge-b may publish on its own topic");
        wait_thing(hub.twins(), "t:car-b", "the same update from edge-b", |t| {
            t["attributes"]["owner"] == "edge-a"
        })
        .await;
        for cli in [rogue, own] {
            cli.disconnect(None).await.unwrap();
        }

        // A link of edge-a's configured with edge-b's up-topic: connected (its login is
        // right), but the broker refuses every publish; the update stays in the outbox and
        // the status says why.
        let misconfigured = node("edge-a2").await;
        let mut link = mqtt_link(
            "hub",
            &broker.url(),
            "opentwins/links/edge-b/up",
            None,
            Some(("edge-a", "edge-a-secret")),
            TlsConfig::default(),
        );
        link.direction = Direction::Out;
        misconfigured.add(link).await.unwrap();
        assert!(misconfigured.wait_ready(Duration::from_secs(20)).await);
        create(&misconfigured, "t:car-x", json!({"by": "edge-a2"})).await;
        let s = wait_status(&misconfigured, "hub", "the refused publish", |s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("publish failed"))
        })
        .await;
        assert!(
            s.connected && s.messages_out == 0 && s.backlog == 1,
            "{s:?}"
        );
        // edge-a's next write through its own link arrives; t:car-x never does.
        a.twins()
            .apply(
                &writer(),
                ThingCommand::new(
                    ThingId::new("t:car-a").unwrap(),
                    Action::Merge,
                    Pointer::parse("/attributes").unwrap(),
                    Some(json!({"later": true})),
                ),
            )
            .await
            .unwrap();
        wait_thing(hub.twins(), "t:car-a", "edge-a's later write", |t| {
            t["attributes"]["later"] == true
        })
        .await;
        assert!(thing_json(hub.twins(), "t:car-x").is_none());
        assert_eq!(link_status(&hub, "fleet-up").rejected, 0);
        for l in [&hub, &a, &b, &misconfigured] {
            l.shutdown().await;
        }
    })
    .await
    .expect("test hung");
}
