//! The MQTT bridge against a real Mosquitto 2 (MQTT 5) on 127.0.0.1:1883, and against a private
//! `mosquitto` process for the reconnect test (TLS: `mqtt_tls.rs`). Skips loudly when no broker (or `openssl`) is there, fails instead when
//! `OPENTWINS_REQUIRE_SERVICES=1`. Each test has its own topic prefix.

use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::{EngineConfig, Pointer, ThingId, Twins};
use opentwins_transport::mqtt::{ConnectionState, Mapping, SubscriptionConfig};
use paho_mqtt as paho;

mod common;
mod mqtt_helpers;
use common::{PrivateBroker, broker, prefix};
use mqtt_helpers::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ditto_command_gets_response_with_correlation_data() {
    let Some(broker) = broker() else { return };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("ditto");
        let tw = Twins::in_memory(EngineConfig::default());
        let mut c = config(&broker, &p);
        c.subscriptions.push(SubscriptionConfig {
            filter: format!("{p}/commands"),
            mapping: Mapping::Ditto,
            ..SubscriptionConfig::default()
        });
        let bridge = start(c, &tw).await;
        let client = Client::connect(&broker, &format!("{p}-client"), true).await;
        client.subscribe(&format!("{p}/responses/#")).await;

        let send = |env: Value, corr: &[u8]| {
            let mut props = paho::Properties::new();
            props
                .push_string(
                    paho::PropertyCode::ResponseTopic,
                    &format!("{p}/responses/r"),
                )
                .unwrap();
            props
                .push_binary(paho::PropertyCode::CorrelationData, corr.to_vec())
                .unwrap();
            paho::MessageBuilder::new()
                .topic(format!("{p}/commands"))
                .payload(env.to_string())
                .qos(1)
                .properties(props)
                .finalize()
        };
        let create = json!({"topic": "test.mqtt/car-1/things/twin/commands/create", "path": "/",
            "headers": {"correlation-id": "corr-1"},
            "value": {"features": {"gps": {"properties": {"lat": 1.5}}}}});
        client.publish(send(create.clone(), b"\x01bin")).await;
        let r = client.next(10).await;
        assert_eq!(r.topic(), format!("{p}/responses/r"));
        assert_eq!(
            r.properties()
                .get_binary(paho::PropertyCode::CorrelationData),
            Some(b"\x01bin".to_vec())
        );
        assert_eq!(
            r.properties()
                .get_string(paho::PropertyCode::ContentType)
                .as_deref(),
            Some("application/vnd.eclipse.ditto+json")
        );
        let v = json_of(&r);
        assert_eq!(v["status"], 201, "{v}");
        assert_eq!(v["headers"]["correlation-id"], "corr-1");
        assert_eq!(v["topic"], "test.mqtt/car-1/things/twin/commands/create");

        // A retrieve, answered with the value.
        let retrieve = json!({"topic": "test.mqtt/car-1/things/twin/commands/retrieve",
            "path": "/features/gps/properties/lat", "headers": {"correlation-id": "corr-2"}});
        client.publish(send(retrieve, b"2")).await;
        let v = json_of(&client.next(10).await);
        assert_eq!(
            (v["status"].clone(), v["value"].clone()),
            (json!(200), json!(1.5))
        );

        // The same create again: a Ditto error envelope, same correlation.
        client.publish(send(create, b"3")).await;
        let r = client.next(10).await;
        assert_eq!(
            r.properties()
                .get_binary(paho::PropertyCode::CorrelationData),
            Some(b"3".to_vec())
        );
        let v = json_of(&r);
        assert_eq!(v["topic"], "test.mqtt/car-1/things/twin/errors");
        assert_eq!(v["status"], 409);
        assert_eq!(v["value"]["error"], "things:thing.conflict");
        assert_eq!(v["headers"]["correlation-id"], "corr-1");

        // Garbage is answered with an error and counted; the subscription keeps working.
        client.publish(send(json!("nope"), b"4")).await;
        let v = json_of(&client.next(10).await);
        assert_eq!(v["topic"], "_/_/things/twin/errors");
        let m = bridge.metrics();
        assert_eq!(
            (m.commands_applied, m.commands_refused, m.invalid_messages),
            (2, 1, 1),
            "{m:?}"
        );
        assert!(m.messages_in >= 4, "{m:?}");
        // Replies count as out once the broker acknowledged them.
        wait_metrics(&bridge, |m| m.messages_out >= 4).await;
        bridge.shutdown().await;
        assert_eq!(bridge.state(), ConnectionState::Disconnected);
    })
    .await
    .expect("test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_out_on_the_pattern_with_filter_and_extra_fields() {
    let Some(broker) = broker() else { return };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("events");
        let tw = Twins::in_memory(EngineConfig::default());
        let mut c = config(&broker, &p);
        c.outbound.enabled = true;
        c.outbound.topic = format!("{p}/{{channel}}/{{criterion}}/{{namespace}}/{{name}}");
        c.outbound.filter = Some("exists(features/gps)".into());
        c.outbound.extra_fields = Some("attributes/kind".into());
        let bridge = start(c, &tw).await;
        let client = Client::connect(&broker, &format!("{p}-client"), true).await;
        client.subscribe(&format!("{p}/#")).await;

        create_thing(&tw, "test.ev:a", json!({"attributes": {"kind": "car"}})).await;
        let merge = |path: &str, v: Value| {
            ThingCommand::new(
                ThingId::new("test.ev:a").unwrap(),
                Action::Merge,
                Pointer::parse(path).unwrap(),
                Some(v),
            )
        };
        // Filtered out (no gps in the change), then one that passes.
        tw.apply(&auth(), merge("/attributes", json!({"x": 1})))
            .await
            .unwrap();
        tw.apply(
            &auth(),
            merge("/features/gps/properties", json!({"lat": 2})),
        )
        .await
        .unwrap();
        let m = client.next(10).await;
        assert_eq!(m.topic(), format!("{p}/twin/events/test.ev/a"));
        let v = json_of(&m);
        assert_eq!(v["topic"], "test.ev/a/things/twin/events/merged");
        assert_eq!(v["path"], "/features/gps/properties");
        assert_eq!(v["value"], json!({"lat": 2}));
        assert_eq!(v["revision"], 3);
        assert_eq!(v["extra"], json!({"attributes": {"kind": "car"}}));
        // Nothing else arrives.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), client.rx.recv())
                .await
                .is_err()
        );
        bridge.shutdown().await;
    })
    .await
    .expect("test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_reduce_events_to_the_selection_and_drop_unselected_ones() {
    let Some(broker) = broker() else { return };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("fields");
        let tw = Twins::in_memory(EngineConfig::default());
        let mut c = config(&broker, &p);
        c.outbound.enabled = true;
        c.outbound.topic = format!("{p}/{{action}}/{{thingId}}");
        c.outbound.fields = Some("thingId,features/*/properties/speed".into());
        c.outbound.extra_fields = Some("attributes/kind".into());
        let bridge = start(c, &tw).await;
        let client = Client::connect(&broker, &format!("{p}-client"), true).await;
        client.subscribe(&format!("{p}/#")).await;

        // Created with no speed anywhere: nothing selected but thingId, not published.
        create_thing(&tw, "test.fd:a", json!({"attributes": {"kind": "car"}})).await;
        let merge = |path: &str, v: Value| {
            ThingCommand::new(
                ThingId::new("test.fd:a").unwrap(),
                Action::Merge,
                Pointer::parse(path).unwrap(),
                Some(v),
            )
        };
        tw.apply(&auth(), merge("/attributes", json!({"x": 1})))
            .await
            .unwrap();
        tw.apply(
            &auth(),
            merge("/features/gps/properties", json!({"speed": 7, "alt": 3})),
        )
        .await
        .unwrap();
        let m = client.next(10).await;
        assert_eq!(m.topic(), format!("{p}/merged/test.fd:a"));
        let v = json_of(&m);
        assert_eq!(v["topic"], "test.fd/a/things/twin/events/merged");
        assert_eq!(v["path"], "/");
        assert_eq!(
            v["value"],
            json!({"features": {"gps": {"properties": {"speed": 7}}}})
        );
        assert_eq!(v["revision"], 3);
        assert_eq!(v["extra"], json!({"attributes": {"kind": "car"}}));
        // A new feature (a modify that creates it) is reduced the same way.
        tw.apply(
            &auth(),
            ThingCommand::new(
                ThingId::new("test.fd:a").unwrap(),
                Action::Modify,
                Pointer::parse("/features/lane").unwrap(),
                Some(json!({"properties": {"speed": 1, "offset": 0.2}})),
            ),
        )
        .await
        .unwrap();
        let v = json_of(&client.next(10).await);
        assert_eq!(v["topic"], "test.fd/a/things/twin/events/created");
        assert_eq!(
            (v["path"].clone(), v["value"].clone()),
            (
                json!("/"),
                json!({"features": {"lane": {"properties": {"speed": 1}}}})
            )
        );
        // Nothing else arrives; the two unselected events are counted, not errors.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), client.rx.recv())
                .await
                .is_err()
        );
        let m = bridge.metrics();
        assert_eq!(m.events_unselected, 2, "{m:?}");
        assert_eq!(m.errors(), 0, "{m:?}");
        bridge.shutdown().await;
    })
    .await
    .expect("test hung");
}

