//! The paper's Test 2 (section 5.3, Fig. 8): CPU, memory and network of the full deployment
//! (the hub running store, history, search and the model: the centralized scenario) against the
//! lightweight one (the vehicle's edge running the model: the distributed scenario), under the
//! same workload: one camera streaming `--fps` frames per second for `--seconds`, `--runs` times
//! each, every process sampled each second from `/proc` (CPU % of one core, resident memory) and
//! each process's connections counted by a relay in front of its broker (bytes on the wire).
//!
//! With `--edge-aarch64 PATH` (from `scripts/cross-aarch64.sh`) the lightweight deployment runs
//! a third time with the edge built for aarch64 under `qemu-aarch64`: its memory is reported;
//! its CPU is the emulator's and not comparable.
//!
//! Run: `benches/scripts/paper.sh resources`, or
//! `cargo run --release -p opentwins-benches --bin resources -- --out docs/results/paper`.
//! Writes `resources.csv` (per run and process), `resources.json` and `resources-{cpu,memory,
//! network}.svg` under `--out`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;

use opentwins_benches::paper::{
    Camera, Deployment, Options, Progress, Sampler, Scenario, Watcher, match_decisions, mean,
    stream,
};
use opentwins_benches::svg::{self, Bar, COLORS, Scale};
use opentwins_examples::FramePool;

#[derive(Parser, Debug)]
#[command(about = "The paper's Test 2: CPU, memory and network, full vs lightweight")]
struct Args {
    /// Runs per deployment.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Streaming time per run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Camera frame rate.
    #[arg(long, default_value_t = 10.0)]
    fps: f64,
    /// Frame size.
    #[arg(long, default_value_t = 640)]
    width: u32,
    /// Frame size.
    #[arg(long, default_value_t = 360)]
    height: u32,
    /// The edge binary built for aarch64: adds a run of the lightweight deployment under qemu.
    #[arg(long)]
    edge_aarch64: Option<PathBuf>,
    /// How to run it.
    #[arg(long, default_value = "qemu-aarch64 -L /usr/aarch64-linux-gnu")]
    qemu: String,
    /// Results directory.
    #[arg(long, default_value = "docs/results/paper")]
    out: PathBuf,
    /// Only redraw the charts from `{out}/resources.json` (no measuring).
    #[arg(long)]
    plot_only: bool,
}

/// The paper's Fig. 8 (Ditto-based OpenTwins on Kubernetes): CPU % of a core, memory MB, MB on
/// the network per sample.
const PAPER: [(&str, f64, f64, f64); 2] = [
    ("paper: full (Ditto)", 114.0, 8850.0, 0.29),
    ("paper: lightweight", 41.0, 2800.0, 0.05),
];

