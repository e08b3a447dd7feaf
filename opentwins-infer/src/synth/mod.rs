//! Synthetic road camera: deterministic frames with exact ground truth, our stand-in for CARLA.
//!
//! A [`Scene`] is a set of [`SceneParams`] (vehicle offset and heading in the lane, road
//! curvature, 2–3 solid or dashed markings, lighting, shadows, noise); [`Scene::random`] draws a
//! varied one from a seed. [`Scene::render`] rasterises it through a pinhole [`Camera`] over a
//! flat ground plane at any resolution, and [`Scene::truth`] gives the [`Truth`] a lane model
//! should recover. The same seed and size always give the same bytes.
//!
//! ```
//! use opentwins_infer::synth::Scene;
//!
//! let scene = Scene::random(7);
//! let frame = scene.render(640, 360);
//! let truth = scene.truth();
//! assert_eq!(frame.as_rgb().len(), 640 * 360 * 3);
//! assert!(truth.offset.abs() <= 1.0);
//! let jpeg = frame.to_jpeg(85).unwrap();
//! assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
//! ```
//!
//! See `docs/synth.md` for the camera model, parameter ranges and truth conventions.

mod frame;
mod render;
mod rng;
mod scene;

pub use frame::{EncodeError, Frame};
pub use rng::SplitMix64;
pub use scene::{Camera, Marking, MarkingColor, Scene, SceneParams, Shadow, Truth, ranges};

impl Scene {
    /// Renders the scene at `width x height` pixels. Panics when a side is zero.
    pub fn render(&self, width: u32, height: u32) -> Frame {
        render::render(self, width, height)
    }
}

/// A random scene's frame and truth in one call: `Scene::random(seed)` rendered at the size.
pub fn sample(seed: u64, width: u32, height: u32) -> (Frame, Truth) {
    let scene = Scene::random(seed);
    (scene.render(width, height), scene.truth())
}

#[cfg(test)]
mod tests;
