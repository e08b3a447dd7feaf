//! The paper's deployments on one machine, for the `latency`, `resources` and `scale` programs.
//!
//! - [`Broker`]: a private Mosquitto on a free port; the vehicle side and the hub side each get
//!   one, as each OpenTwins instance has its own broker in the paper.
//! - [`Proxy`]: a TCP relay in front of a broker that counts the bytes of each process's
//!   connection (bytes on the wire per process) and, with a [`Wan`], delays and rate-limits them
//!   like a network between vehicle and hub.
//! - [`Deployment`]: the hub and edge binaries started as processes with generated
//!   configurations, centralized (the model at the hub) or distributed (the model on the edge).
//! - [`Camera`] publishes numbered frames as MQTT telemetry; [`Watcher`] reports each decision
//!   (the lane feature with the frame's id) an instance publishes as an event.
//! - [`Sampler`]: CPU and memory of processes from `/proc`, every second.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use paho_mqtt as paho;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::{cpu_ticks, proc_status, status_kb};
use opentwins_core::Pointer;
use opentwins_examples::{FramePool, Latencies, frame_value};
use opentwins_runtime::process::{Process, sibling_binary};
use opentwins_runtime::{InstanceConfig, Role};

/// A Mosquitto process of our own on a free loopback port (no persistence).
pub struct Broker {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts `mosquitto` and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Broker> {
        let dir = tempfile::tempdir()?;
        let port = StdListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 100000\nset_tcp_nodelay true\n"
            ),
        )?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto (install it: apt-get install mosquitto)")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Broker {
            child,
            addr,
            _dir: dir,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mqtt://{addr}`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network between vehicle and hub: one-way delay and a bandwidth cap per direction, shared by
/// every connection that crosses it.
pub struct Wan {
    delay: Duration,
    /// Bytes per second; `None`: unlimited.
    rate: Option<f64>,
    /// When each direction's line is free again (to the hub, from the hub).
    free: Mutex<[Instant; 2]>,
}

impl Wan {
    /// `delay` one way, `mbit_per_s` each way (0: unlimited).
    pub fn new(delay: Duration, mbit_per_s: f64) -> Arc<Wan> {
        let now = Instant::now();
        Arc::new(Wan {
            delay,
            rate: (mbit_per_s > 0.0).then_some(mbit_per_s * 1e6 / 8.0),
            free: Mutex::new([now, now]),
        })
    }

    /// When `len` bytes read at `at` in `direction` arrive at the other end: they wait for the
    /// line, take `len / rate` on it, then the delay.
    fn arrival(&self, direction: usize, at: Instant, len: usize) -> Instant {
        let Some(rate) = self.rate else {
            return at + self.delay;
        };
        let mut free = self.free.lock().unwrap();
        let start = free[direction].max(at);
        free[direction] = start + Duration::from_secs_f64(len as f64 / rate);
        free[direction] + self.delay
    }
}

/// A TCP relay to `upstream` counting the bytes each way, optionally across a [`Wan`].
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    /// Bytes to the upstream, bytes from it.
    bytes: Arc<[AtomicU64; 2]>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port.
    pub async fn start(upstream: SocketAddr, wan: Option<Arc<Wan>>) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let bytes: Arc<[AtomicU64; 2]> = Arc::default();
        let counters = bytes.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, counters.clone(), 0, wan.clone()));
                tokio::spawn(pipe(sr, cw, counters.clone(), 1, wan.clone()));
            }
        });
        Ok(Proxy {
            addr,
            upstream,
            bytes,
            task,
        })
    }

    /// `mqtt://{addr}`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Bytes relayed so far, both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes[0].load(Ordering::Relaxed) + self.bytes[1].load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, counting into `bytes[direction]`; across `wan`, each chunk is written
/// when it would arrive.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes: Arc<[AtomicU64; 2]>,
    direction: usize,
    wan: Option<Arc<Wan>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at.into()).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        bytes[direction].fetch_add(n as u64, Ordering::Relaxed);
        let now = Instant::now();
        let at = wan.as_ref().map_or(now, |w| w.arrival(direction, now, n));
        if tx.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Where the lane model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The paper's scenario 1: frames to the hub, the model at the hub, decisions back down.
    Centralized,
    /// Scenario 2: the model on the vehicle's edge, decisions up to the hub.
    Distributed,
}

