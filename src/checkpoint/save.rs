//! Writing checkpoints: the best epoch in Hugging Face layout at the top of the output folder,
//! and the run state (weights, AdamW moments, counters) in `run/` for `--resume`.
//! Every file is written atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::checkpoint::meta::{read_json, EpochRecord, RunMeta, RunState};
use crate::checkpoint::{Checkpoint, META_FILE};
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, write_bytes_atomic};

/// Tokenizer files copied from the base model when present.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];
/// Run-state folder inside the output folder.
pub const RUN_DIR: &str = "run";

/// Writes the checkpoints of one training run into `dir`.
pub struct CheckpointWriter {
    dir: PathBuf,
    config: Value,
    tokenizer_sources: Vec<PathBuf>,
}

impl CheckpointWriter {
    /// Prepare `dir` (created if needed; must be writable) for a classifier fine-tuned from
    /// `base` with class names `labels`.
    pub fn new(dir: &Path, base: &Checkpoint, labels: &[String]) -> Result<Self> {
        let unwritable = |e: std::io::Error| Error::Write {
            path: dir.to_path_buf(),
            reason: format!("output folder is not writable: {e}"),
        };
        std::fs::create_dir_all(dir.join(RUN_DIR)).map_err(unwritable)?;
        let probe = dir.join(".catbert-write-probe");
        std::fs::write(&probe, b"").map_err(unwritable)?;
        let _ = std::fs::remove_file(&probe);

        let tokenizer_dir = base
            .tokenizer_files
            .main_path()
            .parent()
            .unwrap_or(&base.dir)
            .to_path_buf();
        let tokenizer_sources = TOKENIZER_FILES
            .iter()
            .map(|f| tokenizer_dir.join(f))
            .filter(|p| p.is_file())
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            config: classifier_config(&base.raw_config, labels),
            tokenizer_sources,
        })
    }

    /// The output folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write the classifier in Hugging Face layout plus `catbert.json`. The weights go first and
    /// `catbert.json` last, so a folder whose `catbert.json` names an epoch holds its weights.
    pub fn write_best(&self, tensors: &[(String, Tensor)], meta: &RunMeta) -> Result<()> {
        write_safetensors(&self.dir.join("model.safetensors"), tensors)?;
        write_json(&self.dir.join("config.json"), &self.config)?;
        for src in &self.tokenizer_sources {
            let name = src.file_name().expect("file name");
            let bytes = std::fs::read(src).map_err(|source| Error::Io {
                path: src.clone(),
                source,
            })?;
            write_bytes_atomic(&self.dir.join(name), &bytes)?;
        }
        write_json(&self.dir.join(META_FILE), meta)
    }

    /// Rewrite `catbert.json` alone (the weights stay as they are).
    pub fn write_meta(&self, meta: &RunMeta) -> Result<()> {
        write_json(&self.dir.join(META_FILE), meta)
    }

    /// Save the resumable state: parameters (`p.NAME`), optimizer tensors, and `state`.
    pub fn write_state(
        &self,
        params: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        state: &RunState,
    ) -> Result<()> {
        let mut all: Vec<(String, Tensor)> = params
            .iter()
            .map(|(n, t)| (format!("p.{n}"), t.clone()))
            .collect();
        all.extend(optimizer.iter().cloned());
        let run = self.dir.join(RUN_DIR);
        write_safetensors(&run.join("state.safetensors"), &all)?;
        write_json(&run.join("state.json"), state)
    }

    /// `metrics.json`: one entry per epoch so far.
    pub fn write_metrics(&self, history: &[EpochRecord]) -> Result<()> {
        write_json(&self.dir.join("metrics.json"), history)
    }

    /// The saved run state, if a previous run left one: (parameters, optimizer tensors, state).
    pub fn read_state(&self) -> Result<Option<SavedState>> {
        let run = self.dir.join(RUN_DIR);
        let (json_path, weights_path) = (run.join("state.json"), run.join("state.safetensors"));
        if !json_path.is_file() || !weights_path.is_file() {
            return Ok(None);
        }
        let state: RunState = read_json(&json_path)?;
        let bytes = std::fs::read(&weights_path).map_err(|source| Error::Io {
            path: weights_path.clone(),
            source,
        })?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            Error::CorruptWeights {
                path: weights_path.clone(),
                reason: e.to_string(),
            }
        })?;
        let mut params = HashMap::new();
        let mut optimizer = HashMap::new();
        for (name, t) in tensors {
            match name.strip_prefix("p.") {
                Some(p) => params.insert(p.to_string(), t),
                None => optimizer.insert(name, t),
            };
        }
        Ok(Some(SavedState {
            params,
            optimizer,
            state,
        }))
    }
}

/// What `run/` holds.
pub struct SavedState {
    /// Model parameters by name.
    pub params: HashMap<String, Tensor>,
    /// AdamW moments by name.
    pub optimizer: HashMap<String, Tensor>,
    /// Counters and history.
    pub state: RunState,
}

/// The base model's config, turned into a sequence classifier's.
fn classifier_config(base: &Value, labels: &[String]) -> Value {
    let mut config = base.as_object().cloned().unwrap_or_default();
    let id2label: Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), json!(l)))
        .collect();
    let label2id: Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), json!(i)))
        .collect();
    config.insert(
        "architectures".into(),
        json!(["BertForSequenceClassification"]),
    );
    config.insert("id2label".into(), Value::Object(id2label));
    config.insert("label2id".into(), Value::Object(label2id));
    config.insert("problem_type".into(), json!("single_label_classification"));
    config.remove("num_labels");
    config.remove("_name_or_path");
    Value::Object(config)
}

/// Safetensors with transformers' `format: pt` metadata; tensors in name order (deterministic).
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut sorted: Vec<(&str, Tensor)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t
            .to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.contiguous())
            .map_err(|e| Error::Write {
                path: path.to_path_buf(),
                reason: format!("tensor {name}: {e}"),
            })?;
        sorted.push((name.as_str(), t));
    }
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(sorted.iter().map(|(n, t)| (*n, t)), Some(metadata))
        .map_err(|e| Error::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    write_bytes_atomic(path, &bytes)
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(|e| e.to_string())?;
        std::io::Write::write_all(w, b"\n").map_err(|e| e.to_string())
    })
}
