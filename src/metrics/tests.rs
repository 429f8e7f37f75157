//! Unit tests of the parent module.
use super::*;

const TOL: f64 = 1e-12;

fn close(name: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= TOL, "{name}: got {got}, want {want}");
}

/// Expected values, as printed by scikit-learn.
struct Want<'a> {
    precision: &'a [f64],
    recall: &'a [f64],
    f1: &'a [f64],
    support: &'a [usize],
    f1_weighted: f64,
    f1_macro: f64,
    accuracy: f64,
    f1_min: f64,
    f1_min_class: usize,
    confusion: &'a [&'a [usize]],
}

fn check(y_true: &[usize], y_pred: &[usize], k: usize, w: Want) {
    let e = evaluate(y_true, y_pred, k);
    assert_eq!(e.n, y_true.len());
    assert_eq!(e.loss, None);
    assert_eq!(e.per_class.len(), k);
    for (c, m) in e.per_class.iter().enumerate() {
        close(&format!("precision[{c}]"), m.precision, w.precision[c]);
        close(&format!("recall[{c}]"), m.recall, w.recall[c]);
        close(&format!("f1[{c}]"), m.f1, w.f1[c]);
        assert_eq!(m.support, w.support[c], "support[{c}]");
    }
    close("f1_weighted", e.f1_weighted, w.f1_weighted);
    close("f1_macro", e.f1_macro, w.f1_macro);
    close("accuracy", e.accuracy, w.accuracy);
    close("f1_min", e.f1_min, w.f1_min);
    assert_eq!(e.f1_min_class, w.f1_min_class, "f1_min_class");
    let confusion: Vec<Vec<usize>> = w.confusion.iter().map(|r| r.to_vec()).collect();
    assert_eq!(e.confusion, confusion);
}

// By hand, y_true=[0,0,0,1,1,2], y_pred=[0,0,1,1,2,2], K=3:
//   class 0: tp=2 fp=0 fn=1 -> P=2/2=1,   R=2/3, F1=2*2/(4+0+1)=4/5, support 3
//   class 1: tp=1 fp=1 fn=1 -> P=1/2,     R=1/2, F1=2/(2+1+1)=1/2,   support 2
//   class 2: tp=1 fp=1 fn=0 -> P=1/2,     R=1,   F1=2/(2+1+0)=2/3,   support 1
//   weighted = (4/5*3 + 1/2*2 + 2/3*1)/6 = (12/5 + 1 + 2/3)/6 = (61/15)/6 = 61/90
//   macro    = (4/5 + 1/2 + 2/3)/3 = (59/30)/3 = 59/90
//   accuracy = 4/6 = 2/3; f1_min = 1/2 at class 1
#[test]
fn hand_computed() {
    check(
        &[0, 0, 0, 1, 1, 2],
        &[0, 0, 1, 1, 2, 2],
        3,
        Want {
            precision: &[1.0, 0.5, 0.5],
            recall: &[2.0 / 3.0, 0.5, 1.0],
            f1: &[0.8, 0.5, 2.0 / 3.0],
            support: &[3, 2, 1],
            f1_weighted: 61.0 / 90.0,
            f1_macro: 59.0 / 90.0,
            accuracy: 2.0 / 3.0,
            f1_min: 0.5,
            f1_min_class: 1,
            confusion: &[&[2, 1, 0], &[0, 1, 1], &[0, 0, 1]],
        },
    );
}

// The expected numbers below come from scikit-learn 1.9.1:
//
//   from sklearn.metrics import precision_recall_fscore_support as prfs, f1_score
//   from sklearn.metrics import accuracy_score, confusion_matrix
//   def oracle(t, p, K):
//       L = list(range(K))
//       P, R, F, S = prfs(t, p, labels=L, zero_division=0)
//       print([repr(float(x)) for x in P], [repr(float(x)) for x in R],
//             [repr(float(x)) for x in F], S.tolist())
//       print(repr(float(f1_score(t, p, labels=L, average="weighted", zero_division=0))),
//             repr(float(f1_score(t, p, labels=L, average="macro", zero_division=0))),
//             repr(float(accuracy_score(t, p))))
//       print(repr(float(F.min())), int(F.argmin()), confusion_matrix(t, p, labels=L).tolist())
//
// Each test gives the call it reproduces.

