//! `GET /metrics` of the HTTP API reports the MQTT bridge registered with
//! `opentwins_transport::metrics::register_mqtt`: against a real Mosquitto on 127.0.0.1:1883.
//! Skips loudly when no broker is reachable, fails instead when `OPENTWINS_REQUIRE_SERVICES=1`.

use std::net::TcpStream;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use opentwins_core::{EngineConfig, Twins};
use opentwins_transport::http::{HttpConfig, HttpState, app};
use opentwins_transport::metrics::{Registry, register_mqtt};
use opentwins_transport::mqtt::{MqttBridge, MqttConfig};
use tower::ServiceExt;

const LIMIT: Duration = Duration::from_secs(60);

fn broker() -> Option<String> {
    let addr = "127.0.0.1:1883".parse().unwrap();
    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return Some("tcp://127.0.0.1:1883".into());
    }
    assert!(
        std::env::var("OPENTWINS_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "Mosquitto is not reachable on 127.0.0.1:1883 and OPENTWINS_REQUIRE_SERVICES=1"
    );
    eprintln!("\n!!! SKIPPED: Mosquitto is not reachable on 127.0.0.1:1883 !!!\n");
    None
}

async fn metrics_text(router: &axum::Router) -> String {
    let response = router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn metrics_show_the_mqtt_bridge() {
    let Some(broker) = broker() else { return };
    tokio::time::timeout(LIMIT, async {
        let twins = Twins::in_memory(EngineConfig::default());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let mut config = MqttConfig {
            broker,
            instance_id: format!("ot-test-http-metrics-{}-{nanos}", std::process::id()),
            subject: vec!["test:http-metrics".into()],
            ..MqttConfig::default()
        };
        // Nothing retained, nothing published: this test leaves no trace on the broker.
        config.status.enabled = false;
        config.outbound.enabled = false;
        config.subscriptions.clear();
        let (handle, driver) = MqttBridge::spawn(config, twins.clone()).unwrap();
        let registry = Registry::new();
        register_mqtt(&registry, handle.clone());
        let router = app(HttpState::with_registry(twins, HttpConfig::default(), registry).unwrap());

        assert!(
            handle.wait_connected(Duration::from_secs(20)).await,
            "bridge did not connect"
        );
        let text = metrics_text(&router).await;
        assert!(
            text.contains("# TYPE opentwins_mqtt_connected gauge\nopentwins_mqtt_connected 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE opentwins_mqtt_connects_total counter\nopentwins_mqtt_connects_total 1\n"
            ),
            "{text}"
        );
        for name in [
            "opentwins_mqtt_messages_in_total",
            "opentwins_mqtt_messages_out_total",
            "opentwins_mqtt_commands_applied_total",
            "opentwins_mqtt_commands_refused_total",
            "opentwins_mqtt_invalid_messages_total",
            "opentwins_mqtt_publish_errors_total",
            "opentwins_mqtt_connections_lost_total",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
        // The values are read when rendering: after shutdown the gauge says 0.
        handle.shutdown().await;
        driver.await.unwrap();
        let text = metrics_text(&router).await;
        assert!(text.contains("\nopentwins_mqtt_connected 0\n"), "{text}");
    })
    .await
    .expect("test timed out");
}
