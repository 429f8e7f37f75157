//! The review queue: which predicted rows a person should verify first. Rows whose top two
//! probabilities are closest are the ones the model is least sure between two classes, and a
//! verified label there moves the decision boundary most (margin sampling); ties go to the
//! row whose whole distribution is flatter (higher entropy).

use polars::prelude::*;

use crate::model::batched::TopK;

/// One row's place in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewItem {
    /// The input row (0-based).
    pub row: usize,
    /// Top-1 probability minus top-2 probability.
    pub margin: f32,
    /// Entropy of the class distribution (nats).
    pub entropy: f32,
}

/// The `budget` rows of `full` (every class's probability per row, best first, as
/// `predict_encoded` with k = all classes gives) most worth a look, among rows `eligible`
/// allows; most useful first.
pub fn review_queue(
    full: &TopK,
    budget: usize,
    eligible: impl Fn(usize) -> bool,
) -> Vec<ReviewItem> {
    let mut items: Vec<ReviewItem> = (0..full.rows())
        .filter(|&r| eligible(r))
        .map(|r| {
            let p: Vec<f32> = full.row(r).map(|(_, p)| p).collect();
            let second = p.get(1).copied().unwrap_or(0.0);
            let entropy = -p
                .iter()
                .filter(|&&x| x > 0.0)
                .map(|&x| x * x.ln())
                .sum::<f32>();
            ReviewItem {
                row: r,
                margin: p[0] - second,
                entropy,
            }
        })
        .collect();
    items.sort_by(|a, b| {
        a.margin
            .total_cmp(&b.margin)
            .then(b.entropy.total_cmp(&a.entropy))
            .then(a.row.cmp(&b.row))
    });
    items.truncate(budget);
    items
}

/// The first `k` classes of each row of `full`.
pub fn keep_top(full: &TopK, k: usize) -> TopK {
    let k = k.min(full.k);
    let mut out = TopK {
        k,
        classes: Vec::with_capacity(full.rows() * k),
        probs: Vec::with_capacity(full.rows() * k),
    };
    for r in 0..full.rows() {
        for (c, p) in full.row(r).take(k) {
            out.classes.push(c);
            out.probs.push(p);
        }
    }
    out
}

/// The queue as a table: `row_id`, `text`, `category_1`, `probability_1`, `category_2`,
/// `probability_2`, `margin`, `entropy`.
pub fn review_frame(
    items: &[ReviewItem],
    full: &TopK,
    texts: &[String],
    labels: &[String],
) -> PolarsResult<DataFrame> {
    let nth = |r: usize, i: usize| full.row(r).nth(i);
    let cat = |i: usize| -> Vec<Option<&str>> {
        items
            .iter()
            .map(|it| nth(it.row, i).map(|(c, _)| labels[c as usize].as_str()))
            .collect()
    };
    let prob = |i: usize| -> Vec<Option<f32>> {
        items
            .iter()
            .map(|it| nth(it.row, i).map(|(_, p)| p))
            .collect()
    };
    DataFrame::new_infer_height(vec![
        Column::new(
            "row_id".into(),
            items.iter().map(|i| i.row as u64).collect::<Vec<_>>(),
        ),
        Column::new(
            "text".into(),
            items
                .iter()
                .map(|i| texts[i.row].as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new("category_1".into(), cat(0)),
        Column::new("probability_1".into(), prob(0)),
        Column::new("category_2".into(), cat(1)),
        Column::new("probability_2".into(), prob(1)),
        Column::new(
            "margin".into(),
            items.iter().map(|i| i.margin).collect::<Vec<_>>(),
        ),
        Column::new(
            "entropy".into(),
            items.iter().map(|i| i.entropy).collect::<Vec<_>>(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_margin_first_then_flatter() {
        // Three classes, rows: sure; torn between two; torn and flat; torn (same margin, peaked).
        let rows: [[f32; 3]; 4] = [
            [0.9, 0.05, 0.05],
            [0.5, 0.45, 0.05],
            [0.375, 0.3125, 0.3125],
            [0.5, 0.4375, 0.0625],
        ];
        let mut full = TopK {
            k: 3,
            classes: Vec::new(),
            probs: Vec::new(),
        };
        for r in rows {
            full.classes.extend([0, 1, 2]);
            full.probs.extend(r);
        }
        let q = review_queue(&full, 3, |r| r != 1);
        let order: Vec<usize> = q.iter().map(|i| i.row).collect();
        assert_eq!(order, [2, 3, 0]);
        assert_eq!((q[0].margin, q[1].margin), (0.0625, 0.0625));
        assert!(q[0].entropy > q[1].entropy);
        let top1 = keep_top(&full, 1);
        assert_eq!((top1.k, top1.classes.len()), (1, 4));
    }
}
