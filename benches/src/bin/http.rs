//! HTTP API throughput: persisted modifies of a ~300-byte feature property over N keep-alive
//! connections (`PUT /api/2/things/{id}/features/lane/properties/state`, HTTP Basic auth, Ditto's
//! implicit `twin-persisted`, sled store with group commit in a temp dir), modifies/s and
//! p50/p99 latency. Baseline in the same run, with the same client: a bare axum server that
//! parses the same JSON and puts it into a `Mutex<HashMap>`. A third scenario sends the same
//! modifies with `requested-acks=` (answered before the flush) to show what durability costs.
//!
//! Client and server share the process (and the machine's cores), so next to ops/s the bench
//! prints the process CPU time per operation (client included, Linux `/proc/self/stat`): less
//! noisy than ops/s on a shared machine; ours minus baseline is roughly what our server adds.
//!
//! Run: `cargo run --release -p opentwins-benches --bin http -- --seconds 10 --out docs/results`
//!
//! `--serve SECS` only serves our API for an external load generator (`wrk`, see docs/http.md).

/// mimalloc: glibc malloc costs about half the CPU of a request here (see docs/benchmarks.md);
/// servers built from these crates should use it too (the edge and hub binaries will).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use base64::Engine as _;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentwins_benches::process_cpu;
use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_core::store::{SledConfig, SledStore, Store};
use opentwins_transport::http::{
    AuthConfig, HttpConfig, HttpState, UserConfig, app, hash_password, serve,
};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "HTTP persisted modifies/s and latency, with a same-run bare-axum baseline")]
struct Args {
    /// Seconds of load per server.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Keep-alive connections (one thing per connection).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Directory for the JSON results.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Instead of measuring: serve our API (sled, Basic user `bench:bench-password`, things
    /// `bench:car-0..connections` created) on 127.0.0.1 for this many seconds, for an external
    /// load generator such as `wrk` (see docs/http.md).
    #[arg(long)]
    serve: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    ops: u64,
    errors: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Process CPU time (user + system, all threads) per successful op, in µs.
    cpu_us_per_op: f64,
}

/// A ~300-byte property value.
fn value(i: u64) -> Value {
    json!({
        "offset": 0.125 + (i % 100) as f64 / 1000.0,
        "steering": -0.031,
        "confidence": 0.97,
        "lanes": [{"left": 1.71, "right": 1.69}, {"left": 1.65, "right": 1.74}],
        "model": "lane-detect-v3.onnx",
        "frame": i,
        "camera": "front-center",
        "timestamp": "2025-01-01T12:00:00.000000Z",
        "status": "ok",
        "note": "decision computed on the edge next to the camera"
    })
}

fn auth_header() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bench:bench-password")
    )
}

/// Drives `connections` keep-alive HTTP/1.1 connections for `seconds`, each PUTting to its own
/// thing, and collects latencies.
async fn load(
    addr: std::net::SocketAddr,
    connections: usize,
    seconds: u64,
    query: &'static str,
) -> Run {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let auth = auth_header();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(conn);
            let uri = format!("/api/2/things/bench:car-{c}/features/lane/properties/state{query}");
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let body = Bytes::from(serde_json::to_vec(&value(i)).expect("json"));
                let req = hyper::Request::put(&uri)
                    .header("host", "127.0.0.1")
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(Full::new(body))
                    .expect("request");
                let start = Instant::now();
                if sender.ready().await.is_err() {
                    errors += 1;
                    break;
                }
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let _ = resp.into_body().collect().await;
                        if status == 204 {
                            lat.push(start.elapsed().as_micros() as u32);
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let start = Instant::now();
    let cpu_start = process_cpu();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("client task");
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_start);
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    Run {
        ops: all.len() as u64,
        errors,
        per_second: opentwins_benches::per_second(all.len() as u64, elapsed),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: all.last().map_or(0.0, |us| *us as f64 / 1000.0),
        cpu_us_per_op: cpu.as_secs_f64() * 1e6 / (all.len().max(1) as f64),
    }
}

