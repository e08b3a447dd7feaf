//! The paper's autonomous-vehicle use case, live: a hub and N vehicle edges in a star, a
//! synthetic camera per vehicle. Each edge runs the lane model on every frame and writes the
//! decision into its twin; the decision (never the frame) goes up to the hub.
//!
//! ```text
//! cargo run --release -p opentwins-examples --example vehicle
//! cargo run --release -p opentwins-examples --example vehicle -- --vehicles 3 --fps 15 --seconds 60
//! cargo run --release -p opentwins-examples --example vehicle -- --broker mqtt://127.0.0.1:1883
//! cargo run --release -p opentwins-examples --example vehicle -- --centralized
//! ```
//!
//! The instances run in this process, each with its own store, HTTP port and links, talking
//! through the protocols a deployment uses: without `--broker` the cameras PUT frames to their
//! edge's HTTP API and the edges POST their updates to the hub's inbox links; with `--broker` the
//! cameras publish telemetry over MQTT and the links go through the broker (the hub's fleet
//! links). `--centralized` is the paper's first scenario: cameras send to the hub, the hub runs
//! the model and the decision travels back to the vehicle. Every second a table shows, per
//! vehicle, frames sent, decisions, the latest lane offset and steering, frame→decision latency
//! at the vehicle, and what the hub holds. Ctrl-C stops early with the same summary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::{Value, json};

use opentwins_core::Pointer;
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::ThingEvent;
use opentwins_examples::{CameraLink, FramePool, Latencies};
use opentwins_runtime::config::FRAME;
use opentwins_runtime::{Instance, InstanceConfig, Role};
use opentwins_transport::link::{Direction, LinkConfig, PeerConfig};

#[derive(Debug, Parser)]
#[command(about = "A hub and vehicle edges with synthetic cameras, live.")]
struct Args {
    /// Number of vehicles.
    #[arg(long, default_value_t = 2)]
    vehicles: usize,
    /// Frames per second per camera.
    #[arg(long, default_value_t = 10.0)]
    fps: f64,
    /// How long to run (0: until Ctrl-C).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Frame size.
    #[arg(long, default_value_t = 640)]
    width: u32,
    /// Frame size.
    #[arg(long, default_value_t = 360)]
    height: u32,
    /// An MQTT broker (`mqtt://host:port`) for cameras and links; without it, HTTP only.
    #[arg(long)]
    broker: Option<String>,
    /// Frames to the hub, the model at the hub, decisions back (the paper's scenario 1).
    #[arg(long)]
    centralized: bool,
}

/// What one vehicle has seen so far.
#[derive(Default)]
struct Board {
    sent: u64,
    decisions: u64,
    offset: f64,
    steering: f64,
    latency: Latencies,
    hub_decisions: u64,
    hub_frames: u64,
}

