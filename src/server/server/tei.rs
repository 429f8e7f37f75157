//! The request and response shapes of text-embeddings-inference's classification API, and
//! catbert's own `/v1` shapes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::serve::ServeError;

/// TEI's `inputs`: one text, or a batch of one-element lists.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// `"text"` or `["text"]`: answered with one list of predictions.
    Single(String),
    /// `[["a"], ["b"]]`: answered with one list per text.
    Batch(Vec<String>),
}

impl Inputs {
    /// Read `inputs` as TEI does; text pairs (`["a", "b"]`) are refused, this model
    /// classifies single texts.
    pub fn parse(v: &Value) -> Result<Self, ServeError> {
        let bad = || {
            ServeError::Validation(
                "`inputs` must be a string, or a batch of one-string lists [[\"text\"], ...]"
                    .into(),
            )
        };
        let pair = || {
            ServeError::Validation(
                "text pairs are not supported: this model classifies single texts".into(),
            )
        };
        match v {
            Value::String(s) => Ok(Self::Single(s.clone())),
            Value::Array(items) => match items.first() {
                None => Err(ServeError::Empty("batch is empty".into())),
                Some(Value::String(_)) => match items.as_slice() {
                    [Value::String(s)] => Ok(Self::Single(s.clone())),
                    [Value::String(_), Value::String(_)] => Err(pair()),
                    _ => Err(bad()),
                },
                Some(_) => items
                    .iter()
                    .map(|item| match item.as_array().map(Vec::as_slice) {
                        Some([Value::String(s)]) => Ok(s.clone()),
                        Some([Value::String(_), Value::String(_)]) => Err(pair()),
                        _ => Err(bad()),
                    })
                    .collect::<Result<_, _>>()
                    .map(Self::Batch),
            },
            _ => Err(bad()),
        }
    }

    /// The texts, in order.
    pub fn texts(self) -> Vec<String> {
        match self {
            Self::Single(s) => vec![s],
            Self::Batch(b) => b,
        }
    }
}

/// `POST /predict`.
#[derive(Debug, Deserialize)]
pub struct PredictRequest {
    /// The texts.
    pub inputs: Value,
    /// Cut over-long texts (default: the server's `--auto-truncate`).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Only `right` is supported (what the model was trained with).
    #[serde(default)]
    pub truncation_direction: Option<String>,
    /// Logits instead of probabilities.
    #[serde(default)]
    pub raw_scores: bool,
    /// catbert's extension: only the k best labels.
    #[serde(default)]
    pub top_k: Option<usize>,
}

/// One label's score.
#[derive(Debug, Serialize)]
pub struct Prediction {
    /// Probability (or logit with `raw_scores`).
    pub score: f32,
    /// The class.
    pub label: String,
}

/// `POST /v1/predict`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V1Request {
    /// The texts.
    pub texts: Vec<String>,
    /// Labels per text (default 5, clamped to the number of classes).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Cut over-long texts (default: the server's `--auto-truncate`).
    #[serde(default)]
    pub truncate: Option<bool>,
}

/// One text's answer in `/v1/predict`.
#[derive(Debug, Serialize)]
pub struct V1Answer {
    /// The k best labels, best first.
    pub labels: Vec<String>,
    /// Their probabilities.
    pub probabilities: Vec<f32>,
}

/// `POST /v1/feedback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// Verified labels.
    pub items: Vec<FeedbackItem>,
}

/// One verified label.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackItem {
    /// The text.
    pub text: String,
    /// Its true class.
    pub label: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_as_tei_reads_them() {
        let p = |v: Value| Inputs::parse(&v);
        assert_eq!(p(json!("a")).unwrap(), Inputs::Single("a".into()));
        assert_eq!(p(json!(["a"])).unwrap(), Inputs::Single("a".into()));
        assert_eq!(
            p(json!([["a"], ["b"]])).unwrap(),
            Inputs::Batch(vec!["a".into(), "b".into()])
        );
        assert!(matches!(p(json!(["a", "b"])), Err(ServeError::Validation(m)) if m.contains("pairs")));
        assert!(matches!(p(json!([["a", "b"]])), Err(ServeError::Validation(m)) if m.contains("pairs")));
        assert!(matches!(p(json!([])), Err(ServeError::Empty(_))));
        assert!(matches!(p(json!(3)), Err(ServeError::Validation(_))));
        assert!(matches!(p(json!([["a"], 3])), Err(ServeError::Validation(_))));
    }
}
