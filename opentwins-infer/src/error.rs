//! The crate's error type: every failure of loading a model, decoding a frame or running
//! inference, typed so callers can branch on it.

use std::path::PathBuf;

/// What went wrong in `opentwins-infer`. Nothing in this crate panics on bad input (a missing or
/// corrupt model file, an undecodable image, a tensor of the wrong shape); it returns one of these.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model (or its sidecar) file does not exist.
    #[error("model file {path} not found")]
    ModelNotFound {
        /// The path that was tried.
        path: PathBuf,
    },
    /// Reading a model file failed for another reason (permissions, I/O).
    #[error("reading {path}: {source}")]
    ModelIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a model tract can load and optimise for the declared input (a corrupt
    /// file, an unsupported operator, an input shape the graph rejects).
    #[error("invalid model: {0}")]
    ModelInvalid(String),
    /// The model's sidecar description (`*.json`) is missing a field or inconsistent.
    #[error("invalid model description: {0}")]
    Spec(String),
    /// An input tensor does not have the shape the model was prepared for.
    #[error("input has {got} values, the model expects shape {expected:?} ({} values)", expected.iter().product::<usize>())]
    InputShape {
        /// The model's fixed input shape (NCHW).
        expected: Vec<usize>,
        /// How many values were given.
        got: usize,
    },
    /// The model ran but failed, or produced fewer outputs than its description promises.
    #[error("inference failed: {0}")]
    Inference(String),
    /// A frame payload is not valid base64.
    #[error("frame is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The bytes are neither JPEG nor PNG.
    #[error("frame is not a JPEG or PNG image (starts with {0})")]
    UnknownImageFormat(String),
    /// The image could not be decoded (truncated, corrupt, an unsupported pixel format, too big).
    #[error("decoding the {format} frame failed: {message}")]
    ImageDecode {
        /// `"jpeg"` or `"png"`.
        format: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// A twin property that should hold a frame has another shape.
    #[error("frame property: {0}")]
    FramePayload(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