/// How to start a deployment.
pub struct Options {
    /// Where the model runs.
    pub scenario: Scenario,
    /// Vehicle edges (each its own process and things).
    pub vehicles: usize,
    /// Camera things per vehicle (`bench:car-{v}-cam-{i}`).
    pub cameras: usize,
    /// The network between the vehicles and the hub's broker.
    pub wan: Option<Arc<Wan>>,
    /// The processor's parallel frames.
    pub workers: usize,
    /// Runs the edge binary under this emulator (`qemu-aarch64 -L /usr/aarch64-linux-gnu`).
    pub edge_runner: Vec<String>,
    /// The edge binary (default: beside this program).
    pub edge_binary: Option<PathBuf>,
}

impl Options {
    /// `vehicles` edges with `cameras` each; no network delay, one worker, native edges.
    pub fn new(scenario: Scenario, vehicles: usize, cameras: usize) -> Options {
        Options {
            scenario,
            vehicles,
            cameras,
            wan: None,
            workers: 1,
            edge_runner: Vec::new(),
            edge_binary: None,
        }
    }
}

/// A running deployment: two brokers, a hub, the vehicles' edges, and a counting proxy per
/// process connection.
pub struct Deployment {
    /// The scenario.
    pub scenario: Scenario,
    /// The vehicles' broker (cameras and edges; decisions are watched here).
    pub vehicle_broker: Broker,
    /// The hub's broker.
    pub hub_broker: Broker,
    /// The hub process.
    pub hub: Process,
    /// The edge processes.
    pub edges: Vec<Process>,
    /// Connections named `{owner}/{what}` (`hub/bridge`, `edge-0/uplink`, `camera/frames`),
    /// whether they cross the network to the hub, and their counted bytes.
    proxies: Vec<(String, bool, Proxy)>,
    /// The camera's broker URL (through its proxy).
    pub camera_url: String,
    /// Camera things per vehicle, the telemetry topic of each (by vehicle).
    pub cameras: Vec<Vec<(String, String)>>,
    _dir: tempfile::TempDir,
}

/// The id of camera `i` of vehicle `v`.
fn camera_thing(v: usize, i: usize) -> String {
    format!("bench:car-{v}-cam-{i}")
}

fn camera_json(id: &str) -> Value {
    json!({
        "thingId": id,
        "policyId": "opentwins:fleet",
        "attributes": {"kind": "camera"},
        "features": {"camera": {"properties": {}}, "lane": {"properties": {}},
                     "steering": {"properties": {"correction": 0.0}}}
    })
}

