//! Classification metrics for evaluation and best-epoch selection.
//!
//! Semantics match scikit-learn with `labels=list(range(K))` and `zero_division=0`, so numbers
//! printed here can be checked against a Python notebook on the same predictions. Every class
//! `0..n_classes` counts, including classes absent from both `y_true` and `y_pred`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Metrics of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Metrics of one evaluation, all classes 0..n_classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub n: usize,
    /// Mean weighted loss, filled in by the caller; `None` if not computed.
    pub loss: Option<f64>,
    pub accuracy: f64,
    pub f1_weighted: f64,
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
    let n = y_true.len();

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
    F1Min,
    F1Weighted,
    F1Macro,
    Accuracy,
    Loss,
}

impl Metric {
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

/// Terminal width the table is laid out for; the confusion matrix wraps into column blocks.
const TABLE_WIDTH: usize = 100;

/// The first `max` characters of `s` (by `char`, so multi-byte names never split).
fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The label of class `c`, falling back to its index when `labels` is short or the name empty.
fn label(labels: &[String], c: usize) -> String {
    match labels.get(c) {
        Some(l) if !l.is_empty() => l.clone(),
        _ => c.to_string(),
    }
}

/// A compact, aligned text table of `e` for the terminal: a summary line, one line per class,
/// then the confusion matrix (rows = true, columns = predicted, headed by class index).
///
/// `labels[c]` names class `c`; missing or empty names show the index instead.
pub fn format_table(e: &Evaluation, labels: &[String]) -> String {
    use std::fmt::Write as _;

    let k = e.per_class.len();
    let long: Vec<String> = (0..k).map(|c| truncate(&label(labels, c), 28)).collect();
    let short: Vec<String> = (0..k).map(|c| truncate(&label(labels, c), 12)).collect();
    let mut out = String::new();

    // Writing to a String cannot fail, hence the ignored results below.
    let _ = write!(out, "n={}", e.n);
    if let Some(loss) = e.loss {
        let _ = write!(out, " loss={loss:.4}");
    }
    let _ = write!(
        out,
        " accuracy={:.4} f1_weighted={:.4} f1_macro={:.4} f1_min={:.4}",
        e.accuracy, e.f1_weighted, e.f1_macro, e.f1_min
    );
    if let Some(name) = short.get(e.f1_min_class) {
        let _ = write!(out, " ({name})");
    }
    out.push('\n');

    let name_w = long
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let support_w = e
        .per_class
        .iter()
        .map(|m| m.support.to_string().len())
        .max()
        .unwrap_or(0)
        .max(7);
    let _ = writeln!(
        out,
        "{:<name_w$}  {:>9}  {:>9}  {:>9}  {:>support_w$}",
        "class", "precision", "recall", "f1", "support"
    );
    for (name, m) in long.iter().zip(&e.per_class) {
        let _ = writeln!(
            out,
            "{name:<name_w$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>support_w$}",
            m.precision, m.recall, m.f1, m.support
        );
    }

    if k == 0 {
        return out;
    }
    // Row label: "<index> <short name>"; cells are right-aligned counts headed by class index.
    let idx_w = (k - 1).to_string().len();
    let short_w = short.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let row_label_w = idx_w + 1 + short_w;
    let max_count = e.confusion.iter().flatten().copied().max().unwrap_or(0);
    let cell_w = max_count.to_string().len().max(idx_w) + 1;
    let per_block = ((TABLE_WIDTH.saturating_sub(row_label_w)) / cell_w).max(1);
    out.push_str("confusion (rows = true, columns = predicted):\n");
    for start in (0..k).step_by(per_block) {
        let cols = start..(start + per_block).min(k);
        let _ = write!(out, "{:row_label_w$}", "");
        for c in cols.clone() {
            let _ = write!(out, "{c:>cell_w$}");
        }
        out.push('\n');
        for (t, row) in e.confusion.iter().enumerate() {
            let _ = write!(out, "{t:>idx_w$} {:<short_w$}", short[t]);
            for count in &row[cols.clone()] {
                let _ = write!(out, "{count:>cell_w$}");
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn table_layout() {
        let mut e = evaluate(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2], 3);
        e.loss = Some(0.5);
        let labels: Vec<String> = [
            "negative",
            "a label name much longer than twenty-eight chars",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let table = format_table(&e, &labels);
        let expected = "\
n=6 loss=0.5000 accuracy=0.6667 f1_weighted=0.6778 f1_macro=0.6556 f1_min=0.5000 (a label name)
class                         precision     recall         f1  support
negative                         1.0000     0.6667     0.8000        3
a label name much longer tha     0.5000     0.5000     0.5000        2
2                                0.5000     1.0000     0.6667        1
confusion (rows = true, columns = predicted):
               0 1 2
0 negative     2 1 0
1 a label name 0 1 1
2 2            0 0 1
";
        assert_eq!(table, expected, "\n{table}");
    }

    #[test]
    fn table_wraps_wide_confusion_into_blocks() {
        // 60 classes of 3 digits' counts cannot fit in one 100-column block.
        let k = 60;
        let y: Vec<usize> = (0..k).flat_map(|c| std::iter::repeat_n(c, 100)).collect();
        let e = evaluate(&y, &y, k);
        let labels: Vec<String> = (0..k).map(|c| format!("class number {c}")).collect();
        let table = format_table(&e, &labels);
        for line in table.lines() {
            assert!(line.chars().count() <= TABLE_WIDTH, "too wide: {line:?}");
        }
        // Every class appears once as a column header across the blocks.
        let headers: Vec<&str> = table
            .lines()
            .filter(|l| l.starts_with("          "))
            .collect();
        let n_headers: usize = headers.iter().map(|l| l.split_whitespace().count()).sum();
        assert_eq!(n_headers, k);
        assert!(headers.len() > 1);
    }
}
