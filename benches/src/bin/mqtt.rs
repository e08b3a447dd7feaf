//! MQTT telemetry throughput: JSON telemetry merges/s into one thing through the MQTT bridge
//! (telemetry mapping, sled store in a temp dir, writes persisted by group commit in the
//! background), against the raw broker ceiling measured in the same run: a paho publisher and a
//! paho subscriber on the same broker, same payload, same QoS, no engine.
//!
//! Needs Mosquitto on `--broker` (default `tcp://127.0.0.1:1883`).
//!
//! Run: `cargo run --release -p opentwins-benches --bin mqtt -- --out docs/results`

/// mimalloc: glibc malloc costs about half the CPU of a request here (see docs/benchmarks.md);
/// servers built from these crates should use it too (the edge and hub binaries will).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use opentwins_benches::per_second;
use opentwins_core::engine::{EngineConfig, RecvError, Twins};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::store::{SledConfig, SledStore, Store};
use opentwins_core::{Pointer, ThingId};
use opentwins_transport::mqtt::{Mapping, MqttBridge, MqttConfig, SubscriptionConfig};
use paho_mqtt as paho;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "MQTT telemetry merges/s vs the raw broker ceiling, same run")]
struct Args {
    /// Broker URL.
    #[arg(long, default_value = "tcp://127.0.0.1:1883")]
    broker: String,
    /// Messages per scenario.
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// QoS of publisher and subscriptions.
    #[arg(long, default_value_t = 1)]
    qos: i32,
    /// Publishes in flight at most (the publisher's window).
    #[arg(long, default_value_t = 1000)]
    window: usize,
    /// Rounds (baseline and bridge alternate; the best of each is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Directory for the JSON results.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn payload(i: usize) -> Vec<u8> {
    // ~200 bytes of JSON, as a small sensor reading.
    json!({"speed": i, "heading": 0.25, "pad": "x".repeat(150)})
        .to_string()
        .into_bytes()
}

async fn client(
    uri: &str,
    id: &str,
) -> (
    paho::AsyncClient,
    paho::AsyncReceiver<Option<paho::Message>>,
) {
    let mut cli = paho::CreateOptionsBuilder::new()
        .server_uri(uri)
        .client_id(id)
        .mqtt_version(paho::MQTT_VERSION_5)
        .max_buffered_messages(10_000)
        .create_client()
        .expect("client");
    let rx = cli.get_stream(None);
    cli.connect(
        paho::ConnectOptionsBuilder::new_v5()
            .clean_start(true)
            .finalize(),
    )
    .await
    .expect("connect to the broker");
    (cli, rx)
}

/// Publishes `n` messages with at most `window` unacknowledged.
async fn publish_all(cli: &paho::AsyncClient, topic: &str, n: usize, qos: i32, window: usize) {
    let mut pending = VecDeque::new();
    for i in 0..n {
        if pending.len() >= window {
            let t: paho::DeliveryToken = pending.pop_front().expect("non-empty");
            t.await.expect("publish");
        }
        pending.push_back(cli.publish(paho::Message::new(topic, payload(i), qos)));
    }
    for t in pending {
        t.await.expect("publish");
    }
}

/// Raw ceiling: publisher → broker → subscriber, no engine. Returns messages/s.
async fn baseline(args: &Args, tag: &str) -> f64 {
    let topic = format!("bench/{tag}/raw");
    let (sub, rx) = client(&args.broker, &format!("{tag}-raw-sub")).await;
    sub.subscribe(&topic, args.qos).await.expect("subscribe");
    let (publisher, _) = client(&args.broker, &format!("{tag}-raw-pub")).await;
    let n = args.messages;
    let start = Instant::now();
    let counter = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            match rx.recv().await {
                Ok(Some(_)) => got += 1,
                Ok(None) => {}
                Err(_) => break,
            }
        }
        got
    });
    publish_all(&publisher, &topic, n, args.qos, args.window).await;
    let got = tokio::time::timeout(Duration::from_secs(120), counter)
        .await
        .expect("subscriber timed out")
        .expect("counter");
    let elapsed = start.elapsed();
    assert_eq!(got, n, "the raw subscriber missed messages");
    let _ = publisher.disconnect(None).await;
    let _ = sub.disconnect(None).await;
    per_second(n as u64, elapsed)
}