impl Deployment {
    /// Starts brokers, the hub, then the edges; returns once every process listens and its links
    /// are subscribed.
    pub async fn start(o: Options) -> anyhow::Result<Deployment> {
        let dir = tempfile::tempdir()?;
        let vehicle_broker = Broker::start()?;
        let hub_broker = Broker::start()?;
        let mut proxies = Vec::new();
        let centralized = o.scenario == Scenario::Centralized;
        let things: Vec<Vec<String>> = (0..o.vehicles)
            .map(|v| (0..o.cameras).map(|i| camera_thing(v, i)).collect())
            .collect();

        let hub_proxy = Proxy::start(hub_broker.addr(), None).await?;
        let mut hub = InstanceConfig::defaults(Role::Hub);
        hub.data_dir = dir.path().join("hub");
        hub.listen = "127.0.0.1:0".into();
        hub.mqtt.broker = hub_proxy.url();
        hub.fleet_links.enabled = true;
        hub.processor.workers = o.workers;
        hub.enable.processor = centralized;
        hub.enable.dashboard = false;
        if centralized {
            hub.things = things.iter().flatten().map(|t| camera_json(t)).collect();
            hub.fleet_links
                .down_include
                .extend(["/features/lane".into(), "/features/steering".into()]);
        }
        proxies.push(("hub/bridge".to_owned(), false, hub_proxy));
        let hub = spawn(
            "opentwins-hub",
            &write_config(&dir, "hub", &hub)?,
            &[],
            None,
        )?;

        let mut edges = Vec::new();
        let mut cameras = Vec::new();
        for (v, things) in things.iter().enumerate() {
            let id = format!("car-{v}");
            let bridge = Proxy::start(vehicle_broker.addr(), None).await?;
            let uplink = Proxy::start(hub_broker.addr(), o.wan.clone()).await?;
            let mut edge = InstanceConfig::defaults(Role::Edge);
            edge.instance_id = id.clone();
            edge.data_dir = dir.path().join(&id);
            edge.listen = "127.0.0.1:0".into();
            edge.mqtt.broker = bridge.url();
            edge.hub.url = uplink.url();
            edge.processor.workers = o.workers;
            edge.enable.processor = !centralized;
            edge.things = things.iter().map(|t| camera_json(t)).collect();
            if centralized {
                // The hub's decisions land here: nothing is owned against it.
                edge.hub.owned.clear();
            }
            proxies.push((format!("edge-{v}/bridge"), false, bridge));
            proxies.push((format!("edge-{v}/uplink"), true, uplink));
            let config = write_config(&dir, &id, &edge)?;
            let binary = o.edge_binary.as_deref();
            edges.push(spawn("opentwins-edge", &config, &o.edge_runner, binary)?);
            let target = if centralized { "hub" } else { &id };
            cameras.push(
                things
                    .iter()
                    .map(|t| (t.clone(), format!("telemetry/{target}/{t}/camera")))
                    .collect(),
            );
        }
        // The camera sits on the vehicle: next to its edge, or across the network from the hub.
        let camera = if centralized {
            Proxy::start(hub_broker.addr(), o.wan.clone()).await?
        } else {
            Proxy::start(vehicle_broker.addr(), None).await?
        };
        let camera_url = camera.url();
        proxies.push(("camera/frames".to_owned(), centralized, camera));
        Ok(Deployment {
            scenario: o.scenario,
            vehicle_broker,
            hub_broker,
            hub,
            edges,
            proxies,
            camera_url,
            cameras,
            _dir: dir,
        })
    }

    /// Bytes on the wire of `owner`'s connections (both ways): `hub`, `edge-{v}`, `camera`, or
    /// a broker (`hub broker`, `vehicle broker`: all connections to it).
    pub fn bytes(&self, owner: &str) -> u64 {
        let broker = match owner {
            "hub broker" => Some(self.hub_broker.addr()),
            "vehicle broker" => Some(self.vehicle_broker.addr()),
            _ => None,
        };
        self.proxies
            .iter()
            .filter(|(name, _, p)| match broker {
                Some(addr) => p.upstream == addr,
                None => name.split('/').next() == Some(owner),
            })
            .map(|(_, _, p)| p.bytes())
            .sum()
    }

    /// Bytes of one connection, by its full name (`edge-0/bridge`, `edge-0/uplink`, `hub/bridge`,
    /// `camera/frames`).
    pub fn proxy_bytes(&self, name: &str) -> u64 {
        self.proxies
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, p)| p.bytes())
            .sum()
    }

    /// Bytes that crossed the network between the vehicles and the hub (both ways).
    pub fn wan_bytes(&self) -> u64 {
        self.proxies
            .iter()
            .filter(|(_, wan, _)| *wan)
            .map(|(_, _, p)| p.bytes())
            .sum()
    }

    /// The processes to sample: hub, edges (`edge-{v}`), brokers.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.named_pids(|v| format!("edge-{v}"))
    }

    /// As [`pids`](Self::pids), the edges under one name, `edges` (summed by the sampler).
    pub fn pids_grouped(&self) -> Vec<(String, u32)> {
        self.named_pids(|_| "edges".to_owned())
    }

    fn named_pids(&self, edge: impl Fn(usize) -> String) -> Vec<(String, u32)> {
        let mut pids = vec![
            ("hub".to_owned(), self.hub.pid()),
            ("hub broker".to_owned(), self.hub_broker.pid()),
            ("vehicle broker".to_owned(), self.vehicle_broker.pid()),
        ];
        for (v, e) in self.edges.iter().enumerate() {
            pids.push((edge(v), e.pid()));
        }
        pids
    }

    /// Stops the processes (SIGTERM, then kill).
    pub fn stop(mut self) {
        for edge in &mut self.edges {
            let _ = edge.terminate(Duration::from_secs(10));
        }
        let _ = self.hub.terminate(Duration::from_secs(10));
    }
}

