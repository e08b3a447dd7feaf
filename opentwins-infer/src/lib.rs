//! On-board ML for OpenTwins-rs: the code that runs next to a vehicle's sensors and turns camera
//! frames into decisions in the twin.
//!
//! | module | what it owns |
//! |---|---|
//! | [`synth`] | a deterministic synthetic road camera with exact ground truth (our CARLA stand-in) |
//! | [`preprocess`] | base64 → JPEG/PNG decode → model-size RGB → normalised NCHW `f32` |
//! | [`runner`] | [`Model`]: an ONNX network loaded and optimised once with tract, run from many threads |
//! | [`lane`] | [`LaneModel`]: the lane CNN we ship (`models/lane.onnx`), its description and [`Prediction`] |
//! | [`processor`] | [`Processor`]: subscribes to a [`Twins`](opentwins_core::Twins) engine, infers on each new frame (newest wins), writes lane + steering features |
//!
//! tract stays behind [`Model`]; no tract type is part of this crate's API. Errors are one
//! [`Error`] enum; nothing here panics on bad input. See `docs/inference.md` (model, training,
//! processor, control rule, limits) and `docs/synth.md` (the camera).

pub mod error;
pub mod lane;
pub mod preprocess;
pub mod processor;
pub mod runner;
pub mod synth;

pub use error::{Error, Result};
pub use lane::{LaneModel, LaneSpec, Prediction};
pub use processor::{ControlRule, Processor, ProcessorConfig, ProcessorHandle, ProcessorMetrics};
pub use runner::Model;
