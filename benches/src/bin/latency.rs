//! The paper's Test 1 (section 5.2, Fig. 7): frame→decision latency, centralized vs distributed.
//!
//! Load shape of the paper's scripts: groups g = 0..10; group g sends (g+1)*10 camera frames at
//! once (one per camera thing, so none is skipped as stale) and waits until every decision has
//! arrived; each group is repeated `--reps` times with `--pause-ms` between repetitions. A
//! frame's latency runs from its publish to the arrival of its decision at the vehicle: the
//! event of the vehicle's edge instance that carries the frame's id in the lane feature.
//!
//! Scenarios (same binaries, same model, same frames, real Mosquitto: one broker on the vehicle
//! side, one at the hub):
//! - `centralized`: camera → hub broker → hub (model) → fleet link → edge → event;
//! - `distributed`: camera → vehicle broker → edge (model) → event; the decision then goes up to
//!   the hub (not timed);
//! - `centralized-wan` / `distributed-wan`: the same with every connection between vehicle and
//!   hub crossing a simulated network (`--wan-delay-ms` one way, `--wan-mbit` each way).
//!
//! Run: `benches/scripts/paper.sh latency` (builds the binaries, checks Mosquitto), or
//! `cargo run --release -p opentwins-benches --bin latency -- --out docs/results/paper`.
//! Writes `latency.csv` (per repetition), `latency-summary.csv`/`.json` (per group) and
//! `latency.svg` under `--out`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use opentwins_benches::paper::{Camera, Deployment, Options, Progress, Scenario, Wan, Watcher};
use opentwins_benches::svg::{self, COLORS, Line, Scale};
use opentwins_examples::{FramePool, Latencies};

#[derive(Parser, Debug)]
#[command(about = "The paper's Test 1: latency, centralized vs distributed")]
struct Args {
    /// Groups g = 0..groups; group g sends (g+1)*10 frames at once.
    #[arg(long, default_value_t = 11)]
    groups: usize,
    /// Repetitions per group.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Pause between repetitions (the paper: 10 s).
    #[arg(long, default_value_t = 1000)]
    pause_ms: u64,
    /// Scenarios, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "centralized,distributed,centralized-wan,distributed-wan"
    )]
    scenarios: Vec<String>,
    /// Simulated network: one-way delay.
    #[arg(long, default_value_t = 20)]
    wan_delay_ms: u64,
    /// Simulated network: bandwidth each way (0: unlimited).
    #[arg(long, default_value_t = 50.0)]
    wan_mbit: f64,
    /// Frames processed at once by the instance running the model.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Frame size.
    #[arg(long, default_value_t = 640)]
    width: u32,
    /// Frame size.
    #[arg(long, default_value_t = 360)]
    height: u32,
    /// Give up on a repetition's missing decisions after this long.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Results directory.
    #[arg(long, default_value = "docs/results/paper")]
    out: PathBuf,
}

/// The paper's figures (read from its published data): centralized 518 ms at 10 frames rising
/// to 1,534 ms at 110 (mean 1,107 ms); distributed 241 ms on average, flat.
const PAPER_CENTRALIZED: [(f64, f64); 2] = [(10.0, 518.0), (110.0, 1534.0)];
const PAPER_DISTRIBUTED_MEAN: f64 = 241.0;

struct Group {
    frames: usize,
    latencies: Latencies,
    lost: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let max_frames = args.groups * 10;
    let pool = FramePool::render(7_000, 24, args.width, args.height)?;
    println!(
        "Test 1: {} groups x {} reps, frames {}x{} ({} bytes base64), pause {} ms, workers {}, \
         network {} ms / {} Mbit/s",
        args.groups,
        args.reps,
        args.width,
        args.height,
        pool.mean_bytes(),
        args.pause_ms,
        args.workers,
        args.wan_delay_ms,
        args.wan_mbit
    );
    let mut per_rep = String::from("scenario,group,frames,rep,lost,mean_ms,p50_ms,p95_ms,max_ms\n");
    let mut results: Vec<(String, Vec<Group>)> = Vec::new();
    let mut next_id = 0u64;
    for name in &args.scenarios {
        let (scenario, wan) = match name.as_str() {
            "centralized" => (Scenario::Centralized, false),
            "distributed" => (Scenario::Distributed, false),
            "centralized-wan" => (Scenario::Centralized, true),
            "distributed-wan" => (Scenario::Distributed, true),
            other => anyhow::bail!("unknown scenario '{other}'"),
        };
        let deployment = Deployment::start(Options {
            wan: wan.then(|| Wan::new(Duration::from_millis(args.wan_delay_ms), args.wan_mbit)),
            workers: args.workers,
            ..Options::new(scenario, 1, max_frames)
        })
        .await?;
        let (watcher, mut decisions) =
            Watcher::start(&deployment.vehicle_broker.url(), "latency-watch").await?;
        let camera = Camera::connect(&deployment.camera_url).await?;
        let cameras = &deployment.cameras[0];

        // One round of 10 frames first: connections, caches and the model warm up.
        let mut run = |n: usize| {
            let ids: Vec<u64> = (next_id..next_id + n as u64).collect();
            next_id += n as u64;
            ids
        };
        let warm = run(10);
        send(
            &camera,
            cameras,
            &pool,
            &warm,
            &mut decisions,
            args.timeout_s,
        )
        .await?;

        let mut groups = Vec::new();
        let mut progress = Progress::new(format!("{name:<16}"), (args.groups * args.reps) as u64);
        for g in 0..args.groups {
            let frames = (g + 1) * 10;
            let mut group = Group {
                frames,
                latencies: Latencies::default(),
                lost: 0,
            };
            for rep in 0..args.reps {
                tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
                let ids = run(frames);
                let (lat, lost) = send(
                    &camera,
                    cameras,
                    &pool,
                    &ids,
                    &mut decisions,
                    args.timeout_s,
                )
                .await?;
                let _ = writeln!(
                    per_rep,
                    "{name},{g},{frames},{rep},{lost},{:.2},{:.2},{:.2},{:.2}",
                    lat.mean(),
                    lat.quantile(0.5),
                    lat.quantile(0.95),
                    lat.quantile(1.0)
                );
                for v in lat.values() {
                    group.latencies.push(*v);
                }
                group.lost += lost;
                progress.step(&format!(
                    "{frames} frames: mean {:.0} ms, p95 {:.0} ms",
                    lat.mean(),
                    lat.quantile(0.95)
                ));
            }
            groups.push(group);
        }
        camera.close().await;
        watcher.close().await;
        deployment.stop();
        results.push((name.clone(), groups));
    }
    report(&args, &results, &per_rep)
}

