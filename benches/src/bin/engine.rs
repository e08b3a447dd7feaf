//! Engine throughput and memory: in-process merges/s on one thing and on 10,000 things, with the
//! memory store and with the sled store (durable: `requested-acks: twin-persisted`, group
//! commit), and RSS for 10,000 small things. Each figure comes with a baseline measured in the
//! same run: a bare `Mutex<HashMap>` merge for the engine, raw `SledStore` writes for sled.
//!
//! Run: `cargo run --release -p opentwins-benches --bin engine -- --out docs/results`

// The system allocator on purpose: this bench reports RSS, and mimalloc (used by the HTTP and
// MQTT benches for throughput) keeps far more memory resident (48 MB vs 39 MB for 10,000 things
// on the memory store, 154 MB vs 44-77 MB on sled; see docs/benchmarks.md).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use opentwins_benches::{per_second, rss_bytes, timed};
use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::patch;
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, TWIN_PERSISTED, ThingCommand};
use opentwins_core::store::{Expect, Kind, Record, SledConfig, SledStore, Store, WriteOp};
use opentwins_core::{Pointer, ThingId};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Engine merges/s and memory, with same-run baselines")]
struct Args {
    /// Merges per in-memory scenario.
    #[arg(long, default_value_t = 1_000_000)]
    ops: u64,
    /// Durable merges per sled scenario.
    #[arg(long, default_value_t = 200_000)]
    durable_ops: u64,
    /// Number of things in the "many things" scenarios.
    #[arg(long, default_value_t = 10_000)]
    things: usize,
    /// Concurrent callers (tasks).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Directory for the JSON results.
    #[arg(long)]
    out: Option<PathBuf>,
    /// `max_hot_things` for the hot-set scenarios.
    #[arg(long, default_value_t = 1000)]
    hot: usize,
    /// Internal: measure RSS for `--things` things on this store (`memory`,
    /// `memory-shared-policy` or `sled`) and print
    /// it as JSON. The parent runs each RSS measurement in a fresh child process.
    #[arg(long, hide = true)]
    rss_child: Option<String>,
    /// Keep per-path clocks on every write, as an instance with links does
    /// (`Twins::enable_clocks`); off by default, as on an instance without links.
    #[arg(long)]
    clocks: bool,
    /// Run only the search scenario with this many things (see `opentwins_benches::search`):
    /// searches and counts through the index against a scan, fill rate, reopen time.
    #[arg(long)]
    search: Option<usize>,
    /// Timed runs of each query in the search scenario (the median is reported).
    #[arg(long, default_value_t = 21)]
    search_runs: usize,
    /// PostgreSQL URL: the search scenario also runs on a PostgreSQL store (in a schema of its
    /// own, dropped afterwards), e.g. `postgres://root@127.0.0.1:5432/test`.
    #[arg(long)]
    postgres: Option<String>,
}

/// Set from `--clocks`: every engine of the run keeps clocks.
static CLOCKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `tw`, with clocks on when the run asks for them.
fn with_clocks(tw: Twins) -> Twins {
    if CLOCKS.load(std::sync::atomic::Ordering::Relaxed) {
        tw.enable_clocks();
    }
    tw
}

