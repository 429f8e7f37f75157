//! Checkpoints in Hugging Face layout: finding the files of a model folder, reading the
//! weights, and building the classifier from them.

pub mod meta;
pub mod save;
pub mod source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use self::meta::RunMeta;

use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::model::{BertClassifier, LoadReport, ModelParams, ParamStore};
use crate::tokenize::{TextEncoder, TokenizerFiles};

pub use save::{CheckpointWriter, SavedState};
pub use source::{HubSettings, ModelFolder, ModelRef, RegistryResolver, Resolver, Selector};

/// Token limit per text when none is asked for (capped by the model's positions).
pub const DEFAULT_MAX_LEN: usize = 128;

/// The catbert metadata file written beside a fine-tuned checkpoint.
pub const META_FILE: &str = "catbert.json";

/// A model folder whose required files have been found and whose config has been parsed.
pub struct Checkpoint {
    /// The folder.
    pub dir: PathBuf,
    /// `config.json`, parsed.
    pub config: BertConfig,
    /// `config.json` as read, so saving keeps keys we do not interpret.
    pub raw_config: Value,
    /// The safetensors file(s).
    pub weight_files: Vec<PathBuf>,
    /// The tokenizer.
    pub tokenizer_files: TokenizerFiles,
    /// `catbert.json`, when this checkpoint was written by catbert.
    pub meta: Option<RunMeta>,
}

/// A classifier ready to run, with its class names.
pub struct LoadedClassifier {
    /// The model.
    pub model: BertClassifier,
    /// Class names in index order.
    pub labels: Vec<String>,
    /// Its parameters, by name.
    pub params: ModelParams,
    /// Which tensors were missing, unused or mis-shaped.
    pub report: LoadReport,
}