/// Through the bridge: publisher → broker → bridge → engine merge (sled). Returns merges/s.
async fn bridge(args: &Args, tag: &str) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(SledConfig {
            path: dir.path().join("db"),
            ..SledConfig::default()
        })
        .expect("sled"),
    );
    let tw = Twins::open(EngineConfig::default(), store).expect("engine");
    let auth = AuthContext::new(["bench:mqtt"]);
    let id = ThingId::new("bench:car").expect("id");
    tw.apply(
        &auth,
        ThingCommand::new(id.clone(), Action::Create, Pointer::root(), Some(json!({}))),
    )
    .await
    .expect("create");
    let r0 = tw.get_thing(&id).expect("thing").revision();

    let mut config = MqttConfig {
        broker: args.broker.clone(),
        instance_id: format!("{tag}-bridge"),
        subject: vec!["bench:mqtt".into()],
        clean_start: true,
        ..MqttConfig::default()
    };
    config.status.enabled = false;
    config.outbound.enabled = false;
    config.subscriptions.push(SubscriptionConfig {
        mapping: Mapping::Telemetry,
        qos: args.qos as u8,
        template: format!("bench/{tag}/tel/{{namespace}}:{{name}}/{{feature}}"),
        ..SubscriptionConfig::default()
    });
    let (handle, _driver) = MqttBridge::spawn(config, tw.clone()).expect("bridge");
    assert!(
        handle.wait_connected(Duration::from_secs(10)).await,
        "bridge did not connect"
    );
    let mut events = tw
        .subscribe(AuthContext::system(), None)
        .expect("subscribe");
    let (publisher, _) = client(&args.broker, &format!("{tag}-tel-pub")).await;
    let n = args.messages;
    let target = r0 + n as u64;
    let start = Instant::now();
    let watcher = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) if e.revision >= target => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
    publish_all(
        &publisher,
        &format!("bench/{tag}/tel/bench:car/gps"),
        n,
        args.qos,
        args.window,
    )
    .await;
    tokio::time::timeout(Duration::from_secs(120), watcher)
        .await
        .expect("the bridge did not apply every message in time")
        .expect("watcher");
    let elapsed = start.elapsed();
    let m = handle.metrics();
    assert_eq!(m.commands_applied as usize, n, "{m:?}");
    let _ = publisher.disconnect(None).await;
    handle.shutdown().await;
    per_second(n as u64, elapsed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let tag = format!("b{}", std::process::id());
    let (mut best_base, mut best_ours) = (0f64, 0f64);
    for round in 0..args.rounds {
        let base = baseline(&args, &format!("{tag}-{round}")).await;
        let ours = bridge(&args, &format!("{tag}-{round}")).await;
        println!(
            "round {round}: raw pub→sub {base:>9.0} msg/s   bridge telemetry merges {ours:>9.0}/s   ratio {:.2}",
            ours / base
        );
        best_base = best_base.max(base);
        best_ours = best_ours.max(ours);
    }
    let ratio = best_ours / best_base;
    println!(
        "best: raw {best_base:.0} msg/s, bridge {best_ours:.0} merges/s, ratio {ratio:.2} (target >= 0.5); {} messages of ~{} B, QoS {}",
        args.messages,
        payload(0).len(),
        args.qos
    );
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).expect("create out dir");
        let doc = json!({
            "bench": "mqtt",
            "messages": args.messages,
            "payload_bytes": payload(0).len(),
            "qos": args.qos,
            "window": args.window,
            "results": [{
                "scenario": "telemetry merges into one thing (sled), via Mosquitto",
                "ops_per_s": best_ours.round(),
                "baseline": "raw paho pub -> Mosquitto -> paho sub",
                "baseline_ops_per_s": best_base.round(),
                "ratio": ratio,
            }],
        });
        let path = out.join("mqtt.json");
        std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
        println!("wrote {}", path.display());
    }
}
