//! The library's one error type. Variants carry the context a user needs to fix the input
//! (file, row, column) so a front end can print a single line.
//!
//! Messages never name a command-line flag: a setting is named by its config key in
//! backticks (`` `batch_size` ``), the name it has in [`crate::train::FinetuneConfig`], TOML
//! files and JSON. Each front end renders those names its own way with [`Error::render_with`]
//! (the CLI as `--batch-size`), and maps [`Error::kind`] to an exit code or an HTTP status.

use std::path::PathBuf;

/// Config keys that messages may name in backticks; [`Error::render_with`] rewrites them.
pub const SETTING_KEYS: &[&str] = &[
    "train",
    "eval",
    "text_col",
    "label_col",
    "eval_label_col",
    "model",
    "epochs",
    "metric",
    "batch_size",
    "lr",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "max_len",
    "class_weights",
    "val_split",
    "seed",
    "out",
    "eval_batch_size",
    "bucket_window",
    "sampler",
    "label_smoothing",
    "layer_lr_decay",
    "near_tie",
    "patience",
    "keep_state",
    "overwrite",
    "resume",
    "format",
    "top_k",
    "precision",
    "device",
    "threads",
    "tracking_uri",
    "experiment",
    "run_name",
    "register",
    "client",
    "promote_if",
    "promote_if_better",
    "tracking_optional",
    "no_tracking",
    "log_every",
    "feedback",
    "max_batch_tokens",
    "max_batch_requests",
    "max_concurrent_requests",
    "max_client_batch_size",
    "payload_limit",
    "http_workers",
    "poll",
    "shutdown_timeout",
    "file",
    "review_out",
    "key_cols",
];

/// What kind of failure an error is, for front ends to map to exit codes or HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's data, files or settings are wrong (exit 2, HTTP 4xx).
    Input,
    /// The machine cannot do it now: GPU memory, disk, network, permissions (exit 1, HTTP 503).
    Resources,
    /// Numerical failure or a bug (exit 1, HTTP 500).
    Internal,
}

/// Everything the library can fail with.
#[allow(missing_docs)] // each variant's message is its documentation
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

    #[error("{path}: unknown file extension {ext:?} (expected .csv, .tsv, .jsonl, .ndjson, .json or .parquet; or pass `format`)")]
    UnknownFormat { path: PathBuf, ext: String },

    #[error(
        "{path}: line {line}: not valid UTF-8 (byte offset {offset}); re-encode the file as UTF-8"
    )]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        offset: usize,
    },

    #[error("{path}: line {line}{}: {reason}", column.map(|c| format!(", column {c}")).unwrap_or_default())]
    BadLine {
        path: PathBuf,
        line: usize,
        column: Option<usize>,
        reason: String,
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

    /// A setting (or a combination of settings) that cannot work; the message names settings
    /// in backticks.
    #[error("{0}")]
    Usage(String),

    #[error("training diverged: the loss is {loss} at epoch {epoch}, step {step}; {kept}; try a lower `lr`")]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
        kept: String,
    },

    #[error("{0}")]
    Device(String),

    /// The device ran out of memory. `batch_size` is the setting that sized the failing batch
    /// when the caller knows it (see [`with_batch_size`]).
    #[error("{}", oom_message(*.batch_size, context))]
    OutOfMemory {
        context: String,
        batch_size: Option<usize>,
    },

    /// Another error with advice for the user appended.
    #[error("{inner}; {hint}")]
    WithHint { inner: Box<Error>, hint: String },

    #[error("{path}: registry lock {detail}")]
    LockTimeout { path: PathBuf, detail: String },

    /// The tracking server cannot be reached or failed; the message names its URI.
    #[error("{0}")]
    Tracking(String),

    /// The tracking server refused our credentials; the message names the variables to set.
    #[error("{0}")]
    TrackingAuth(String),

    /// An unknown registered model, version or alias, or a registry request that cannot work.
    #[error("{0}")]
    Registry(String),

    /// A failure that is catbert's own fault (a bug), with what it was doing.
    #[error("internal error: {0}")]
    Internal(String),

    #[error("{context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
}

fn oom_message(batch_size: Option<usize>, context: &str) -> String {
    match batch_size {
        Some(n) => format!(
            "out of GPU memory with `batch_size` {n}; try `batch_size` {}",
            (n / 2).max(1)
        ),
        None => format!("out of GPU memory while {context}"),
    }
}

impl Error {
    /// The kind of failure, for exit codes and HTTP statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::WithHint { inner, .. } => inner.kind(),
            Error::Io { .. }
            | Error::Write { .. }
            | Error::Hub { .. }
            | Error::OutOfMemory { .. }
            | Error::LockTimeout { .. }
            | Error::Tracking(_) => ErrorKind::Resources,
            Error::Candle { .. } | Error::Diverged { .. } | Error::Internal(_) => {
                ErrorKind::Internal
            }
            _ => ErrorKind::Input,
        }
    }

    /// The message with every backticked setting key rewritten by `name` (the CLI passes
    /// `|k| format!("--{}", k.replace('_', "-"))`). Other backticked words are left alone.
    pub fn render_with(&self, name: &dyn Fn(&str) -> String) -> String {
        rename_settings(&self.to_string(), name)
    }
}

/// Rewrite `` `key` `` for every key of [`SETTING_KEYS`] in `text` with `name(key)`.
pub fn rename_settings(text: &str, name: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('`') {
            Some(close) if SETTING_KEYS.contains(&&after[..close]) => {
                out.push_str(&name(&after[..close]));
                rest = &after[close + 1..];
            }
            _ => {
                out.push('`');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a candle error is the device running out of memory (CUDA's
/// `CUDA_ERROR_OUT_OF_MEMORY`, or an allocation failure message).
pub(crate) fn is_out_of_memory(e: &candle_core::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("OUT_OF_MEMORY") || text.contains("out of memory")
}

/// Attach a short description of what was being done to a candle error. This is the one
/// boundary where candle errors enter the library: running out of device memory becomes
/// [`Error::OutOfMemory`] here.
pub trait CandleContext<T> {
    /// Wrap the error with `context`.
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| {
            if is_out_of_memory(&source) {
                Error::OutOfMemory {
                    context: context.to_string(),
                    batch_size: None,
                }
            } else {
                Error::Candle {
                    context: context.to_string(),
                    source,
                }
            }
        })
    }
}

/// Name the batch size in an out-of-memory error, so the message can say what to try.
pub fn with_batch_size<T>(result: Result<T>, batch_size: usize) -> Result<T> {
    result.map_err(|e| match e {
        Error::OutOfMemory { context, .. } => Error::OutOfMemory {
            context,
            batch_size: Some(batch_size),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_is_recognised_at_the_candle_boundary() {
        let cuda_oom: candle_core::Result<()> = Err(candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        ));
        let err = with_batch_size(cuda_oom.ctx("forward pass"), 64).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Resources);
        assert_eq!(
            err.to_string(),
            "out of GPU memory with `batch_size` 64; try `batch_size` 32"
        );
        let other: Result<()> = Err(Error::Usage("x".into()));
        assert_eq!(with_batch_size(other, 64).unwrap_err().to_string(), "x");
    }

    #[test]
    fn settings_are_renamed_and_other_backticks_kept() {
        let flag = |k: &str| format!("--{}", k.replace('_', "-"));
        assert_eq!(
            rename_settings("`val_split` 0 needs `eval`; see `catbert finetune`", &flag),
            "--val-split 0 needs --eval; see `catbert finetune`"
        );
        assert_eq!(rename_settings("a ` b", &flag), "a ` b");
    }
}