impl Checkpoint {
    /// Find config, weights and tokenizer in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let not_model = |reason: &str| Error::NotAModel {
            path: dir.to_path_buf(),
            reason: reason.to_string(),
        };
        if !dir.is_dir() {
            return Err(Error::FileNotFound {
                path: dir.to_path_buf(),
            });
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(not_model("no config.json"));
        }
        let (config, raw_config) = BertConfig::from_file(&config_path)?;
        let weight_files = if dir.join("model.safetensors").is_file() {
            vec![dir.join("model.safetensors")]
        } else if dir.join("model.safetensors.index.json").is_file() {
            source::shard_files(&dir.join("model.safetensors.index.json"))?
                .into_iter()
                .map(|f| dir.join(f))
                .collect()
        } else if dir.join("pytorch_model.bin").is_file() {
            return Err(not_model(
                "only pytorch_model.bin found; catbert reads safetensors (convert with transformers: model.save_pretrained(dir, safe_serialization=True))",
            ));
        } else {
            return Err(not_model("no model.safetensors"));
        };
        let tokenizer_files = TokenizerFiles::in_folder(dir)
            .ok_or_else(|| not_model("no tokenizer.json or vocab.txt"))?;
        let meta_path = dir.join(META_FILE);
        let meta = if meta_path.is_file() {
            Some(RunMeta::read(&meta_path)?)
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            raw_config,
            weight_files,
            tokenizer_files,
            meta,
        })
    }

    /// The text column recorded in `catbert.json`, if any.
    pub fn text_column(&self) -> Option<&str> {
        self.meta.as_ref()?.text_column()
    }

    /// The tokenizer for a `max_len` the caller asked for: `None` truncates at
    /// `min(128, max_position_embeddings)`; more than the model's positions is refused.
    pub fn text_encoder_for(&self, max_len: Option<usize>) -> Result<TextEncoder> {
        let positions = self.config.max_position_embeddings;
        match max_len {
            Some(n) if n > positions => Err(Error::Usage(format!(
                "`max_len` {n} is more than the model's {positions} positions (max_position_embeddings in {}); use at most {positions}",
                self.dir.join("config.json").display()
            ))),
            Some(n) => self.text_encoder(n),
            None => self.text_encoder(DEFAULT_MAX_LEN),
        }
    }

    /// The tokenizer, truncating at `min(max_len, max_position_embeddings)`.
    pub fn text_encoder(&self, max_len: usize) -> Result<TextEncoder> {
        let max_len = max_len.min(self.config.max_position_embeddings);
        TextEncoder::load(&self.tokenizer_files, max_len, self.config.vocab_size)
    }

    /// Every tensor of every weights file, on the CPU, keyed by the file's names.
    pub fn read_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut all = HashMap::new();
        for path in &self.weight_files {
            let bytes = std::fs::read(path).map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => Error::FileNotFound { path: path.clone() },
                _ => Error::Io {
                    path: path.clone(),
                    source,
                },
            })?;
            // Validate the header ourselves first: its error names the problem plainly.
            safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::CorruptWeights {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let tensors =
                candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
                    Error::CorruptWeights {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?;
            all.extend(tensors);
        }
        Ok(all)
    }

    /// The fine-tuned classifier for inference: every tensor must be present and fit the config.
    pub fn load_classifier(&self, device: &Device, dtype: DType) -> Result<LoadedClassifier> {
        let tensors = self.read_tensors()?;
        let weights_path = self.weight_files[0].clone();
        let num_labels = match tensors.get("classifier.weight") {
            Some(w) => w.dim(0).map_err(|e| Error::CorruptWeights {
                path: weights_path.clone(),
                reason: e.to_string(),
            })?,
            None => {
                return Err(Error::NotAModel {
                    path: self.dir.clone(),
                    reason: "no classifier.* tensors: this is a base model, not a fine-tuned classifier (fine-tune it first with `catbert finetune`)".into(),
                })
            }
        };
        let labels = if self.config.id2label.len() == num_labels {
            self.config.id2label.clone()
        } else if self.config.id2label.is_empty() {
            (0..num_labels).map(|i| format!("LABEL_{i}")).collect()
        } else {
            return Err(Error::BadConfig {
                path: self.dir.join("config.json"),
                reason: format!(
                    "id2label names {} classes but classifier.weight has {num_labels} rows",
                    self.config.id2label.len()
                ),
            });
        };
        let loaded = self.build(tensors, device, (dtype, dtype), num_labels, false, 0)?;
        if let Some(issue) = loaded.report.mismatched.first() {
            return Err(Error::ShapeMismatch {
                path: weights_path,
                name: issue.name.clone(),
                found: issue.found.clone(),
                expected: issue.expected.clone(),
            });
        }
        if !loaded.report.missing.is_empty() {
            return Err(Error::MissingTensors {
                path: weights_path,
                names: loaded.report.missing.join(", "),
            });
        }
        Ok(LoadedClassifier { labels, ..loaded })
    }

    /// A trainable classifier with `num_labels` classes, initialised from this checkpoint (a base
    /// model or a classifier) or from `tensors` when resuming. A missing or differently sized
    /// `classifier.*` is initialised fresh (seeded), as transformers does for a new head; any
    /// other missing or mis-shaped tensor is an error.
    pub fn load_for_training(
        &self,
        device: &Device,
        dtype: DType,
        compute: DType,
        labels: &[String],
        seed: u64,
        tensors: Option<HashMap<String, Tensor>>,
    ) -> Result<LoadedClassifier> {
        let mut tensors = match tensors {
            Some(t) => t,
            None => self.read_tensors()?,
        };
        let head_rows = tensors.get("classifier.weight").and_then(|w| w.dim(0).ok());
        if head_rows.is_some_and(|rows| rows != labels.len()) {
            tensors.retain(|name, _| !name.starts_with("classifier."));
        }
        let weights_path = self.weight_files[0].clone();
        let loaded = self.build(tensors, device, (dtype, compute), labels.len(), true, seed)?;
        if let Some(issue) = loaded.report.mismatched.first() {
            return Err(Error::ShapeMismatch {
                path: weights_path,
                name: issue.name.clone(),
                found: issue.found.clone(),
                expected: issue.expected.clone(),
            });
        }
        let missing: Vec<&str> = loaded
            .report
            .missing
            .iter()
            .map(String::as_str)
            .filter(|n| !n.starts_with("classifier.") && !n.starts_with("bert.pooler."))
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingTensors {
                path: weights_path,
                names: missing.join(", "),
            });
        }
        Ok(LoadedClassifier {
            labels: labels.to_vec(),
            ..loaded
        })
    }

    fn build(
        &self,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        (dtype, compute): (DType, DType),
        num_labels: usize,
        trainable: bool,
        seed: u64,
    ) -> Result<LoadedClassifier> {
        let store =
            ParamStore::new(tensors, device, dtype, trainable, seed).with_compute_dtype(compute);
        let model = BertClassifier::load(&store, &self.config, num_labels).map_err(|source| {
            Error::Candle {
                context: format!("building the model from {}", self.dir.display()),
                source,
            }
        })?;
        let (params, report) = store.finish();
        Ok(LoadedClassifier {
            model,
            labels: Vec::new(),
            params,
            report,
        })
    }
}