/// Our server: persisted modifies (Ditto's implicit `twin-persisted`), then the same modifies
/// with `requested-acks=` (answered before the store flush) to show what durability costs.
async fn ours(args: &Args) -> (Run, Run) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(SledConfig {
            path: dir.path().join("db"),
            ..SledConfig::default()
        })
        .expect("sled"),
    );
    let twins = Twins::open(EngineConfig::default(), store).expect("engine");
    let config = HttpConfig {
        auth: AuthConfig {
            users: vec![UserConfig {
                name: "bench".into(),
                password_hash: hash_password("bench-password"),
                subjects: vec![],
            }],
            ..AuthConfig::default()
        },
        ..HttpConfig::default()
    };
    let state = HttpState::new(twins, config).expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app(state), async {
        let _ = stopped.await;
    }));
    // Create the things (and check auth works) before measuring.
    let client_setup = load_setup(addr, args.connections).await;
    assert!(client_setup, "setup failed");
    if let Some(secs) = args.serve {
        println!("serving http://{addr} for {secs} s");
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let _ = stop.send(());
        let _ = server.await;
        std::process::exit(0);
    }
    let persisted = load(addr, args.connections, args.seconds, "").await;
    let unpersisted = load(addr, args.connections, args.seconds, "?requested-acks=").await;
    let _ = stop.send(());
    let _ = server.await;
    (persisted, unpersisted)
}

/// Creates one thing per connection with a plain PUT.
async fn load_setup(addr: std::net::SocketAddr, n: usize) -> bool {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    for c in 0..n {
        let body = json!({"features": {"lane": {"properties": {"state": value(0)}}}});
        let req = hyper::Request::put(format!("/api/2/things/bench:car-{c}"))
            .header("host", "127.0.0.1")
            .header("authorization", auth_header())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        sender.ready().await.expect("connection ready");
        let resp = sender.send_request(req).await.expect("send");
        let ok = resp.status() == 201;
        let _ = resp.into_body().collect().await;
        if !ok {
            return false;
        }
    }
    true
}

type Map = Arc<Mutex<HashMap<String, Value>>>;

async fn bare_put(
    State(map): State<Map>,
    Path((id, path)): Path<(String, String)>,
    body: Bytes,
) -> StatusCode {
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) => {
            map.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(format!("{id}/{path}"), v);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn baseline(args: &Args) -> Run {
    let map: Map = Arc::default();
    let router = Router::new()
        .route("/api/2/things/{id}/{*path}", put(bare_put))
        .with_state(map);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    let run = load(addr, args.connections, args.seconds, "").await;
    let _ = stop.send(());
    let _ = server.await;
    run
}

fn json_of(r: &Run) -> Value {
    json!({
        "ops": r.ops, "errors": r.errors, "per_second": r.per_second,
        "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "max_ms": r.max_ms,
        "cpu_us_per_op": r.cpu_us_per_op,
    })
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.serve.is_some() {
        ours(&args).await;
    }
    let base = baseline(&args).await;
    let (ours, fast) = ours(&args).await;
    println!(
        "{:<46} {:>9} {:>8} {:>8} {:>8} {:>10} {:>7}",
        "scenario", "ops/s", "p50 ms", "p99 ms", "max ms", "cpu us/op", "errors"
    );
    for (name, r) in [
        ("bare axum + Mutex<HashMap> (baseline)", &base),
        ("opentwins HTTP, persisted modify (sled)", &ours),
        ("opentwins HTTP, modify, requested-acks= (sled)", &fast),
    ] {
        println!(
            "{:<46} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>10.1} {:>7}",
            name, r.per_second, r.p50_ms, r.p99_ms, r.max_ms, r.cpu_us_per_op, r.errors
        );
    }
    let ratio = ours.per_second / base.per_second.max(1e-9);
    println!(
        "ratio ours/baseline: {ratio:.2}; targets: >= 20000/s persisted, p99 <= 10 ms (Ditto: 800-3200/s)"
    );
    println!(
        "connections: {}, seconds per server: {}",
        args.connections, args.seconds
    );
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).expect("out dir");
        let v = json!({
            "bench": "http",
            "connections": args.connections,
            "seconds": args.seconds,
            "baseline_bare_axum_hashmap": json_of(&base),
            "opentwins_persisted_modify_sled": json_of(&ours),
            "opentwins_modify_no_ack_sled": json_of(&fast),
            "ratio": ratio,
        });
        let path = dir.join("http.json");
        std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json")).expect("write");
        println!("wrote {}", path.display());
    }
}