// oracle([0,1,2,0,1,2,0,1,2,0], [0,2,1,0,1,2,1,1,2,0], 3)
#[test]
fn sklearn_three_classes() {
    check(
        &[0, 1, 2, 0, 1, 2, 0, 1, 2, 0],
        &[0, 2, 1, 0, 1, 2, 1, 1, 2, 0],
        3,
        Want {
            precision: &[1.0, 0.5, 0.6666666666666666],
            recall: &[0.75, 0.6666666666666666, 0.6666666666666666],
            f1: &[0.8571428571428571, 0.5714285714285714, 0.6666666666666666],
            support: &[4, 3, 3],
            f1_weighted: 0.7142857142857142,
            f1_macro: 0.6984126984126983,
            accuracy: 0.7,
            f1_min: 0.5714285714285714,
            f1_min_class: 1,
            confusion: &[&[3, 1, 0], &[0, 2, 1], &[0, 1, 2]],
        },
    );
}

// Class 2 is predicted but absent from y_true: precision 0 (tp=0), recall 0 (support 0).
// oracle([0,0,1,1,0,1], [0,2,1,1,2,0], 3)
#[test]
fn sklearn_class_predicted_but_absent_from_truth() {
    check(
        &[0, 0, 1, 1, 0, 1],
        &[0, 2, 1, 1, 2, 0],
        3,
        Want {
            precision: &[0.5, 1.0, 0.0],
            recall: &[0.3333333333333333, 0.6666666666666666, 0.0],
            f1: &[0.4, 0.8, 0.0],
            support: &[3, 3, 0],
            f1_weighted: 0.6000000000000001,
            f1_macro: 0.4000000000000001,
            accuracy: 0.5,
            f1_min: 0.0,
            f1_min_class: 2,
            confusion: &[&[1, 0, 2], &[1, 2, 0], &[0, 0, 0]],
        },
    );
}

// Class 2 is in y_true but never predicted: precision 0 by zero_division, recall 0.
// oracle([0,1,2,2,1,0,2], [0,1,0,1,1,0,0], 3)
#[test]
fn sklearn_class_never_predicted() {
    check(
        &[0, 1, 2, 2, 1, 0, 2],
        &[0, 1, 0, 1, 1, 0, 0],
        3,
        Want {
            precision: &[0.5, 0.6666666666666666, 0.0],
            recall: &[1.0, 1.0, 0.0],
            f1: &[0.6666666666666666, 0.8, 0.0],
            support: &[2, 2, 3],
            f1_weighted: 0.41904761904761906,
            f1_macro: 0.48888888888888893,
            accuracy: 0.5714285714285714,
            f1_min: 0.0,
            f1_min_class: 2,
            confusion: &[&[2, 0, 0], &[0, 2, 0], &[2, 1, 0]],
        },
    );
}

// K=4 but only classes 0 and 1 occur: classes 2 and 3 count as F1 0 in macro and f1_min.
// oracle([0,1,0,1,1], [0,1,1,1,0], 4)
#[test]
fn sklearn_classes_absent_from_both() {
    check(
        &[0, 1, 0, 1, 1],
        &[0, 1, 1, 1, 0],
        4,
        Want {
            precision: &[0.5, 0.6666666666666666, 0.0, 0.0],
            recall: &[0.5, 0.6666666666666666, 0.0, 0.0],
            f1: &[0.5, 0.6666666666666666, 0.0, 0.0],
            support: &[2, 3, 0, 0],
            f1_weighted: 0.6,
            f1_macro: 0.29166666666666663,
            accuracy: 0.6,
            f1_min: 0.0,
            f1_min_class: 2,
            confusion: &[&[1, 1, 0, 0], &[1, 2, 0, 0], &[0; 4], &[0; 4]],
        },
    );
}

// Classes 1 and 2 tie at the minimum F1; the lower index (1) wins, as with numpy's argmin.
// oracle([0,0,1,1,2,2], [0,0,1,2,2,1], 3)
#[test]
fn sklearn_f1_min_tie_takes_lowest_class() {
    check(
        &[0, 0, 1, 1, 2, 2],
        &[0, 0, 1, 2, 2, 1],
        3,
        Want {
            precision: &[1.0, 0.5, 0.5],
            recall: &[1.0, 0.5, 0.5],
            f1: &[1.0, 0.5, 0.5],
            support: &[2, 2, 2],
            f1_weighted: 0.6666666666666666,
            f1_macro: 0.6666666666666666,
            accuracy: 0.6666666666666666,
            f1_min: 0.5,
            f1_min_class: 1,
            confusion: &[&[2, 0, 0], &[0, 1, 1], &[0, 1, 1]],
        },
    );
}

