//! [`FinetuneConfig`]: every setting of a fine-tune, and the one home of their defaults.

use crate::checkpoint::meta::{ClassWeights, Hyper};
use crate::device::{DeviceChoice, Precision};
use crate::error::{Error, Result};

/// The base model used when none is named.
pub const DEFAULT_BASE_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Every setting of a fine-tune. `Default` holds the defaults (those of the PyTorch reference);
/// the CLI layers a TOML file and flags over it. Field names are the config keys that error
/// messages name in backticks.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneConfig {
    /// Base model: a folder in Hugging Face layout or a Hub id `org/name[@revision]`.
    pub model: String,
    /// Text column of the training and evaluation rows.
    pub text_col: String,
    /// Label column; `None`: `label`, else the only column besides the text.
    pub label_col: Option<String>,
    /// Label column of the evaluation rows; `None`: the training label column.
    pub eval_label_col: Option<String>,
    /// Truncate texts to this many tokens (capped by the model's positions).
    pub max_len: usize,
    /// Stratified share of the training rows held out to pick the best epoch (0: none; then
    /// the evaluation rows pick it).
    pub val_split: f64,
    /// How classes are weighted in the loss.
    pub class_weights: ClassWeights,
    /// Stop when the selection metric has not improved for this many epochs.
    pub patience: Option<usize>,
    /// Keep the run state (`run/`: weights and AdamW moments, 3× the model) after a finished
    /// run, to continue it later with more epochs; deleted by default.
    pub keep_state: bool,
    /// Optimisation settings.
    pub hyper: Hyper,
    /// Where to train.
    pub device: DeviceChoice,
    /// Compute precision; `None` picks bf16 on a GPU of compute capability ≥ 8.0, else fp32.
    pub precision: Option<Precision>,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            model: DEFAULT_BASE_MODEL.to_string(),
            text_col: "text".to_string(),
            label_col: None,
            eval_label_col: None,
            max_len: 128,
            val_split: 0.1,
            class_weights: ClassWeights::Balanced,
            patience: None,
            keep_state: false,
            hyper: Hyper::default(),
            device: DeviceChoice::Auto,
            precision: None,
        }
    }
}

impl FinetuneConfig {
    /// Refuse settings that cannot work, naming the setting, before any work is done.
    pub fn validate(&self) -> Result<()> {
        let h = &self.hyper;
        let usage = |m: String| Err(Error::Usage(m));
        if h.epochs == 0 || h.batch_size == 0 || h.eval_batch_size == 0 {
            return usage("`epochs`, `batch_size` and `eval_batch_size` must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.val_split) {
            return usage(format!("`val_split` {} must be in [0, 1)", self.val_split));
        }
        if self.patience == Some(0) {
            return usage("`patience` must be at least 1 (or left out)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_settings_and_pass_validation() {
        let c = FinetuneConfig::default();
        assert_eq!(
            (c.hyper.epochs, c.hyper.batch_size, c.max_len),
            (2, 32, 128)
        );
        assert_eq!(c.hyper.lr, 5e-5);
        c.validate().unwrap();
        let bad = FinetuneConfig {
            val_split: 1.0,
            ..FinetuneConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "`val_split` 1 must be in [0, 1)"
        );
    }
}
