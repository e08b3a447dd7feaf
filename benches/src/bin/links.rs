//! Links between twin instances (`opentwins_transport::link`): propagation latency per hop,
//! bytes on the wire per forwarded update, and the time to drain a 100,000-update outbox.
//!
//! 1. Latency, paced (one write at a time, the next only after the previous one arrived), from
//!    `Twins::apply` of a merge at the source to the event at the destination (a sink that
//!    timestamps the thing's new state, keyed by a sequence number inside the written value):
//!    in-process links (`Network` without faults), 1 and 3 hops in a chain, against a local
//!    apply (0 hops) in the same run; MQTT links over Mosquitto, 1 hop and 2 hops (edge → hub →
//!    edge, a star relay), against a bare paho v5 publish (QoS 1) → subscriber of the same
//!    payload size in the same run.
//! 2. Wire bytes per forwarded update (the encoded Ditto merge command with clocks, as an
//!    outbox/MQTT payload; the MQTT fixed and variable headers are not counted) vs the compact
//!    JSON of the change value, for three typical changes; checked against the payloads a bare
//!    subscriber sees on a real MQTT link when the broker is there.
//! 3. Drain of a 100,000-update outbox whose in-process peer is down: without coalescing (one
//!    merge per thing on 100,000 things) and with coalescing (a small `outbox_bytes` bound, few
//!    things); baseline in the same run: the same merges applied on the peer engine directly.
//!
//! 4. WAN: an edge's MQTT link to Mosquitto through a delay line (`--wan-delay-ms` one way,
//!    25 ms: a 50 ms round trip; `--wan-mbit`), the hub on the broker directly. Throughput:
//!    `--wan-updates` creations of distinct things written at once, timed until the hub holds
//!    all; baseline in the same run: a bare paho publisher through the same delay line →
//!    Mosquitto → subscriber, QoS 1, pipelined (every publish issued at once), up to 2,000
//!    messages of the same size. Load: 1,000 updates/s over `--wan-things` things for
//!    `--wan-seconds`, with the lag of every value the hub applies and the time the hub takes
//!    to hold every last value after the load stops.
//!
//! Engines are in memory, outboxes in a temporary sled database (nothing is fsynced).
//! Needs Mosquitto on `--broker` for the MQTT parts (they are skipped, and say so, without it).
//!
//! Run: `cargo run --release -p opentwins-benches --bin links -- --out docs/results`
//! (only the WAN scenario: `... -- --wan-only --out docs/results`)

/// mimalloc, as the MQTT and HTTP benches (glibc malloc costs about half the CPU there).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clap::Parser;
use opentwins_benches::{paper, per_second, process_cpu};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, Message, PolicyCommand, ThingCommand, ThingEvent};
use opentwins_core::replica::{Update, encode_batch};
use opentwins_core::{EngineConfig, Pointer, PolicyId, Thing, ThingId, Twins};
use opentwins_transport::link::{Direction, LinkConfig, Links, Network, PeerConfig};
use paho_mqtt as paho;
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(about = "Link latency per hop, wire overhead and outbox drain, with same-run baselines")]
struct Args {
    /// Broker URL (MQTT parts).
    #[arg(long, default_value = "tcp://127.0.0.1:1883")]
    broker: String,
    /// Timed samples per latency scenario.
    #[arg(long, default_value_t = 3000)]
    samples: usize,
    /// Untimed writes before the samples of each latency scenario.
    #[arg(long, default_value_t = 300)]
    warmup: usize,
    /// Updates written into the outbox of the drain scenarios.
    #[arg(long, default_value_t = 100_000)]
    drain_updates: usize,
    /// Things the coalescing drain scenario writes to (round robin).
    #[arg(long, default_value_t = 10)]
    coalesce_things: usize,
    /// `outbox_bytes` of the coalescing drain scenario.
    #[arg(long, default_value_t = 64 * 1024)]
    coalesce_bytes: u64,
    /// One-way delay of the WAN scenario's delay line, in milliseconds.
    #[arg(long, default_value_t = 25)]
    wan_delay_ms: u64,
    /// Bandwidth of the WAN delay line each way, Mbit/s (0: unlimited).
    #[arg(long, default_value_t = 0.0)]
    wan_mbit: f64,
    /// Updates (to distinct things) of the WAN throughput run, and messages of its baseline.
    #[arg(long, default_value_t = 20_000)]
    wan_updates: usize,
    /// Things of the WAN load run (1,000 updates/s round robin for `wan_seconds`).
    #[arg(long, default_value_t = 200)]
    wan_things: usize,
    /// Seconds of the WAN load run.
    #[arg(long, default_value_t = 10)]
    wan_seconds: u64,
    /// Run only the WAN scenario.
    #[arg(long)]
    wan_only: bool,
    /// Directory for the JSON results (`links.json`, or `links-wan.json` with `--wan-only`).
    #[arg(long)]
    out: Option<PathBuf>,
}

const POLICY: &str = "bench:policy";
const LANE: &str = "bench:lane";
/// Where the sequence number of a latency write lives in the thing.
const SEQ: &str = "/features/lane/properties/seq";

fn writer() -> AuthContext {
    AuthContext::new(["bench:writer"])
}

fn id(s: &str) -> ThingId {
    ThingId::new(s).expect("thing id")
}

fn ptr(s: &str) -> Pointer {
    Pointer::parse(s).expect("pointer")
}

/// An engine in memory with a policy that lets the bench and the links write everything.
async fn engine(instance: &str) -> Twins {
    let twins = Twins::in_memory(EngineConfig {
        instance_id: instance.into(),
        ..EngineConfig::default()
    });
    let policy = json!({"entries": {"all": {
        "subjects": {"bench:writer": {"type": "bench"}, "link:peer": {"type": "link"}},
        "resources": {
            "thing:/": {"grant": ["READ", "WRITE"], "revoke": []},
            "policy:/": {"grant": ["READ", "WRITE"], "revoke": []}
        }
    }}});
    let cmd = PolicyCommand {
        policy_id: PolicyId::new(POLICY).expect("policy id"),
        action: Action::Create,
        path: Pointer::root(),
        value: Some(policy),
        headers: Headers::default(),
    };
    twins.apply_policy(&writer(), cmd).await.expect("policy");
    // As under links: every write is stamped (the wire-size and codec parts read the updates
    // the engine would forward).
    twins.enable_clocks();
    twins
}