/// In a fresh process: RSS before and after creating `n` small things on `store`.
async fn rss_child(store: &str, n: usize, hot: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = rss_bytes();
    let config = EngineConfig {
        max_hot_things: if store.ends_with("-hot") { hot } else { 0 },
        ..EngineConfig::default()
    };
    let tw = with_clocks(if store.starts_with("memory") {
        Twins::in_memory(config)
    } else {
        let store: Arc<dyn Store> = Arc::new(
            SledStore::open(SledConfig {
                path: dir.path().join("db"),
                ..SledConfig::default()
            })
            .expect("sled"),
        );
        Twins::open(config, store).expect("open")
    });
    if store == "memory-shared-policy" {
        // One policy for the fleet instead of Ditto's default policy per thing.
        let owner = ThingCommand::new(
            thing_id(n),
            Action::Create,
            Pointer::root(),
            Some(json!({})),
        );
        tw.apply(&auth(), owner).await.expect("create");
        for i in 0..n {
            let mut body = small_thing();
            body["policyId"] = json!(thing_id(n).to_string());
            let c = ThingCommand::new(thing_id(i), Action::Create, Pointer::root(), Some(body));
            tw.apply(&auth(), c).await.expect("create");
        }
    } else {
        create_things(&tw, n).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes();
    println!(
        "{}",
        json!({"store": store, "things": n, "rss_before_bytes": before, "rss_after_bytes": after})
    );
}

/// Runs [`rss_child`] in a child process and reads its answer.
fn measure_rss(store: &str, n: usize, hot: usize) -> Value {
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .args([
            "--rss-child",
            store,
            "--things",
            &n.to_string(),
            "--hot",
            &hot.to_string(),
        ])
        .args(
            CLOCKS
                .load(std::sync::atomic::Ordering::Relaxed)
                .then_some("--clocks"),
        )
        .output()
        .expect("run child");
    serde_json::from_slice(&out.stdout).expect("child output")
}

fn auth() -> AuthContext {
    AuthContext::new(["bench:user"])
}

fn thing_id(i: usize) -> ThingId {
    ThingId::new(&format!("bench:thing-{i}")).expect("valid id")
}

fn merge(id: ThingId, i: u64, persisted: bool) -> ThingCommand {
    let mut c = ThingCommand::new(
        id,
        Action::Merge,
        Pointer::parse("/features/lane/properties").expect("valid path"),
        Some(json!({"offset": (i % 100) as f64 / 100.0, "frameSeq": i})),
    );
    if persisted {
        c.headers = Headers {
            requested_acks: Some(vec![TWIN_PERSISTED.into()]),
            ..Headers::default()
        };
    }
    c
}

fn small_thing() -> Value {
    json!({
        "attributes": {"model": "ev-1", "fleet": "north"},
        "features": {"lane": {"properties": {"offset": 0.0, "frameSeq": 0}}}
    })
}

async fn create_things(tw: &Twins, n: usize) {
    for i in 0..n {
        let c = ThingCommand::new(
            thing_id(i),
            Action::Create,
            Pointer::root(),
            Some(small_thing()),
        );
        tw.apply(&auth(), c).await.expect("create");
    }
}

/// `ops` merges from `concurrency` tasks over `things` things; merges/s.
async fn engine_merges(
    tw: &Twins,
    ops: u64,
    things: usize,
    concurrency: usize,
    persisted: bool,
) -> f64 {
    let ids: Arc<Vec<ThingId>> = Arc::new((0..things).map(thing_id).collect());
    let per_task = ops / concurrency as u64;
    let ((), elapsed) = timed(async {
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let tw = tw.clone();
            let ids = ids.clone();
            tasks.push(tokio::spawn(async move {
                let a = auth();
                for i in 0..per_task {
                    let id = ids[((t as u64 * per_task + i) % ids.len() as u64) as usize].clone();
                    tw.apply(&a, merge(id, i, persisted)).await.expect("merge");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    })
    .await;
    per_second(per_task * concurrency as u64, elapsed)
}

/// Baseline: the least a merge can cost — a JSON merge into a map under a lock.
async fn bare_merges(ops: u64, things: usize, concurrency: usize) -> f64 {
    let map: Arc<Mutex<HashMap<String, Value>>> = Arc::new(Mutex::new(
        (0..things)
            .map(|i| (thing_id(i).to_string(), small_thing()))
            .collect(),
    ));
    let keys: Arc<Vec<String>> = Arc::new((0..things).map(|i| thing_id(i).to_string()).collect());
    let path = Pointer::parse("/features/lane/properties").expect("valid path");
    let per_task = ops / concurrency as u64;
    let ((), elapsed) = timed(async {
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let (map, keys, path) = (map.clone(), keys.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let key = &keys[((t as u64 * per_task + i) % keys.len() as u64) as usize];
                    let p = json!({"offset": (i % 100) as f64 / 100.0, "frameSeq": i});
                    let mut m = map.lock().expect("lock");
                    if let Some(v) = m.get_mut(key) {
                        patch::merge_at(v, &path, &p);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    })
    .await;
    per_second(per_task * concurrency as u64, elapsed)
}

/// Baseline for durable writes: the store alone, same record size, same concurrency.
async fn raw_store_writes(
    store: Arc<SledStore>,
    ops: u64,
    things: usize,
    concurrency: usize,
) -> f64 {
    let body: Arc<[u8]> = serde_json::to_vec(&small_thing()).expect("json").into();
    let per_task = ops / concurrency as u64;
    let ((), elapsed) = timed(async {
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let (store, body) = (store.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let id = format!("raw-{}", (t as u64 * per_task + i) % things as u64);
                    let record = Record {
                        kind: Kind::Thing,
                        id,
                        revision: i + 1,
                        json: body.clone(),
                    };
                    store
                        .write(vec![WriteOp::Put {
                            record,
                            expect: Expect::Any,
                        }])
                        .await
                        .expect("write");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    })
    .await;
    per_second(per_task * concurrency as u64, elapsed)
}

fn row(name: &str, ours: f64, baseline: f64, results: &mut Vec<Value>) {
    println!(
        "{name:<44} {ours:>12.0}/s   baseline {baseline:>12.0}/s   ratio {:.2}",
        ours / baseline
    );
    results.push(json!({"scenario": name, "ops_per_s": ours.round(), "baseline_ops_per_s": baseline.round(), "ratio": ours / baseline}));
}

/// Writes `results` as `out/name` with the command that produced them.
fn write_results(
    out: Option<&std::path::Path>,
    name: &str,
    concurrency: usize,
    results: Vec<Value>,
) {
    let Some(out) = out else { return };
    std::fs::create_dir_all(out).expect("create out dir");
    let path = out.join(name);
    let doc = json!({"command": std::env::args().collect::<Vec<_>>().join(" "), "concurrency": concurrency, "results": results});
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json"))
        .expect("write results");
    println!("wrote {}", path.display());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    CLOCKS.store(args.clocks, std::sync::atomic::Ordering::Relaxed);
    let mut results = Vec::new();

    if let Some(store) = &args.rss_child {
        rss_child(store, args.things, args.hot).await;
        return;
    }
    if let Some(n) = args.search {
        let results =
            opentwins_benches::search::run(n, args.search_runs, args.postgres.as_deref()).await;
        write_results(args.out.as_deref(), &format!("search-{n}.json"), 0, results);
        return;
    }
    for store in [
        "memory",
        "memory-shared-policy",
        "sled",
        "memory-hot",
        "sled-hot",
    ] {
        let r = measure_rss(store, args.things, args.hot);
        let (before, after) = (
            r["rss_before_bytes"].as_f64().unwrap_or(0.0),
            r["rss_after_bytes"].as_f64().unwrap_or(0.0),
        );
        println!(
            "RSS, {store} store: {:.1} MB at start, {:.1} MB with {} small things ({:.0} bytes/thing)",
            before / 1e6,
            after / 1e6,
            args.things,
            (after - before) / args.things as f64
        );
        results.push(json!({"scenario": format!("rss {store} store"), "things": args.things, "rss_before_bytes": before, "rss_after_bytes": after}));
    }
    let tw = with_clocks(Twins::in_memory(EngineConfig::default()));
    create_things(&tw, args.things).await;

    let c = args.concurrency;
    let base1 = bare_merges(args.ops, 1, c).await;
    let ours1 = engine_merges(&tw, args.ops, 1, c, false).await;
    row("memory store, 1 thing", ours1, base1, &mut results);
    let base_n = bare_merges(args.ops, args.things, c).await;
    let ours_n = engine_merges(&tw, args.ops, args.things, c, false).await;
    row(
        &format!("memory store, {} things", args.things),
        ours_n,
        base_n,
        &mut results,
    );
    drop(tw);
    // Every access to a cold thing: the worst case of a small hot set.
    let tw = with_clocks(Twins::in_memory(EngineConfig {
        max_hot_things: args.hot,
        ..EngineConfig::default()
    }));
    create_things(&tw, args.things).await;
    let ours_cold = engine_merges(&tw, args.ops, args.things, c, false).await;
    row(
        &format!("memory store, {} things, {} hot", args.things, args.hot),
        ours_cold,
        base_n,
        &mut results,
    );
    drop(tw);

    let dir = tempfile::tempdir().expect("tempdir");
    let raw = Arc::new(
        SledStore::open(SledConfig {
            path: dir.path().join("raw"),
            ..SledConfig::default()
        })
        .expect("sled"),
    );
    let raw1 = raw_store_writes(raw.clone(), args.durable_ops, 1, c).await;
    let raw_n = raw_store_writes(raw.clone(), args.durable_ops, args.things, c).await;
    drop(raw);
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(SledConfig {
            path: dir.path().join("engine"),
            ..SledConfig::default()
        })
        .expect("sled"),
    );
    let tw = with_clocks(Twins::open(EngineConfig::default(), store).expect("open"));
    create_things(&tw, args.things).await;
    let dur1 = engine_merges(&tw, args.durable_ops, 1, c, true).await;
    row("sled store durable, 1 thing", dur1, raw1, &mut results);
    let dur_n = engine_merges(&tw, args.durable_ops, args.things, c, true).await;
    row(
        &format!("sled store durable, {} things", args.things),
        dur_n,
        raw_n,
        &mut results,
    );

    let name = if args.clocks {
        "engine-clocks.json"
    } else {
        "engine.json"
    };
    write_results(args.out.as_deref(), name, c, results);
    // Let background durability watchers finish before the runtime stops.
    tokio::time::sleep(Duration::from_millis(50)).await;
}
