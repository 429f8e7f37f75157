//! `config.json` of a BERT-family checkpoint in Hugging Face layout.
//!
//! We keep the raw JSON next to the parsed fields so that saving a fine-tuned checkpoint
//! preserves every key we do not interpret (transformers and TEI read them).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The activation of the feed-forward block, as named by transformers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum HiddenAct {
    /// Exact GELU, `x * Φ(x)` with the error function (transformers' `gelu`).
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation (`gelu_new`, also `gelu_pytorch_tanh`).
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// Rectified linear unit (`relu`).
    #[serde(rename = "relu")]
    Relu,
}

/// The fields of a BERT `config.json` that shape the model.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Model family (`model_type`), `bert` when absent; only `bert` is supported.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Number of token embeddings (`vocab_size`).
    pub vocab_size: usize,
    /// Hidden size of each layer (`hidden_size`).
    pub hidden_size: usize,
    /// Number of encoder layers (`num_hidden_layers`).
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`num_attention_heads`).
    pub num_attention_heads: usize,
    /// Width of the feed-forward block (`intermediate_size`).
    pub intermediate_size: usize,
    /// Activation of the feed-forward block (`hidden_act`), GELU when absent.
    #[serde(default = "default_act")]
    pub hidden_act: HiddenAct,
    /// Dropout on embeddings and sub-layer outputs (`hidden_dropout_prob`), 0.1 when absent.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (`attention_probs_dropout_prob`), 0.1 when absent.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// transformers' `classifier_dropout`; `None` means "use hidden_dropout_prob".
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// Number of position embeddings, the longest input (`max_position_embeddings`), 512 if absent.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Number of token-type (segment) embeddings (`type_vocab_size`), 2 when absent.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Epsilon of the LayerNorms (`layer_norm_eps`), 1e-12 when absent.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Id of the padding token (`pad_token_id`), 0 when absent.
    #[serde(default)]
    pub pad_token_id: usize,
    /// Kind of position embedding (`position_embedding_type`); only `absolute` is supported.
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    /// Standard deviation for initialising new weights (`initializer_range`); 0.02 when absent.
    #[serde(default)]
    pub initializer_range: Option<f64>,
    /// Class names by index; empty for a base (encoder-only) checkpoint.
    #[serde(skip)]
    pub id2label: Vec<String>,
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_pos_type() -> String {
    "absolute".into()
}

/// The model types whose checkpoints use BERT's tensor layout and our forward pass.
const BERT_FAMILY: &[&str] = &["bert"];

impl BertConfig {
    /// Read and validate a `config.json`.
    pub fn from_file(path: &Path) -> Result<(Self, Value)> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parse a `config.json` text; `path` only names the file in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<(Self, Value)> {
        let bad = |reason: String| Error::BadConfig {
            path: path.to_path_buf(),
            reason,
        };
        let raw: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let mut config: BertConfig =
            serde_json::from_value(raw.clone()).map_err(|e| bad(format!("{e}")))?;
        if !BERT_FAMILY.contains(&config.model_type.as_str()) {
            return Err(bad(format!(
                "model_type {:?} is not supported (supported: {})",
                config.model_type,
                BERT_FAMILY.join(", ")
            )));
        }
        if config.position_embedding_type != "absolute" {
            return Err(bad(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                config.position_embedding_type
            )));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        config.id2label = parse_id2label(&raw).map_err(bad)?;
        Ok((config, raw))
    }

    /// The dropout before the classification head, as transformers picks it.
    pub fn classifier_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }
}

/// `id2label` as a dense vector. transformers writes default `LABEL_i` names for base models;
/// those count as labels only when `num_labels`-style heads exist, which the loader decides.
fn parse_id2label(raw: &Value) -> std::result::Result<Vec<String>, String> {
    let Some(map) = raw.get("id2label").and_then(Value::as_object) else {
        return Ok(Vec::new());
    };
    let mut by_index = BTreeMap::new();
    for (k, v) in map {
        let index: usize = k
            .parse()
            .map_err(|_| format!("id2label key {k:?} is not an integer"))?;
        let name = v
            .as_str()
            .ok_or_else(|| format!("id2label[{k}] is not a string"))?;
        by_index.insert(index, name.to_string());
    }
    let labels: Vec<String> = by_index.values().cloned().collect();
    if by_index.keys().copied().ne(0..labels.len()) {
        return Err("id2label keys are not 0..n".into());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BertConfig> {
        BertConfig::from_json(text, Path::new("config.json")).map(|(c, _)| c)
    }

    #[test]
    fn reads_labels_in_index_order() {
        let c = parse(
            r#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,
                "intermediate_size":16,"hidden_act":"gelu_new",
                "id2label":{"1":"b","0":"a","10":"k","2":"c","3":"d","4":"e","5":"f","6":"g","7":"h","8":"i","9":"j"}}"#,
        )
        .unwrap();
        assert_eq!(c.hidden_act, HiddenAct::GeluNew);
        assert_eq!(c.id2label[..3], ["a", "b", "c"]);
        assert_eq!(c.id2label[10], "k");
        assert_eq!(c.layer_norm_eps, 1e-12);
    }

    #[test]
    fn rejects_other_model_types() {
        let err = parse(
            r#"{"model_type":"gpt2","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
                "num_attention_heads":2,"intermediate_size":16}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.json: model_type \"gpt2\" is not supported (supported: bert)"
        );
    }

    #[test]
    fn rejects_gaps_in_id2label() {
        let err = parse(
            r#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,
                "intermediate_size":16,"id2label":{"0":"a","2":"c"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "config.json: id2label keys are not 0..n");
    }
}