/// An instance: engine, links, outboxes in a temporary sled database.
async fn instance(name: &str, network: Option<&Network>) -> Links {
    let db = sled::Config::new()
        .temporary(true)
        .open()
        .expect("temporary sled");
    Links::new(engine(name).await, db, network.cloned())
}

fn link(name: String, peer: PeerConfig, peer_instance: &str, direction: Direction) -> LinkConfig {
    LinkConfig {
        name,
        peer,
        direction,
        filter: None,
        include: Vec::new(),
        exclude: Vec::new(),
        owned: Vec::new(),
        subject: "link:peer".into(),
        policy: None,
        peer_instance: Some(peer_instance.into()),
        outbox_bytes: 64 << 20,
        create: true,
        ..LinkConfig::new(String::new(), PeerConfig::Inbox {})
    }
}

fn in_process(peer: &str, direction: Direction) -> LinkConfig {
    link(
        format!("to-{peer}"),
        PeerConfig::InProcess {
            instance: peer.into(),
        },
        peer,
        direction,
    )
}

/// A two-way in-process link between `a` and `b`.
async fn connect(a: &Links, b: &Links) {
    a.add(in_process(b.instance_id(), Direction::Both))
        .await
        .expect("link");
    b.add(in_process(a.instance_id(), Direction::Both))
        .await
        .expect("link");
}

/// A two-way MQTT link between `a` and `b` over `broker`, on topics unique to `tag`.
async fn connect_mqtt(a: &Links, b: &Links, broker: &str, tag: &str) {
    let url = broker.replace("tcp://", "mqtt://");
    for (from, to) in [(a, b), (b, a)] {
        let (f, t) = (from.instance_id(), to.instance_id());
        let peer = PeerConfig::Mqtt {
            url: url.clone(),
            publish: format!("bench/{tag}/{f}-{t}"),
            subscribe: Some(format!("bench/{tag}/{t}-{f}")),
            qos: 1,
            client_id: Some(format!("{tag}-{f}-{t}")),
            username: None,
            password: None,
            tls: Default::default(),
        };
        from.add(link(format!("to-{t}"), peer, t, Direction::Both))
            .await
            .expect("mqtt link");
    }
}

fn lane_merge(seq: i64) -> ThingCommand {
    ThingCommand::new(
        id(LANE),
        Action::Merge,
        ptr("/features/lane/properties"),
        Some(json!({"offset": 0.12, "seq": seq})),
    )
}

/// Timestamps every new state of the latency thing at `twins`, by its sequence number.
fn arrivals(twins: &Twins) -> mpsc::UnboundedReceiver<(i64, Instant)> {
    let (tx, rx) = mpsc::unbounded_channel();
    twins.add_sink(Arc::new(move |_: &ThingEvent, thing: Option<&Thing>| {
        if let Some(seq) = thing
            .filter(|t| t.id().as_str() == LANE)
            .and_then(|t| t.body().pointer(SEQ))
            .and_then(Value::as_i64)
        {
            let _ = tx.send((seq, Instant::now()));
        }
    }));
    rx
}

/// Waits for the arrival of `seq` (or a later one) and returns its time.
async fn arrival(
    rx: &mut mpsc::UnboundedReceiver<(i64, Instant)>,
    seq: i64,
    limit: Duration,
) -> Option<Instant> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((s, t))) if s >= seq => return Some(t),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Creates the latency thing at `source` and waits until `rx` (at the destination) sees it,
/// writing again while it does not (an MQTT link may still be connecting and subscribing).
async fn prepare(source: &Twins, rx: &mut mpsc::UnboundedReceiver<(i64, Instant)>) {
    let body = json!({"policyId": POLICY, "features": {"lane": {"properties": {"offset": 0.0, "seq": -1_000_000}}}});
    let create = ThingCommand::new(id(LANE), Action::Modify, Pointer::root(), Some(body));
    source.apply(&writer(), create).await.expect("create");
    let start = Instant::now();
    for k in 0.. {
        let seq = -999_999 + k;
        source
            .apply(&writer(), lane_merge(seq))
            .await
            .expect("merge");
        if arrival(rx, -999_999, Duration::from_millis(500))
            .await
            .is_some()
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the destination saw nothing within 60 s"
        );
    }
}

/// Paced writes at `source`: each waits for its arrival at the destination. Returns the
/// latencies of the timed samples (after `warmup` untimed ones).
async fn paced(
    source: &Twins,
    rx: &mut mpsc::UnboundedReceiver<(i64, Instant)>,
    warmup: usize,
    samples: usize,
) -> (Vec<Duration>, f64) {
    prepare(source, rx).await;
    let mut out = Vec::with_capacity(samples);
    let mut cpu0 = process_cpu();
    for i in 0..warmup + samples {
        if i == warmup {
            cpu0 = process_cpu();
        }
        let seq = i as i64;
        let t0 = Instant::now();
        source
            .apply(&writer(), lane_merge(seq))
            .await
            .expect("merge");
        let t1 = arrival(rx, seq, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("update {seq} did not arrive within 30 s"));
        if i >= warmup {
            out.push(t1.saturating_duration_since(t0));
        }
    }
    let cpu = (process_cpu() - cpu0).as_secs_f64() * 1e6 / samples.max(1) as f64;
    (out, cpu)
}

/// CPU time of the calling thread so far (`/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// p50, p99, mean and max of samples, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
    max: f64,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    assert!(!v.is_empty(), "no samples");
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let n = v.len();
    Stats {
        p50: us(v[n / 2]),
        p99: us(v[(n * 99 / 100).min(n - 1)]),
        mean: v.iter().map(|d| us(*d)).sum::<f64>() / n as f64,
        max: us(v[n - 1]),
    }
}

fn stats_json(s: Stats) -> Value {
    let r = |x: f64| (x * 10.0).round() / 10.0;
    json!({"p50_us": r(s.p50), "p99_us": r(s.p99), "mean_us": r(s.mean), "max_us": r(s.max)})
}