/// Publishes one frame per id at once (frame `k` to camera thing `k`), then waits for every
/// decision; returns the latencies (ms) and the number of decisions that never came.
async fn send(
    camera: &Camera,
    cameras: &[(String, String)],
    pool: &FramePool,
    ids: &[u64],
    decisions: &mut tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>,
    timeout_s: u64,
) -> anyhow::Result<(Latencies, usize)> {
    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(ids.len());
    let mut tokens = Vec::with_capacity(ids.len());
    for (k, id) in ids.iter().enumerate() {
        sent.insert(*id, Instant::now());
        tokens.push(camera.send(&cameras[k].1, &pool.get(*id).0, *id));
    }
    for token in tokens {
        token.await?;
    }
    let mut latencies = Latencies::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_s);
    while !sent.is_empty() {
        match tokio::time::timeout_at(deadline, decisions.recv()).await {
            Ok(Some((id, at))) => {
                // Decisions of an earlier repetition that came after its timeout are ignored.
                if let Some(start) = sent.remove(&id) {
                    latencies.push(at.duration_since(start).as_secs_f64() * 1000.0);
                }
            }
            Ok(None) => anyhow::bail!("the watcher stopped"),
            Err(_) => break,
        }
    }
    Ok((latencies, sent.len()))
}

fn report(args: &Args, results: &[(String, Vec<Group>)], per_rep: &str) -> anyhow::Result<()> {
    std::fs::write(args.out.join("latency.csv"), per_rep)?;
    let mut csv = String::from("scenario,frames,samples,lost,mean_ms,p50_ms,p95_ms,max_ms\n");
    let mut json_groups = Vec::new();
    println!(
        "\n{:<16} {:>6} {:>9} {:>9} {:>9} {:>9} {:>5}",
        "scenario", "frames", "mean ms", "p50 ms", "p95 ms", "max ms", "lost"
    );
    for (name, groups) in results {
        for g in groups {
            let l = &g.latencies;
            let (mean, p50, p95, max) =
                (l.mean(), l.quantile(0.5), l.quantile(0.95), l.quantile(1.0));
            let _ = writeln!(
                csv,
                "{name},{},{},{},{mean:.2},{p50:.2},{p95:.2},{max:.2}",
                g.frames,
                l.len(),
                g.lost
            );
            println!(
                "{name:<16} {:>6} {mean:>9.1} {p50:>9.1} {p95:>9.1} {max:>9.1} {:>5}",
                g.frames, g.lost
            );
            json_groups.push(json!({
                "scenario": name, "frames": g.frames, "samples": l.len(), "lost": g.lost,
                "mean_ms": mean, "p50_ms": p50, "p95_ms": p95, "max_ms": max
            }));
        }
        let all: Vec<f64> = groups
            .iter()
            .flat_map(|g| g.latencies.values().to_vec())
            .collect();
        println!(
            "{name:<16} all    mean {:.1} ms",
            opentwins_benches::paper::mean(&all)
        );
    }
    std::fs::write(args.out.join("latency-summary.csv"), &csv)?;
    let json = json!({
        "test": "paper Test 1: frame to decision latency",
        "groups": args.groups, "reps": args.reps, "pause_ms": args.pause_ms,
        "frame": {"width": args.width, "height": args.height}, "workers": args.workers,
        "wan": {"delay_ms": args.wan_delay_ms, "mbit_per_s": args.wan_mbit},
        "paper": {"centralized_ms": PAPER_CENTRALIZED, "centralized_mean_ms": 1107,
                  "distributed_mean_ms": PAPER_DISTRIBUTED_MEAN},
        "results": json_groups,
    });
    std::fs::write(
        args.out.join("latency-summary.json"),
        serde_json::to_string_pretty(&json)?,
    )?;

    let mut lines: Vec<Line> = results
        .iter()
        .enumerate()
        .map(|(i, (name, groups))| Line {
            name: format!("ours: {name}"),
            color: COLORS[i % COLORS.len()],
            dashed: false,
            points: groups
                .iter()
                .map(|g| (g.frames as f64, g.latencies.mean()))
                .collect(),
        })
        .collect();
    lines.push(Line {
        name: "paper: centralized (ends)".into(),
        color: COLORS[4],
        dashed: true,
        points: PAPER_CENTRALIZED.to_vec(),
    });
    lines.push(Line {
        name: "paper: distributed (mean)".into(),
        color: COLORS[5],
        dashed: true,
        points: vec![
            (10.0, PAPER_DISTRIBUTED_MEAN),
            (110.0, PAPER_DISTRIBUTED_MEAN),
        ],
    });
    let chart = svg::lines(
        "Test 1: mean frame→decision latency per group",
        "frames sent at once",
        "ms (log)",
        Scale::Log,
        &lines,
    );
    std::fs::write(args.out.join("latency.svg"), chart)?;
    println!("results in {}", args.out.display());
    Ok(())
}
