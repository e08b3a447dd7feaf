//! [`Model`]: an ONNX network loaded, shape-fixed and optimised once with tract, then run from any
//! number of threads. tract is not a stable API, so none of its types leave this module.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

use crate::error::{Error, Result};

type Plan = TypedRunnableModel;
type State = TypedSimpleState;

/// An optimised ONNX model with one fixed `f32` input shape. Cheap to clone (shared plan);
/// `Send + Sync`, so one instance serves many tasks or threads at once.
#[derive(Clone)]
pub struct Model {
    inner: Arc<Inner>,
}

struct Inner {
    plan: Arc<Plan>,
    input_shape: Vec<usize>,
    output_shapes: Vec<Vec<usize>>,
    /// Idle execution states, reused so a run does not allocate its scratch buffers anew.
    states: Mutex<Vec<State>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("input_shape", &self.inner.input_shape)
            .field("output_shapes", &self.inner.output_shapes)
            .finish()
    }
}

impl Model {
    /// Loads the ONNX file at `path` for inputs of exactly `input_shape` (e.g. `[1, 3, 90, 160]`).
    pub fn load(path: impl AsRef<Path>, input_shape: &[usize]) -> Result<Model> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::ModelNotFound {
                    path: path.to_owned(),
                }
            } else {
                Error::ModelIo {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Model::from_bytes(&bytes, input_shape)
    }

    /// Loads an ONNX model from memory (a single-file model: weights inside, no external data)
    /// for inputs of exactly `input_shape`.
    pub fn from_bytes(bytes: &[u8], input_shape: &[usize]) -> Result<Model> {
        if input_shape.is_empty() || input_shape.contains(&0) {
            return Err(Error::ModelInvalid(format!(
                "input shape {input_shape:?} is empty or has a zero dimension"
            )));
        }
        let shape = input_shape.to_vec();
        let built = std::panic::catch_unwind(move || optimise(bytes, &shape));
        let plan = match built {
            Ok(result) => result.map_err(|e| Error::ModelInvalid(format!("{e:#}")))?,
            Err(_) => {
                return Err(Error::ModelInvalid(
                    "tract panicked while loading the model".into(),
                ));
            }
        };
        let model = plan.model();
        let outlets = model.output_outlets().map_err(invalid)?;
        let mut output_shapes = Vec::with_capacity(outlets.len());
        for outlet in outlets {
            let fact = model.outlet_fact(*outlet).map_err(invalid)?;
            let dims = fact.shape.as_concrete().ok_or_else(|| {
                Error::ModelInvalid(format!(
                    "output shape {:?} is not fixed by the input shape",
                    fact.shape
                ))
            })?;
            output_shapes.push(dims.to_vec());
        }
        Ok(Model {
            inner: Arc::new(Inner {
                plan,
                input_shape: input_shape.to_vec(),
                output_shapes,
                states: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The input shape the model was prepared for.
    pub fn input_shape(&self) -> &[usize] {
        &self.inner.input_shape
    }

    /// The shapes of the model's outputs, in graph order.
    pub fn output_shapes(&self) -> &[Vec<usize>] {
        &self.inner.output_shapes
    }

    /// Runs the model on `input` (row-major values of [`Model::input_shape`]) and returns every
    /// output flattened, in graph order.
    pub fn run(&self, input: &[f32]) -> Result<Vec<Vec<f32>>> {
        let expected: usize = self.inner.input_shape.iter().product();
        if input.len() != expected {
            return Err(Error::InputShape {
                expected: self.inner.input_shape.clone(),
                got: input.len(),
            });
        }
        let tensor = Tensor::from_shape(&self.inner.input_shape, input)
            .map_err(|e| Error::Inference(format!("{e:#}")))?;
        let idle = self.lock_states().pop();
        let mut state = match idle {
            Some(s) => s,
            None => self
                .inner
                .plan
                .spawn()
                .map_err(|e| Error::Inference(format!("{e:#}")))?,
        };
        let outputs = state
            .run(tvec!(tensor.into()))
            .map_err(|e| Error::Inference(format!("{e:#}")))?;
        self.lock_states().push(state);
        outputs
            .iter()
            .map(|t| {
                t.to_plain_array_view::<f32>()
                    .map(|v| v.iter().copied().collect())
                    .map_err(|e| Error::Inference(format!("output is not f32: {e:#}")))
            })
            .collect()
    }

    fn lock_states(&self) -> std::sync::MutexGuard<'_, Vec<State>> {
        // A poisoned pool only means another run panicked mid-way; the states in it are whole.
        self.inner
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn invalid(e: TractError) -> Error {
    Error::ModelInvalid(format!("{e:#}"))
}

fn optimise(bytes: &[u8], shape: &[usize]) -> TractResult<Arc<Plan>> {
    onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn model_is_send_and_sync() {
        assert_send_sync::<Model>();
    }

    #[test]
    fn missing_file_and_garbage_are_typed_errors() {
        let e = Model::load("/nonexistent/lane.onnx", &[1, 3, 4, 4]).unwrap_err();
        assert!(matches!(e, Error::ModelNotFound { .. }), "{e}");
        let e = Model::from_bytes(b"definitely not protobuf", &[1, 3, 4, 4]).unwrap_err();
        assert!(matches!(e, Error::ModelInvalid(_)), "{e}");
        let e = Model::from_bytes(&[], &[1, 3, 4, 4]).unwrap_err();
        assert!(matches!(e, Error::ModelInvalid(_)), "{e}");
        let e = Model::from_bytes(b"x", &[1, 0, 4, 4]).unwrap_err();
        assert!(matches!(e, Error::ModelInvalid(_)), "{e}");
    }
}
