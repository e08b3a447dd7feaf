//! Helpers of the MQTT tests (`mqtt_bridge.rs`, `mqtt_tls.rs`, `mqtt_delta.rs`,
//! `broker_auth.rs`): a bridge on an engine, a raw MQTT 5 client, waiting for things and
//! metrics, and ([`broker`]) private brokers with TLS, users and ACLs.
#![allow(dead_code, unreachable_pub)]

pub mod broker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::{Pointer, ThingId, Twins};
use opentwins_transport::link::{LinkConfig, LinkStatus, Links, PeerConfig};
use opentwins_transport::mqtt::{
    MqttBridge, MqttConfig, MqttHandle, MqttMetrics, TlsConfig, keep_connected,
};
use paho_mqtt as paho;
use serde_json::Value;
use tokio::sync::{Notify, oneshot, watch};

pub const LIMIT: Duration = Duration::from_secs(60);
pub const SUBJECT: &str = "test:mqtt";

pub fn auth() -> AuthContext {
    AuthContext::new([SUBJECT])
}

pub fn config(broker: &str, prefix: &str) -> MqttConfig {
    let mut c = MqttConfig {
        broker: broker.into(),
        instance_id: prefix.replace('/', "-"),
        subject: vec![SUBJECT.into()],
        reconnect_min: Duration::from_secs(1),
        reconnect_max: Duration::from_secs(2),
        ..MqttConfig::default()
    };
    c.status.enabled = false;
    c.outbound.enabled = false;
    c
}

pub async fn create_thing(tw: &Twins, id: &str, body: Value) {
    let cmd = ThingCommand::new(
        ThingId::new(id).unwrap(),
        Action::Create,
        Pointer::root(),
        Some(body),
    );
    tw.apply(&auth(), cmd).await.unwrap();
}

pub async fn start(config: MqttConfig, tw: &Twins) -> MqttHandle {
    let (handle, _join) = MqttBridge::spawn(config, tw.clone()).unwrap();
    assert!(
        handle.wait_connected(Duration::from_secs(20)).await,
        "bridge did not connect"
    );
    handle
}

/// A test-side MQTT 5 client with a message stream; it reconnects (1–2 s backoff) until dropped.
pub struct Client {
    pub cli: paho::AsyncClient,
    pub rx: paho::AsyncReceiver<Option<paho::Message>>,
    /// Stops the reconnecting task when dropped.
    _stop: watch::Sender<bool>,
}

impl Client {
    pub async fn connect(uri: &str, id: &str, clean: bool) -> Client {
        let opts = paho::ConnectOptionsBuilder::new_v5()
            .clean_start(clean)
            .properties(paho::properties![paho::PropertyCode::SessionExpiryInterval => 600])
            .finalize();
        Client::connect_with(uri, id, opts).await
    }

    /// A client connected with `opts` (which must not turn on paho's automatic reconnect).
    pub async fn connect_with(uri: &str, id: &str, opts: paho::ConnectOptions) -> Client {
        let mut cli = paho::CreateOptionsBuilder::new()
            .server_uri(uri)
            .client_id(id)
            .mqtt_version(paho::MQTT_VERSION_5)
            .max_buffered_messages(10_000)
            .send_while_disconnected(true)
            .create_client()
            .unwrap();
        let rx = cli.get_stream(None);
        let lost = Arc::new(Notify::new());
        {
            let lost = lost.clone();
            cli.set_connection_lost_callback(move |_| lost.notify_one());
        }
        let (stop, stopped) = watch::channel(false);
        let (first_tx, first) = oneshot::channel();
        let mut first_tx = Some(first_tx);
        let c = cli.clone();
        tokio::spawn(async move {
            let backoff = (Duration::from_secs(1), Duration::from_secs(2));
            keep_connected(&c, opts, backoff, &lost, stopped, |r| {
                if let Some(tx) = first_tx.take() {
                    let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
                }
            })
            .await;
        });
        first
            .await
            .unwrap()
            .expect("the test client did not connect");
        Client {
            cli,
            rx,
            _stop: stop,
        }
    }

    pub async fn subscribe(&self, filter: &str) {
        self.cli.subscribe(filter, 1).await.unwrap();
    }

    /// The next message, failing after `secs`.
    pub async fn next(&self, secs: u64) -> paho::Message {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(secs), self.rx.recv())
                .await
                .expect("no message in time")
                .expect("stream closed");
            if let Some(m) = m {
                return m;
            }
        }
    }

    pub async fn publish(&self, msg: paho::Message) {
        self.cli.publish(msg).await.unwrap();
    }

    /// Fails if a message arrives within `ms`.
    pub async fn nothing_for(&self, ms: u64) {
        if let Ok(Ok(Some(m))) =
            tokio::time::timeout(Duration::from_millis(ms), self.rx.recv()).await
        {
            panic!("unexpected message on {}: {:?}", m.topic(), m.payload_str());
        }
    }

    /// Disconnects.
    pub async fn leave(self) {
        self._stop.send_replace(true);
        self.cli.disconnect(None).await.unwrap();
    }
}

pub fn json_of(m: &paho::Message) -> Value {
    serde_json::from_slice(m.payload()).unwrap()
}

pub fn thing_json(tw: &Twins, id: &str) -> Option<Value> {
    tw.get_thing(&ThingId::new(id).unwrap())
        .map(|t| t.to_json(None))
}

/// Polls the engine until `pred` holds for the thing.
pub async fn wait_thing(tw: &Twins, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = thing_json(tw, id)
            && pred(&v)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            thing_json(tw, id).map(|t| t.to_string().chars().take(3000).collect::<String>())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the bridge's counters until `pred` holds (they are updated after the engine applied).
pub async fn wait_metrics(bridge: &MqttHandle, pred: impl Fn(&MqttMetrics) -> bool) -> MqttMetrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = bridge.metrics();
        if pred(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "counters never matched: {m:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A link named `name` over the MQTT broker at `url`: publishes to `publish`, reads
/// `subscribe`, logs in as `login` (user, password) and checks the broker with `tls`.
pub fn mqtt_link(
    name: &str,
    url: &str,
    publish: &str,
    subscribe: Option<&str>,
    login: Option<(&str, &str)>,
    tls: TlsConfig,
) -> LinkConfig {
    LinkConfig::new(
        name,
        PeerConfig::Mqtt {
            url: url.into(),
            publish: publish.into(),
            subscribe: subscribe.map(Into::into),
            qos: 1,
            client_id: None,
            username: login.map(|(u, _)| u.to_owned()),
            password: login.map(|(_, p)| p.to_owned()),
            tls,
        },
    )
}

/// The status of the link `name`.
pub fn link_status(links: &Links, name: &str) -> LinkStatus {
    links
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no link {name}"))
}

/// Polls the status of the link `name` until `pred` holds (a status changes without an event).
pub async fn wait_status(
    links: &Links,
    name: &str,
    what: &str,
    pred: impl Fn(&LinkStatus) -> bool,
) -> LinkStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = link_status(links, name);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A link whose broker must refuse it: its status says it is not connected and why (the
/// connect error), its update waits in the outbox, and it never becomes ready.
pub async fn refused_link(links: &Links, name: &str, why: &str) -> LinkStatus {
    let s = wait_status(links, name, why, |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("connecting to"))
    })
    .await;
    eprintln!("{why}: {:?}", s.last_error);
    assert!(!s.connected, "{why}: {s:?}");
    assert!(!links.wait_ready(Duration::from_millis(500)).await, "{why}");
    s
}
