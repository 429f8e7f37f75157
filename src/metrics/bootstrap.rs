//! Whether a metric's difference between two models scored on the same rows could be chance:
//! the paired bootstrap. Each resample draws the rows with replacement and scores both models
//! on that draw; the standard deviation of the differences over the resamples is the standard
//! error of the difference observed on the rows themselves. Pairing matters: two epochs of one
//! run mostly get the same rows right and wrong, so their difference varies far less than
//! either score does.

use serde::{Deserialize, Serialize};

use super::{from_confusion, Metric};
use crate::rng::Rng;

/// Resamples per estimate: enough for the standard error to be within a few per cent.
pub const RESAMPLES: usize = 1000;

/// What a model did on each row of an evaluation set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RowOutcomes {
    /// The predicted class of every row.
    pub predicted: Vec<u32>,
    /// −ln p(true class) of every row (unweighted).
    pub nll: Vec<f32>,
}

impl RowOutcomes {
    /// Rows scored.
    pub fn len(&self) -> usize {
        self.predicted.len()
    }

    /// Whether no row was scored.
    pub fn is_empty(&self) -> bool {
        self.predicted.is_empty()
    }
}

/// `metric` on the rows drawn `count[i]` times each (the loss weighted by `class_weights`,
/// as in evaluation).
fn score(
    metric: Metric,
    truth: &[usize],
    class_weights: &[f32],
    rows: &RowOutcomes,
    count: &[u32],
) -> f64 {
    if metric == Metric::Loss {
        let (mut num, mut den) = (0.0, 0.0);
        for ((&y, &nll), &c) in truth.iter().zip(&rows.nll).zip(count) {
            let w = class_weights[y] as f64 * c as f64;
            num += w * nll as f64;
            den += w;
        }
        return if den > 0.0 { num / den } else { 0.0 };
    }
    let classes = class_weights.len();
    let mut confusion = vec![vec![0usize; classes]; classes];
    for ((&y, &p), &c) in truth.iter().zip(&rows.predicted).zip(count) {
        confusion[y][p as usize] += c as usize;
    }
    metric
        .value(&from_confusion(confusion))
        .expect("every metric but the loss is computed from the confusion matrix")
}

/// The standard error of `metric(b) − metric(a)` on the rows with true classes `truth`, from
/// `resamples` paired bootstrap resamples seeded with `seed`; `None` when the outcomes do not
/// cover the same rows or there are too few rows or resamples to say.
pub fn paired_se(
    metric: Metric,
    truth: &[usize],
    class_weights: &[f32],
    a: &RowOutcomes,
    b: &RowOutcomes,
    resamples: usize,
    seed: u64,
) -> Option<f64> {
    let n = truth.len();
    if n < 2 || resamples < 2 || a.len() != n || b.len() != n {
        return None;
    }
    let classes = class_weights.len();
    let in_range = |r: &RowOutcomes| r.predicted.iter().all(|&p| (p as usize) < classes);
    if truth.iter().any(|&y| y >= classes) || !in_range(a) || !in_range(b) {
        return None;
    }
    let mut rng = Rng::new(seed);
    let mut count = vec![0u32; n];
    let mut diffs = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        count.fill(0);
        for _ in 0..n {
            count[rng.below(n)] += 1;
        }
        let of = |rows| score(metric, truth, class_weights, rows, &count);
        diffs.push(of(b) - of(a));
    }
    let mean = diffs.iter().sum::<f64>() / resamples as f64;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (resamples - 1) as f64;
    Some(var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two models on `n` rows of 3 classes: `a` right on rows where `i % 5 != 0`, `b` right
    /// where `i % 7 != 0`, and wrong rows predicted as the next class.
    fn pair(n: usize) -> (Vec<usize>, RowOutcomes, RowOutcomes) {
        let truth: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let model = |k: usize| RowOutcomes {
            predicted: (0..n)
                .map(|i| if i % k == 0 { (i % 3 + 1) % 3 } else { i % 3 } as u32)
                .collect(),
            nll: (0..n).map(|i| ((i * k) % 11) as f32 / 5.0).collect(),
        };
        (truth, model(5), model(7))
    }

    /// The standard error of the mean of the rows' differences `d`: sd(d) / √n.
    fn closed_form(d: &[f64]) -> f64 {
        let n = d.len() as f64;
        let mean = d.iter().sum::<f64>() / n;
        (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt() / n.sqrt()
    }

    /// A paired difference of means has a closed form: accuracy is the mean of right (1) and
    /// wrong (0), and with unit weights the loss is the mean of the rows' losses.
    #[test]
    fn accuracy_and_loss_differences_match_the_closed_form() {
        let n = 3000;
        let (truth, a, b) = pair(n);
        let right = |r: &RowOutcomes, i: usize| (r.predicted[i] as usize == truth[i]) as i32;
        let accuracy: Vec<f64> = (0..n)
            .map(|i| (right(&b, i) - right(&a, i)) as f64)
            .collect();
        let loss: Vec<f64> = (0..n).map(|i| (b.nll[i] - a.nll[i]) as f64).collect();
        for (metric, d) in [(Metric::Accuracy, accuracy), (Metric::Loss, loss)] {
            let exact = closed_form(&d);
            let se = paired_se(metric, &truth, &[1.0; 3], &a, &b, 4000, 7).unwrap();
            assert!((se / exact - 1.0).abs() < 0.05, "{metric}: {se} vs {exact}");
        }
    }

    #[test]
    fn identical_models_differ_by_nothing_and_the_seed_repeats() {
        let (truth, a, b) = pair(500);
        let se = |x, y, seed| paired_se(Metric::F1Min, &truth, &[1.0; 3], x, y, 200, seed);
        assert_eq!(se(&a, &a, 1), Some(0.0));
        assert_eq!(se(&a, &b, 1), se(&a, &b, 1));
        assert_ne!(se(&a, &b, 1), se(&a, &b, 2));
        // The rarer the worst class, the noisier its F1: fewer rows, larger error.
        let (t2, a2, b2) = pair(5000);
        let big = paired_se(Metric::F1Min, &t2, &[1.0; 3], &a2, &b2, 200, 1).unwrap();
        assert!(big < se(&a, &b, 1).unwrap() / 2.0);
    }

    #[test]
    fn mismatched_or_tiny_inputs_give_no_estimate() {
        let (truth, a, b) = pair(10);
        let short = RowOutcomes {
            predicted: a.predicted[..5].to_vec(),
            nll: a.nll[..5].to_vec(),
        };
        let se = |x, y, k: usize| paired_se(Metric::F1Weighted, &truth, &[1.0; 3], x, y, k, 1);
        assert_eq!(se(&a, &short, 100), None);
        assert_eq!(se(&a, &b, 1), None);
        assert!(se(&a, &b, 100).is_some());
        let two_classes = paired_se(Metric::F1Weighted, &truth, &[1.0; 2], &a, &b, 100, 1);
        assert_eq!(two_classes, None, "class 2 is out of range");
    }
}