/// Writes `config` as `{dir}/{name}.toml`.
fn write_config(
    dir: &tempfile::TempDir,
    name: &str,
    config: &InstanceConfig,
) -> anyhow::Result<PathBuf> {
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, config.to_toml())?;
    Ok(path)
}

/// Starts the instance binary `name` (or `binary`) with `config`, under `runner` if given,
/// logging warnings only. Blocks the thread until it listens.
fn spawn(
    name: &str,
    config: &Path,
    runner: &[String],
    binary: Option<&Path>,
) -> anyhow::Result<Process> {
    let binary = match binary {
        Some(b) => b.to_owned(),
        None => sibling_binary(name).context(
            "build the binaries first: cargo build --release --workspace --bins \
             (or use benches/scripts/paper.sh)",
        )?,
    };
    let mut command = match runner.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&binary);
            c
        }
        None => Command::new(&binary),
    };
    command
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    tokio::task::block_in_place(|| Process::start(command, Duration::from_secs(60)))
        .with_context(|| format!("starting {}", binary.display()))
}

/// An MQTT 5 client of the benchmark (clean session, QoS 1).
async fn client(url: &str, id: &str) -> anyhow::Result<paho::AsyncClient> {
    let client = paho::CreateOptionsBuilder::new()
        .server_uri(url.replacen("mqtt://", "tcp://", 1))
        .client_id(format!("{id}-{}", std::process::id()))
        .mqtt_version(paho::MQTT_VERSION_5)
        .max_buffered_messages(100_000)
        .create_client()?;
    Ok(client)
}

async fn connect(client: &paho::AsyncClient, url: &str) -> anyhow::Result<()> {
    let options = paho::ConnectOptionsBuilder::new_v5()
        .clean_start(true)
        .connect_timeout(Duration::from_secs(5))
        .max_inflight(65_535)
        .finalize();
    client
        .connect(options)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(())
}

/// Publishes frames as the telemetry mapping takes them: `{"frame": {data, id, contentType}}`.
pub struct Camera {
    client: paho::AsyncClient,
}

impl Camera {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> anyhow::Result<Camera> {
        let client = client(url, "camera").await?;
        connect(&client, url).await?;
        Ok(Camera { client })
    }

    /// Publishes frame `id` (base64 JPEG) on `topic` (QoS 1) and returns the token that
    /// completes with the broker's PUBACK.
    pub fn send(&self, topic: &str, frame: &str, id: u64) -> paho::DeliveryToken {
        let body = json!({ "frame": frame_value(frame, id) });
        self.client.publish(
            paho::MessageBuilder::new()
                .topic(topic)
                .payload(body.to_string())
                .qos(1)
                .finalize(),
        )
    }

    /// Disconnects.
    pub async fn close(self) {
        let _ = self.client.disconnect(None).await;
    }
}

/// The decisions one broker sees: for every event carrying the lane feature's `frameId`, the id
/// and when it arrived here.
pub struct Watcher {
    client: paho::AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

/// The lane feature's frame id in an event.
const FRAME_ID: &str = "/features/lane/properties/frameId";

impl Watcher {
    /// Subscribes to every instance event on the broker at `url`.
    pub async fn start(
        url: &str,
        name: &str,
    ) -> anyhow::Result<(Watcher, mpsc::UnboundedReceiver<(u64, Instant)>)> {
        let mut client = client(url, name).await?;
        let stream = client.get_stream(100_000);
        connect(&client, url).await?;
        client.subscribe("opentwins/twin/events/#", 1).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(Some(message)) = stream.recv().await {
                let at = Instant::now();
                if let Some(id) = frame_id(message.payload()) {
                    let _ = tx.send((id, at));
                }
            }
        });
        Ok((Watcher { client, task }, rx))
    }

    /// Disconnects.
    pub async fn close(self) {
        let _ = self.client.disconnect(None).await;
        self.task.abort();
    }
}