fn telemetry_sub(p: &str) -> SubscriptionConfig {
    SubscriptionConfig {
        mapping: Mapping::Telemetry,
        template: format!("{p}/telemetry/{{namespace}}:{{name}}/{{feature}}"),
        ..SubscriptionConfig::default()
    }
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_json_merges_and_binary_frames_become_base64() {
    let Some(broker) = broker() else { return };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("telemetry");
        let tw = Twins::in_memory(EngineConfig::default());
        let mut c = config(&broker, &p);
        c.subscriptions.push(telemetry_sub(&p));
        let bridge = start(c, &tw).await;
        create_thing(&tw, "test.tel:car", json!({})).await;
        let client = Client::connect(&broker, &format!("{p}-client"), true).await;
        let topic = |f: &str| format!("{p}/telemetry/test.tel:car/{f}");

        client
            .publish(paho::Message::new(
                topic("gps"),
                r#"{"lat": 1, "lon": 2}"#,
                1,
            ))
            .await;
        client
            .publish(paho::Message::new(topic("gps"), r#"{"lon": 3}"#, 1))
            .await;
        wait_thing(&tw, "test.tel:car", "gps merge", |t| {
            t["features"]["gps"]["properties"] == json!({"lat": 1, "lon": 3})
        })
        .await;

        // Bad payloads are counted and do not stop the subscription.
        let bad = paho::MessageBuilder::new()
            .topic(topic("gps"))
            .payload("{broken")
            .qos(1)
            .properties(paho::properties![paho::PropertyCode::ContentType => "application/json"])
            .finalize();
        client.publish(bad).await;
        client
            .publish(paho::Message::new(
                format!("{p}/telemetry/no-colon/gps"),
                "{}",
                1,
            ))
            .await;
        client
            .publish(paho::Message::new(topic("gps"), "[1, 2]", 1))
            .await;

        // A ~200 kB binary frame with content type image/jpeg.
        let frame = noise(200_000, 0x9e37_79b9_7f4a_7c15);
        let msg = paho::MessageBuilder::new()
            .topic(topic("camera"))
            .payload(frame.clone())
            .qos(1)
            .properties(paho::properties![paho::PropertyCode::ContentType => "image/jpeg"])
            .finalize();
        client.publish(msg).await;
        let t = wait_thing(&tw, "test.tel:car", "frame", |t| {
            t["features"]["camera"]["properties"]["size"] == 200_000
        })
        .await;
        let props = &t["features"]["camera"]["properties"];
        assert_eq!(props["contentType"], "image/jpeg");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(props["frame"].as_str().unwrap())
            .unwrap();
        assert!(decoded == frame, "the frame did not survive the trip");
        // The counters move right after the engine applied the command: wait for them.
        let m = wait_metrics(&bridge, |m| m.commands_applied == 3).await;
        assert_eq!(m.invalid_messages, 3, "{m:?}");
        // A merge into a thing that does not exist is refused by the engine, and counted.
        client
            .publish(paho::Message::new(
                format!("{p}/telemetry/test.tel:ghost/gps"),
                "{}",
                1,
            ))
            .await;
        let m = wait_metrics(&bridge, |m| m.commands_refused == 1).await;
        assert_eq!(m.commands_applied, 3, "{m:?}");
        bridge.shutdown().await;
    })
    .await
    .expect("test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1280x720_frame_passes_as_base64_in_a_ditto_command() {
    let Some(broker) = broker() else { return };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("bigframe");
        let tw = Twins::in_memory(EngineConfig::default());
        let mut c = config(&broker, &p);
        c.subscriptions.push(SubscriptionConfig {
            filter: format!("{p}/commands"),
            ..SubscriptionConfig::default()
        });
        c.outbound.enabled = true;
        c.outbound.topic = format!("{p}/events/{{thingId}}");
        let bridge = start(c, &tw).await;
        create_thing(
            &tw,
            "test.big:car",
            json!({"features": {"camera": {"properties": {}}}}),
        )
        .await;
        let client = Client::connect(&broker, &format!("{p}-client"), true).await;
        client.subscribe(&format!("{p}/events/#")).await;
        client.subscribe(&format!("{p}/responses")).await;

        // A 1280x720 JPEG is ~200 kB; as base64 ~270 kB.
        let b64 = base64::engine::general_purpose::STANDARD.encode(noise(202_500, 7));
        assert!(b64.len() >= 270_000);
        let env = json!({"topic": "test.big/car/things/twin/commands/modify",
            "path": "/features/camera/properties/frame",
            "headers": {"correlation-id": "big", "reply-to": format!("{p}/responses")},
            "value": b64});
        client
            .publish(paho::Message::new(
                format!("{p}/commands"),
                env.to_string(),
                1,
            ))
            .await;
        let mut got_response = false;
        let mut got_event = false;
        while !(got_response && got_event) {
            let m = client.next(20).await;
            let v = json_of(&m);
            if m.topic().ends_with("/responses") {
                assert_eq!(v["status"], 201, "{}", v["value"]);
                got_response = true;
            } else if v["path"] == "/" {
                // The create event of the setup may still be on its way: not this test's.
                continue;
            } else {
                assert_eq!(v["path"], "/features/camera/properties/frame");
                assert_eq!(v["value"].as_str().map(str::len), Some(b64.len()));
                got_event = true;
            }
        }
        let t = thing_json(&tw, "test.big:car").unwrap();
        assert_eq!(t["features"]["camera"]["properties"]["frame"], json!(b64));
        bridge.shutdown().await;
    })
    .await
    .expect("test hung");
}

