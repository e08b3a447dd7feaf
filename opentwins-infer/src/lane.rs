//! The lane model we ship: a small CNN that reads one road frame and predicts where the vehicle
//! is in its lane. [`LaneModel`] pairs the ONNX [`Model`] with its [`LaneSpec`] (input size,
//! normalisation, output order) and turns images into a [`Prediction`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::preprocess::{self, Normalize, Resize};
use crate::runner::Model;
use crate::synth::Frame;

/// The bundled model file (`models/lane.onnx`), trained by `train/train.py`.
pub const BUNDLED_ONNX: &[u8] = include_bytes!("../models/lane.onnx");
/// The bundled model's description (`models/lane.json`).
pub const BUNDLED_SPEC: &str = include_str!("../models/lane.json");

/// The outputs a lane model must produce, by name, as listed in [`LaneSpec::outputs`].
pub const OUTPUTS: [&str; 4] = ["offset", "heading_deg", "curvature", "lane_width_m"];

/// How to feed a lane model and read its output: the sidecar `*.json` next to the `.onnx` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneSpec {
    /// A name for logs and the twin (`lane` feature's `model` property).
    pub name: String,
    /// Model input width in pixels.
    pub width: u32,
    /// Model input height in pixels.
    pub height: u32,
    /// Normalisation of RGB8 input pixels.
    pub normalize: Normalize,
    /// Names of the values in the model's single `[1, N]` output, in order; must contain every
    /// name in [`OUTPUTS`] (physical units: the scaling is folded into the network).
    pub outputs: Vec<String>,
    /// Free-form notes on how the model was trained (ignored by the runner).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl LaneSpec {
    /// The NCHW input shape, `[1, 3, height, width]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [1, 3, self.height as usize, self.width as usize]
    }

    fn index_of(&self, name: &str) -> Result<usize> {
        self.outputs
            .iter()
            .position(|o| o == name)
            .ok_or_else(|| Error::Spec(format!("outputs {:?} lack `{name}`", self.outputs)))
    }

    fn validate(&self) -> Result<[usize; 4]> {
        if self.width == 0 || self.height == 0 || self.width > 4096 || self.height > 4096 {
            return Err(Error::Spec(format!(
                "input size {}x{} is outside 1..=4096",
                self.width, self.height
            )));
        }
        if self
            .normalize
            .std
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(Error::Spec(format!(
                "normalize.std {:?} must be positive",
                self.normalize.std
            )));
        }
        let mut idx = [0; 4];
        for (slot, name) in idx.iter_mut().zip(OUTPUTS) {
            *slot = self.index_of(name)?;
        }
        Ok(idx)
    }
}

/// What the lane model sees in one frame. Conventions are those of [`crate::synth::Truth`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Vehicle offset from the lane centre in half lane widths: `-1` on the left boundary,
    /// `+1` on the right one.
    pub offset: f32,
    /// Heading relative to the lane, degrees; positive means the vehicle points to the right of
    /// the lane direction.
    pub heading_deg: f32,
    /// Road curvature, 1/m; positive bends right.
    pub curvature: f32,
    /// Lane width, metres.
    pub lane_width_m: f32,
    /// The ego lane's left and right boundaries as road-plane polynomials `[k0, k1, k2]`,
    /// `x(z) = k0 + k1*z + k2*z^2` (metres, `x` right, `z` forward, origin under the camera),
    /// derived from the four values above exactly as the renderer paints them.
    pub coefficients: [[f32; 3]; 2],
}

impl Prediction {
    /// Builds a prediction (and its boundary polynomials) from the four predicted values.
    pub fn from_values(offset: f32, heading_deg: f32, curvature: f32, lane_width_m: f32) -> Self {
        let half = lane_width_m / 2.0;
        let k1 = -heading_deg.to_radians().tan();
        let k2 = 0.5 * curvature;
        Prediction {
            offset,
            heading_deg,
            curvature,
            lane_width_m,
            coefficients: [-1.0f32, 1.0].map(|side| [(side - offset) * half, k1, k2]),
        }
    }
}

