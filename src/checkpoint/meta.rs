//! The schemas of what a fine-tune writes, read and written only through these types:
//! `catbert.json` ([`RunMeta`]), `metrics.json` (a list of [`EpochRecord`]) and the resumable
//! run state `run/state.json` ([`RunState`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::bootstrap::RowOutcomes;
use crate::metrics::{Evaluation, Metric};
use crate::rng::Rng;

/// The `catbert.json` schema this build writes. Files without a version are version 1.
pub const SCHEMA_VERSION: u32 = 1;

/// Training hyperparameters. `Default` gives those of the PyTorch reference
/// (`transformers` Trainer defaults with the reference's batch size and learning rate).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Hyper {
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per optimizer step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Share of steps with linear warm-up (then linear decay to 0).
    pub warmup_ratio: f64,
    /// AdamW's decoupled weight decay (never on biases or LayerNorm weights).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    pub max_grad_norm: f64,
    /// Seed of the split, shuffling, dropout and the new head's initialisation.
    pub seed: u64,
    /// Rows per forward pass when evaluating.
    pub eval_batch_size: usize,
    /// What picks the best epoch.
    pub metric: Metric,
    /// Batches per length-sorted window when drawing batches (1 = plain random batches).
    pub bucket_window: usize,
    /// How each epoch's training rows are drawn.
    #[serde(skip_serializing_if = "Sampler::is_random")]
    pub sampler: Sampler,
    /// Label smoothing ε of the training loss (0 = off), as `torch.nn.CrossEntropyLoss`'s.
    #[serde(skip_serializing_if = "is_zero")]
    pub label_smoothing: f64,
    /// Layer-wise learning-rate decay (1 = off): the head and pooler train at the learning
    /// rate, each encoder layer below at this factor times the layer above it, the embeddings
    /// last.
    #[serde(skip_serializing_if = "is_one")]
    pub layer_lr_decay: f64,
    /// Epochs whose selection metric differs from the best so far by at most this many
    /// standard errors of the difference (paired bootstrap on the selecting rows) count as
    /// tied, and the tie-breaks decide (0 = only exact ties, as the reference).
    #[serde(skip_serializing_if = "is_zero")]
    pub near_tie: f64,
}

// Settings at their default are left out of the JSON, so runs saved before they existed keep
// their fingerprint (and resume).
fn is_zero(x: &f64) -> bool {
    *x == 0.0
}
fn is_one(x: &f64) -> bool {
    *x == 1.0
}

impl Default for Hyper {
    fn default() -> Self {
        Self {
            epochs: 2,
            batch_size: 32,
            lr: 5e-5,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            seed: 42,
            eval_batch_size: 64,
            metric: Metric::F1Min,
            bucket_window: 1,
            sampler: Sampler::Random,
            label_smoothing: 0.0,
            layer_lr_decay: 1.0,
            near_tie: 0.0,
        }
    }
}

/// How each epoch's training rows are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// Every training row once per epoch, in random order (the reference).
    #[default]
    Random,
    /// As many rows per epoch as there are training rows, drawn with replacement with every
    /// class equally likely (`torch.utils.data.WeightedRandomSampler` with weights 1 / count of
    /// the row's class): small classes are seen more often, large ones less.
    Balanced,
}

impl Sampler {
    /// The name in configs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Sampler::Random => "random",
            Sampler::Balanced => "balanced",
        }
    }
    fn is_random(&self) -> bool {
        *self == Sampler::Random
    }
}

/// How classes are weighted in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    /// `n / (classes · count_c)`, counted on the rows trained on.
    #[default]
    Balanced,
    /// Every class weighs 1.
    None,
}

impl ClassWeights {
    /// The name in configs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ClassWeights::Balanced => "balanced",
            ClassWeights::None => "none",
        }
    }
}

/// Seconds spent in each phase of the training steps of one epoch.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct PhaseSeconds {
    /// Batch preparation, forward pass and loss.
    pub forward: f64,
    /// Backpropagation.
    pub backward: f64,
    /// Gradient clipping and the AdamW update.
    pub optimizer: f64,
}

/// The record of one epoch, as written to `metrics.json` and `catbert.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Optimizer steps in this epoch.
    pub steps: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Wall time of the training steps.
    pub train_seconds: f64,
    /// Training throughput.
    pub train_samples_per_s: f64,
    /// The learning rate of the epoch's last step.
    pub learning_rate_end: f64,
    /// Where the training time went (host clock; on a GPU, queued work lands in later phases).
    pub phase_seconds: PhaseSeconds,
    /// Metrics on the stratified hold-out, if there is one.
    pub holdout: Option<Evaluation>,
    /// Metrics on the labelled evaluation rows, if given.
    pub eval: Option<Evaluation>,
    /// The training loss of every optimizer step of the epoch, in order (empty in runs
    /// written before it was kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_losses: Vec<f32>,
    /// The standard error of the difference of the selection metric between this epoch and
    /// the best one before it, by paired bootstrap on the selecting rows (none for the first
    /// epoch and in runs written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_se: Option<f64>,
}

impl EpochRecord {
    /// The evaluation that selects the best epoch: the hold-out, else the evaluation rows.
    pub fn selection(&self) -> Option<&Evaluation> {
        self.holdout.as_ref().or(self.eval.as_ref())
    }
}

