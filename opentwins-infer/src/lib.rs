//! On-board ML for OpenTwins-rs: the code that runs next to a vehicle's sensors and turns frames
//! into decisions for the twin. Today it holds only [`synth`], a deterministic synthetic road
//! camera with exact ground truth (our stand-in for CARLA), used to feed and test the pipeline.
//! The model runner (`runner`), frame decoding (`image`) and the twin processor (`processor`)
//! come later; see `docs/synth.md` for the camera.

pub mod synth;