/// One latency row: total and per hop, with the ratio of the per-hop p50 to a baseline p50.
/// For in-process rows, the latency each hop adds to a local apply is given too.
fn latency_row(
    scenario: &str,
    hops: usize,
    s: Stats,
    baseline: &str,
    base: Stats,
    added_to_local: bool,
    cpu_us: f64,
) -> Value {
    let h = hops.max(1) as f64;
    let per_hop = Stats {
        p50: s.p50 / h,
        p99: s.p99 / h,
        mean: s.mean / h,
        max: s.max / h,
    };
    println!(
        "{scenario:<44} total p50 {:>8.1} µs p99 {:>8.1} µs mean {:>8.1} µs | per hop p50 {:>7.1} p99 {:>7.1} mean {:>7.1} | {baseline} p50 {:.1} µs: ratio {:.2} | CPU {cpu_us:.0} µs/write",
        s.p50,
        s.p99,
        s.mean,
        per_hop.p50,
        per_hop.p99,
        per_hop.mean,
        base.p50,
        per_hop.p50 / base.p50
    );
    let added = (added_to_local && hops > 0).then(|| {
        json!({
            "p50_us": ((s.p50 - base.p50) / h * 10.0).round() / 10.0,
            "mean_us": ((s.mean - base.mean) / h * 10.0).round() / 10.0,
        })
    });
    json!({
        "scenario": scenario,
        "hops": hops,
        "total": stats_json(s),
        "per_hop": stats_json(per_hop),
        "added_per_hop_over_local_apply": added,
        "process_cpu_us_per_write": cpu_us.round(),
        "baseline": baseline,
        "baseline_latency": stats_json(base),
        "ratio_per_hop_p50_to_baseline_p50": ((per_hop.p50 / base.p50) * 100.0).round() / 100.0,
        "ratio_per_hop_mean_to_baseline_mean": ((per_hop.mean / base.mean) * 100.0).round() / 100.0,
    })
}

/// In-process latency: local apply (0 hops, the baseline), a chain of 2 and of 4 instances.
async fn latency_in_process(args: &Args) -> Vec<Value> {
    eprintln!("latency: in-process, 0 hops (local apply → local sink)");
    let local = instance("l0", None).await;
    let mut rx = arrivals(local.twins());
    let (v, base_cpu) = paced(local.twins(), &mut rx, args.warmup, args.samples).await;
    let base = stats(v);
    drop(rx);
    local.shutdown().await;
    let mut rows = vec![latency_row(
        "in-process, 0 hops (local apply)",
        0,
        base,
        "local apply",
        base,
        false,
        base_cpu,
    )];
    for hops in [1usize, 3] {
        eprintln!("latency: in-process, {hops} hop(s)");
        let network = Network::new();
        let mut nodes = Vec::new();
        for i in 0..=hops {
            nodes.push(instance(&format!("i{i}"), Some(&network)).await);
        }
        for w in nodes.windows(2) {
            connect(&w[0], &w[1]).await;
        }
        let mut rx = arrivals(nodes[hops].twins());
        let (v, cpu) = paced(nodes[0].twins(), &mut rx, args.warmup, args.samples).await;
        let s = stats(v);
        rows.push(latency_row(
            &format!("in-process, chain i0 → i{hops}"),
            hops,
            s,
            "local apply",
            base,
            true,
            cpu,
        ));
        for n in &nodes {
            n.shutdown().await;
        }
    }
    rows
}

/// A bare paho v5 client (clean start), with its message stream.
async fn bare_client(
    uri: &str,
    client_id: &str,
) -> Result<
    (
        paho::AsyncClient,
        paho::AsyncReceiver<Option<paho::Message>>,
    ),
    String,
> {
    let mut cli = paho::CreateOptionsBuilder::new()
        .server_uri(uri)
        .client_id(client_id)
        .mqtt_version(paho::MQTT_VERSION_5)
        .max_buffered_messages(10_000)
        .create_client()
        .map_err(|e| e.to_string())?;
    let rx = cli.get_stream(1024);
    let opts = paho::ConnectOptionsBuilder::new_v5()
        .clean_start(true)
        .connect_timeout(Duration::from_secs(3))
        .finalize();
    match tokio::time::timeout(Duration::from_secs(5), cli.connect(opts)).await {
        Ok(Ok(_)) => Ok((cli, rx)),
        Ok(Err(e)) => Err(format!("cannot connect to {uri}: {e}")),
        Err(_) => Err(format!("no answer from {uri} within 5 s")),
    }
}

/// Raw broker latency: publish (QoS 1) → Mosquitto → subscriber, one message at a time, of
/// `size` bytes.
async fn raw_broker(args: &Args, tag: &str, size: usize) -> (Stats, f64) {
    let topic = format!("bench/{tag}/raw");
    let (sub, rx) = bare_client(&args.broker, &format!("{tag}-raw-sub"))
        .await
        .expect("subscriber");
    sub.subscribe(&topic, 1).await.expect("subscribe");
    let (publisher, _) = bare_client(&args.broker, &format!("{tag}-raw-pub"))
        .await
        .expect("publisher");
    let mut out = Vec::with_capacity(args.samples);
    let mut cpu0 = process_cpu();
    for i in 0..args.warmup + args.samples {
        if i == args.warmup {
            cpu0 = process_cpu();
        }
        let mut payload = vec![b'x'; size.max(8)];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let t0 = Instant::now();
        let token = publisher.publish(paho::Message::new(&topic, payload, 1));
        let t1 = loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Ok(Some(m))) if m.payload().get(..8) == Some(&(i as u64).to_be_bytes()[..]) => {
                    break Instant::now();
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("raw subscriber: {e}"),
                Err(_) => panic!("raw message {i} did not arrive within 10 s"),
            }
        };
        token.await.expect("puback");
        if i >= args.warmup {
            out.push(t1 - t0);
        }
    }
    let cpu = (process_cpu() - cpu0).as_secs_f64() * 1e6 / args.samples.max(1) as f64;
    let _ = publisher.disconnect(None).await;
    let _ = sub.disconnect(None).await;
    (stats(out), cpu)
}

