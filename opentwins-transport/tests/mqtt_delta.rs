//! The bridge's retained desired/reported delta against a real Mosquitto 2 on 127.0.0.1:1883:
//! desired state written at the hub reaches a device that subscribes late, and the retained
//! message is cleared once the device reports the desired values. Skips loudly when no broker
//! is there, fails instead when `OPENTWINS_REQUIRE_SERVICES=1`.

use std::time::Duration;

use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::{EngineConfig, Pointer, ThingId, Twins};
use opentwins_transport::mqtt::{MqttBridge, MqttConfig};
use paho_mqtt as paho;
use serde_json::{Value, json};

mod common;
mod mqtt_helpers;
use common::{broker, prefix};
use mqtt_helpers::{Client, json_of, wait_metrics};

const LIMIT: Duration = Duration::from_secs(60);
const SUBJECT: &str = "test:mqtt";
const THING: &str = "test.delta:car-1";

fn auth() -> AuthContext {
    AuthContext::new([SUBJECT])
}

async fn apply(tw: &Twins, action: Action, path: &str, value: Value) {
    let cmd = ThingCommand::new(
        ThingId::new(THING).unwrap(),
        action,
        Pointer::parse(path).unwrap(),
        Some(value),
    );
    tw.apply(&auth(), cmd).await.unwrap();
}

/// A device: a fresh MQTT 5 client subscribed to one topic.
async fn subscribed(broker: &str, id: &str, topic: &str) -> Client {
    let device = Client::connect(broker, id, true).await;
    device.subscribe(topic).await;
    device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_device_gets_the_retained_delta_until_it_reports() {
    let Some(broker) = broker() else { return };
    tokio::time::timeout(LIMIT, async {
        let p = prefix("delta");
        let tw = Twins::in_memory(EngineConfig::default());
        let mut c = MqttConfig {
            broker: broker.clone(),
            instance_id: p.replace('/', "-"),
            subject: vec![SUBJECT.into()],
            delta_topic: Some(format!("{p}/delta/{{namespace}}/{{name}}")),
            ..MqttConfig::default()
        };
        c.status.enabled = false;
        c.outbound.enabled = false;
        let (bridge, _join) = MqttBridge::spawn(c, tw.clone()).unwrap();
        assert!(
            bridge.wait_connected(Duration::from_secs(20)).await,
            "bridge did not connect"
        );
        let topic = format!("{p}/delta/test.delta/car-1");

        // A thing without desired state: the first look at it publishes the (empty) clear.
        apply(
            &tw,
            Action::Create,
            "/",
            json!({"features": {"ac": {"properties": {"on": false, "temp": 19}}}}),
        )
        .await;
        wait_metrics(&bridge, |m| m.messages_out >= 1).await;
        // The hub wants the air conditioning on at 21 degrees.
        apply(
            &tw,
            Action::Merge,
            "/features/ac/desiredProperties",
            json!({"on": true, "temp": 21}),
        )
        .await;
        wait_metrics(&bridge, |m| m.messages_out >= 2).await;

        // The device connects later and gets the pending delta at once, retained.
        let device = subscribed(&broker, &format!("{p}-device"), &topic).await;
        let m = device.next(10).await;
        assert!(m.retained(), "a retained message");
        assert_eq!(m.topic(), topic);
        assert_eq!(
            json_of(&m),
            json!({"features": {"ac": {"on": true, "temp": 21}}})
        );
        assert_eq!(
            m.properties()
                .get_string(paho::PropertyCode::ContentType)
                .as_deref(),
            Some("application/json")
        );

        // Changes that leave the delta as it is publish nothing.
        apply(&tw, Action::Merge, "/attributes", json!({"model": "x"})).await;
        apply(
            &tw,
            Action::Merge,
            "/features/ac/properties",
            json!({"fan": 2}),
        )
        .await;
        device.nothing_for(400).await;
        let out = bridge.metrics().messages_out;

        // The device reports part of it: the new, smaller delta.
        apply(
            &tw,
            Action::Merge,
            "/features/ac/properties",
            json!({"on": true}),
        )
        .await;
        let m = device.next(10).await;
        assert_eq!(json_of(&m), json!({"features": {"ac": {"temp": 21}}}));
        // ... and the rest: an empty payload clears the retained message.
        apply(
            &tw,
            Action::Merge,
            "/features/ac/properties",
            json!({"temp": 21.0}),
        )
        .await;
        let m = device.next(10).await;
        assert!(m.payload().is_empty(), "{:?}", m.payload_str());
        wait_metrics(&bridge, |m| m.messages_out >= out + 2).await;
        device.leave().await;

        // A device that connects now gets nothing: the broker holds no delta for the thing.
        let late = subscribed(&broker, &format!("{p}-late"), &topic).await;
        late.nothing_for(500).await;

        // New desired state reaches the connected device; deleting the thing clears it again.
        apply(
            &tw,
            Action::Modify,
            "/features/ac/desiredProperties/temp",
            json!(23),
        )
        .await;
        assert_eq!(
            json_of(&late.next(10).await),
            json!({"features": {"ac": {"temp": 23}}})
        );
        let delete = ThingCommand::new(
            ThingId::new(THING).unwrap(),
            Action::Delete,
            Pointer::root(),
            None,
        );
        tw.apply(&auth(), delete).await.unwrap();
        assert!(late.next(10).await.payload().is_empty());
        late.leave().await;
        assert_eq!(bridge.metrics().publish_errors, 0);
        bridge.shutdown().await;
    })
    .await
    .expect("test hung");
}
