//! Classification metrics for evaluation and best-epoch selection.
//!
//! Semantics match scikit-learn with `labels=list(range(K))` and `zero_division=0`, so numbers
//! printed here can be checked against a Python notebook on the same predictions. Every class
//! `0..n_classes` counts, including classes absent from both `y_true` and `y_pred`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod bootstrap;
mod table;
pub use table::format_table;

/// Metrics of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Share of the rows predicted as the class that are of the class.
    pub precision: f64,
    /// Share of the class's rows predicted as the class.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Rows of the class.
    pub support: usize,
}

/// Metrics of one evaluation, all classes 0..n_classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Rows evaluated.
    pub n: usize,
    /// Mean weighted loss, filled in by the caller; `None` if not computed.
    pub loss: Option<f64>,
    /// Share of rows predicted right.
    pub accuracy: f64,
    /// Per-class F1 weighted by support.
    pub f1_weighted: f64,
    /// Unweighted mean of the per-class F1.
    pub f1_macro: f64,
    /// The worst class's F1 over all classes, like sklearn's `f.min()` with `labels=range(K)`:
    /// a class the model never gets right drags it to 0 even if the class is rare.
    pub f1_min: f64,
    /// Which class has `f1_min` (lowest index on ties, so the choice is deterministic).
    pub f1_min_class: usize,
    /// Index = class.
    pub per_class: Vec<ClassMetrics>,
    /// Rows = true class, columns = predicted class.
    pub confusion: Vec<Vec<usize>>,
}

/// `num / den`, or 0 when `den` is 0 (sklearn's `zero_division=0`).
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Computes all metrics of `y_pred` against `y_true` over classes `0..n_classes`.
///
/// Empty input (which sklearn rejects) gives all-zero metrics rather than NaN, so an empty
/// validation split cannot poison best-epoch selection or JSON output.
///
/// # Panics
/// If the lengths differ or a label is `>= n_classes`; callers validate their data first.
pub fn evaluate(y_true: &[usize], y_pred: &[usize], n_classes: usize) -> Evaluation {
    assert_eq!(
        y_true.len(),
        y_pred.len(),
        "y_true and y_pred have different lengths"
    );
    let mut confusion = vec![vec![0usize; n_classes]; n_classes];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        assert!(
            t < n_classes && p < n_classes,
            "label out of range: true {t}, predicted {p}, n_classes {n_classes}"
        );
        confusion[t][p] += 1;
    }
    from_confusion(confusion)
}

/// All metrics from a confusion matrix (rows = true class, columns = predicted class).
pub fn from_confusion(confusion: Vec<Vec<usize>>) -> Evaluation {
    let n_classes = confusion.len();
    let n: usize = confusion.iter().flatten().sum();

    let per_class: Vec<ClassMetrics> = (0..n_classes)
        .map(|c| {
            let tp = confusion[c][c];
            let support: usize = confusion[c].iter().sum();
            let predicted: usize = confusion.iter().map(|row| row[c]).sum();
            let (fn_, fp) = (support - tp, predicted - tp);
            ClassMetrics {
                precision: ratio(tp, predicted),
                recall: ratio(tp, support),
                // sklearn >= 1.3's form; equals 2PR/(P+R) and needs no special case for P+R=0.
                f1: ratio(2 * tp, 2 * tp + fp + fn_),
                support,
            }
        })
        .collect();

    let correct: usize = (0..n_classes).map(|c| confusion[c][c]).sum();
    let total_support: usize = per_class.iter().map(|m| m.support).sum();
    let f1_weighted = if total_support == 0 {
        0.0
    } else {
        per_class
            .iter()
            .map(|m| m.f1 * m.support as f64)
            .sum::<f64>()
            / total_support as f64
    };
    let f1_macro = if n_classes == 0 {
        0.0
    } else {
        per_class.iter().map(|m| m.f1).sum::<f64>() / n_classes as f64
    };
    // Strict `<` keeps the lowest index on ties.
    let (mut f1_min_class, mut f1_min) = (0, per_class.first().map_or(0.0, |m| m.f1));
    for (c, m) in per_class.iter().enumerate().skip(1) {
        if m.f1 < f1_min {
            (f1_min_class, f1_min) = (c, m.f1);
        }
    }

    Evaluation {
        n,
        loss: None,
        accuracy: ratio(correct, n),
        f1_weighted,
        f1_macro,
        f1_min,
        f1_min_class,
        per_class,
        confusion,
    }
}

/// The metric a run selects its best epoch by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The worst class's F1.
    F1Min,
    /// Support-weighted F1.
    F1Weighted,
    /// Macro-averaged F1.
    F1Macro,
    /// Accuracy.
    Accuracy,
    /// Weighted cross-entropy (lower is better).
    Loss,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 5] = [
        Metric::F1Min,
        Metric::F1Weighted,
        Metric::F1Macro,
        Metric::Accuracy,
        Metric::Loss,
    ];

    /// The name used in config files, on the command line and in JSON (same as the serde name).
    pub fn name(self) -> &'static str {
        match self {
            Metric::F1Min => "f1_min",
            Metric::F1Weighted => "f1_weighted",
            Metric::F1Macro => "f1_macro",
            Metric::Accuracy => "accuracy",
            Metric::Loss => "loss",
        }
    }

    /// Whether a larger value is better (all but `Loss`).
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::Loss)
    }

    /// The metric's value in `e`; `None` only for `Loss` when the loss was not computed.
    pub fn value(self, e: &Evaluation) -> Option<f64> {
        match self {
            Metric::F1Min => Some(e.f1_min),
            Metric::F1Weighted => Some(e.f1_weighted),
            Metric::F1Macro => Some(e.f1_macro),
            Metric::Accuracy => Some(e.accuracy),
            Metric::Loss => e.loss,
        }
    }

    /// True when `candidate` is strictly better than `best`; ties keep the earlier epoch.
    ///
    /// A NaN candidate never improves, and any non-NaN candidate improves on a NaN best, so one
    /// diverged epoch can neither be selected nor block selection of later ones.
    pub fn improves(self, candidate: f64, best: f64) -> bool {
        if candidate.is_nan() {
            return false;
        }
        if best.is_nan() {
            return true;
        }
        if self.higher_is_better() {
            candidate > best
        } else {
            candidate < best
        }
    }
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let expected = "f1_min, f1_weighted, f1_macro, accuracy or loss";
                format!("unknown metric \"{s}\" (expected {expected})")
            })
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests;