/// MQTT latency: 1 hop (edge ↔ hub) and 2 hops (edge → hub → edge), against the raw broker
/// measured before and after them.
async fn latency_mqtt(args: &Args, tag: &str, wire_size: usize) -> Vec<Value> {
    eprintln!("latency: raw broker pub → sub ({wire_size} B, QoS 1), before");
    let (before, before_cpu) = raw_broker(args, &format!("{tag}-r0"), wire_size).await;
    let mut measured = Vec::new();
    for hops in [1usize, 2] {
        eprintln!("latency: MQTT, {hops} hop(s)");
        let t = format!("{tag}-h{hops}");
        let hub = instance("hub", None).await;
        let e0 = instance("e0", None).await;
        connect_mqtt(&e0, &hub, &args.broker, &t).await;
        let (dest, e1) = if hops == 2 {
            let e1 = instance("e1", None).await;
            connect_mqtt(&e1, &hub, &args.broker, &t).await;
            (e1.twins().clone(), Some(e1))
        } else {
            (hub.twins().clone(), None)
        };
        let mut rx = arrivals(&dest);
        let (v, cpu) = paced(e0.twins(), &mut rx, args.warmup, args.samples).await;
        measured.push((hops, stats(v), cpu));
        for l in [Some(hub), Some(e0), e1].into_iter().flatten() {
            l.shutdown().await;
        }
    }
    eprintln!("latency: raw broker pub → sub, after");
    let (after, after_cpu) = raw_broker(args, &format!("{tag}-r1"), wire_size).await;
    let base = Stats {
        p50: (before.p50 + after.p50) / 2.0,
        p99: (before.p99 + after.p99) / 2.0,
        mean: (before.mean + after.mean) / 2.0,
        max: before.max.max(after.max),
    };
    let mut rows = Vec::new();
    for (name, s, cpu) in [
        ("raw broker pub → sub, before", before, before_cpu),
        ("raw broker pub → sub, after", after, after_cpu),
    ] {
        rows.push(latency_row(
            &format!("MQTT {name}"),
            1,
            s,
            "raw broker (mean of before/after)",
            base,
            false,
            cpu,
        ));
    }
    for (hops, s, cpu) in measured {
        let name = if hops == 1 {
            "MQTT, edge → hub".to_owned()
        } else {
            "MQTT, edge → hub → edge (star relay)".to_owned()
        };
        rows.push(latency_row(
            &name,
            hops,
            s,
            "raw broker (mean of before/after)",
            base,
            false,
            cpu,
        ));
    }
    rows
}

/// A typical change: where it is merged and what the thing holds before.
struct Change {
    name: &'static str,
    thing: Value,
    path: &'static str,
    value: Value,
}

