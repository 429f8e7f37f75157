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
/// The run state's commit file inside [`RUN_DIR`].
pub const STATE_JSON: &str = "state.json";
/// Environment variable of a test-only crash point: `between-state-files@N` aborts the process
/// after epoch N's weights file is written and before `state.json` names it.
pub const CRASH_HOOK: &str = "CATBERT_TEST_CRASH";

/// `run/state.json`: the run state plus the weights file it belongs to.
#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    #[serde(flatten)]
    state: RunState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weights_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weights_checksum: Option<String>,
}

/// A fast 64-bit checksum of `bytes` (FNV-1a over 8-byte words, then the tail), as hex.
fn checksum(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(0x100_0000_01b3);
        h ^= h >> 29;
    }
    for &b in words.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}-{}", bytes.len())
}

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

    /// Save the resumable state: parameters (`p.NAME`) and optimizer tensors in a weights file
    /// of this epoch's own name, then `run/state.json` naming it with its checksum. The JSON's
    /// rename is the one commit point: a kill before it leaves the previous state whole (its
    /// weights file is deleted only after the commit), a kill after it the new one.
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
        let name = format!("state-{:04}.safetensors", state.epochs_done);
        let bytes = safetensors_bytes(&run.join(&name), &all)?;
        write_bytes_atomic(&run.join(&name), &bytes)?;
        let crash_at = format!("between-state-files@{}", state.epochs_done);
        if std::env::var_os(CRASH_HOOK).is_some_and(|v| v.to_string_lossy() == crash_at) {
            std::process::abort(); // tests: a kill between the two writes
        }
        let file = StateFile {
            state: state.clone(),
            weights_file: Some(name.clone()),
            weights_checksum: Some(checksum(&bytes)),
        };
        write_json(&run.join(STATE_JSON), &file)?;
        // Older weights files are garbage once the JSON names the new one.
        if let Ok(entries) = std::fs::read_dir(&run) {
            for entry in entries.flatten() {
                let n = entry.file_name().to_string_lossy().into_owned();
                if n.ends_with(".safetensors") && n != name {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Delete the run state (after a successful run, when it is not to be kept).
    pub fn remove_state(&self) -> Result<()> {
        let run = self.dir.join(RUN_DIR);
        match std::fs::remove_dir_all(&run) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Write {
                path: run,
                reason: format!("cannot delete the run state: {e}"),
            }),
            _ => Ok(()),
        }
    }

    /// `metrics.json`: one entry per epoch so far.
    pub fn write_metrics(&self, history: &[EpochRecord]) -> Result<()> {
        write_json(&self.dir.join("metrics.json"), history)
    }

    /// The saved run state, if a previous run left one: (parameters, optimizer tensors, state).
    /// A state whose weights file is missing or does not match the checksum in `state.json`
    /// is refused.
    pub fn read_state(&self) -> Result<Option<SavedState>> {
        let run = self.dir.join(RUN_DIR);
        let json_path = run.join(STATE_JSON);
        if !json_path.is_file() {
            return Ok(None);
        }
        let file: StateFile = read_json(&json_path)?;
        let state = file.state;
        // Files of catbert before the checksum: one fixed weights file name.
        let name = file
            .weights_file
            .unwrap_or_else(|| "state.safetensors".into());
        let weights_path = run.join(&name);
        let torn = |why: &str| {
            Error::BadConfig {
            path: json_path.clone(),
            reason: format!(
                "the run state is torn: {name} {why}; the checkpoint in {} is intact, but this run cannot be resumed (start afresh with `overwrite`)",
                self.dir.display()
            ),
        }
        };
        let bytes = match std::fs::read(&weights_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(torn("is missing")),
            Err(source) => {
                return Err(Error::Io {
                    path: weights_path,
                    source,
                })
            }
        };
        if file.weights_checksum.is_some_and(|c| c != checksum(&bytes)) {
            return Err(torn("does not match the checksum in state.json"));
        }
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
    write_bytes_atomic(path, &safetensors_bytes(path, tensors)?)
}

/// The bytes [`write_safetensors`] writes (`path` names errors).
fn safetensors_bytes(path: &Path, tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
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
    safetensors::serialize(sorted.iter().map(|(n, t)| (*n, t)), Some(metadata)).map_err(|e| {
        Error::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(|e| e.to_string())?;
        std::io::Write::write_all(w, b"\n").map_err(|e| e.to_string())
    })
}