/// The frame id a Ditto Protocol event envelope writes at [`FRAME_ID`], at any path above it.
fn frame_id(payload: &[u8]) -> Option<u64> {
    let envelope: Value = serde_json::from_slice(payload).ok()?;
    let path = envelope.get("path")?.as_str()?.trim_end_matches('/');
    let below = Pointer::parse(FRAME_ID)
        .ok()?
        .strip_prefix(&Pointer::parse(path).ok()?)?;
    below.get(envelope.get("value")?)?.as_u64()
}

/// Streams frames at `fps` to each of `topics` (staggered evenly) for `duration`, numbered from
/// `first_id`; returns when each id was published. Waits for every PUBACK at the end.
pub async fn stream(
    camera: &Camera,
    topics: &[String],
    pool: &FramePool,
    fps: f64,
    duration: Duration,
    first_id: u64,
) -> anyhow::Result<HashMap<u64, Instant>> {
    anyhow::ensure!(!topics.is_empty() && fps > 0.0, "nothing to stream");
    let period = Duration::from_secs_f64(1.0 / (fps * topics.len() as f64));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + duration;
    let mut sent = HashMap::new();
    let mut tokens = Vec::new();
    let mut id = first_id;
    while Instant::now() < end {
        tick.tick().await;
        let topic = &topics[(id - first_id) as usize % topics.len()];
        sent.insert(id, Instant::now());
        tokens.push(camera.send(topic, &pool.get(id).0, id));
        id += 1;
    }
    for token in tokens {
        token.await?;
    }
    Ok(sent)
}

/// The latencies (ms) of the decisions in `decisions` for frames in `sent` (each frame's first
/// decision), and how many frames got none.
pub fn match_decisions(
    sent: &HashMap<u64, Instant>,
    decisions: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
) -> (Latencies, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut latencies = Latencies::default();
    while let Ok((id, at)) = decisions.try_recv() {
        if let Some(start) = sent.get(&id)
            && seen.insert(id)
        {
            latencies.push(at.duration_since(*start).as_secs_f64() * 1000.0);
        }
    }
    (latencies, sent.len() - seen.len())
}

/// One process's CPU and memory, sampled.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// CPU % of one core per interval.
    pub cpu: Vec<f64>,
    /// Resident memory per sample, bytes.
    pub rss: Vec<u64>,
    /// Peak resident memory (`VmHWM`) at the last sample, bytes.
    pub peak: u64,
}

impl Usage {
    /// Mean CPU % of one core.
    pub fn cpu_mean(&self) -> f64 {
        mean(&self.cpu)
    }

    /// Mean resident memory over the second half of the samples (steady state), bytes.
    pub fn rss_steady(&self) -> f64 {
        let half = &self.rss[self.rss.len() / 2..];
        half.iter().sum::<u64>() as f64 / half.len().max(1) as f64
    }
}

/// Mean of `v`; 0 when empty.
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Samples processes every `every` on a thread of its own.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<HashMap<String, Usage>>,
}

