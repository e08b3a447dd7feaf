//! Lane inference: accuracy of the shipped model on held-out synthetic frames, and per-frame
//! latency (decode + preprocess + inference) at 640x360 and 1280x720, with onnxruntime (PyPI,
//! one thread) timing the same model on the same inputs in the same run as the baseline.
//!
//! Run: `cargo run --release -p opentwins-benches --bin infer -- --out docs/results`
//!
//! The onnxruntime half runs `benches/scripts/infer-ort.py` (which pip-installs `onnxruntime`
//! if missing); `--no-ort` skips it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use opentwins_infer::lane::{BUNDLED_ONNX, LaneModel};
use opentwins_infer::preprocess::{Resize, decode_resized};
use opentwins_infer::synth::Scene;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Lane model accuracy and latency, tract vs onnxruntime")]
struct Args {
    /// Held-out frames scored at 640x360 (a quarter as many again at 1280x720).
    #[arg(long, default_value_t = 2000)]
    accuracy_frames: u64,
    /// First seed of the held-out frames (training used 1,000,000.., validation 8,000,000..).
    #[arg(long, default_value_t = 9_000_000)]
    seed: u64,
    /// Distinct frames timed per resolution.
    #[arg(long, default_value_t = 200)]
    frames: u64,
    /// Passes over the timed frames.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// JPEG quality of the frames (what the camera sends).
    #[arg(long, default_value_t = 85)]
    quality: u8,
    /// Directory for the JSON results.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Python interpreter for the onnxruntime baseline.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip the onnxruntime baseline.
    #[arg(long)]
    no_ort: bool,
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn stats(samples: &[f64]) -> Value {
    json!({
        "p50_ms": round3(percentile(samples, 0.5)),
        "p99_ms": round3(percentile(samples, 0.99)),
        "mean_ms": round3(samples.iter().sum::<f64>() / samples.len().max(1) as f64),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Mean absolute errors over held-out frames at one resolution.
fn accuracy(model: &LaneModel, seeds: std::ops::Range<u64>, w: u32, h: u32, q: u8) -> Value {
    let n = (seeds.end - seeds.start) as f64;
    let mut err = [0.0f64; 4];
    let mut baseline = [0.0f64; 4];
    let mut within = [0u64; 3]; // |offset error| <= 0.05, 0.1, 0.2
    let mut worst = 0.0f64;
    for seed in seeds {
        let scene = Scene::random(seed);
        let jpeg = scene.render(w, h).to_jpeg(q).expect("jpeg");
        let p = model.predict_image(&jpeg).expect("predict");
        let t = scene.truth();
        let truth = [
            t.offset,
            t.heading_deg,
            t.curvature,
            scene.params.lane_width_m,
        ];
        let pred = [p.offset, p.heading_deg, p.curvature, p.lane_width_m];
        let mean = [0.0, 0.0, 0.0, 3.5];
        for i in 0..4 {
            err[i] += (pred[i] - truth[i]).abs() as f64;
            baseline[i] += (mean[i] - truth[i]).abs() as f64;
        }
        let e = (p.offset - t.offset).abs() as f64;
        worst = worst.max(e);
        for (k, bar) in [0.05, 0.1, 0.2].into_iter().enumerate() {
            within[k] += (e <= bar) as u64;
        }
    }
    let names = ["offset", "heading_deg", "curvature", "lane_width_m"];
    let mae: serde_json::Map<String, Value> = names
        .iter()
        .zip(err)
        .map(|(k, e)| (k.to_string(), json!(e / n)))
        .collect();
    let base: serde_json::Map<String, Value> = names
        .iter()
        .zip(baseline)
        .map(|(k, e)| (k.to_string(), json!(e / n)))
        .collect();
    json!({
        "resolution": format!("{w}x{h}"),
        "frames": n as u64,
        "mae": mae,
        "mae_predicting_mean": base,
        "offset_within": {"0.05": within[0] as f64 / n, "0.1": within[1] as f64 / n, "0.2": within[2] as f64 / n},
        "offset_max_error": worst,
    })
}

struct Timed {
    report: Value,
    tensors: Vec<Vec<f32>>,
}

/// Per-frame latency at one resolution: the fast path stage by stage, and the full-decode path.
fn latency(model: &LaneModel, w: u32, h: u32, args: &Args) -> Timed {
    let spec = model.spec();
    let frames: Vec<Vec<u8>> = (0..args.frames)
        .map(|i| {
            Scene::random(args.seed + 500_000 + i)
                .render(w, h)
                .to_jpeg(args.quality)
                .expect("jpeg")
        })
        .collect();
    let mean_bytes = frames.iter().map(Vec::len).sum::<usize>() / frames.len().max(1);
    let (mut decode, mut norm, mut infer, mut total, mut full) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut tensors = Vec::new();
    let mut input = Vec::new();
    for rep in 0..args.reps {
        for jpeg in &frames {
            let t0 = Instant::now();
            let small = decode_resized(jpeg, spec.width, spec.height, Resize::DecodeScaled)
                .expect("decode");
            let d = ms(t0);
            let t1 = Instant::now();
            spec.normalize.to_nchw_into(&small, &mut input);
            let n = ms(t1);
            let t2 = Instant::now();
            let p = model.predict_tensor(&input).expect("infer");
            let i = ms(t2);
            std::hint::black_box(p);
            decode.push(d);
            norm.push(n);
            infer.push(i);
            total.push(ms(t0));
            let t3 = Instant::now();
            let small =
                decode_resized(jpeg, spec.width, spec.height, Resize::Full).expect("decode full");
            full.push(ms(t3));
            std::hint::black_box(small);
            if rep == 0 {
                tensors.push(input.clone());
            }
        }
    }
    Timed {
        report: json!({
            "resolution": format!("{w}x{h}"),
            "jpeg_quality": args.quality,
            "mean_jpeg_bytes": mean_bytes,
            "frames": frames.len(),
            "runs": total.len(),
            "total": stats(&total),
            "decode_scaled_and_resize": stats(&decode),
            "normalise": stats(&norm),
            "inference": stats(&infer),
            "alternative_full_decode_and_box_resize": stats(&full),
        }),
        tensors,
    }
}

/// tract alone on preprocessed inputs: the figure compared with onnxruntime.
fn tract_inference(model: &LaneModel, tensors: &[Vec<f32>], reps: usize) -> Vec<f64> {
    let mut times = Vec::with_capacity(tensors.len() * reps);
    for t in tensors.iter().take(20) {
        std::hint::black_box(model.model().run(t).expect("warm-up"));
    }
    for _ in 0..reps {
        for t in tensors {
            let t0 = Instant::now();
            let out = model.model().run(t).expect("run");
            times.push(ms(t0));
            std::hint::black_box(out);
        }
    }
    times
}

fn write_f32(path: &Path, values: impl Iterator<Item = f32>) {
    let bytes: Vec<u8> = values.flat_map(f32::to_le_bytes).collect();
    std::fs::write(path, bytes).expect("write f32 file");
}

fn onnxruntime(model: &LaneModel, tensors: &[Vec<f32>], args: &Args) -> Result<Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let onnx = dir.path().join("lane.onnx");
    std::fs::write(&onnx, BUNDLED_ONNX).map_err(|e| e.to_string())?;
    let inputs = dir.path().join("inputs.f32");
    write_f32(&inputs, tensors.iter().flatten().copied());
    let expected = dir.path().join("expected.f32");
    let outputs: Vec<f32> = tensors
        .iter()
        .flat_map(|t| model.model().run(t).expect("run").swap_remove(0))
        .collect();
    write_f32(&expected, outputs.into_iter());
    let out = dir.path().join("ort.json");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/infer-ort.py");
    let shape = model.spec().input_shape().map(|d| d.to_string()).join(",");
    let status = Command::new(&args.python)
        .arg(script)
        .args(["--model", &onnx.to_string_lossy()])
        .args(["--inputs", &inputs.to_string_lossy()])
        .args(["--expected", &expected.to_string_lossy()])
        .args(["--shape", &shape])
        .args(["--reps", &args.reps.to_string()])
        .args(["--out", &out.to_string_lossy()])
        .status()
        .map_err(|e| format!("running {}: {e}", args.python))?;
    if !status.success() {
        return Err(format!("{script} failed: {status}"));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

fn main() {
    let args = Args::parse();
    let model = LaneModel::bundled().expect("the bundled lane model loads");
    println!(
        "model {} ({} bytes), input {:?}",
        model.spec().name,
        BUNDLED_ONNX.len(),
        model.spec().input_shape()
    );

    let started = Instant::now();
    let n = args.accuracy_frames;
    let acc_small = accuracy(&model, args.seed..args.seed + n, 640, 360, args.quality);
    let acc_large = accuracy(
        &model,
        args.seed + n..args.seed + n + n / 4,
        1280,
        720,
        args.quality,
    );
    println!("accuracy 640x360: {acc_small}");
    println!("accuracy 1280x720: {acc_large}");
    println!("(accuracy took {:.1?})", started.elapsed());

    let small = latency(&model, 640, 360, &args);
    let large = latency(&model, 1280, 720, &args);
    println!("latency 640x360: {}", small.report);
    println!("latency 1280x720: {}", large.report);

    let tensors: Vec<Vec<f32>> = small.tensors.into_iter().chain(large.tensors).collect();
    let mut tract = tract_inference(&model, &tensors, args.reps);
    let ort = if args.no_ort {
        None
    } else {
        match onnxruntime(&model, &tensors, &args) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("onnxruntime baseline failed: {e}");
                None
            }
        }
    };
    // tract again after onnxruntime, so drift in machine load hits both sides.
    tract.extend(tract_inference(&model, &tensors, args.reps));
    let tract_stats = stats(&tract);
    println!("tract inference only: {tract_stats}");
    let comparison = ort.map(|o| {
        let ratio_p50 = percentile(&tract, 0.5) / o["p50_ms"].as_f64().unwrap_or(f64::NAN);
        let ratio_p99 = percentile(&tract, 0.99) / o["p99_ms"].as_f64().unwrap_or(f64::NAN);
        println!("onnxruntime: {o}");
        println!("tract / onnxruntime: p50 {ratio_p50:.2}x, p99 {ratio_p99:.2}x");
        json!({"onnxruntime": o, "ratio_p50": round3(ratio_p50), "ratio_p99": round3(ratio_p99)})
    });

    let doc = json!({
        "command": "cargo run --release -p opentwins-benches --bin infer -- --out docs/results",
        "model": model.spec().name,
        "model_bytes": BUNDLED_ONNX.len(),
        "accuracy": [acc_small, acc_large],
        "latency": [small.report, large.report],
        "inference_only": {
            "inputs": tensors.len(),
            "tract": tract_stats,
            "vs_onnxruntime": comparison,
        },
    });
    if let Some(out) = args.out {
        std::fs::create_dir_all(&out).expect("create out dir");
        let path = out.join("infer.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&doc).expect("json") + "\n",
        )
        .expect("write results");
        println!("wrote {}", path.display());
    }
}
