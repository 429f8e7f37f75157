//! Which epoch is kept. The best by the selection metric wins; a tie — exact, or with
//! `near_tie` > 0 a difference within that many standard errors of the difference (paired
//! bootstrap on the selecting rows) — goes to the higher weighted F1, then the lower loss; a
//! full tie keeps the earlier epoch.

use crate::checkpoint::meta::EpochRecord;
use crate::metrics::Metric;

/// The new epoch's claim: its record, its score by the metric and the standard error of its
/// difference from the best epoch so far (when known).
pub(crate) struct Candidate<'a> {
    pub record: &'a EpochRecord,
    pub score: f64,
    pub se: Option<f64>,
}

/// The best epoch so far.
pub(crate) struct Incumbent<'a> {
    pub record: &'a EpochRecord,
    pub score: Option<f64>,
}

/// Whether `new` replaces `best` as the kept epoch, and why when a tie-break decided (for an
/// exact tie only when the new epoch won it; for a near tie either way, since the metric alone
/// would have said otherwise).
pub(crate) fn pick_best(
    metric: Metric,
    near_tie: f64,
    new: &Candidate,
    best: Option<&Incumbent>,
) -> (bool, Option<String>) {
    let score = new.score;
    let Some(previous) = best else {
        return (true, None);
    };
    let Some(best) = previous.score else {
        return (score.is_finite(), None);
    };
    let within = |se: f64| (score - best).abs() <= near_tie * se;
    let near = near_tie > 0.0 && score != best && score.is_finite() && new.se.is_some_and(within);
    if !near {
        if metric.improves(score, best) {
            return (true, None);
        }
        if score != best {
            return (false, None);
        }
    }
    let (Some(now), Some(then)) = (new.record.selection(), previous.record.selection()) else {
        return (metric.improves(score, best), None);
    };
    let epoch = previous.record.epoch;
    let how = match new.se {
        Some(se) if near => format!(
            "within {near_tie}×SE ({se:.4}) of epoch {epoch} on {metric} ({score:.4} vs {best:.4})"
        ),
        _ => format!("tied with epoch {epoch} on {metric} {score:.4}"),
    };
    let said = |won: bool, name: &str, a: f64, b: f64| {
        (won || near).then(|| format!("{how}; {name} {a:.4} vs {b:.4}"))
    };
    if metric != Metric::F1Weighted && now.f1_weighted != then.f1_weighted {
        let won = now.f1_weighted > then.f1_weighted;
        let name = if won {
            "higher f1_weighted"
        } else {
            "lower f1_weighted"
        };
        return (won, said(won, name, now.f1_weighted, then.f1_weighted));
    }
    match (now.loss, then.loss) {
        (Some(a), Some(b)) if metric != Metric::Loss && a != b => {
            let won = a < b;
            let name = if won { "lower loss" } else { "higher loss" };
            (won, said(won, name, a, b))
        }
        _ => (
            false,
            near.then(|| format!("{how}; equal on the tie-breaks")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::meta::PhaseSeconds;
    use crate::metrics::evaluate;

    fn record(epoch: usize, truth: &[usize], predicted: &[usize], loss: f64) -> EpochRecord {
        let mut e = evaluate(truth, predicted, 3);
        e.loss = Some(loss);
        EpochRecord {
            epoch,
            steps: 1,
            train_loss: 1.0,
            train_seconds: 1.0,
            train_samples_per_s: 1.0,
            learning_rate_end: 0.0,
            phase_seconds: PhaseSeconds::default(),
            holdout: Some(e),
            eval: None,
            step_losses: vec![1.0],
            selection_se: None,
        }
    }

    fn pick(
        near_tie: f64,
        new: &EpochRecord,
        score: f64,
        se: Option<f64>,
        best: &EpochRecord,
        best_score: f64,
    ) -> (bool, Option<String>) {
        let new = Candidate {
            record: new,
            score,
            se,
        };
        let best = Incumbent {
            record: best,
            score: Some(best_score),
        };
        pick_best(Metric::F1Min, near_tie, &new, Some(&best))
    }

    #[test]
    fn ties_on_the_metric_go_to_weighted_f1_then_loss_then_the_earlier_epoch() {
        let truth = [0, 0, 1, 1, 2, 2];
        // Class 2 is never predicted right in any epoch: f1_min is 0 throughout.
        let first = record(1, &truth, &[0, 1, 1, 1, 0, 0], 0.9);
        let better = record(2, &truth, &[0, 0, 1, 1, 0, 0], 0.9);
        let f1 = |r: &EpochRecord| Metric::F1Min.value(r.selection().unwrap()).unwrap();
        assert_eq!((f1(&first), f1(&better)), (0.0, 0.0));
        let (won, why) = pick(0.0, &better, 0.0, None, &first, 0.0);
        assert!(won);
        assert!(why
            .unwrap()
            .starts_with("tied with epoch 1 on f1_min 0.0000; higher f1_weighted"));

        let same_f1_lower_loss = record(2, &truth, &[0, 1, 1, 1, 0, 0], 0.5);
        let (won, why) = pick(0.0, &same_f1_lower_loss, 0.0, None, &first, 0.0);
        assert!(won);
        assert_eq!(
            why.unwrap(),
            "tied with epoch 1 on f1_min 0.0000; lower loss 0.5000 vs 0.9000"
        );

        let identical = record(2, &truth, &[0, 1, 1, 1, 0, 0], 0.9);
        assert_eq!(pick(0.0, &identical, 0.0, None, &first, 0.0), (false, None));
        assert_eq!(pick(0.0, &identical, 0.5, None, &first, 0.0), (true, None));
        // An exact tie lost on weighted F1 keeps the earlier epoch without comment.
        assert_eq!(pick(0.0, &first, 0.0, None, &better, 0.0), (false, None));
    }

    #[test]
    fn near_ties_within_the_standard_error_go_to_the_tie_breaks() {
        let truth = [0, 0, 1, 1, 2, 2];
        let first = record(1, &truth, &[0, 1, 1, 1, 2, 0], 0.9);
        let second = record(2, &truth, &[0, 0, 1, 1, 2, 0], 0.7);
        let (w1, w2) = (
            first.selection().unwrap().f1_weighted,
            second.selection().unwrap().f1_weighted,
        );
        assert!(w2 > w1);
        // Epoch 2 scores 0.02 lower on the metric, within one SE of 0.03: weighted F1 decides.
        let (won, why) = pick(1.0, &second, 0.60, Some(0.03), &first, 0.62);
        assert!(won);
        assert_eq!(
            why.unwrap(),
            format!("within 1×SE (0.0300) of epoch 1 on f1_min (0.6000 vs 0.6200); higher f1_weighted {w2:.4} vs {w1:.4}")
        );
        // Outside the band, or strict selection, or no estimate: the metric decides.
        assert_eq!(
            pick(1.0, &second, 0.58, Some(0.03), &first, 0.62),
            (false, None)
        );
        assert_eq!(
            pick(0.0, &second, 0.60, Some(0.03), &first, 0.62),
            (false, None)
        );
        assert_eq!(pick(1.0, &second, 0.60, None, &first, 0.62), (false, None));
        assert_eq!(
            pick(1.0, &second, 0.70, Some(0.03), &first, 0.62),
            (true, None)
        );
        // A higher score within the band that loses the tie-break keeps the earlier epoch, and
        // says why.
        let (won, why) = pick(2.0, &first, 0.64, Some(0.03), &second, 0.62);
        assert!(!won);
        assert!(why.unwrap().contains("lower f1_weighted"));
    }
}
