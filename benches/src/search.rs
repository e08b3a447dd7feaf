//! Search at fleet scale (the `engine` program's `--search N`): fills N small things (a default
//! policy each) into an engine on the memory, sled and — with `--postgres URL` — PostgreSQL
//! store, then times searches and counts through the engine's index against the same-run
//! baseline of a scan: the filter evaluated on every thing of an in-memory snapshot (what every
//! search cost before the index, without even its policy checks). Also reports the fill rate and
//! how long the engine takes to open the filled store again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, Headers, TWIN_PERSISTED, ThingCommand};
use opentwins_core::query::{self, Filter, SearchOptions};
use opentwins_core::store::{SledConfig, SledStore, Store};
use opentwins_core::{Pointer, Thing, ThingId};
use serde_json::{Value, json};

/// One search or count of the scenario.
struct Query {
    name: &'static str,
    filter: String,
    /// `Some(option)`: a search with these options; `None`: a count.
    option: Option<&'static str>,
}

fn queries(n: usize) -> Vec<Query> {
    vec![
        Query {
            name: "eq, size(10)",
            filter: r#"eq(attributes/model,"m3")"#.into(),
            option: Some("size(10)"),
        },
        Query {
            name: "eq on a unique value, size(10)",
            filter: format!(r#"eq(attributes/serial,"s-{}")"#, n / 3),
            option: Some("size(10)"),
        },
        Query {
            name: "eq, sort(-frameSeq), size(10)",
            filter: r#"eq(attributes/model,"m3")"#.into(),
            option: Some("sort(-features/lane/properties/frameSeq),size(10)"),
        },
        Query {
            name: "count, range",
            filter: format!("gt(features/lane/properties/frameSeq,{})", n / 2),
            option: None,
        },
        Query {
            name: "count, eq",
            filter: r#"eq(attributes/model,"m3")"#.into(),
            option: None,
        },
    ]
}

fn auth() -> AuthContext {
    AuthContext::new(["bench:user"])
}

fn thing_id(i: usize) -> ThingId {
    ThingId::new(&format!("bench:car-{i:07}")).expect("valid id")
}

fn body(i: usize) -> Value {
    json!({
        "attributes": {"model": format!("m{}", i % 10), "serial": format!("s-{i}"), "fleet": "north"},
        "features": {"lane": {"properties": {"offset": 0.0, "frameSeq": i}}}
    })
}

/// Creates `n` things, `concurrency` at a time, each durable before it counts; things/s.
async fn fill(tw: &Twins, n: usize) -> f64 {
    const CONCURRENCY: usize = 64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let tw = tw.clone();
        tasks.push(tokio::spawn(async move {
            let a = auth();
            for i in (t..n).step_by(CONCURRENCY) {
                let mut c =
                    ThingCommand::new(thing_id(i), Action::Create, Pointer::root(), Some(body(i)));
                c.headers = Headers {
                    requested_acks: Some(vec![TWIN_PERSISTED.into()]),
                    ..Headers::default()
                };
                tw.apply(&a, c).await.expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("fill task");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The median of `runs` timings of `f`, after one untimed run (which fills an index the first
/// time a path is searched); with the time of that first run.
fn timings(runs: usize, mut f: impl FnMut() -> usize) -> (Duration, Duration, usize) {
    let start = Instant::now();
    let hits = f();
    let first = start.elapsed();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            assert_eq!(f(), hits, "the same query gave another answer");
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], first, hits)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Times every query on `tw` and on the scan baseline; one result row per query.
fn measure(store: &str, tw: &Twins, n: usize, runs: usize, results: &mut Vec<Value>) {
    let snapshot: Vec<Thing> = tw
        .thing_ids()
        .iter()
        .filter_map(|id| tw.get_thing(id))
        .collect();
    assert_eq!(snapshot.len(), n, "every thing was created");
    let a = auth();
    for q in queries(n) {
        let filter = Filter::parse(&q.filter).expect("filter");
        let (ours, first, hits) = match q.option {
            Some(option) => timings(runs, || {
                tw.search(&a, Some(&q.filter), Some(option), None)
                    .expect("search")
                    .items
                    .len()
            }),
            None => timings(runs, || tw.count(&a, Some(&q.filter)).expect("count")),
        };
        let (scan, _, scan_hits) = match q.option {
            Some(option) => {
                let options = SearchOptions::parse(option).expect("options");
                timings(runs.min(5), || {
                    query::search(&snapshot, Some(&filter), &options)
                        .expect("scan")
                        .items
                        .len()
                })
            }
            None => timings(runs.min(5), || query::count(&snapshot, Some(&filter))),
        };
        assert_eq!(
            hits, scan_hits,
            "{}: the index and the scan disagree",
            q.name
        );
        println!(
            "search {store:<9} {n:>8} things  {:<32} p50 {:>8.3} ms (first {:>8.1} ms)   scan {:>8.3} ms   ratio {:.3}",
            q.name,
            ms(ours),
            ms(first),
            ms(scan),
            ms(ours) / ms(scan)
        );
        results.push(json!({
            "scenario": format!("search {store}, {}", q.name), "things": n, "filter": q.filter,
            "option": q.option, "hits": hits, "p50_ms": ms(ours), "first_ms": ms(first),
            "baseline_scan_p50_ms": ms(scan), "ratio": ms(ours) / ms(scan),
        }));
    }
}

/// Fills `n` things into each store and measures; the result rows.
pub async fn run(n: usize, runs: usize, postgres: Option<&str>) -> Vec<Value> {
    let mut results = Vec::new();
    let tw = Twins::in_memory(EngineConfig::default());
    let rate = fill(&tw, n).await;
    println!("fill memory: {rate:.0} things/s");
    results.push(json!({"scenario": "fill memory", "things": n, "things_per_s": rate}));
    measure("memory", &tw, n, runs, &mut results);
    drop(tw);

    let dir = tempfile::tempdir().expect("tempdir");
    let open_sled = || -> (Arc<dyn Store>, Closer) {
        let store = SledStore::open(SledConfig {
            path: dir.path().join("db"),
            ..SledConfig::default()
        })
        .expect("sled");
        (Arc::new(store), Box::new(|| {}))
    };
    fill_reopen_measure("sled", open_sled, n, runs, &mut results).await;

    if let Some(url) = postgres {
        use opentwins_postgres::{PgConfig, PgStore};
        let schema = format!("bench_search_{}", std::process::id());
        let open_pg = || -> (Arc<dyn Store>, Closer) {
            let config = PgConfig {
                url: url.to_owned(),
                schema: schema.clone(),
                ..PgConfig::default()
            };
            let store = Arc::new(PgStore::open(config, None).expect("PostgreSQL store"));
            let closing = store.clone();
            (store, Box::new(move || closing.close().expect("close")))
        };
        fill_reopen_measure("postgres", open_pg, n, runs, &mut results).await;
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to drop the schema");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .expect("drop schema");
    }
    results
}

/// Closes a store (PostgreSQL's connections) before it is opened again.
type Closer = Box<dyn Fn()>;

/// Fills `n` things into the store `open` gives, opens it again (timed), and measures.
async fn fill_reopen_measure(
    name: &str,
    open: impl Fn() -> (Arc<dyn Store>, Closer),
    n: usize,
    runs: usize,
    results: &mut Vec<Value>,
) {
    let (store, close) = open();
    let tw = Twins::open(EngineConfig::default(), store).expect("open");
    let rate = fill(&tw, n).await;
    tw.quiesce().await;
    drop(tw);
    close();
    let start = Instant::now();
    let (store, close) = open();
    let tw = Twins::open(EngineConfig::default(), store).expect("reopen");
    let reopen = start.elapsed();
    println!(
        "fill {name}: {rate:.0} things/s; open again: {:.0} ms",
        ms(reopen)
    );
    results.push(json!({"scenario": format!("fill {name}"), "things": n, "things_per_s": rate, "reopen_ms": ms(reopen)}));
    measure(name, &tw, n, runs, results);
    drop(tw);
    close();
}