/// A TCP proxy in front of the broker whose connections can be cut (no MQTT DISCONNECT: the
/// broker sees the connection drop, as when a vehicle loses its network).
struct Proxy {
    port: u16,
    conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let list = conns.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { return };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let pairs = [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up.try_clone().unwrap(), down.try_clone().unwrap()),
                ];
                list.lock().unwrap().extend([down, up]);
                for (mut from, mut to) in pairs {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, conns }
    }

    fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_online_then_offline_and_offline_is_the_last_will() {
    let Some(broker) = broker() else { return };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("status");
        let proxy = Proxy::start(1883);
        let tw = Twins::in_memory(EngineConfig::default());
        let mut c = config(&format!("tcp://127.0.0.1:{}", proxy.port), &p);
        c.status.enabled = true;
        c.status.topic = format!("{p}/status/{{instance}}");
        let topic = c.status_topic();
        let watcher = Client::connect(&broker, &format!("{p}-watch"), true).await;
        watcher.subscribe(&topic).await;

        let bridge = start(c, &tw).await;
        assert_eq!(watcher.next(10).await.payload(), b"online");
        // The connection drops: the broker publishes the will; the bridge reconnects and is
        // online again.
        proxy.cut();
        assert_eq!(watcher.next(20).await.payload(), b"offline");
        assert_eq!(watcher.next(20).await.payload(), b"online");
        assert!(bridge.wait_connected(Duration::from_secs(10)).await);
        let m = bridge.metrics();
        assert!(m.connects == 2 && m.connections_lost == 1, "{m:?}");
        // A clean shutdown says offline itself.
        bridge.shutdown().await;
        assert_eq!(watcher.next(10).await.payload(), b"offline");
        // A late subscriber sees the retained offline.
        let late = Client::connect(&broker, &format!("{p}-late"), true).await;
        late.subscribe(&topic).await;
        let m = late.next(10).await;
        assert!(m.retained() && m.payload() == b"offline");
        // Clean up the retained message.
        watcher
            .publish(paho::Message::new_retained(topic, Vec::<u8>::new(), 1))
            .await;
    })
    .await
    .expect("test hung");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_broker_restart_without_losing_qos1_messages() {
    let Some(mut broker) = PrivateBroker::start() else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(90), async {
        let p = prefix("reconnect");
        let tw = Twins::in_memory(EngineConfig::default());
        let mut c = config(&broker.url(), &p);
        c.subscriptions.push(telemetry_sub(&p));
        let bridge = start(c, &tw).await;
        create_thing(&tw, "test.rc:car", json!({})).await;
        let publisher = Client::connect(&broker.url(), &format!("{p}-pub"), false).await;
        let topic = format!("{p}/telemetry/test.rc:car/seq");
        let tokens = std::sync::Mutex::new(Vec::new());
        let send = |i: usize| {
            let payload = json!({ format!("m{i}"): i }).to_string();
            // Not awaited: during the outage the publisher's client buffers them.
            let t = publisher
                .cli
                .publish(paho::Message::new(topic.clone(), payload, 1));
            tokens.lock().unwrap().push((i, t));
        };
        for i in 0..50 {
            send(i);
        }
        wait_thing(&tw, "test.rc:car", "first batch", |t| {
            t["features"]["seq"]["properties"]["m49"] == 49
        })
        .await;

        broker.stop();
        let mut state = bridge.watch_state();
        tokio::time::timeout(
            Duration::from_secs(10),
            state.wait_for(|s| *s != ConnectionState::Connected),
        )
        .await
        .expect("the bridge did not notice the outage")
        .unwrap();
        // The publisher too: a publish written to the dead socket before it notices fails
        // (paho keeps it and sends it again after the reconnect, but its token says failed).
        let t0 = std::time::Instant::now();
        while publisher.cli.is_connected() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the publisher did not notice"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for i in 50..100 {
            send(i);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        broker.run();
        for i in 100..150 {
            send(i);
        }
        let t = wait_thing(&tw, "test.rc:car", "every message", |t| {
            t["features"]["seq"]["properties"]
                .as_object()
                .is_some_and(|m| m.len() == 150)
        })
        .await;
        for i in 0..150 {
            assert_eq!(t["features"]["seq"]["properties"][format!("m{i}")], i);
        }
        assert!(bridge.wait_connected(Duration::from_secs(10)).await);
        let m = bridge.metrics();
        assert!(m.connects >= 2 && m.connections_lost >= 1, "{m:?}");
        // The publisher's broker acknowledged every message too.
        let all: Vec<_> = std::mem::take(&mut *tokens.lock().unwrap());
        for (i, t) in all {
            t.await.unwrap_or_else(|e| panic!("publish {i}: {e}"));
        }
        bridge.shutdown().await;
    })
    .await
    .expect("test hung");
}

