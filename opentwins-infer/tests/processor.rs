//! The processor end to end, in process: frames written into a twin come back as lane and
//! steering features.

use std::time::Duration;

use opentwins_core::policy::AuthContext;
use opentwins_core::protocol::{Action, ThingCommand};
use opentwins_core::{EngineConfig, Pointer, ThingId, Twins};
use opentwins_infer::synth::{Scene, SceneParams};
use opentwins_infer::{LaneModel, Processor, ProcessorConfig, ProcessorHandle};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

fn id() -> ThingId {
    ThingId::new("ns:car").unwrap()
}

async fn apply(tw: &Twins, action: Action, path: &str, value: Value) {
    let cmd = ThingCommand::new(id(), action, Pointer::parse(path).unwrap(), Some(value));
    tw.apply(&AuthContext::system(), cmd)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn setup(config: ProcessorConfig) -> (Twins, ProcessorHandle) {
    let tw = Twins::in_memory(EngineConfig::default());
    apply(&tw, Action::Create, "/", json!({"features": {}})).await;
    let model = LaneModel::bundled().expect("bundled model");
    let handle = Processor::spawn(tw.clone(), model, AuthContext::system(), config).unwrap();
    (tw, handle)
}

fn scene(offset: f32, heading_deg: f32) -> Scene {
    Scene::new(SceneParams {
        lateral_offset: offset,
        heading_deg,
        noise: 4.0,
        ..SceneParams::default()
    })
}

/// The telemetry mapping's shape for a binary payload.
fn mapped(scene: &Scene) -> Value {
    let jpeg = scene.render(320, 180).to_jpeg(85).unwrap();
    json!({
        "frame": base64_of(&jpeg),
        "contentType": "image/jpeg",
        "size": jpeg.len(),
    })
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Waits until the lane feature reports `frame_seq`, returning the thing's features.
async fn lane_with_seq(tw: &Twins, frame_seq: u64) -> Value {
    loop {
        if let Some(thing) = tw.get_thing(&id()) {
            let features = thing
                .get(&Pointer::parse("/features").unwrap())
                .cloned()
                .unwrap_or(Value::Null);
            if features["lane"]["properties"]["frameSeq"] == json!(frame_seq) {
                return features;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_yields_lane_and_steering_features() {
    tokio::time::timeout(TIMEOUT, async {
        let (tw, handle) = setup(ProcessorConfig::default()).await;

        // As the MQTT telemetry mapping writes a JPEG: a merge of {frame, contentType, size}.
        apply(
            &tw,
            Action::Merge,
            "/features/camera/properties",
            mapped(&scene(0.5, 2.0)),
        )
        .await;
        let f = lane_with_seq(&tw, 1).await;
        let lane = &f["lane"]["properties"];
        let offset = lane["offset"].as_f64().unwrap();
        let heading = lane["heading"].as_f64().unwrap();
        assert!((offset - 0.5).abs() < 0.15, "{lane}");
        assert!((heading - 2.0).abs() < 1.0, "{lane}");
        assert_eq!(lane["coefficients"].as_array().unwrap().len(), 2);
        assert!(lane["inferenceMs"].as_f64().unwrap() > 0.0);
        assert_eq!(
            lane["model"],
            json!(LaneModel::bundled().unwrap().spec().name)
        );
        // Right of centre and pointing right: steer left.
        let correction = f["steering"]["properties"]["correction"].as_f64().unwrap();
        assert!(correction < -3.0, "{correction}");

        // A plain base64 string written directly at the input path works too.
        let jpeg = scene(-0.4, -1.0).render(320, 180).to_jpeg(85).unwrap();
        apply(
            &tw,
            Action::Modify,
            "/features/camera/properties/frame",
            json!(base64_of(&jpeg)),
        )
        .await;
        let f = lane_with_seq(&tw, 2).await;
        let offset = f["lane"]["properties"]["offset"].as_f64().unwrap();
        assert!((offset + 0.4).abs() < 0.15, "{}", f["lane"]);
        assert!(f["steering"]["properties"]["correction"].as_f64().unwrap() > 0.0);

        // Unrelated writes are not frames.
        apply(
            &tw,
            Action::Merge,
            "/features/gps/properties",
            json!({"lat": 1}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let m = handle.metrics();
        assert_eq!(
            (m.frames_in, m.processed, m.errors, m.skipped),
            (2, 2, 0, 0),
            "{m:?}"
        );
        assert!(m.avg_inference_ms > 0.0);
        handle.shutdown().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_frames_are_counted_and_the_processor_carries_on() {
    tokio::time::timeout(TIMEOUT, async {
        let (tw, handle) = setup(ProcessorConfig::default()).await;
        let bad = [
            json!("not base64 at all!"),
            json!(base64_of(b"GIF89a not a supported image")),
            json!(base64_of(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0, 1, 2, 3])),
            json!({"frame": "/9j/", "contentType": "text/plain"}),
            json!(42),
        ];
        for (i, value) in bad.iter().enumerate() {
            apply(
                &tw,
                Action::Merge,
                "/features/camera/properties",
                json!({"frame": value}),
            )
            .await;
            // One at a time, so none is skipped as stale.
            while handle.metrics().errors < i as u64 + 1 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        apply(
            &tw,
            Action::Merge,
            "/features/camera/properties",
            mapped(&scene(0.0, 0.0)),
        )
        .await;
        let f = lane_with_seq(&tw, bad.len() as u64 + 1).await;
        assert!(f["lane"]["properties"]["offset"].as_f64().unwrap().abs() < 0.15);
        let m = handle.metrics();
        assert_eq!((m.errors, m.processed), (bad.len() as u64, 1), "{m:?}");
        handle.shutdown().await;
    })
    .await
    .expect("timed out");
}

/// On a single-threaded runtime the writer runs to its next real wait before the processor's
/// tasks get a turn, so a burst of frames meets one latest-value slot: the newest is processed,
/// the rest are counted as skipped, nothing queues.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_keeps_only_the_newest_frame() {
    tokio::time::timeout(TIMEOUT, async {
        let (tw, handle) = setup(ProcessorConfig::default()).await;
        let frames: Vec<Value> = [-0.6f32, -0.3, 0.0, 0.3, 0.6]
            .iter()
            .map(|&o| mapped(&scene(o, 0.0)))
            .collect();
        for frame in &frames {
            apply(
                &tw,
                Action::Merge,
                "/features/camera/properties",
                frame.clone(),
            )
            .await;
        }
        let f = lane_with_seq(&tw, 5).await;
        // The last frame (offset 0.6) is the one inferred.
        let offset = f["lane"]["properties"]["offset"].as_f64().unwrap();
        assert!((offset - 0.6).abs() < 0.15, "{}", f["lane"]);
        let m = handle.metrics();
        assert_eq!(
            (m.frames_in, m.skipped, m.processed, m.pending),
            (5, 4, 1, 0),
            "{m:?}"
        );
        handle.shutdown().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn bad_configuration_is_an_error() {
    tokio::time::timeout(TIMEOUT, async {
        let tw = Twins::in_memory(EngineConfig::default());
        let model = LaneModel::bundled().unwrap();
        for config in [
            ProcessorConfig {
                input: "/".into(),
                ..Default::default()
            },
            ProcessorConfig {
                output_feature: "a/b".into(),
                ..Default::default()
            },
            ProcessorConfig {
                decision: "/features/camera/properties/frame/x".into(),
                ..Default::default()
            },
            ProcessorConfig {
                input: "/features/lane/properties/frame".into(),
                ..Default::default()
            },
        ] {
            let r = Processor::spawn(
                tw.clone(),
                model.clone(),
                AuthContext::system(),
                config.clone(),
            );
            assert!(
                matches!(r, Err(opentwins_infer::Error::Spec(_))),
                "{config:?} was accepted"
            );
        }
    })
    .await
    .expect("timed out");
}