/// One deployment's figures, summed over its platform processes and averaged over runs.
#[derive(Default, Clone)]
struct Figures {
    cpu: f64,
    rss_steady_mb: f64,
    rss_peak_mb: f64,
    instance_mb_per_frame: f64,
    wan_mb_per_frame: f64,
    frames: f64,
    decisions: f64,
    latency_p50_ms: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    if args.plot_only {
        return plot(&args.out, &read_platforms(&args.out)?);
    }
    let pool = FramePool::render(9_000, 24, args.width, args.height)?;
    let mut deployments = vec![
        ("full", Scenario::Centralized, Vec::new()),
        ("light", Scenario::Distributed, Vec::new()),
    ];
    if let Some(path) = &args.edge_aarch64 {
        anyhow::ensure!(path.is_file(), "{} is not a file", path.display());
        let runner = args.qemu.split_whitespace().map(str::to_owned).collect();
        deployments.push(("light-aarch64", Scenario::Distributed, runner));
    }
    println!(
        "Test 2: {} runs x {} s per deployment, {} fps, {}x{} frames ({} bytes base64)",
        args.runs,
        args.seconds,
        args.fps,
        args.width,
        args.height,
        pool.mean_bytes()
    );
    let mut csv = String::from(
        "deployment,run,process,cpu_pct,rss_steady_mb,rss_peak_mb,bytes,frames,decisions\n",
    );
    let mut summary: BTreeMap<&str, (Figures, BTreeMap<String, Figures>)> = BTreeMap::new();
    let mut next_id = 0u64;
    for (name, scenario, runner) in &deployments {
        let mut progress = Progress::new(format!("{name:<14}"), args.runs as u64);
        let mut runs: Vec<(Figures, BTreeMap<String, Figures>)> = Vec::new();
        for run in 0..args.runs {
            let deployment = Deployment::start(Options {
                edge_runner: runner.clone(),
                edge_binary: (!runner.is_empty())
                    .then(|| args.edge_aarch64.clone())
                    .flatten(),
                ..Options::new(*scenario, 1, 1)
            })
            .await?;
            let (watcher, mut decisions) =
                Watcher::start(&deployment.vehicle_broker.url(), "resources-watch").await?;
            let camera = Camera::connect(&deployment.camera_url).await?;
            let sampler = Sampler::start(deployment.pids(), Duration::from_secs(1));
            let topics = vec![deployment.cameras[0][0].1.clone()];
            let duration = Duration::from_secs(args.seconds);
            let sent = stream(&camera, &topics, &pool, args.fps, duration, next_id).await?;
            next_id += sent.len() as u64;
            // The last decisions land and the links drain.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let usage = sampler.finish();
            let (latencies, _) = match_decisions(&sent, &mut decisions);
            let frames = sent.len() as f64;
            let mb = |bytes: u64| bytes as f64 / 1e6;
            let mut per_process = BTreeMap::new();
            for (process, u) in &usage {
                let bytes = deployment.bytes(process);
                let f = Figures {
                    cpu: u.cpu_mean(),
                    rss_steady_mb: u.rss_steady() / 1e6,
                    rss_peak_mb: u.peak as f64 / 1e6,
                    instance_mb_per_frame: mb(bytes) / frames.max(1.0),
                    ..Figures::default()
                };
                let _ = writeln!(
                    csv,
                    "{name},{run},{process},{:.1},{:.1},{:.1},{bytes},{frames},{}",
                    f.cpu,
                    f.rss_steady_mb,
                    f.rss_peak_mb,
                    latencies.len()
                );
                per_process.insert(process.clone(), f);
            }
            // The platform: the instance that runs the model, and its broker.
            let (instance, broker) = match scenario {
                Scenario::Centralized => ("hub", "hub broker"),
                Scenario::Distributed => ("edge-0", "vehicle broker"),
            };
            let pick = |p: &str| per_process.get(p).cloned().unwrap_or_default();
            let (i, b) = (pick(instance), pick(broker));
            let platform = Figures {
                cpu: i.cpu + b.cpu,
                rss_steady_mb: i.rss_steady_mb + b.rss_steady_mb,
                rss_peak_mb: i.rss_peak_mb + b.rss_peak_mb,
                instance_mb_per_frame: i.instance_mb_per_frame,
                wan_mb_per_frame: mb(deployment.wan_bytes()) / frames.max(1.0),
                frames,
                decisions: latencies.len() as f64,
                latency_p50_ms: latencies.quantile(0.5),
            };
            progress.step(&format!(
                "{instance}: {:.0} % CPU, {:.0} MB",
                i.cpu, i.rss_steady_mb
            ));
            camera.close().await;
            watcher.close().await;
            deployment.stop();
            runs.push((platform, per_process));
        }
        summary.insert(name, average(&runs));
    }
    report(&args, &summary, &csv)
}

/// The mean of each figure over runs.
fn average(runs: &[(Figures, BTreeMap<String, Figures>)]) -> (Figures, BTreeMap<String, Figures>) {
    let avg = |fs: Vec<&Figures>| {
        let m = |f: fn(&Figures) -> f64| mean(&fs.iter().map(|x| f(x)).collect::<Vec<_>>());
        Figures {
            cpu: m(|f| f.cpu),
            rss_steady_mb: m(|f| f.rss_steady_mb),
            rss_peak_mb: m(|f| f.rss_peak_mb),
            instance_mb_per_frame: m(|f| f.instance_mb_per_frame),
            wan_mb_per_frame: m(|f| f.wan_mb_per_frame),
            frames: m(|f| f.frames),
            decisions: m(|f| f.decisions),
            latency_p50_ms: m(|f| f.latency_p50_ms),
        }
    };
    let platform = avg(runs.iter().map(|r| &r.0).collect());
    let mut processes = BTreeMap::new();
    if let Some((_, first)) = runs.first() {
        for name in first.keys() {
            let fs = runs.iter().filter_map(|r| r.1.get(name)).collect();
            processes.insert(name.clone(), avg(fs));
        }
    }
    (platform, processes)
}

