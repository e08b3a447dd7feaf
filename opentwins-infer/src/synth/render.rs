//! The rasteriser: one pass over the image, row by row.
//!
//! Every image row below the horizon sees the ground at a single forward distance `z`, with a
//! constant lateral scale (metres per pixel), so markings, dashes and fog are evaluated once per
//! row and each pixel only does a few multiply-adds and one hash.

use super::frame::Frame;
use super::rng::{hash01, mix64};
use super::scene::Scene;

/// Horizon haze colour; far ground fades towards it.
const HAZE: [f32; 3] = [196.0, 204.0, 212.0];
const SKY_TOP: [f32; 3] = [105.0, 145.0, 205.0];
const TREES: [f32; 3] = [62.0, 78.0, 60.0];
const GRASS: [f32; 3] = [78.0, 98.0, 52.0];
/// Asphalt extends this far beyond the outermost markings, metres.
const SHOULDER_M: f32 = 0.6;

struct RowMarking {
    x: f32,
    on: bool,
    paint: [f32; 3],
}

pub(super) fn render(scene: &Scene, width: u32, height: u32) -> Frame {
    assert!(
        width > 0 && height > 0,
        "frame size must be at least 1x1, got {width}x{height}"
    );
    let p = &scene.params;
    let truth = scene.truth();
    let cam = p.camera;
    let (w, h) = (width as usize, height as usize);
    let mut data = vec![0u8; w * h * 3];
    let cx = width as f32 / 2.0;
    let horizon = cam.horizon_row(width, height);
    let half_paint = p.marking_width_m / 2.0;
    let noise_seed = mix64(p.texture_seed ^ 0x6E6F_6973_6500_0000);
    let tree_scale = (height as f32 * 0.035).max(1.0);
    let mut row_marks: Vec<RowMarking> = Vec::with_capacity(p.markings.len());

    for (v, row) in data.chunks_exact_mut(w * 3).enumerate() {
        let vc = v as f32 + 0.5;
        let ground = cam
            .row_ground(vc, width, height)
            .filter(|(z, _)| *z < 5_000.0);
        match ground {
            Some((z, mpp)) => {
                row_marks.clear();
                for (i, m) in p.markings.iter().enumerate() {
                    let on = !m.dashed || (z + m.dash_phase_m).rem_euclid(p.period_m) < p.dash_m;
                    row_marks.push(RowMarking {
                        x: truth.marking_x(i, z),
                        on,
                        paint: m.color.rgb(),
                    });
                }
                let left = row_marks.iter().map(|m| m.x).fold(f32::INFINITY, f32::min) - SHOULDER_M;
                let right = row_marks
                    .iter()
                    .map(|m| m.x)
                    .fold(f32::NEG_INFINITY, f32::max)
                    + SHOULDER_M;
                let fog = ((z - 40.0) / 400.0).clamp(0.0, 0.9);
                let zi = (z / 0.25).floor() as i64;
                let zp = (z / 2.0).floor() as i64;
                for (u, px) in row.chunks_exact_mut(3).enumerate() {
                    let x = (u as f32 + 0.5 - cx) * mpp;
                    let fine = hash01(p.texture_seed, (x / 0.08).floor() as i64, zi) * 2.0 - 1.0;
                    let patch = hash01(!p.texture_seed, (x / 1.5).floor() as i64, zp) * 2.0 - 1.0;
                    let mut c = if x >= left && x <= right {
                        let g = p.asphalt + 9.0 * fine + 6.0 * patch;
                        [g, g, g + 3.0]
                    } else {
                        let k = 1.0 + 0.12 * fine + 0.1 * patch;
                        [GRASS[0] * k, GRASS[1] * k, GRASS[2] * k]
                    };
                    for m in &row_marks {
                        if !m.on {
                            continue;
                        }
                        // Coverage of the pixel footprint by the painted strip: soft edges, and
                        // thin far-away lines fade instead of flickering.
                        let cover = ((half_paint - (x - m.x).abs()) / mpp + 0.5).clamp(0.0, 1.0);
                        if cover > 0.0 {
                            let wear = 0.92 + 0.08 * fine;
                            for (ck, paint) in c.iter_mut().zip(m.paint) {
                                *ck += (paint * wear - *ck) * cover;
                            }
                        }
                    }
                    let mut shade = 1.0;
                    for s in &p.shadows {
                        let zz = z - s.slant * x;
                        if zz >= s.z_start_m && zz < s.z_start_m + s.length_m {
                            shade *= s.darkness;
                        }
                    }
                    for (ck, haze) in c.iter_mut().zip(HAZE) {
                        *ck = *ck * shade + (haze - *ck * shade) * fog;
                    }
                    put(px, c, p.lighting, p.noise, noise_seed, u, v);
                }
            }
            None => {
                // Sky above the horizon, with a ragged tree line sitting on it.
                let above = (horizon - vc).max(0.0);
                let t = (above / horizon.max(1.0)).clamp(0.0, 1.0);
                for (u, px) in row.chunks_exact_mut(3).enumerate() {
                    let cell = (u as f32 / (tree_scale * 0.8)).floor() as i64;
                    let top = tree_scale * (0.6 + hash01(p.texture_seed, cell, -7));
                    let c = if above < top {
                        let k = 0.9 + 0.2 * hash01(p.texture_seed, u as i64 / 3, v as i64 / 3);
                        [TREES[0] * k, TREES[1] * k, TREES[2] * k]
                    } else {
                        let s = t.sqrt();
                        [
                            HAZE[0] + (SKY_TOP[0] - HAZE[0]) * s,
                            HAZE[1] + (SKY_TOP[1] - HAZE[1]) * s,
                            HAZE[2] + (SKY_TOP[2] - HAZE[2]) * s,
                        ]
                    };
                    put(px, c, p.lighting, p.noise, noise_seed, u, v);
                }
            }
        }
    }
    Frame::from_rgb(width, height, data).expect("buffer sized for width x height")
}

/// Applies lighting and per-pixel noise and writes one RGB pixel.
fn put(px: &mut [u8], c: [f32; 3], lighting: f32, noise: f32, seed: u64, u: usize, v: usize) {
    let n = mix64(seed ^ ((v as u64) << 32 | u as u64));
    for (k, out) in px.iter_mut().enumerate() {
        let r = ((n >> (k * 16)) & 0xFFFF) as f32 / 65_535.0 * 2.0 - 1.0;
        *out = (c[k] * lighting + r * noise).round().clamp(0.0, 255.0) as u8;
    }
}