/// Counters and history saved after every epoch so an interrupted run continues exactly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// Identifies the run's settings and data; resuming with different ones is refused.
    pub fingerprint: String,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Optimizer steps taken.
    pub optimizer_steps: usize,
    /// The dropout generator after the last finished epoch.
    pub dropout_rng: Rng,
    /// One record per finished epoch.
    pub history: Vec<EpochRecord>,
    /// The epoch whose weights are the checkpoint.
    pub best_epoch: Option<usize>,
    /// Its score by the selection metric.
    pub best_score: Option<f64>,
    /// How it won when it tied with an earlier epoch on the selection metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_reason: Option<String>,
    /// Why the run stopped before its last epoch (early stopping), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// The best epoch's outcome on every selecting row, to test later epochs' differences
    /// against (absent in runs saved before it was kept: those compare exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_rows: Option<RowOutcomes>,
}

/// The `args` section of `catbert.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RecordedArgs {
    /// Training hyperparameters.
    pub hyper: Hyper,
    /// Token limit per text.
    pub max_len: usize,
    /// Share of training rows held out.
    pub val_split: f64,
    /// Early-stopping patience, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
}

/// `catbert.json`: how a checkpoint was made and how it scored. Every field has a default so
/// a hand-written file with only `text_column` still reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RunMeta {
    /// Schema version of this file ([`SCHEMA_VERSION`] when written by this build).
    pub schema_version: u32,
    /// The catbert version that wrote it.
    pub catbert_version: String,
    /// Where the base model came from.
    pub base_model: String,
    /// The text column of the training data (and the default for `catbert infer`).
    pub text_column: String,
    /// The label column of the training data.
    pub label_column: String,
    /// The label column of the evaluation rows.
    pub eval_label_column: String,
    /// Class names in index order.
    pub labels: Vec<String>,
    /// Loss weight of each class.
    pub class_weights: Vec<f32>,
    /// How the class weights were chosen.
    pub class_weight_mode: ClassWeights,
    /// The training file, when trained from one.
    pub train_file: Option<PathBuf>,
    /// The evaluation file, if any.
    pub eval_file: Option<PathBuf>,
    /// The settings of the run.
    pub args: RecordedArgs,
    /// The device it trained on.
    pub device: String,
    /// The compute precision.
    pub precision: String,
    /// One record per finished epoch.
    pub epochs: Vec<EpochRecord>,
    /// The epoch whose weights are in the folder.
    pub best_epoch: Option<usize>,
    /// Its score by `metric`.
    pub best_score: Option<f64>,
    /// How it won when it tied with an earlier epoch on `metric`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_reason: Option<String>,
    /// The selection metric.
    pub metric: Metric,
    /// Why the run stopped before its last epoch, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// catbert's own GPU kernels that failed their first-use self-check in this run (candle's
    /// composed ops ran instead), one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_fallbacks: Vec<String>,
}

impl Default for RunMeta {
    fn default() -> Self {
        Self {
            schema_version: 1,
            catbert_version: String::new(),
            base_model: String::new(),
            text_column: String::new(),
            label_column: String::new(),
            eval_label_column: String::new(),
            labels: Vec::new(),
            class_weights: Vec::new(),
            class_weight_mode: ClassWeights::default(),
            train_file: None,
            eval_file: None,
            args: RecordedArgs::default(),
            device: String::new(),
            precision: String::new(),
            epochs: Vec::new(),
            best_epoch: None,
            best_score: None,
            best_reason: None,
            metric: Metric::F1Min,
            stopped_early: None,
            kernel_fallbacks: Vec::new(),
        }
    }
}

impl RunMeta {
    /// Read and check `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let meta: RunMeta = read_json(path)?;
        if meta.schema_version > SCHEMA_VERSION {
            return Err(Error::BadConfig {
                path: path.to_path_buf(),
                reason: format!(
                    "schema version {} is newer than this catbert reads ({SCHEMA_VERSION}); upgrade catbert",
                    meta.schema_version
                ),
            });
        }
        Ok(meta)
    }

    /// The text column, if recorded.
    pub fn text_column(&self) -> Option<&str> {
        Some(self.text_column.as_str()).filter(|c| !c.is_empty())
    }

    /// The record of the kept epoch.
    pub fn best_record(&self) -> Option<&EpochRecord> {
        let best = self.best_epoch?;
        self.epochs.iter().find(|r| r.epoch == best)
    }
}

/// Parse the JSON file at `path` into `T`, naming the file in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::FileNotFound {
            path: path.to_path_buf(),
        },
        _ => Error::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    serde_json::from_str(&text).map_err(|e| Error::BadConfig {
        path: path.to_path_buf(),
        reason: format!("invalid JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_written_meta_reads_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catbert.json");
        std::fs::write(&path, r#"{"text_column": "desc"}"#).unwrap();
        let meta = RunMeta::read(&path).unwrap();
        assert_eq!(meta.text_column(), Some("desc"));
        assert_eq!(meta.schema_version, 1);
        std::fs::write(&path, r#"{"schema_version": 99}"#).unwrap();
        let err = RunMeta::read(&path).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "schema version 99 is newer than this catbert reads (1); upgrade catbert"
            ),
            "{err}"
        );
    }

    #[test]
    fn meta_round_trips() {
        let meta = RunMeta {
            labels: vec!["a".into(), "b".into()],
            best_epoch: Some(2),
            ..RunMeta::default()
        };
        let json = serde_json::to_string(&meta).unwrap();
        assert_eq!(serde_json::from_str::<RunMeta>(&json).unwrap(), meta);
    }
}
