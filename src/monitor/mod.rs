//! Monitoring a deployed classifier without labels (drift) and with them where they exist
//! (quality): a reference [`Profile`] of what the model saw at training time, the same
//! figures per window of predictions, and the thresholds that mark a window.

pub mod drift;
pub mod windows;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::infer::{Predictor, Quiet};
use drift::{histogram, js_distance, psi};

/// The file a checkpoint keeps its reference profile in.
pub const PROFILE_FILE: &str = "profile.json";
/// Bins of the top-1 probability histogram over [0, 1].
pub const PROB_BINS: usize = 10;
/// Bins of the token-length histogram over [0, max_len].
pub const LENGTH_BINS: usize = 8;

/// What a window of predictions looks like, in the figures drift is measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Rows profiled.
    pub rows: usize,
    /// The model's classes, in index order.
    pub classes: Vec<String>,
    /// Top-1 predictions per class (counts).
    pub predicted: Vec<f64>,
    /// Top-1 probability histogram (counts, `PROB_BINS` bins over [0, 1]).
    pub top1: Vec<f64>,
    /// Token-length histogram (counts, `LENGTH_BINS` bins over [0, max_len]).
    pub lengths: Vec<f64>,
    /// Mean top-1 probability.
    pub mean_top1: f64,
    /// Share of tokens that are `[UNK]`.
    pub unk_rate: f64,
    /// Share of texts cut by truncation.
    pub truncation_rate: f64,
}

impl Profile {
    /// Profile `texts` as `predictor` sees them: its top-1 predictions and its tokenisation.
    pub fn of(predictor: &Predictor, texts: &[String]) -> Result<Self> {
        let encoded = encode(predictor, texts)?;
        let ids: Vec<Vec<u32>> = encoded.iter().map(|(ids, _)| ids.clone()).collect();
        let top = predictor.predict_encoded(&ids, 1, &Quiet)?;
        let mut predicted = vec![0.0; predictor.labels().len()];
        for &c in &top.classes {
            predicted[c as usize] += 1.0;
        }
        let probs: Vec<f64> = top.probs.iter().map(|&p| f64::from(p)).collect();
        Ok(Self::build(predictor, &encoded, predicted, &probs))
    }

    /// Profile a window of predictions already made (`catbert infer`'s `category_1` and
    /// `probability_1`), tokenising the texts with `predictor`'s tokenizer; a category the
    /// model does not have is an error naming it.
    pub fn of_predictions(
        predictor: &Predictor,
        texts: &[String],
        categories: &[String],
        probs: &[f64],
    ) -> Result<Self> {
        let classes = predictor.labels();
        let mut predicted = vec![0.0; classes.len()];
        for c in categories {
            let i = classes.iter().position(|k| k == c).ok_or_else(|| {
                Error::Usage(format!(
                    "predicted category {c:?} is not a class of the model (classes: {})",
                    classes.join(", ")
                ))
            })?;
            predicted[i] += 1.0;
        }
        Ok(Self::build(
            predictor,
            &encode(predictor, texts)?,
            predicted,
            probs,
        ))
    }

    /// The profile of tokenised texts (ids, whether cut) with their top-1 class counts and
    /// probabilities.
    fn build(
        predictor: &Predictor,
        encoded: &[(Vec<u32>, bool)],
        predicted: Vec<f64>,
        probs: &[f64],
    ) -> Self {
        let unk_id = predictor.unk_id();
        let tokens: usize = encoded.iter().map(|(ids, _)| ids.len()).sum();
        let unk: usize = (encoded.iter())
            .map(|(ids, _)| ids.iter().filter(|&&i| Some(i) == unk_id).count())
            .sum();
        let cut = encoded.iter().filter(|(_, cut)| *cut).count();
        let n = encoded.len().max(1) as f64;
        Self {
            rows: encoded.len(),
            classes: predictor.labels().to_vec(),
            predicted,
            top1: histogram(probs.iter().copied(), PROB_BINS, 0.0, 1.0),
            lengths: histogram(
                encoded.iter().map(|(ids, _)| ids.len() as f64),
                LENGTH_BINS,
                0.0,
                predictor.max_len() as f64,
            ),
            mean_top1: probs.iter().sum::<f64>() / n,
            unk_rate: unk as f64 / tokens.max(1) as f64,
            truncation_rate: cut as f64 / n,
        }
    }

    /// Save as `dir/profile.json` (atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("a profile serialises");
        crate::fsutil::write_bytes_atomic(&dir.join(PROFILE_FILE), &text)
    }

    /// The profile a checkpoint keeps, if it has one.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(PROFILE_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        crate::checkpoint::meta::read_json(&path).map(Some)
    }
}

/// Each text's token ids and whether truncation cut it, tokenised once.
fn encode(predictor: &Predictor, texts: &[String]) -> Result<Vec<(Vec<u32>, bool)>> {
    texts.iter().map(|t| predictor.encode_one(t)).collect()
}

/// Thresholds that mark a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Warn at a Jensen–Shannon distance of the predicted classes at least this.
    pub warn_js: f64,
    /// Warn at a PSI (classes or top-1 probability) at least this.
    pub warn_psi: f64,
    /// Alert at a PSI at least this.
    pub alert_psi: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            warn_js: 0.1,
            warn_psi: 0.1,
            alert_psi: 0.25,
        }
    }
}

/// How a window compares with the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// Jensen–Shannon distance of the predicted-class distribution.
    pub js_classes: f64,
    /// PSI of the predicted-class distribution.
    pub psi_classes: f64,
    /// PSI of the top-1 probability histogram.
    pub psi_top1: f64,
    /// `ok`, `warn` or `alert`.
    pub status: &'static str,
}

/// The drift of `window` against `reference`.
pub fn compare(reference: &Profile, window: &Profile, t: &Thresholds) -> Result<Drift> {
    if reference.classes != window.classes {
        return Err(Error::Usage(
            "the window's classes are not the reference profile's: profile it with the same model"
                .into(),
        ));
    }
    let js_classes = js_distance(&reference.predicted, &window.predicted);
    let psi_classes = psi(&reference.predicted, &window.predicted);
    let psi_top1 = psi(&reference.top1, &window.top1);
    let worst_psi = psi_classes.max(psi_top1);
    let status = if worst_psi >= t.alert_psi {
        "alert"
    } else if worst_psi >= t.warn_psi || js_classes >= t.warn_js {
        "warn"
    } else {
        "ok"
    };
    Ok(Drift {
        js_classes,
        psi_classes,
        psi_top1,
        status,
    })
}