type Boards = Arc<Mutex<Vec<Board>>>;
type Sent = Arc<Mutex<HashMap<u64, Instant>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.vehicles > 0 && args.fps > 0.0,
        "need vehicles and a frame rate"
    );
    let dir = tempfile::tempdir()?;
    let names: Vec<String> = (1..=args.vehicles).map(|i| format!("car-{i}")).collect();
    let thing = |name: &str| format!("demo:{name}");

    let hub = Instance::start(hub_config(&args, dir.path(), &names)).await?;
    let hub_url = format!(
        "http://{}",
        hub.http_addr().context("the hub has no HTTP API")?
    );
    let mut edges = Vec::new();
    for name in &names {
        edges.push(Instance::start(edge_config(&args, dir.path(), name, &hub_url)).await?);
    }
    if args.centralized && args.broker.is_none() {
        // Decisions back to each vehicle: the hub POSTs them to the edge's inbox.
        for (name, edge) in names.iter().zip(&edges) {
            edge.links()
                .add(link("hub-in", PeerConfig::Inbox {}, Direction::In))
                .await?;
            let url = format!("http://{}", edge.http_addr().context("edge without HTTP")?);
            let peer = PeerConfig::Http {
                url,
                remote_link: "hub-in".into(),
                username: None,
                password: None,
                token: None,
                tls: Default::default(),
            };
            hub.links()
                .add(LinkConfig {
                    include: vec!["/features/lane".into(), "/features/steering".into()],
                    filter: Some(format!("eq(thingId,\"{}\")", thing(name))),
                    peer_instance: Some(name.clone()),
                    ..link(&format!("to-{name}"), peer, Direction::Out)
                })
                .await?;
        }
    }

    let boards: Boards = Arc::new(Mutex::new(
        (0..names.len()).map(|_| Board::default()).collect(),
    ));
    let index: HashMap<String, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (thing(n), i))
        .collect();
    let mut tasks = Vec::new();
    // What the hub holds: decisions arrive, frames do not (unless centralized).
    let mut at_hub = hub.twins().subscribe(AuthContext::system(), None)?;
    let (hub_boards, hub_index) = (boards.clone(), index.clone());
    tasks.push(tokio::spawn(async move {
        while let Ok(event) = at_hub.recv().await {
            let Some(&i) = hub_index.get(event.thing_id.as_str()) else {
                continue;
            };
            let mut b = hub_boards.lock().unwrap();
            if lane(&event).is_some() {
                b[i].hub_decisions += 1;
            }
            if touches(&event, FRAME) {
                b[i].hub_frames += 1;
            }
        }
    }));

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    println!(
        "{} {} vehicle(s), {} fps, {}x{}, {}; hub API {hub_url}",
        if args.centralized {
            "centralized:"
        } else {
            "distributed:"
        },
        names.len(),
        args.fps,
        args.width,
        args.height,
        match &args.broker {
            Some(b) => format!("MQTT via {b}"),
            None => "HTTP, no broker".to_owned(),
        },
    );
    let mut cameras = Vec::new();
    for (i, (name, edge)) in names.iter().zip(&edges).enumerate() {
        let sent: Sent = Arc::default();
        // The vehicle's view: decisions landing in its own twin.
        let mut decisions = edge.twins().subscribe(
            AuthContext::system(),
            Some("exists(features/lane/properties/frameId)"),
        )?;
        let (b, s) = (boards.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            while let Ok(event) = decisions.recv().await {
                let Some(lane) = lane(&event) else { continue };
                let at = lane.get("frameId").and_then(Value::as_u64);
                let started = at.and_then(|id| s.lock().unwrap().remove(&id));
                let mut b = b.lock().unwrap();
                b[i].decisions += 1;
                b[i].offset = lane["offset"].as_f64().unwrap_or_default();
                if let Some(c) = steering(&event) {
                    b[i].steering = c;
                }
                if let Some(started) = started {
                    b[i].latency.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }));
        let target = if args.centralized { &hub } else { edge };
        let camera = match &args.broker {
            Some(url) => {
                let topic = format!(
                    "telemetry/{}/{}/camera",
                    target.config().instance_id,
                    thing(name)
                );
                CameraLink::mqtt(url, &format!("camera-{name}-{}", std::process::id()), topic)
                    .await?
            }
            None => CameraLink::http(
                &format!("http://{}", target.http_addr().context("no HTTP API")?),
                &thing(name),
            ),
        };
        let pool = FramePool::render(1000 * (i as u64 + 1), 24, args.width, args.height)?;
        cameras.push((camera, pool, sent));
    }
    // The cameras start together, once everything is set up.
    for (i, (camera, pool, sent)) in cameras.into_iter().enumerate() {
        tasks.push(tokio::spawn(drive(
            camera,
            pool,
            args.fps,
            sent,
            boards.clone(),
            i,
            stop.clone(),
        )));
    }

    let started = Instant::now();
    let total = Duration::from_secs(args.seconds);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => {
                println!("\nCtrl-C: stopping");
                break;
            }
        }
        show(&names, &boards, started.elapsed(), total);
        if args.seconds > 0 && started.elapsed() >= total {
            break;
        }
    }
    let _ = stop_tx.send(true);
    // Let the last frames' decisions land and the links drain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..40 {
        if edges.iter().all(|e| e.links().is_idle()) && hub.links().is_idle() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    summary(&args, &names, &boards, &edges, &hub);
    for task in tasks {
        task.abort();
    }
    for edge in edges {
        edge.shutdown().await?;
    }
    hub.shutdown().await?;
    Ok(())
}

/// One camera: a frame every `1/fps` seconds until `stop`.
async fn drive(
    camera: CameraLink,
    pool: FramePool,
    fps: f64,
    sent: Sent,
    boards: Boards,
    i: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / fps));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    for id in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        sent.lock().unwrap().insert(id, Instant::now());
        if let Err(e) = camera.send(&pool.get(id).0, id).await {
            eprintln!("camera {i}: {e:#}");
            continue;
        }
        boards.lock().unwrap()[i].sent += 1;
    }
    camera.close().await;
}

fn show(names: &[String], boards: &Boards, elapsed: Duration, total: Duration) {
    let b = boards.lock().unwrap();
    let of = if total.is_zero() {
        String::new()
    } else {
        format!("/{}", total.as_secs())
    };
    println!("[{:>4}{of} s]", elapsed.as_secs());
    for (name, b) in names.iter().zip(b.iter()) {
        println!(
            "  {name:<8} frames {:>5}  decisions {:>5}  offset {:+.3}  steer {:+6.2}°  \
             latency p50 {:6.1} ms p95 {:6.1} ms  | hub: decisions {:>5} frames {:>5}",
            b.sent,
            b.decisions,
            b.offset,
            b.steering,
            b.latency.quantile(0.5),
            b.latency.quantile(0.95),
            b.hub_decisions,
            b.hub_frames,
        );
    }
}

