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
    /// Truncate texts to this many tokens; `None`: 128, capped by the model's positions (more
    /// than the model's positions is refused).
    pub max_len: Option<usize>,
    /// Stratified share of the training rows held out to pick the best epoch (0: none; then
    /// the evaluation rows pick it).
    pub val_split: f64,
    /// How classes are weighted in the loss. With `hyper.sampler` balanced the batches are
    /// balanced already, and `None` is the usual choice (the CLI's default then).
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
            max_len: None,
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
        for (key, n) in [
            ("epochs", h.epochs),
            ("batch_size", h.batch_size),
            ("eval_batch_size", h.eval_batch_size),
            ("bucket_window", h.bucket_window),
            ("patience", self.patience.unwrap_or(1)),
        ] {
            if n == 0 {
                return out_of_range(key, &n, "at least 1");
            }
        }
        if let Some(n) = self.max_len.filter(|&n| n < 2) {
            return out_of_range("max_len", &n, "at least 2 ([CLS] and [SEP] take 2 tokens)");
        }
        for (key, x) in [
            ("lr", h.lr),
            ("weight_decay", h.weight_decay),
            ("max_grad_norm", h.max_grad_norm),
            ("near_tie", h.near_tie),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                return out_of_range(key, &x, "a finite number ≥ 0");
            }
        }
        if !(0.0..=1.0).contains(&h.warmup_ratio) {
            return out_of_range("warmup_ratio", &h.warmup_ratio, "in [0, 1]");
        }
        if !(0.0..1.0).contains(&h.label_smoothing) {
            return out_of_range("label_smoothing", &h.label_smoothing, "in [0, 1)");
        }
        if !(h.layer_lr_decay > 0.0 && h.layer_lr_decay <= 1.0) {
            return out_of_range("layer_lr_decay", &h.layer_lr_decay, "in (0, 1]");
        }
        if !(0.0..1.0).contains(&self.val_split) {
            return out_of_range("val_split", &self.val_split, "in [0, 1)");
        }
        Ok(())
    }
}

/// The error for a setting outside its range, naming both.
fn out_of_range(key: &str, value: &dyn std::fmt::Display, range: &str) -> Result<()> {
    Err(Error::Usage(format!(
        "`{key}` {value} is out of range: must be {range}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_settings_and_pass_validation() {
        let c = FinetuneConfig::default();
        assert_eq!(
            (c.hyper.epochs, c.hyper.batch_size, c.max_len),
            (2, 32, None)
        );
        assert_eq!(c.hyper.lr, 5e-5);
        c.validate().unwrap();
        let bad = FinetuneConfig {
            val_split: 1.0,
            ..FinetuneConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "`val_split` 1 is out of range: must be in [0, 1)"
        );
        type Set = fn(&mut FinetuneConfig);
        let cases: [(Set, &str); 10] = [
            (
                |c| c.hyper.label_smoothing = 1.0,
                "`label_smoothing` 1 is out of range: must be in [0, 1)",
            ),
            (
                |c| c.hyper.layer_lr_decay = 0.0,
                "`layer_lr_decay` 0 is out of range: must be in (0, 1]",
            ),
            (
                |c| c.hyper.layer_lr_decay = 1.5,
                "`layer_lr_decay` 1.5 is out of range: must be in (0, 1]",
            ),
            (
                |c| c.hyper.near_tie = f64::INFINITY,
                "`near_tie` inf is out of range: must be a finite number ≥ 0",
            ),
            (
                |c| c.hyper.lr = -1.0,
                "`lr` -1 is out of range: must be a finite number ≥ 0",
            ),
            (
                |c| c.hyper.weight_decay = -1.0,
                "`weight_decay` -1 is out of range: must be a finite number ≥ 0",
            ),
            (
                |c| c.hyper.warmup_ratio = 5.0,
                "`warmup_ratio` 5 is out of range: must be in [0, 1]",
            ),
            (
                |c| c.hyper.epochs = 0,
                "`epochs` 0 is out of range: must be at least 1",
            ),
            (
                |c| c.hyper.batch_size = 0,
                "`batch_size` 0 is out of range: must be at least 1",
            ),
            (
                |c| c.max_len = Some(1),
                "`max_len` 1 is out of range: must be at least 2 ([CLS] and [SEP] take 2 tokens)",
            ),
        ];
        for (set, want) in cases {
            let mut bad = FinetuneConfig::default();
            set(&mut bad);
            assert_eq!(bad.validate().unwrap_err().to_string(), want);
        }
        let zero_lr = FinetuneConfig {
            hyper: Hyper {
                lr: 0.0,
                ..Hyper::default()
            },
            ..FinetuneConfig::default()
        };
        zero_lr.validate().unwrap();
    }
}