// oracle([2,0,1,1], [2,0,1,1], 3)
#[test]
fn sklearn_all_correct() {
    check(
        &[2, 0, 1, 1],
        &[2, 0, 1, 1],
        3,
        Want {
            precision: &[1.0, 1.0, 1.0],
            recall: &[1.0, 1.0, 1.0],
            f1: &[1.0, 1.0, 1.0],
            support: &[1, 2, 1],
            f1_weighted: 1.0,
            f1_macro: 1.0,
            accuracy: 1.0,
            f1_min: 1.0,
            f1_min_class: 0,
            confusion: &[&[1, 0, 0], &[0, 2, 0], &[0, 0, 1]],
        },
    );
}

// oracle([], [], 3) raises "ValueError: Found empty input array" in sklearn 1.9.1, so n=0 is
// our own convention, consistent with zero_division=0: everything 0, f1_min at class 0.
#[test]
fn empty_input_is_all_zero() {
    check(
        &[],
        &[],
        3,
        Want {
            precision: &[0.0; 3],
            recall: &[0.0; 3],
            f1: &[0.0; 3],
            support: &[0; 3],
            f1_weighted: 0.0,
            f1_macro: 0.0,
            accuracy: 0.0,
            f1_min: 0.0,
            f1_min_class: 0,
            confusion: &[&[0; 3], &[0; 3], &[0; 3]],
        },
    );
    let e = evaluate(&[], &[], 0);
    assert_eq!((e.n, e.accuracy, e.f1_macro, e.f1_min), (0, 0.0, 0.0, 0.0));
    assert!(e.per_class.is_empty() && e.confusion.is_empty());
}

#[test]
#[should_panic(expected = "different lengths")]
fn length_mismatch_panics() {
    evaluate(&[0, 1], &[0], 2);
}

#[test]
#[should_panic(expected = "label out of range")]
fn label_out_of_range_panics() {
    evaluate(&[0, 2], &[0, 1], 2);
}

#[test]
fn metric_names_round_trip() {
    let names = ["f1_min", "f1_weighted", "f1_macro", "accuracy", "loss"];
    for (m, name) in Metric::ALL.into_iter().zip(names) {
        assert_eq!(m.name(), name);
        assert_eq!(m.to_string(), name);
        assert_eq!(name.parse::<Metric>(), Ok(m));
        // serde uses the same spelling, so config files and CLI flags agree.
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<Metric>(&json).unwrap(), m);
    }
    assert_eq!(
        "f1".parse::<Metric>(),
        Err(
            "unknown metric \"f1\" (expected f1_min, f1_weighted, f1_macro, accuracy or loss)"
                .to_string()
        )
    );
    assert!("F1_MIN".parse::<Metric>().is_err());
}

#[test]
fn improves_is_strict_and_loss_is_lower_better() {
    for m in Metric::ALL {
        assert!(!m.improves(0.5, 0.5), "{m}: a tie keeps the earlier epoch");
        assert!(!m.improves(f64::NAN, 0.5), "{m}: NaN never improves");
        assert!(m.improves(0.5, f64::NAN), "{m}: anything beats a NaN best");
    }
    for m in [
        Metric::F1Min,
        Metric::F1Weighted,
        Metric::F1Macro,
        Metric::Accuracy,
    ] {
        assert!(m.higher_is_better());
        assert!(m.improves(0.6, 0.5));
        assert!(!m.improves(0.4, 0.5));
    }
    assert!(!Metric::Loss.higher_is_better());
    assert!(Metric::Loss.improves(0.4, 0.5));
    assert!(!Metric::Loss.improves(0.6, 0.5));
}

#[test]
fn metric_value_reads_the_right_field() {
    let mut e = evaluate(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2], 3);
    assert_eq!(Metric::F1Min.value(&e), Some(e.f1_min));
    assert_eq!(Metric::F1Weighted.value(&e), Some(e.f1_weighted));
    assert_eq!(Metric::F1Macro.value(&e), Some(e.f1_macro));
    assert_eq!(Metric::Accuracy.value(&e), Some(e.accuracy));
    assert_eq!(Metric::Loss.value(&e), None);
    e.loss = Some(0.25);
    assert_eq!(Metric::Loss.value(&e), Some(0.25));
}

#[test]
fn evaluation_serde_round_trip() {
    let mut e = evaluate(
        &[0, 1, 2, 0, 1, 2, 0, 1, 2, 0],
        &[0, 2, 1, 0, 1, 2, 1, 1, 2, 0],
        3,
    );
    e.loss = Some(0.123);
    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(serde_json::from_str::<Evaluation>(&json).unwrap(), e);
}
