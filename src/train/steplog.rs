//! The step log, for comparing a run step by step with another tool (`scripts/lockstep.py`):
//! with `CATBERT_STEP_LOG=FILE` set, the training loop writes JSON Lines to FILE — first the
//! run's inputs (the training rows' token ids and class indices, class weights, schedule,
//! optimizer settings, which parameters decay, label smoothing, each parameter's factor on the
//! learning rate), then one line per optimizer step (epoch, step,
//! the training rows of its batch, loss, gradient norm before clipping, learning rate).
//! Diagnostics only: writing it never changes the run.

use std::io::Write;

use serde_json::json;

use super::TrainData;
use crate::error::{Error, Result};

/// An open step log.
pub(super) struct StepLog {
    out: std::io::BufWriter<std::fs::File>,
    path: String,
}

/// The run's inputs, as the step log's first line records them.
pub(super) struct Inputs<'a> {
    pub data: &'a TrainData,
    pub lr: f64,
    pub warmup: usize,
    pub total_steps: usize,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub decayed: Vec<&'a str>,
    pub label_smoothing: f64,
    /// Each parameter's factor on the learning rate (layer-wise decay).
    pub lr_scales: Vec<(&'a str, f64)>,
}

impl StepLog {
    /// The log `CATBERT_STEP_LOG` names, if it is set, with its first line written.
    pub(super) fn from_env(inputs: Inputs) -> Result<Option<Self>> {
        let Some(path) = std::env::var_os("CATBERT_STEP_LOG") else {
            return Ok(None);
        };
        let path = path.to_string_lossy().into_owned();
        let file = std::fs::File::create(&path)
            .map_err(|e| Error::Usage(format!("CATBERT_STEP_LOG: {path}: {e}")))?;
        let mut log = Self {
            out: std::io::BufWriter::new(file),
            path,
        };
        let d = inputs.data;
        log.line(&json!({
            "train_ids": d.train.ids,
            "train_labels": d.train.labels,
            "class_weights": d.class_weights,
            "lr": inputs.lr,
            "warmup_steps": inputs.warmup,
            "total_steps": inputs.total_steps,
            "weight_decay": inputs.weight_decay,
            "max_grad_norm": inputs.max_grad_norm,
            "decayed": inputs.decayed,
            "label_smoothing": inputs.label_smoothing,
            "lr_scales": inputs.lr_scales.into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        }))?;
        Ok(Some(log))
    }

    /// One optimizer step.
    pub(super) fn step(
        &mut self,
        epoch: usize,
        step: usize,
        rows: &[usize],
        loss: f64,
        grad_norm: f64,
        lr: f64,
    ) -> Result<()> {
        self.line(&json!({
            "epoch": epoch, "step": step, "rows": rows,
            "loss": loss, "grad_norm": grad_norm, "lr": lr,
        }))
    }

    fn line(&mut self, value: &serde_json::Value) -> Result<()> {
        writeln!(self.out, "{value}")
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::Usage(format!("CATBERT_STEP_LOG: {}: {e}", self.path)))
    }
}
