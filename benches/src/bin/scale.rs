//! Our scale test (the paper's future work: more devices): N vehicles in the distributed
//! scenario through one hub on this machine. Each vehicle is an edge process with one camera
//! streaming `--fps` frames per second for `--seconds`; the hub takes every edge's decisions over
//! its fleet link. Reported per N: hub CPU and memory, decision latency p50/p99 at the vehicles,
//! and the hub's ingest rate (decisions per second the hub applied and published) against the
//! offered rate N x fps.
//!
//! Run: `benches/scripts/paper.sh scale`, or
//! `cargo run --release -p opentwins-benches --bin scale -- --out docs/results/paper`.
//! Writes `scale.csv`, `scale.json` and `scale.svg` under `--out`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use opentwins_benches::paper::{
    Camera, Deployment, Options, Progress, Sampler, Scenario, Watcher, match_decisions, stream,
};
use opentwins_benches::svg::{self, COLORS, Line, Scale};
use opentwins_examples::FramePool;

#[derive(Parser, Debug)]
#[command(about = "N vehicles through one hub: hub CPU, memory, latency, ingest")]
struct Args {
    /// Vehicle counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50,100")]
    vehicles: Vec<usize>,
    /// Frames per second per vehicle.
    #[arg(long, default_value_t = 2.0)]
    fps: f64,
    /// Streaming time per N.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Frame size.
    #[arg(long, default_value_t = 640)]
    width: u32,
    /// Frame size.
    #[arg(long, default_value_t = 360)]
    height: u32,
    /// Results directory.
    #[arg(long, default_value = "docs/results/paper")]
    out: PathBuf,
}

struct Row {
    vehicles: usize,
    start_s: f64,
    frames: usize,
    decisions: usize,
    p50: f64,
    p99: f64,
    hub_decisions: usize,
    hub_rate: f64,
    hub_cpu: f64,
    hub_rss_mb: f64,
    hub_peak_mb: f64,
    edges_rss_mb: f64,
    brokers_cpu: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let pool = FramePool::render(11_000, 24, args.width, args.height)?;
    println!(
        "scale: N = {:?} vehicles, {} fps each, {} s, {}x{} frames",
        args.vehicles, args.fps, args.seconds, args.width, args.height
    );
    let mut rows = Vec::new();
    let mut progress = Progress::new("scale", args.vehicles.len() as u64);
    let mut next_id = 0u64;
    for &n in &args.vehicles {
        let started = Instant::now();
        let deployment = Deployment::start(Options::new(Scenario::Distributed, n, 1)).await?;
        let start_s = started.elapsed().as_secs_f64();
        let (at_vehicles, mut decisions) =
            Watcher::start(&deployment.vehicle_broker.url(), "scale-vehicles").await?;
        let (at_hub, mut hub_decisions) =
            Watcher::start(&deployment.hub_broker.url(), "scale-hub").await?;
        let camera = Camera::connect(&deployment.camera_url).await?;
        let topics: Vec<String> = deployment.cameras.iter().map(|c| c[0].1.clone()).collect();
        let sampler = Sampler::start(deployment.pids_grouped(), Duration::from_secs(1));
        let duration = Duration::from_secs(args.seconds);
        let sent = stream(&camera, &topics, &pool, args.fps, duration, next_id).await?;
        next_id += sent.len() as u64;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let usage = sampler.finish();
        let (latencies, _) = match_decisions(&sent, &mut decisions);
        let (at_hub_latencies, _) = match_decisions(&sent, &mut hub_decisions);
        let u = |name: &str| usage.get(name).cloned().unwrap_or_default();
        let (hub, edges) = (u("hub"), u("edges"));
        let row = Row {
            vehicles: n,
            start_s,
            frames: sent.len(),
            decisions: latencies.len(),
            p50: latencies.quantile(0.5),
            p99: latencies.quantile(0.99),
            hub_decisions: at_hub_latencies.len(),
            hub_rate: at_hub_latencies.len() as f64 / args.seconds as f64,
            hub_cpu: hub.cpu_mean(),
            hub_rss_mb: hub.rss_steady() / 1e6,
            hub_peak_mb: hub.peak as f64 / 1e6,
            edges_rss_mb: edges.rss_steady() / 1e6,
            brokers_cpu: u("hub broker").cpu_mean() + u("vehicle broker").cpu_mean(),
        };
        progress.step(&format!(
            "N={n}: p50 {:.0} ms, hub {:.0} %",
            row.p50, row.hub_cpu
        ));
        camera.close().await;
        at_vehicles.close().await;
        at_hub.close().await;
        deployment.stop();
        rows.push(row);
    }
    report(&args, &rows)
}