fn report(
    args: &Args,
    summary: &BTreeMap<&str, (Figures, BTreeMap<String, Figures>)>,
    csv: &str,
) -> anyhow::Result<()> {
    std::fs::write(args.out.join("resources.csv"), csv)?;
    println!(
        "\n{:<14} {:<15} {:>7} {:>10} {:>10} {:>10}",
        "deployment", "process", "CPU %", "RSS MB", "peak MB", "MB/frame"
    );
    let mut json_out = serde_json::Map::new();
    for (name, (platform, processes)) in summary {
        for (process, f) in processes {
            println!(
                "{name:<14} {process:<15} {:>7.1} {:>10.1} {:>10.1} {:>10.4}",
                f.cpu, f.rss_steady_mb, f.rss_peak_mb, f.instance_mb_per_frame
            );
        }
        println!(
            "{name:<14} {:<15} {:>7.1} {:>10.1} {:>10.1} {:>10.4}  network vehicle-hub {:.4} MB/frame; \
             {:.0} frames, {:.0} decisions, p50 {:.1} ms",
            "= platform",
            platform.cpu,
            platform.rss_steady_mb,
            platform.rss_peak_mb,
            platform.instance_mb_per_frame,
            platform.wan_mb_per_frame,
            platform.frames,
            platform.decisions,
            platform.latency_p50_ms
        );
        let figures = |f: &Figures| {
            json!({"cpu_pct": f.cpu, "rss_steady_mb": f.rss_steady_mb, "rss_peak_mb": f.rss_peak_mb,
                   "instance_mb_per_frame": f.instance_mb_per_frame,
                   "wan_mb_per_frame": f.wan_mb_per_frame, "frames": f.frames,
                   "decisions": f.decisions, "latency_p50_ms": f.latency_p50_ms})
        };
        json_out.insert(
            (*name).to_owned(),
            json!({
                "platform": figures(platform),
                "processes": processes.iter().map(|(k, v)| (k.clone(), figures(v))).collect::<serde_json::Map<_, _>>(),
            }),
        );
    }
    let json = json!({
        "test": "paper Test 2: resources, full vs lightweight",
        "runs": args.runs, "seconds": args.seconds, "fps": args.fps,
        "frame": {"width": args.width, "height": args.height},
        "paper": PAPER.iter().map(|(n, c, m, b)| json!({"name": n, "cpu_pct": c, "memory_mb": m, "mb_per_sample": b})).collect::<Vec<_>>(),
        "results": json_out,
    });
    std::fs::write(
        args.out.join("resources.json"),
        serde_json::to_string_pretty(&json)?,
    )?;

    let platforms = summary
        .iter()
        .map(|(name, (platform, _))| ((*name).to_owned(), platform.clone()))
        .collect();
    plot(&args.out, &platforms)?;
    println!("results in {}", args.out.display());
    Ok(())
}

/// The platform figures of each deployment in a `resources.json`.
fn read_platforms(out: &Path) -> anyhow::Result<BTreeMap<String, Figures>> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("resources.json"))?)?;
    let results = json["results"]
        .as_object()
        .context("resources.json has no results")?;
    Ok(results
        .iter()
        .map(|(name, r)| {
            let p = &r["platform"];
            let f = |k: &str| p[k].as_f64().unwrap_or_default();
            let figures = Figures {
                cpu: f("cpu_pct"),
                rss_steady_mb: f("rss_steady_mb"),
                rss_peak_mb: f("rss_peak_mb"),
                instance_mb_per_frame: f("instance_mb_per_frame"),
                wan_mb_per_frame: f("wan_mb_per_frame"),
                frames: f("frames"),
                decisions: f("decisions"),
                latency_p50_ms: f("latency_p50_ms"),
            };
            (name.clone(), figures)
        })
        .collect())
}

/// Fig. 8's panels (and the vehicle↔hub bytes) as SVG: the paper's two deployments beside ours.
fn plot(out: &Path, summary: &BTreeMap<String, Figures>) -> anyhow::Result<()> {
    let label = |name: &str| match name {
        "full" => "ours: full (hub)".to_owned(),
        "light" => "ours: light (edge)".to_owned(),
        other => format!("ours: {other} (qemu)"),
    };
    let panel = |f: fn(&Figures) -> f64, paper: fn(&(&str, f64, f64, f64)) -> f64| {
        let mut bars: Vec<Bar> = PAPER
            .iter()
            .enumerate()
            .map(|(i, p)| Bar {
                label: p.0.to_owned(),
                value: paper(p),
                color: COLORS[4 + i],
            })
            .collect();
        for (i, (name, platform)) in summary.iter().enumerate() {
            bars.push(Bar {
                label: label(name),
                value: f(platform),
                color: COLORS[i % 4],
            });
        }
        bars
    };
    let cpu = panel(|f| f.cpu, |p| p.1);
    let memory = panel(|f| f.rss_steady_mb, |p| p.2);
    let network = panel(|f| f.instance_mb_per_frame, |p| p.3);
    // What crosses between vehicle and hub: the paper's figure is its platform's whole traffic
    // per sample, shown for scale.
    let wan = panel(|f| f.wan_mb_per_frame, |p| p.3);
    let charts = [
        (
            "cpu",
            "CPU (% of one core), instance + its broker",
            "%",
            Scale::Linear,
            cpu,
        ),
        (
            "memory",
            "Memory (steady RSS), instance + its broker",
            "MB (log)",
            Scale::Log,
            memory,
        ),
        (
            "network",
            "Network per frame of the model's instance",
            "MB (log)",
            Scale::Log,
            network,
        ),
        (
            "network-vehicle-hub",
            "Network per frame between vehicle and hub (paper: all traffic)",
            "MB (log)",
            Scale::Log,
            wan,
        ),
    ];
    for (file, title, unit, scale, bars) in charts {
        std::fs::write(
            out.join(format!("resources-{file}.svg")),
            svg::bars(title, unit, scale, &bars),
        )?;
    }
    Ok(())
}