/// The core's bad-input matrix through MQTT: each bad command gets a Ditto error envelope with the
/// right status and code on its response topic, changes nothing, and the bridge keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ditto_commands_get_ditto_errors_and_change_nothing() {
    let Some(broker) = broker() else { return };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("bad");
        let tw = Twins::in_memory(EngineConfig {
            max_value_bytes: 1000,
            ..EngineConfig::default()
        });
        create_thing(&tw, "test.bad:v", json!({"attributes": {"a": 1}})).await;
        let owner = AuthContext::new(["test:owner"]);
        let private = ThingCommand::new(
            ThingId::new("test.bad:private").unwrap(),
            Action::Create,
            Pointer::root(),
            Some(json!({})),
        );
        tw.apply(&owner, private).await.unwrap();
        let mut c = config(&broker, &p);
        c.subscriptions.push(SubscriptionConfig {
            filter: format!("{p}/commands"),
            mapping: Mapping::Ditto,
            ..SubscriptionConfig::default()
        });
        let bridge = start(c, &tw).await;
        let client = Client::connect(&broker, &format!("{p}-client"), true).await;
        client.subscribe(&format!("{p}/responses/#")).await;
        let send = |payload: String, corr: &str| {
            let mut props = paho::Properties::new();
            props
                .push_string(paho::PropertyCode::ResponseTopic, &format!("{p}/responses/r"))
                .unwrap();
            props
                .push_binary(paho::PropertyCode::CorrelationData, corr.as_bytes().to_vec())
                .unwrap();
            paho::MessageBuilder::new()
                .topic(format!("{p}/commands"))
                .payload(payload)
                .qos(1)
                .properties(props)
                .finalize()
        };
        let modify = |path: &str, value: Value, headers: Value| {
            json!({"topic": "test.bad/v/things/twin/commands/modify", "path": path,
                "headers": headers, "value": value})
            .to_string()
        };
        let cases: Vec<(&str, String, u16, &str)> = vec![
            ("malformed JSON", "{not json".into(), 400, "json.invalid"),
            (
                "invalid thing id",
                json!({"topic": "1bad/x/things/twin/commands/retrieve", "path": "/", "headers": {}})
                    .to_string(),
                400,
                "things:id.invalid",
            ),
            (
                "unknown action",
                json!({"topic": "test.bad/v/things/twin/commands/frobnicate", "path": "/", "headers": {}})
                    .to_string(),
                400,
                "things:protocol.invalid",
            ),
            ("empty path segment", modify("/attributes//a", json!(1), json!({})), 400, "json.pointer.invalid"),
            ("wrong type", modify("/attributes", json!(5), json!({})), 400, "json.field.invalid"),
            ("unknown field", modify("/", json!({"color": "red"}), json!({})), 400, "json.field.invalid"),
            (
                "invalid RQL condition",
                modify("/attributes/a", json!(2), json!({"condition": "eq(attributes/a"})),
                400,
                "rql.expression.invalid",
            ),
            (
                "oversize value",
                modify("/attributes/big", json!("x".repeat(2000)), json!({})),
                413,
                "things:thing.toolarge",
            ),
            (
                "thingId change",
                modify("/", json!({"thingId": "test.bad:other"}), json!({})),
                400,
                "things:id.notsettable",
            ),
            (
                "no permission",
                json!({"topic": "test.bad/private/things/twin/commands/modify", "path": "/attributes/x",
                    "headers": {}, "value": 1})
                .to_string(),
                404,
                "things:thing.notfound",
            ),
        ];
        for (i, (name, payload, status, code)) in cases.iter().enumerate() {
            let corr = format!("bad-{i}");
            client.publish(send(payload.clone(), &corr)).await;
            let r = client.next(10).await;
            assert_eq!(
                r.properties().get_binary(paho::PropertyCode::CorrelationData),
                Some(corr.into_bytes()),
                "{name}"
            );
            let v = json_of(&r);
            assert_eq!(v["status"], *status, "{name}: {v}");
            assert_eq!(v["value"]["error"], *code, "{name}: {v}");
            assert!(v["value"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}");
        }
        // Nothing changed, and the bridge still answers.
        let v = thing_json(&tw, "test.bad:v").unwrap();
        assert_eq!(v["attributes"], json!({"a": 1}));
        assert_eq!(tw.get_thing(&ThingId::new("test.bad:v").unwrap()).unwrap().revision(), 1);
        let ok = json!({"topic": "test.bad/v/things/twin/commands/retrieve", "path": "/attributes/a",
            "headers": {}})
        .to_string();
        client.publish(send(ok, "ok")).await;
        let v = json_of(&client.next(10).await);
        assert_eq!((v["status"].clone(), v["value"].clone()), (json!(200), json!(1)));
        bridge.shutdown().await;
    })
    .await
    .expect("test hung");
}