fn report(args: &Args, rows: &[Row]) -> anyhow::Result<()> {
    let mut csv = String::from(
        "vehicles,start_s,frames,decisions,p50_ms,p99_ms,hub_decisions,hub_per_s,offered_per_s,\
         hub_cpu_pct,hub_rss_mb,hub_peak_mb,edges_rss_mb,brokers_cpu_pct\n",
    );
    println!(
        "\n{:>4} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9} {:>9} {:>7} {:>8} {:>9} {:>8}",
        "N",
        "start s",
        "frames",
        "decide",
        "p50 ms",
        "p99 ms",
        "hub /s",
        "offered",
        "hub %",
        "hub MB",
        "edges MB",
        "brokr %"
    );
    for r in rows {
        let offered = r.vehicles as f64 * args.fps;
        let _ = writeln!(
            csv,
            "{},{:.1},{},{},{:.2},{:.2},{},{:.2},{:.2},{:.1},{:.1},{:.1},{:.1},{:.1}",
            r.vehicles,
            r.start_s,
            r.frames,
            r.decisions,
            r.p50,
            r.p99,
            r.hub_decisions,
            r.hub_rate,
            offered,
            r.hub_cpu,
            r.hub_rss_mb,
            r.hub_peak_mb,
            r.edges_rss_mb,
            r.brokers_cpu
        );
        println!(
            "{:>4} {:>7.1} {:>7} {:>7} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>7.1} {:>8.1} {:>9.0} {:>8.1}",
            r.vehicles,
            r.start_s,
            r.frames,
            r.decisions,
            r.p50,
            r.p99,
            r.hub_rate,
            offered,
            r.hub_cpu,
            r.hub_rss_mb,
            r.edges_rss_mb,
            r.brokers_cpu
        );
    }
    std::fs::write(args.out.join("scale.csv"), &csv)?;
    let json = json!({
        "test": "scale: N vehicles, distributed, one hub",
        "fps": args.fps, "seconds": args.seconds,
        "frame": {"width": args.width, "height": args.height},
        "results": rows.iter().map(|r| json!({
            "vehicles": r.vehicles, "start_s": r.start_s, "frames": r.frames,
            "decisions": r.decisions, "p50_ms": r.p50, "p99_ms": r.p99,
            "hub_decisions": r.hub_decisions, "hub_per_s": r.hub_rate,
            "offered_per_s": r.vehicles as f64 * args.fps, "hub_cpu_pct": r.hub_cpu,
            "hub_rss_mb": r.hub_rss_mb, "hub_peak_mb": r.hub_peak_mb,
            "edges_rss_mb": r.edges_rss_mb, "brokers_cpu_pct": r.brokers_cpu,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        args.out.join("scale.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let series = |name: &str, i: usize, f: fn(&Row) -> f64| Line {
        name: name.to_owned(),
        color: COLORS[i],
        dashed: false,
        points: rows.iter().map(|r| (r.vehicles as f64, f(r))).collect(),
    };
    let chart = svg::lines(
        "Scale: N vehicles through one hub",
        "vehicles",
        "log scale",
        Scale::Log,
        &[
            series("latency p50 at the vehicle (ms)", 0, |r| r.p50),
            series("latency p99 at the vehicle (ms)", 1, |r| r.p99),
            series("hub ingest (decisions/s)", 2, |r| r.hub_rate),
            series("hub CPU (% of a core)", 3, |r| r.hub_cpu),
            series("hub RSS (MB)", 4, |r| r.hub_rss_mb),
        ],
    );
    std::fs::write(args.out.join("scale.svg"), chart)?;
    println!("results in {}", args.out.display());
    Ok(())
}
