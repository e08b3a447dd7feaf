//! Renders one synthetic road frame to a PNG (or JPEG) file and prints its ground truth.
//!
//! ```text
//! cargo run -p opentwins-infer --example render -- --seed 1 --out /tmp/frame.png
//! cargo run --release -p opentwins-infer --example render -- --seed 1 --width 1280 --height 720 --out /tmp/frame.jpg
//! ```
//!
//! `--out` ending in `.jpg`/`.jpeg` writes JPEG (quality 85), anything else PNG. The render time
//! printed is for the rasterisation alone (use `--release` for meaningful numbers).

use std::time::Instant;

use opentwins_infer::synth::Scene;

fn main() {
    let mut seed = 1u64;
    let mut width = 1280u32;
    let mut height = 720u32;
    let mut out = String::from("/tmp/frame.png");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--seed" => seed = value().parse().unwrap_or_else(|_| usage("bad --seed")),
            "--width" => width = value().parse().unwrap_or_else(|_| usage("bad --width")),
            "--height" => height = value().parse().unwrap_or_else(|_| usage("bad --height")),
            "--out" => out = value(),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if width == 0 || height == 0 {
        usage("width and height must be positive");
    }

    let scene = Scene::random(seed);
    let started = Instant::now();
    let frame = scene.render(width, height);
    let elapsed = started.elapsed();
    let lower = out.to_ascii_lowercase();
    let bytes = if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
        frame.to_jpeg(85)
    } else {
        frame.to_png()
    }
    .unwrap_or_else(|e| fail(&e.to_string()));
    std::fs::write(&out, &bytes).unwrap_or_else(|e| fail(&format!("writing {out}: {e}")));

    let truth = scene.truth();
    println!(
        "wrote {out}: {width}x{height}, {} bytes, rendered in {elapsed:.2?}",
        bytes.len()
    );
    println!(
        "truth: offset {:+.3} (half lane widths), heading {:+.2} deg, curvature {:+.5} 1/m",
        truth.offset, truth.heading_deg, truth.curvature
    );
    for (m, k) in scene.params.markings.iter().zip(&truth.lane_coefficients) {
        println!(
            "marking at {:+.0}: x(z) = {:+.3} {:+.4}*z {:+.6}*z^2 m, {}, {:?}",
            m.position,
            k[0],
            k[1],
            k[2],
            if m.dashed { "dashed" } else { "solid" },
            m.color
        );
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!("usage: render [--seed N] [--width W] [--height H] [--out PATH.png|PATH.jpg]");
    std::process::exit(if problem.is_empty() { 0 } else { 2 })
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