fn summary(args: &Args, names: &[String], boards: &Boards, edges: &[Instance], hub: &Instance) {
    let b = boards.lock().unwrap();
    println!(
        "\nsummary ({}):",
        if args.centralized {
            "centralized"
        } else {
            "distributed"
        }
    );
    for ((name, b), edge) in names.iter().zip(b.iter()).zip(edges) {
        // Frames the model skipped as stale (a newer one of the same camera had come).
        let skipped = match edge.processor() {
            Some(p) => format!(" ({} skipped as stale by the edge)", p.metrics().skipped),
            None => String::new(),
        };
        println!(
            "  {name}: {} frames sent, {} decisions{skipped}, latency mean {:.1} ms p50 {:.1} \
             p95 {:.1} max {:.1}; hub got {} decisions and {} frames",
            b.sent,
            b.decisions,
            b.latency.mean(),
            b.latency.quantile(0.5),
            b.latency.quantile(0.95),
            b.latency.quantile(1.0),
            b.hub_decisions,
            b.hub_frames,
        );
    }
    if let Some(p) = hub.processor() {
        println!(
            "  the hub's model skipped {} frames as stale",
            p.metrics().skipped
        );
    }
}

/// The lane properties an event carries (the processor writes them with one merge at `/`).
fn lane(event: &ThingEvent) -> Option<&Value> {
    let lane = at(event, "/features/lane/properties")?;
    lane.get("frameId").is_some().then_some(lane)
}

/// What `event` wrote at `path` (`path` at or below the event's path).
fn at<'a>(event: &'a ThingEvent, path: &str) -> Option<&'a Value> {
    let below = Pointer::parse(path).ok()?.strip_prefix(&event.path)?;
    below.get(event.value.as_ref()?)
}

fn steering(event: &ThingEvent) -> Option<f64> {
    event
        .value
        .as_ref()?
        .pointer("/features/steering/properties/correction")?
        .as_f64()
}

/// Whether `event` writes at or below `path`.
fn touches(event: &ThingEvent, path: &str) -> bool {
    Pointer::parse(path).is_ok_and(|p| event.path.starts_with(&p)) || at(event, path).is_some()
}

fn link(name: &str, peer: PeerConfig, direction: Direction) -> LinkConfig {
    LinkConfig {
        direction,
        policy: Some("opentwins:fleet".into()),
        create: false,
        ..LinkConfig::new(name, peer)
    }
}

fn vehicle_thing(name: &str) -> Value {
    json!({
        "thingId": format!("demo:{name}"),
        "policyId": "opentwins:fleet",
        "attributes": {"vehicle": name, "kind": "car"},
        "features": {
            "camera": {"properties": {}},
            "lane": {"properties": {}},
            "steering": {"properties": {"correction": 0.0}}
        }
    })
}

fn hub_config(args: &Args, dir: &std::path::Path, names: &[String]) -> InstanceConfig {
    let mut c = InstanceConfig::defaults(Role::Hub);
    c.instance_id = "hub".into();
    c.data_dir = dir.join("hub");
    c.listen = "127.0.0.1:0".into();
    c.enable.processor = args.centralized;
    c.enable.mqtt = args.broker.is_some();
    if let Some(b) = &args.broker {
        c.mqtt.broker = b.clone();
    }
    c.fleet_links.enabled = args.broker.is_some();
    if args.centralized {
        // The cameras send to the hub, so it holds the vehicles from the start, and the
        // decisions go down to the vehicles.
        c.things = names.iter().map(|n| vehicle_thing(n)).collect();
        c.fleet_links
            .down_include
            .extend(["/features/lane".into(), "/features/steering".into()]);
    } else if args.broker.is_none() {
        // Each edge POSTs its updates to the inbox link named after it.
        c.links = names
            .iter()
            .map(|n| LinkConfig {
                create: true,
                peer_instance: Some(n.clone()),
                ..link(n, PeerConfig::Inbox {}, Direction::In)
            })
            .collect();
    }
    c
}

fn edge_config(args: &Args, dir: &std::path::Path, name: &str, hub_url: &str) -> InstanceConfig {
    let mut c = InstanceConfig::defaults(Role::Edge);
    c.instance_id = name.into();
    c.data_dir = dir.join(name);
    c.listen = "127.0.0.1:0".into();
    c.things = vec![vehicle_thing(name)];
    c.enable.processor = !args.centralized;
    c.enable.mqtt = args.broker.is_some();
    if let Some(b) = &args.broker {
        c.mqtt.broker = b.clone();
        c.hub.url = b.clone();
    } else if !args.centralized {
        c.hub.url = hub_url.into();
    }
    if args.centralized {
        // The hub's decisions land here: nothing is owned against it.
        c.hub.owned.clear();
    }
    c
}
