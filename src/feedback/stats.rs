//! What a feedback store holds: rows per day and per label, agreement with the model where
//! its prediction is known, conflicts, and labels the model does not know.

use std::collections::BTreeMap;

use super::{day, FeedbackSet};

/// Counts over the deduplicated rows of a store.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeedbackStats {
    /// Rows per verification day (`YYYY-MM-DD`).
    pub per_day: BTreeMap<String, usize>,
    /// Rows per verified label.
    pub per_label: BTreeMap<String, usize>,
    /// Rows whose prediction is known, and how many of those the model got right.
    pub with_prediction: usize,
    /// … of which the prediction equals the verified label.
    pub agreed: usize,
    /// Rows whose label is not among `known` (when given): kept, not used for retraining.
    pub unknown_labels: BTreeMap<String, usize>,
}

impl FeedbackStats {
    /// Share of rows with a known prediction that the model got right.
    pub fn agreement(&self) -> Option<f64> {
        (self.with_prediction > 0).then(|| self.agreed as f64 / self.with_prediction as f64)
    }
}

/// Statistics of `set`; `known` (a model's classes) flags labels outside them.
pub fn stats(set: &FeedbackSet, known: Option<&[String]>) -> FeedbackStats {
    let mut s = FeedbackStats::default();
    for r in &set.rows {
        *s.per_day.entry(day(r.verified_at)).or_default() += 1;
        *s.per_label.entry(r.label.clone()).or_default() += 1;
        if let Some(p) = &r.predicted {
            s.with_prediction += 1;
            if *p == r.label {
                s.agreed += 1;
            }
        }
        if let Some(known) = known {
            if !known.contains(&r.label) {
                *s.unknown_labels.entry(r.label.clone()).or_default() += 1;
            }
        }
    }
    s
}
