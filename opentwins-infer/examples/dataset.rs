//! Writes a training or evaluation set for the lane model: synthetic frames rendered at camera
//! resolutions, encoded as a camera would send them (JPEG, some PNG), then decoded and reduced to
//! the model's 160x90 input by the same `preprocess` code the runner uses.
//!
//! ```text
//! cargo run --release -p opentwins-infer --example dataset -- --first-seed 1000000 --count 16000 --out /tmp/lane/train
//! ```
//!
//! Output: `OUT.u8` (count x 90 x 160 x 3 bytes, RGB, row-major, one frame after the other) and
//! `OUT.csv` (one row per frame: seed, rendered size, encoding, and the ground truth the model
//! learns: offset in half lane widths, heading in degrees, curvature in 1/m, lane width in m).
//! Frame `i` is `Scene::random(first_seed + i)`, so a set is reproducible from its arguments.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use opentwins_infer::preprocess::{Resize, decode_resized};
use opentwins_infer::synth::{Scene, SplitMix64};

const WIDTH: u32 = 160;
const HEIGHT: u32 = 90;
/// Camera resolutions and how often each is drawn (per mille).
const SIZES: [((u32, u32), u64); 4] = [
    ((640, 360), 450),
    ((1280, 720), 150),
    ((960, 540), 100),
    ((320, 180), 300),
];

struct Row {
    seed: u64,
    size: (u32, u32),
    encoding: String,
    offset: f32,
    heading_deg: f32,
    curvature: f32,
    lane_width_m: f32,
    pixels: Vec<u8>,
}

fn make(seed: u64) -> Row {
    let scene = Scene::random(seed);
    let mut r = SplitMix64::new(seed ^ 0x5EED_DA7A_0000_0001);
    let pick = r.next_u64() % 1000;
    let mut acc = 0;
    let mut size = SIZES[0].0;
    for (s, p) in SIZES {
        acc += p;
        if pick < acc {
            size = s;
            break;
        }
    }
    let frame = scene.render(size.0, size.1);
    let (bytes, encoding) = if r.chance(0.1) {
        (frame.to_png().expect("png"), "png".to_string())
    } else {
        let q = 60 + (r.next_u64() % 36) as u8;
        (frame.to_jpeg(q).expect("jpeg"), format!("jpeg{q}"))
    };
    let small = decode_resized(&bytes, WIDTH, HEIGHT, Resize::DecodeScaled).expect("decode");
    let truth = scene.truth();
    Row {
        seed,
        size,
        encoding,
        offset: truth.offset,
        heading_deg: truth.heading_deg,
        curvature: truth.curvature,
        lane_width_m: scene.params.lane_width_m,
        pixels: small.into_rgb(),
    }
}

fn main() {
    let mut first_seed = 1_000_000u64;
    let mut count = 1000usize;
    let mut out = String::from("/tmp/lane/train");
    let mut threads = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--first-seed" => {
                first_seed = value.parse().unwrap_or_else(|_| usage("bad --first-seed"))
            }
            "--count" => count = value.parse().unwrap_or_else(|_| usage("bad --count")),
            "--threads" => threads = value.parse().unwrap_or_else(|_| usage("bad --threads")),
            "--out" => out = value,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("creating {dir:?}: {e}")));
    }
    let started = std::time::Instant::now();
    let next = AtomicUsize::new(0);
    let mut rows: Vec<Option<Row>> = (0..count).map(|_| None).collect();
    let chunks: Vec<Vec<(usize, Row)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break done;
                        }
                        done.push((i, make(first_seed + i as u64)));
                        if i.is_multiple_of(2000) {
                            eprintln!("{i}/{count} after {:.1?}", started.elapsed());
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    for (i, row) in chunks.into_iter().flatten() {
        rows[i] = Some(row);
    }
    let mut pixels = std::io::BufWriter::new(
        std::fs::File::create(format!("{out}.u8")).unwrap_or_else(|e| fail(&e.to_string())),
    );
    let mut csv =
        String::from("seed,width,height,encoding,offset,heading_deg,curvature,lane_width_m\n");
    for row in rows.into_iter().flatten() {
        pixels
            .write_all(&row.pixels)
            .unwrap_or_else(|e| fail(&e.to_string()));
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            row.seed,
            row.size.0,
            row.size.1,
            row.encoding,
            row.offset,
            row.heading_deg,
            row.curvature,
            row.lane_width_m
        ));
    }
    pixels.flush().unwrap_or_else(|e| fail(&e.to_string()));
    std::fs::write(format!("{out}.csv"), csv).unwrap_or_else(|e| fail(&e.to_string()));
    eprintln!(
        "wrote {count} frames to {out}.u8/.csv in {:.1?}",
        started.elapsed()
    );
}

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}");
    eprintln!("usage: dataset [--first-seed N] [--count N] [--threads N] [--out PREFIX]");
    std::process::exit(2)
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