impl Sampler {
    /// Starts sampling `pids` (name, pid).
    pub fn start(pids: Vec<(String, u32)>, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let tick = clock_ticks();
        let thread = std::thread::spawn(move || {
            let mut usage: HashMap<String, Usage> = HashMap::new();
            let mut last: HashMap<u32, (u64, Instant)> = pids
                .iter()
                .filter_map(|(_, pid)| Some((*pid, (cpu_ticks(*pid)?, Instant::now()))))
                .collect();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                // Processes sharing a name are summed.
                let mut tick_sum: HashMap<&str, (f64, u64, u64)> = HashMap::new();
                for (name, pid) in &pids {
                    let (Some(ticks), Some((rss, peak))) = (cpu_ticks(*pid), memory(*pid)) else {
                        continue;
                    };
                    let now = Instant::now();
                    let sum = tick_sum.entry(name).or_default();
                    if let Some((before, at)) = last.insert(*pid, (ticks, now)) {
                        let seconds = now.duration_since(at).as_secs_f64().max(1e-9);
                        sum.0 += (ticks - before) as f64 / tick / seconds * 100.0;
                    }
                    sum.1 += rss;
                    sum.2 += peak;
                }
                for (name, (cpu, rss, peak)) in tick_sum {
                    let u = usage.entry(name.to_owned()).or_default();
                    u.cpu.push(cpu);
                    u.rss.push(rss);
                    u.peak = peak;
                }
            }
            usage
        });
        Sampler { stop, thread }
    }

    /// Stops and returns the samples by name (processes sharing a name summed).
    pub fn finish(self) -> HashMap<String, Usage> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if it cannot say).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident and peak resident memory of `pid`, bytes.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = proc_status(pid)?;
    Some((
        status_kb(&status, "VmRSS:")? * 1024,
        status_kb(&status, "VmHWM:")? * 1024,
    ))
}

/// A one-line progress bar on stderr.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
}

impl Progress {
    /// A bar of `total` steps.
    pub fn new(label: impl Into<String>, total: u64) -> Progress {
        let p = Progress {
            label: label.into(),
            total,
            done: 0,
            started: Instant::now(),
        };
        p.draw("");
        p
    }

    /// One more step done; `note` is shown after the bar.
    pub fn step(&mut self, note: &str) {
        self.done += 1;
        self.draw(note);
        if self.done >= self.total {
            eprintln!();
        }
    }

    fn draw(&self, note: &str) {
        let width = 30;
        let filled = (self.done * width / self.total.max(1)) as usize;
        eprint!(
            "\r{} [{}{}] {}/{} {:.0} s {note:<40}",
            self.label,
            "#".repeat(filled),
            ".".repeat(width as usize - filled),
            self.done,
            self.total,
            self.started.elapsed().as_secs_f64(),
        );
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ids_are_found_below_the_event_path() {
        let root =
            json!({"path": "/", "value": {"features": {"lane": {"properties": {"frameId": 7}}}}});
        let lane = json!({"path": "/features/lane/properties", "value": {"frameId": 8}});
        let exact = json!({"path": "/features/lane/properties/frameId", "value": 9});
        let other = json!({"path": "/features/steering", "value": {"frameId": 1}});
        let sibling = json!({"path": "/features/lane/prop", "value": {"erties": {"frameId": 1}}});
        let id = |v: Value| frame_id(v.to_string().as_bytes());
        assert_eq!(id(root), Some(7));
        assert_eq!(id(lane), Some(8));
        assert_eq!(id(exact), Some(9));
        assert_eq!(id(other), None);
        assert_eq!(id(sibling), None);
        assert_eq!(frame_id(b"not json"), None);
    }

    #[test]
    fn a_wan_queues_chunks_behind_each_other_then_delays_them() {
        let wan = Wan::new(Duration::from_millis(10), 8.0); // 1 MB/s
        let t = Instant::now();
        // 1,000 bytes take 1 ms on the line; the second chunk waits for the first.
        assert_eq!(wan.arrival(0, t, 1000), t + Duration::from_millis(11));
        assert_eq!(wan.arrival(0, t, 1000), t + Duration::from_millis(12));
        // The other direction has its own line.
        assert_eq!(wan.arrival(1, t, 1000), t + Duration::from_millis(11));
        let unlimited = Wan::new(Duration::from_millis(5), 0.0);
        assert_eq!(
            unlimited.arrival(0, t, 1 << 20),
            t + Duration::from_millis(5)
        );
    }

    #[test]
    fn steady_memory_is_the_second_half() {
        let u = Usage {
            cpu: vec![10.0, 30.0],
            rss: vec![100, 100, 300, 500],
            peak: 500,
        };
        assert_eq!(u.cpu_mean(), 20.0);
        assert_eq!(u.rss_steady(), 400.0);
        assert_eq!(mean(&[]), 0.0);
    }

    #[test]
    fn cpu_and_memory_of_this_process_are_read() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        let (rss, peak) = memory(pid).unwrap();
        assert!(rss > 0 && peak >= rss);
    }
}
