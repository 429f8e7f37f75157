//! Unit tests of the epoch choice.

use super::*;
use crate::metrics::Metric;

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
    }
}

#[test]
fn ties_on_the_metric_go_to_weighted_f1_then_loss_then_the_earlier_epoch() {
    let truth = [0, 0, 1, 1, 2, 2];
    // Class 2 is never predicted right in any epoch: f1_min is 0 throughout.
    let first = record(1, &truth, &[0, 1, 1, 1, 0, 0], 0.9);
    let better = record(2, &truth, &[0, 0, 1, 1, 0, 0], 0.9);
    let f1 = |r: &EpochRecord| Metric::F1Min.value(r.selection().unwrap()).unwrap();
    assert_eq!((f1(&first), f1(&better)), (0.0, 0.0));
    let (won, why) = pick_best(Metric::F1Min, 0.0, &better, Some(0.0), Some(&first));
    assert!(won);
    assert!(why
        .unwrap()
        .starts_with("tied with epoch 1 on f1_min 0.0000; higher f1_weighted"));

    let same_f1_lower_loss = record(2, &truth, &[0, 1, 1, 1, 0, 0], 0.5);
    let (won, why) = pick_best(
        Metric::F1Min,
        0.0,
        &same_f1_lower_loss,
        Some(0.0),
        Some(&first),
    );
    assert!(won);
    assert_eq!(
        why.unwrap(),
        "tied with epoch 1 on f1_min 0.0000; lower loss 0.5000 vs 0.9000"
    );

    let identical = record(2, &truth, &[0, 1, 1, 1, 0, 0], 0.9);
    assert_eq!(
        pick_best(Metric::F1Min, 0.0, &identical, Some(0.0), Some(&first)),
        (false, None)
    );
    assert_eq!(
        pick_best(Metric::F1Min, 0.5, &identical, Some(0.0), Some(&first)),
        (true, None)
    );
}
