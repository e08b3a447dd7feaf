//! The paper's deployments as the benchmark programs build them: real edge and hub binaries,
//! two private Mosquitto brokers, counting relays; a frame yields a decision at the vehicle in
//! both scenarios, the simulated network delays what crosses it, bytes are counted per process.

use std::time::{Duration, Instant};

use opentwins_benches::paper::{
    Camera, Deployment, Options, Sampler, Scenario, Wan, Watcher, match_decisions, stream,
};
use opentwins_examples::FramePool;

const LIMIT: Duration = Duration::from_secs(120);

fn options(scenario: Scenario, wan: Option<std::sync::Arc<Wan>>) -> Options {
    Options {
        wan,
        ..Options::new(scenario, 1, 2)
    }
}

/// Streams 2 frames a second to both cameras for 2 s; returns frames sent, the decisions'
/// latencies (ms) at the vehicle and the frames without a decision.
async fn run(d: &Deployment, pool: &FramePool) -> (usize, Vec<f64>, usize) {
    let (watcher, mut decisions) = Watcher::start(&d.vehicle_broker.url(), "test-watch")
        .await
        .unwrap();
    let camera = Camera::connect(&d.camera_url).await.unwrap();
    let topics: Vec<String> = d.cameras[0].iter().map(|c| c.1.clone()).collect();
    let sent = stream(&camera, &topics, pool, 2.0, Duration::from_secs(2), 0)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut latencies = Vec::new();
    let mut missing = sent.len();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (l, m) = match_decisions(&sent, &mut decisions);
        latencies.extend_from_slice(l.values());
        missing = missing.saturating_sub(l.len());
        if missing == 0 || m == 0 {
            break;
        }
    }
    camera.close().await;
    watcher.close().await;
    (sent.len(), latencies, missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_decides_on_the_edge_and_sends_no_frame_to_the_hub() {
    tokio::time::timeout(LIMIT, async {
        let pool = FramePool::render(1, 2, 320, 180).unwrap();
        let d = Deployment::start(options(Scenario::Distributed, None))
            .await
            .unwrap();
        let sampler = Sampler::start(d.pids(), Duration::from_millis(300));
        let (frames, latencies, missing) = run(&d, &pool).await;
        let usage = sampler.finish();
        assert!(frames >= 6, "{frames} frames");
        assert_eq!(missing, 0, "decisions missing");
        assert!(latencies.iter().all(|l| *l > 0.0 && *l < 5_000.0));
        // The camera's bytes are the frames; the edge got them; the hub only decisions.
        let frame_bytes = (pool.mean_bytes() * frames) as u64;
        assert!(d.bytes("camera") > frame_bytes, "{}", d.bytes("camera"));
        assert!(d.bytes("edge-0") > frame_bytes);
        assert!(d.bytes("hub") < frame_bytes / 2, "frames reached the hub");
        assert!(d.wan_bytes() > 0 && d.wan_bytes() < frame_bytes / 2);
        assert_eq!(
            d.bytes("vehicle broker"),
            d.bytes("camera") + d.proxy_bytes("edge-0/bridge")
        );
        let edge = &usage["edge-0"];
        assert!(!edge.rss.is_empty() && edge.peak > 1 << 20, "{edge:?}");
        d.stop();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn centralized_decisions_cross_the_network_twice() {
    tokio::time::timeout(LIMIT, async {
        let pool = FramePool::render(1, 2, 320, 180).unwrap();
        let delay = Duration::from_millis(60);
        let d = Deployment::start(options(Scenario::Centralized, Some(Wan::new(delay, 0.0))))
            .await
            .unwrap();
        let (frames, latencies, missing) = run(&d, &pool).await;
        assert_eq!(missing, 0, "decisions missing");
        // Frame up and decision down each wait out the delay (the PUBACK's way back is not on
        // the path).
        let min = latencies.iter().copied().fold(f64::MAX, f64::min);
        assert!(min >= 120.0, "a decision came back in {min} ms");
        let frame_bytes = (pool.mean_bytes() * frames) as u64;
        assert!(
            d.bytes("hub") > frame_bytes,
            "the hub did not get the frames"
        );
        assert!(d.wan_bytes() > frame_bytes);
        d.stop();
    })
    .await
    .unwrap();
}