/// A lane model ready to run: [`Model`] plus [`LaneSpec`]. Cheap to clone, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct LaneModel {
    model: Model,
    spec: LaneSpec,
    index: [usize; 4],
}

impl LaneModel {
    /// The model shipped in this crate (`models/lane.onnx`, compiled into the binary; nothing is
    /// downloaded).
    pub fn bundled() -> Result<LaneModel> {
        let spec: LaneSpec = serde_json::from_str(BUNDLED_SPEC)
            .map_err(|e| Error::Spec(format!("bundled lane.json: {e}")))?;
        LaneModel::from_bytes(BUNDLED_ONNX, spec)
    }

    /// Loads `path` (an `.onnx` file) and its description from the same path with the extension
    /// `.json`.
    pub fn load(path: impl AsRef<Path>) -> Result<LaneModel> {
        let path = path.as_ref();
        let spec_path = path.with_extension("json");
        let text = std::fs::read_to_string(&spec_path).map_err(|e| io_error(&spec_path, e))?;
        let spec: LaneSpec = serde_json::from_str(&text)
            .map_err(|e| Error::Spec(format!("{}: {e}", spec_path.display())))?;
        let index = spec.validate()?;
        let model = Model::load(path, &spec.input_shape())?;
        LaneModel::checked(model, spec, index)
    }

    /// A model from ONNX bytes and a description.
    pub fn from_bytes(onnx: &[u8], spec: LaneSpec) -> Result<LaneModel> {
        let index = spec.validate()?;
        let model = Model::from_bytes(onnx, &spec.input_shape())?;
        LaneModel::checked(model, spec, index)
    }

    fn checked(model: Model, spec: LaneSpec, index: [usize; 4]) -> Result<LaneModel> {
        let want = spec.outputs.len();
        match model.output_shapes().first() {
            Some(shape) if shape.iter().product::<usize>() == want => {}
            other => {
                return Err(Error::Spec(format!(
                    "the model's first output has shape {other:?}, the description lists {want} values"
                )));
            }
        }
        Ok(LaneModel { model, spec, index })
    }

    /// The description.
    pub fn spec(&self) -> &LaneSpec {
        &self.spec
    }

    /// The underlying runner.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Decodes a JPEG/PNG and turns it into the model's normalised NCHW input.
    pub fn preprocess(&self, image: &[u8]) -> Result<Vec<f32>> {
        let small = preprocess::decode_resized(
            image,
            self.spec.width,
            self.spec.height,
            Resize::default(),
        )?;
        Ok(self.spec.normalize.to_nchw(&small))
    }

    /// Brings a decoded frame of any size to the model input (box filter) and normalises it.
    pub fn preprocess_frame(&self, frame: &Frame) -> Vec<f32> {
        let small = preprocess::fit(frame.clone(), self.spec.width, self.spec.height);
        self.spec.normalize.to_nchw(&small)
    }

    /// Runs the model on an already preprocessed input.
    pub fn predict_tensor(&self, input: &[f32]) -> Result<Prediction> {
        let outputs = self.model.run(input)?;
        let out = outputs
            .first()
            .ok_or_else(|| Error::Inference("the model returned no output".into()))?;
        let value = |i: usize| -> Result<f32> {
            let v = *out.get(self.index[i]).ok_or_else(|| {
                Error::Inference(format!("output has {} values, expected more", out.len()))
            })?;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(Error::Inference(format!("output `{}` is {v}", OUTPUTS[i])))
            }
        };
        Ok(Prediction::from_values(
            value(0)?,
            value(1)?,
            value(2)?,
            value(3)?,
        ))
    }

    /// Decodes, preprocesses and predicts one encoded image.
    pub fn predict_image(&self, image: &[u8]) -> Result<Prediction> {
        self.predict_tensor(&self.preprocess(image)?)
    }

    /// Predicts from a decoded RGB frame of any size.
    pub fn predict_frame(&self, frame: &Frame) -> Result<Prediction> {
        self.predict_tensor(&self.preprocess_frame(frame))
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    let path: PathBuf = path.to_owned();
    if source.kind() == std::io::ErrorKind::NotFound {
        Error::ModelNotFound { path }
    } else {
        Error::ModelIo { path, source }
    }
}