fn changes() -> Vec<Change> {
    let mut blob = vec![0u8; 37_500];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in &mut blob {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let frame = base64::engine::general_purpose::STANDARD.encode(&blob);
    let lane =
        json!({"offset": 0.0, "heading": 0.0, "curvature": 0.0, "confidence": 0.0, "frameSeq": 0});
    vec![
        Change {
            name: "1-property merge",
            thing: json!({"policyId": POLICY, "features": {"lane": {"properties": lane.clone()}}}),
            path: "/features/lane/properties",
            value: json!({"offset": 0.12}),
        },
        Change {
            name: "5-property lane result",
            thing: json!({"policyId": POLICY, "features": {"lane": {"properties": lane.clone()}}}),
            path: "/features/lane/properties",
            value: json!({"offset": 0.12, "heading": -0.021, "curvature": 0.0031, "confidence": 0.94, "frameSeq": 1234}),
        },
        Change {
            name: "50 kB base64 blob",
            thing: json!({"policyId": POLICY, "features": {"camera": {"properties": {"frame": ""}}}}),
            path: "/features/camera/properties",
            value: json!({"frame": frame}),
        },
    ]
}

/// The update a link forwards for each event.
fn forwarded(twins: &Twins) -> std::sync::mpsc::Receiver<Update> {
    let (tx, rx) = std::sync::mpsc::channel();
    twins.add_sink(Arc::new(move |e: &ThingEvent, thing: Option<&Thing>| {
        if let Some(p) = &e.provenance {
            let _ = tx.send(Update {
                thing_id: e.thing_id.clone(),
                origin: p.origin.clone(),
                hops: p.hops.clone(),
                policy_id: thing.map(|t| t.policy_id().clone()),
                changes: p.changes.clone(),
            });
        }
    }));
    rx
}

/// The JSON form's size of an update (what an outbox holds after its 8-byte timestamp, and
/// what an MQTT link carries by default).
fn json_size(update: &Update) -> usize {
    Message::ThingCommand(update.to_command()).to_vec().len()
}

/// The wire size of the update a creation like the WAN throughput run's forwards.
async fn creation_wire_size() -> usize {
    let twins = engine("edge").await;
    let rx = forwarded(&twins);
    let body = json!({"policyId": POLICY, "features": {"lane": {"properties": {"offset": 12345}}}});
    let create = ThingCommand::new(
        id("bench:wan-12345"),
        Action::Modify,
        Pointer::root(),
        Some(body),
    );
    twins.apply(&writer(), create).await.expect("create");
    json_size(&rx.try_recv().expect("an update"))
}

/// The wire size of the update that the latency workload forwards.
async fn latency_wire_size() -> usize {
    let twins = engine("e0").await;
    let body = json!({"policyId": POLICY, "features": {"lane": {"properties": {"offset": 0.0, "seq": 0}}}});
    twins
        .apply(
            &writer(),
            ThingCommand::new(id(LANE), Action::Modify, Pointer::root(), Some(body)),
        )
        .await
        .expect("create");
    let rx = forwarded(&twins);
    twins
        .apply(&writer(), lane_merge(1000))
        .await
        .expect("merge");
    json_size(&rx.try_recv().expect("an update"))
}

/// Where part of a hop goes: encoding the latency workload's update into its wire form and
/// decoding it back (what every hop does once each), averaged over `n` rounds, in µs.
async fn codec(n: usize) -> [f64; 4] {
    let twins = engine("e0").await;
    let body = json!({"policyId": POLICY, "features": {"lane": {"properties": {"offset": 0.0, "seq": 0}}}});
    let create = ThingCommand::new(id(LANE), Action::Modify, Pointer::root(), Some(body));
    twins.apply(&writer(), create).await.expect("create");
    let rx = forwarded(&twins);
    twins
        .apply(&writer(), lane_merge(1000))
        .await
        .expect("merge");
    let update = rx.try_recv().expect("an update");
    let bytes = Message::ThingCommand(update.to_command()).to_vec();
    let (start, cpu) = (Instant::now(), thread_cpu());
    for _ in 0..n {
        std::hint::black_box(Message::ThingCommand(update.to_command()).to_vec());
    }
    let encode = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let encode_cpu = (thread_cpu() - cpu).as_secs_f64() * 1e6 / n as f64;
    let (start, cpu) = (Instant::now(), thread_cpu());
    for _ in 0..n {
        let Ok(Message::ThingCommand(cmd)) = Message::from_slice(std::hint::black_box(&bytes))
        else {
            panic!("not a thing command");
        };
        std::hint::black_box(Update::from_command(&cmd).expect("update"));
    }
    let decode = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let decode_cpu = (thread_cpu() - cpu).as_secs_f64() * 1e6 / n as f64;
    [encode, encode_cpu, decode, decode_cpu]
}

/// Wire bytes per change, computed from the encoding; with a broker, also the payloads a bare
/// subscriber sees on the topic of a real MQTT link (edge → hub) carrying the same changes.
async fn wire(args: &Args, tag: &str, mqtt: bool) -> Vec<Value> {
    eprintln!("wire: bytes per forwarded update");
    let mut rows = Vec::new();
    let mut observed: Vec<Option<usize>> = vec![None; changes().len()];
    if mqtt {
        let t = format!("{tag}-wire");
        let (sub, srx) = bare_client(&args.broker, &format!("{t}-spy"))
            .await
            .expect("spy");
        sub.subscribe(format!("bench/{t}/e0-hub"), 1)
            .await
            .expect("subscribe");
        let hub = instance("hub", None).await;
        let e0 = instance("e0", None).await;
        connect_mqtt(&e0, &hub, &args.broker, &t).await;
        let mut rx = arrivals(hub.twins());
        prepare(e0.twins(), &mut rx).await;
        for (i, c) in changes().into_iter().enumerate() {
            let tid = id(&format!("bench:wire{i}"));
            let create =
                ThingCommand::new(tid.clone(), Action::Modify, Pointer::root(), Some(c.thing));
            e0.twins().apply(&writer(), create).await.expect("create");
            let merge = ThingCommand::new(tid, Action::Merge, ptr(c.path), Some(c.value));
            e0.twins().apply(&writer(), merge).await.expect("merge");
            // The create, then the merge, of this thing (found by its Ditto topic).
            let needle = format!("\"bench/wire{i}/things/");
            let mut lens = Vec::new();
            while lens.len() < 2 {
                match tokio::time::timeout(Duration::from_secs(10), srx.recv()).await {
                    Ok(Ok(Some(m))) => {
                        if String::from_utf8_lossy(m.payload()).contains(&needle) {
                            lens.push(m.payload().len());
                        }
                    }
                    Ok(Ok(None)) => {}
                    _ => break,
                }
            }
            observed[i] = lens.get(1).copied();
        }
        let _ = sub.disconnect(None).await;
        hub.shutdown().await;
        e0.shutdown().await;
    }
    let twins = engine("e0").await;
    let rx = forwarded(&twins);
    for (i, c) in changes().into_iter().enumerate() {
        let tid = id(&format!("bench:wire{i}"));
        let create = ThingCommand::new(tid.clone(), Action::Modify, Pointer::root(), Some(c.thing));
        twins.apply(&writer(), create).await.expect("create");
        let created = json_size(&rx.try_recv().expect("create update"));
        let value_bytes = serde_json::to_vec(&c.value).expect("json").len();
        let merge = ThingCommand::new(tid, Action::Merge, ptr(c.path), Some(c.value));
        twins.apply(&writer(), merge).await.expect("merge");
        let update = rx.try_recv().expect("merge update");
        let (bytes, binary) = (json_size(&update), encode_batch(&[update]).len());
        let ratio = bytes as f64 / value_bytes as f64;
        println!(
            "wire: {:<24} change {:>6} B, forwarded update {:>6} B (observed on MQTT: {}), overhead ratio {:.2}, +{} B; binary {} B (ratio {:.2}); (the create before it: {} B)",
            c.name,
            value_bytes,
            bytes,
            observed[i].map_or("-".to_owned(), |n| format!("{n} B")),
            ratio,
            bytes - value_bytes,
            binary,
            binary as f64 / value_bytes as f64,
            created
        );
        rows.push(json!({
            "change": c.name,
            "path": c.path,
            "change_value_bytes": value_bytes,
            "wire_bytes": bytes,
            "wire_bytes_observed_on_mqtt_link": observed[i],
            "overhead_bytes": bytes - value_bytes,
            "overhead_ratio": (ratio * 100.0).round() / 100.0,
            "binary_wire_bytes": binary,
        }));
    }
    // A batch: one 1-property merge on each of 100 things, as one link message.
    let mut updates = Vec::new();
    let mut value_bytes = 0;
    for i in 0..100 {
        let tid = id(&format!("bench:batch-{i}"));
        let body = json!({"policyId": POLICY, "features": {"lane": {"properties": {"offset": 0}}}});
        let create = ThingCommand::new(tid.clone(), Action::Modify, Pointer::root(), Some(body));
        twins.apply(&writer(), create).await.expect("create");
        let _ = rx.try_recv().expect("create update");
        let value = json!({ "offset": 0.12 + f64::from(i) / 100.0 });
        value_bytes += serde_json::to_vec(&value).expect("json").len();
        let merge = ThingCommand::new(
            tid,
            Action::Merge,
            ptr("/features/lane/properties"),
            Some(value),
        );
        twins.apply(&writer(), merge).await.expect("merge");
        updates.push(rx.try_recv().expect("merge update"));
    }
    let json_batch = 2 + updates.iter().map(|u| json_size(u) + 1).sum::<usize>() - 1;
    let binary = encode_batch(&updates).len();
    println!(
        "wire: a batch of 100 1-property merges: changes {value_bytes} B, JSON {json_batch} B (ratio {:.2}), binary {binary} B (ratio {:.2})",
        json_batch as f64 / value_bytes as f64,
        binary as f64 / value_bytes as f64,
    );
    rows.push(json!({
        "change": "a batch of 100 1-property merges on 100 things",
        "path": "/features/lane/properties",
        "change_value_bytes": value_bytes,
        "wire_bytes": json_batch,
        "binary_wire_bytes": binary,
    }));
    rows
}

/// Waits until `f` holds, polling every millisecond; returns the time it first held.
async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Instant {
    let start = Instant::now();
    loop {
        if f() {
            return Instant::now();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn offset_merge(thing: &ThingId, v: u64) -> ThingCommand {
    ThingCommand::new(
        thing.clone(),
        Action::Merge,
        ptr("/features/lane/properties"),
        Some(json!({"offset": v})),
    )
}

/// Fills the outbox of a → b while b is down, brings b back, times the drain; then applies the
/// same number of merges on b directly (the baseline).
async fn drain(args: &Args, coalescing: bool) -> Value {
    let n = args.drain_updates;
    let n_things = if coalescing { args.coalesce_things } else { n };
    let scenario = if coalescing {
        format!(
            "{n} merges on {n_things} things, outbox_bytes {} (coalescing)",
            args.coalesce_bytes
        )
    } else {
        format!("{n} merges on {n_things} things (nothing coalesces)")
    };
    eprintln!("drain: {scenario}");
    let network = Network::new();
    let a = instance("a", Some(&network)).await;
    let b = instance("b", Some(&network)).await;
    let mut out = in_process("b", Direction::Out);
    if coalescing {
        out.outbox_bytes = args.coalesce_bytes;
    }
    a.add(out).await.expect("link");
    b.add(in_process("a", Direction::In)).await.expect("link");
    let ids: Vec<ThingId> = (0..n_things)
        .map(|i| id(&format!("bench:car{i}")))
        .collect();
    eprintln!("drain: creating {n_things} things (replicated with the peer up)");
    let start = Instant::now();
    for tid in &ids {
        let body =
            json!({"policyId": POLICY, "features": {"lane": {"properties": {"offset": -1}}}});
        let c = ThingCommand::new(tid.clone(), Action::Modify, Pointer::root(), Some(body));
        a.twins().apply(&writer(), c).await.expect("create");
    }
    until(Duration::from_secs(600), "initial replication", || {
        a.is_idle()
    })
    .await;
    let created_in = start.elapsed();
    assert!(
        ids.iter().all(|t| b.twins().get_thing(t).is_some()),
        "the peer misses things"
    );
    let in_before = b.status()[0].messages_in;
    // First and last event at the peer (it sees none while it is down).
    let seen: Arc<std::sync::Mutex<Option<(Instant, Instant)>>> = Arc::default();
    let s = seen.clone();
    b.twins()
        .add_sink(Arc::new(move |_: &ThingEvent, _: Option<&Thing>| {
            let now = Instant::now();
            let mut g = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *g = Some(g.map_or((now, now), |(first, _)| (first, now)));
        }));

    network.set_down("b", true);
    let start = Instant::now();
    for i in 0..n {
        a.twins()
            .apply(&writer(), offset_merge(&ids[i % n_things], i as u64))
            .await
            .expect("merge");
    }
    let fill = start.elapsed();
    let st = a.status().remove(0);
    eprintln!(
        "drain: filled in {:.2} s: backlog {} entries / {} B, coalesced {}, dropped {}",
        fill.as_secs_f64(),
        st.backlog,
        st.backlog_bytes,
        st.coalesced,
        st.dropped
    );

    let up = Instant::now();
    network.set_down("b", false);
    until(Duration::from_secs(600), "drain", || a.is_idle()).await;
    // The final state: every thing holds the last value written to it.
    let last = |k: usize| ((n - 1 - k) / n_things * n_things + k) as u64;
    until(Duration::from_secs(60), "final state at the peer", || {
        ids.iter().enumerate().all(|(k, t)| {
            k >= n
                || b.twins().get_thing(t).is_some_and(|th| {
                    th.body().pointer("/features/lane/properties/offset") == Some(&json!(last(k)))
                })
        })
    })
    .await;
    let after = a.status().remove(0);
    let delivered = b.status()[0].messages_in - in_before;
    let (first, done) = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .expect("the peer saw the updates");
    let total = done.duration_since(up);
    let from_first = done.duration_since(first);
    let wait = first.duration_since(up);

    // Baseline: the same number of merges applied on the peer engine directly.
    let start = Instant::now();
    for i in 0..n {
        b.twins()
            .apply(&writer(), offset_merge(&ids[i % n_things], (n + i) as u64))
            .await
            .expect("merge");
    }
    let baseline = start.elapsed();
    a.shutdown().await;
    b.shutdown().await;

    let rate_total = per_second(n as u64, total);
    let rate_drain = per_second(n as u64, from_first);
    let entries_rate = per_second(delivered, from_first);
    let base_rate = per_second(n as u64, baseline);
    println!(
        "drain: {scenario}: fill {:.0} writes/s; backlog {} entries ({} B), coalesced {}, dropped {}; \
         peer up → first delivery {:.0} ms (sender backoff); drain {:.3} s = {:.0} updates/s ({:.0} entries/s, {} entries), \
         incl. backoff {:.3} s = {:.0} updates/s; baseline direct apply on the peer {:.0} merges/s: ratio {:.2} (incl. backoff {:.2})",
        per_second(n as u64, fill),
        st.backlog,
        st.backlog_bytes,
        after.coalesced,
        after.dropped,
        wait.as_secs_f64() * 1e3,
        from_first.as_secs_f64(),
        rate_drain,
        entries_rate,
        delivered,
        total.as_secs_f64(),
        rate_total,
        base_rate,
        rate_drain / base_rate,
        rate_total / base_rate
    );
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    json!({
        "scenario": scenario,
        "updates": n,
        "things": n_things,
        "outbox_bytes": if coalescing { args.coalesce_bytes } else { 64 << 20 },
        "initial_replication_of_creates_s": r2(created_in.as_secs_f64()),
        "fill_s": r2(fill.as_secs_f64()),
        "fill_writes_per_s": per_second(n as u64, fill).round(),
        "backlog_entries": st.backlog,
        "backlog_bytes": st.backlog_bytes,
        "coalesced": after.coalesced,
        "dropped": after.dropped,
        "entries_delivered": delivered,
        "peer_up_to_first_delivery_ms": r2(wait.as_secs_f64() * 1e3),
        "drain_ms_from_first_delivery": r2(from_first.as_secs_f64() * 1e3),
        "drain_ms_from_peer_up": r2(total.as_secs_f64() * 1e3),
        "updates_per_s_from_first_delivery": rate_drain.round(),
        "updates_per_s_from_peer_up": rate_total.round(),
        "entries_per_s_from_first_delivery": entries_rate.round(),
        "baseline": "the same number of merges applied on the peer engine directly (Twins::apply, one at a time)",
        "baseline_merges_per_s": base_rate.round(),
        "ratio_drain_to_baseline": r2(rate_drain / base_rate),
        "ratio_drain_from_peer_up_to_baseline": r2(rate_total / base_rate),
    })
}

/// A bare QoS 1 publisher through the delay line: `n` messages of `size` bytes issued at once,
/// timed until a subscriber on the broker has them all.
async fn wan_raw(args: &Args, proxy_url: &str, tag: &str, n: usize, size: usize) -> Duration {
    let topic = format!("bench/{tag}/wan-raw");
    let (sub, rx) = bare_client(&args.broker, &format!("{tag}-wan-sub"))
        .await
        .expect("subscriber");
    sub.subscribe(&topic, 1).await.expect("subscribe");
    let (publisher, _) = bare_client(
        &proxy_url.replace("mqtt://", "tcp://"),
        &format!("{tag}-wan-pub"),
    )
    .await
    .expect("publisher through the delay line");
    let t0 = Instant::now();
    let tokens: Vec<_> = (0..n)
        .map(|_| publisher.publish(paho::Message::new(&topic, vec![b'x'; size], 1)))
        .collect();
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await {
            Ok(Ok(Some(_))) => got += 1,
            Ok(Ok(None)) => {}
            Ok(Err(e)) => panic!("raw subscriber: {e}"),
            Err(_) => panic!("raw WAN: {got} of {n} arrived within 120 s"),
        }
    }
    let elapsed = t0.elapsed();
    for t in tokens {
        t.await.expect("puback");
    }
    let _ = publisher.disconnect(None).await;
    let _ = sub.disconnect(None).await;
    elapsed
}

/// An edge and a hub with a one-way MQTT link edge → hub, the edge's through `proxy_url`.
async fn wan_pair(args: &Args, proxy_url: &str, tag: &str) -> (Links, Links) {
    let (edge, hub) = (instance("edge", None).await, instance("hub", None).await);
    let topic = format!("bench/{tag}/wan");
    let peer = |url: &str, publish: &str, subscribe: Option<String>, who: &str| PeerConfig::Mqtt {
        url: url.to_owned(),
        publish: publish.to_owned(),
        subscribe,
        qos: 1,
        client_id: Some(format!("{tag}-{who}")),
        username: None,
        password: None,
        tls: Default::default(),
    };
    let broker = args.broker.replace("tcp://", "mqtt://");
    hub.add(link(
        "edge".into(),
        peer(
            &broker,
            &format!("{topic}-down"),
            Some(topic.clone()),
            "hub",
        ),
        "edge",
        Direction::In,
    ))
    .await
    .expect("hub link");
    edge.add(link(
        "hub".into(),
        peer(proxy_url, &topic, None, "edge"),
        "hub",
        Direction::Out,
    ))
    .await
    .expect("edge link");
    assert!(
        hub.wait_ready(Duration::from_secs(20)).await,
        "hub link not ready"
    );
    assert!(
        edge.wait_ready(Duration::from_secs(20)).await,
        "edge link not ready"
    );
    (edge, hub)
}

/// The WAN scenario (see the module docs).
async fn wan(args: &Args, tag: &str) -> Value {
    let wan = paper::Wan::new(Duration::from_millis(args.wan_delay_ms), args.wan_mbit);
    let upstream = args
        .broker
        .trim_start_matches("tcp://")
        .trim_start_matches("mqtt://")
        .parse()
        .expect("--broker must be tcp://ip:port for the WAN scenario");
    let proxy = paper::Proxy::start(upstream, Some(wan))
        .await
        .expect("delay line");
    let n = args.wan_updates;

    // Throughput: n creations of distinct things, all written at once.
    let (edge, hub) = wan_pair(args, &proxy.url(), &format!("{tag}-t")).await;
    let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = arrived.clone();
    hub.twins()
        .add_sink(Arc::new(move |_: &ThingEvent, _: Option<&Thing>| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
    let bytes0 = proxy.bytes();
    let t0 = Instant::now();
    for i in 0..n {
        let body = json!({"policyId": POLICY, "features": {"lane": {"properties": {"offset": i}}}});
        let create = ThingCommand::new(
            id(&format!("bench:wan-{i}")),
            Action::Modify,
            Pointer::root(),
            Some(body),
        );
        edge.twins().apply(&writer(), create).await.expect("create");
    }
    let written = t0.elapsed();
    until(
        Duration::from_secs(300),
        "WAN throughput: the hub to hold every thing",
        || arrived.load(std::sync::atomic::Ordering::Relaxed) >= n,
    )
    .await;
    let elapsed = t0.elapsed();
    let link_bytes = proxy.bytes() - bytes0;
    let link_rate = per_second(n as u64, elapsed);
    let update_size = creation_wire_size().await;
    edge.shutdown().await;
    hub.shutdown().await;
    eprintln!(
        "WAN: link {link_rate:.0} updates/s ({n} in {elapsed:?}, written in {written:?}, {link_bytes} B through the line)"
    );

    // At most 2,000: a raw publisher carries one message per update, a broker receive maximum
    // (20 for a default Mosquitto) per round trip.
    let raw_n = n.min(2000);
    let raw = wan_raw(args, &proxy.url(), tag, raw_n, update_size).await;
    let raw_rate = per_second(raw_n as u64, raw);
    eprintln!("WAN: raw pipelined publisher {raw_rate:.0} messages/s of {update_size} B");

    // Load: 1,000 updates/s over `wan_things` things.
    let (edge, hub) = wan_pair(args, &proxy.url(), &format!("{tag}-l")).await;
    let things: Vec<ThingId> = (0..args.wan_things)
        .map(|i| id(&format!("bench:load-{i}")))
        .collect();
    for t in &things {
        let body =
            json!({"policyId": POLICY, "features": {"lane": {"properties": {"seq": -1, "at": 0}}}});
        let create = ThingCommand::new(t.clone(), Action::Modify, Pointer::root(), Some(body));
        edge.twins().apply(&writer(), create).await.expect("create");
    }
    let epoch = Instant::now();
    let lags = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let last_seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        i64,
    >::new()));
    {
        let (lags, last_seen) = (lags.clone(), last_seen.clone());
        hub.twins()
            .add_sink(Arc::new(move |_: &ThingEvent, thing: Option<&Thing>| {
                let Some(t) = thing else { return };
                let p = &t.body()["features"]["lane"]["properties"];
                if let (Some(seq), Some(at)) = (p["seq"].as_i64(), p["at"].as_u64())
                    && seq >= 0
                {
                    lags.lock()
                        .unwrap()
                        .push(epoch.elapsed().saturating_sub(Duration::from_micros(at)));
                    last_seen.lock().unwrap().insert(t.id().to_string(), seq);
                }
            }));
    }
    let total = 1000 * args.wan_seconds as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut last = std::collections::HashMap::new();
    let load0 = Instant::now();
    for k in 0..total {
        if k % 10 == 0 {
            tick.tick().await;
        }
        let t = &things[k % things.len()];
        let at = epoch.elapsed().as_micros() as u64;
        let merge = ThingCommand::new(
            t.clone(),
            Action::Merge,
            ptr("/features/lane/properties"),
            Some(json!({"seq": k, "at": at})),
        );
        edge.twins().apply(&writer(), merge).await.expect("merge");
        last.insert(t.to_string(), k as i64);
    }
    let load_time = load0.elapsed();
    let stopped = Instant::now();
    let done = until(
        Duration::from_secs(300),
        "WAN load: the hub to hold every last value",
        || {
            let seen = last_seen.lock().unwrap();
            last.iter().all(|(t, k)| seen.get(t) == Some(k))
        },
    )
    .await;
    let converge = done - stopped;
    let status = edge.status().remove(0);
    let lag = stats(lags.lock().unwrap().clone());
    let applied = lags.lock().unwrap().len();
    edge.shutdown().await;
    hub.shutdown().await;
    eprintln!(
        "WAN load: {total} updates in {load_time:?}; hub applied {applied}; converged {converge:?} after the load; lag p50 {:.1} ms p99 {:.1} ms; coalesced {}",
        lag.p50 / 1000.0,
        lag.p99 / 1000.0,
        status.coalesced
    );
    let r = |x: f64| (x * 10.0).round() / 10.0;
    json!({
        "delay_ms_one_way": args.wan_delay_ms,
        "mbit_per_s": args.wan_mbit,
        "throughput": {
            "updates": n,
            "update_wire_bytes": update_size,
            "link_updates_per_s": link_rate.round(),
            "link_elapsed_ms": r(elapsed.as_secs_f64() * 1e3),
            "link_bytes_through_the_line": link_bytes,
            "raw_messages": raw_n,
            "raw_pipelined_messages_per_s": raw_rate.round(),
            "raw_elapsed_ms": r(raw.as_secs_f64() * 1e3),
            "ratio_link_to_raw": (link_rate / raw_rate * 100.0).round() / 100.0,
        },
        "load": {
            "things": args.wan_things,
            "updates": total,
            "seconds": r(load_time.as_secs_f64()),
            "applied_at_hub": applied,
            "coalesced_at_edge": status.coalesced,
            "lag_p50_ms": r(lag.p50 / 1000.0),
            "lag_p99_ms": r(lag.p99 / 1000.0),
            "converged_ms_after_load": r(converge.as_secs_f64() * 1e3),
        },
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let tag = format!("links{}-{now}", std::process::id());
    let load_before = load_average();
    eprintln!("load average before: {load_before}");

    let mqtt = match bare_client(&args.broker, &format!("{tag}-probe")).await {
        Ok((c, _)) => {
            let _ = c.disconnect(None).await;
            Ok(())
        }
        Err(e) => {
            eprintln!("MQTT parts SKIPPED: {e} (start Mosquitto, e.g. `mosquitto -d`)");
            println!("MQTT parts skipped: {e}");
            Err(e)
        }
    };

    if args.wan_only {
        mqtt.as_ref().expect("the WAN scenario needs the broker");
        let wan = wan(&args, &tag).await;
        println!("{}", serde_json::to_string_pretty(&wan).expect("json"));
        if let Some(out) = &args.out {
            std::fs::create_dir_all(out).expect("create out dir");
            let doc = json!({
                "bench": "links",
                "load_average_before": load_before,
                "load_average_after": load_average(),
                "wan": wan,
            });
            let path = out.join("links-wan.json");
            std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json"))
                .expect("write");
            println!("wrote {}", path.display());
        }
        return;
    }
    let mut latency = latency_in_process(&args).await;
    let wire_size = latency_wire_size().await;
    let [encode_us, encode_cpu, decode_us, decode_cpu] = codec(20_000).await;
    println!(
        "codec of the latency update ({wire_size} B): encode {encode_us:.2} µs ({encode_cpu:.2} µs CPU), decode {decode_us:.2} µs ({decode_cpu:.2} µs CPU)"
    );
    let mqtt_latency = match &mqtt {
        Ok(()) => json!(latency_mqtt(&args, &tag, wire_size).await),
        Err(e) => json!({"skipped": e}),
    };
    if let Some(rows) = mqtt_latency.as_array() {
        latency.extend(rows.iter().cloned());
    }
    let wire = wire(&args, &tag, mqtt.is_ok()).await;
    let drains = vec![drain(&args, false).await, drain(&args, true).await];
    let wan = match &mqtt {
        Ok(()) => wan(&args, &tag).await,
        Err(e) => json!({"skipped": e}),
    };
    let load_after = load_average();
    eprintln!("load average after: {load_after}");

    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).expect("create out dir");
        let doc = json!({
            "bench": "links",
            "load_average_before": load_before,
            "load_average_after": load_after,
            "samples": args.samples,
            "warmup": args.warmup,
            "engines": "in memory; outboxes in a temporary sled database (not fsynced)",
            "latency": {
                "method": "paced: one merge at a time at the source (Twins::apply), timed to the event at the destination (sink), next write after arrival",
                "latency_update_wire_bytes": wire_size,
                "latency_update_encode_us": (encode_us * 100.0).round() / 100.0,
                "latency_update_encode_thread_cpu_us": (encode_cpu * 100.0).round() / 100.0,
                "latency_update_decode_us": (decode_us * 100.0).round() / 100.0,
                "latency_update_decode_thread_cpu_us": (decode_cpu * 100.0).round() / 100.0,
                "rows": latency,
                "mqtt": match &mqtt { Ok(()) => json!("measured"), Err(e) => json!({"skipped": e}) },
            },
            "wire": {
                "method": "encoded Ditto merge command with replication headers (= MQTT payload / outbox payload after its 8-byte timestamp); MQTT fixed header, topic and properties not included",
                "rows": wire,
            },
            "drain": drains,
            "wan": wan,
        });
        let path = out.join("links.json");
        std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
        println!("wrote {}", path.display());
    }
}
