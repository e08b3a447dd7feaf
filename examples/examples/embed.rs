//! Vehicle software that links the crates instead of running a binary: the twin engine and the
//! lane processor live in this process. Frames from a synthetic camera are written into the twin
//! as transient values (never stored), the processor writes lane and steering features, and the
//! program reads each decision back from the engine's events — no network, no broker.
//!
//! ```text
//! cargo run --release -p opentwins-examples --example embed
//! cargo run --release -p opentwins-examples --example embed -- 200
//! ```
//!
//! The optional argument is the number of frames (default 50). Swap `Twins::in_memory` for
//! `Twins::open` on a `SledStore` to keep the twin across restarts, and add
//! `opentwins_transport::link::Links` to send the decisions to a hub.

use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use serde_json::json;

use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::{EngineConfig, Pointer, ThingId, Twins};
use opentwins_infer::{LaneModel, Processor, ProcessorConfig, synth};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let frames: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse().context("the argument is a number of frames")?,
        None => 50,
    };
    // The camera's properties are transient: the processor sees them, the store never does.
    let twins = Twins::in_memory(EngineConfig {
        instance_id: "car-embedded".into(),
        transient: vec!["/features/camera/properties".into()],
        ..EngineConfig::default()
    });
    let me = AuthContext::new(["vehicle:software"]);
    let id = ThingId::new("demo:embedded-car")?;
    let create = json!({"features": {"camera": {"properties": {}}, "lane": {"properties": {}}}});
    twins
        .apply(
            &me,
            ThingCommand::new(id.clone(), Action::Create, Pointer::root(), Some(create)),
        )
        .await?;

    let processor = Processor::spawn(
        twins.clone(),
        LaneModel::bundled()?,
        me.clone(),
        ProcessorConfig::default(),
    )?;
    let mut decisions =
        twins.subscribe(me.clone(), Some("exists(features/lane/properties/frameId)"))?;
    let frame_path = Pointer::parse("/features/camera/properties/frame")?;
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    println!("frame  truth offset  model offset  steering   latency");
    for n in 0..frames {
        let (frame, truth) = synth::sample(7000 + n, 640, 360);
        let data = base64::engine::general_purpose::STANDARD.encode(frame.to_jpeg(85)?);
        let value = json!({"data": data, "id": n, "contentType": "image/jpeg"});
        let sent = Instant::now();
        let write = ThingCommand::new(id.clone(), Action::Modify, frame_path.clone(), Some(value));
        twins.apply(&me, write).await?;
        // Wait for this frame's decision (one frame in flight at a time).
        let event = loop {
            let event = tokio::time::timeout(Duration::from_secs(10), decisions.recv())
                .await
                .context("no decision within 10 s")??;
            let value = event.value.clone().unwrap_or_default();
            if value.pointer("/features/lane/properties/frameId") == Some(&json!(n)) {
                break value;
            }
        };
        let latency = sent.elapsed();
        worst = worst.max(latency);
        total += latency;
        println!(
            "{n:>5}  {:>+12.3}  {:>+12.3}  {:>+7.2}°  {:>7.2} ms",
            truth.offset,
            event["features"]["lane"]["properties"]["offset"]
                .as_f64()
                .unwrap_or_default(),
            event["features"]["steering"]["properties"]["correction"]
                .as_f64()
                .unwrap_or_default(),
            latency.as_secs_f64() * 1000.0
        );
    }
    let thing = twins.get_thing(&id).context("the twin is gone")?;
    println!(
        "\n{frames} frames: mean {:.2} ms, worst {:.2} ms from frame written to decision read; \
         the twin is at revision {} and holds no frame: {}",
        total.as_secs_f64() * 1000.0 / frames.max(1) as f64,
        worst.as_secs_f64() * 1000.0,
        thing.revision(),
        thing.body()["features"]["camera"]
    );
    processor.shutdown().await;
    Ok(())
}
