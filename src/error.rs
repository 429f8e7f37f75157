//! The library's one error type. Variants carry the context a user needs to fix the input
//! (file, row, column) so the CLI can print a single line; the CLI maps kinds to exit codes.

use std::path::PathBuf;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: file not found")]
    FileNotFound { path: PathBuf },

    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {reason}")]
    Write { path: PathBuf, reason: String },

    #[error("{path}: unknown file extension {ext:?} (expected .csv, .tsv, .jsonl, .ndjson, .json or .parquet; or pass --format)")]
    UnknownFormat { path: PathBuf, ext: String },

    #[error(
        "{path}: line {line}: not valid UTF-8 (byte offset {offset}); re-encode the file as UTF-8"
    )]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        offset: usize,
    },

    #[error("{path}: cannot parse as {format}: {reason}")]
    Parse {
        path: PathBuf,
        format: String,
        reason: String,
    },

    #[error("{path}: no column {column:?} (columns: {available})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: String,
    },

    #[error("{path}: row {row}, column {column:?}: {reason}")]
    BadValue {
        path: PathBuf,
        row: usize,
        column: String,
        reason: String,
    },

    #[error("{path}: {reason}")]
    BadData { path: PathBuf, reason: String },

    #[error("{path}: not a model folder: {reason}")]
    NotAModel { path: PathBuf, reason: String },

    #[error("{path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },

    #[error("{path}: corrupt or truncated safetensors file: {reason}")]
    CorruptWeights { path: PathBuf, reason: String },

    #[error("{path}: tensor {name} has shape {found:?}, the config expects {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error("{path}: missing tensors: {names}")]
    MissingTensors { path: PathBuf, names: String },

    #[error("{path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },

    #[error("model {id:?} (revision {revision}) is not in the Hugging Face cache at {cache} and HF_HUB_OFFLINE=1 forbids downloading it")]
    NotInCacheOffline {
        id: String,
        revision: String,
        cache: PathBuf,
    },

    #[error("model {id:?}: {reason}")]
    Hub { id: String, reason: String },

    #[error("{0}")]
    Usage(String),

    #[error("training diverged: the loss is {loss} at epoch {epoch}, step {step}; {kept}; try a lower --lr")]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
        kept: String,
    },

    #[error("{0}")]
    Device(String),

    #[error("out of GPU memory with {flag} {batch_size}; try {flag} {try_size}")]
    OutOfMemory {
        flag: String,
        batch_size: usize,
        try_size: usize,
    },

    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
}

impl Error {
    /// Usage and data errors (the user's input is wrong) exit 2, as clap does; anything else 1.
    pub fn is_input_error(&self) -> bool {
        !matches!(
            self,
            Error::Io { .. }
                | Error::Write { .. }
                | Error::Candle { .. }
                | Error::Hub { .. }
                | Error::Diverged { .. }
                | Error::OutOfMemory { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a short description of what was being done to a candle error.
pub trait CandleContext<T> {
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| Error::Candle {
            context: context.to_string(),
            source,
        })
    }
}
