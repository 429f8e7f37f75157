//! The training report: one self-contained HTML file (inline SVG, no scripts, nothing
//! fetched) with every metric per epoch, per-class precision / recall / F1, the confusion
//! matrix (counts and row-normalised), and — given predictions on labelled rows — the most
//! frequent confusions with example texts and a reliability diagram with the expected
//! calibration error; given windows of predictions, the quality and drift timelines.

pub mod svg;
pub mod timeline;

use std::fmt::Write as _;

use crate::checkpoint::meta::RunMeta;
use crate::metrics::Evaluation;
use svg::{esc, heatmap, lines, reliability, Series};
pub use timeline::Monitoring;

/// Predictions on labelled rows: the text, the true class, and every class's probability.
pub struct Scored<'a> {
    /// The texts.
    pub texts: &'a [String],
    /// True class index per text.
    pub truth: &'a [usize],
    /// Probabilities, `classes` per text, in class order.
    pub probs: &'a [f32],
    /// Where the rows came from, for the heading.
    pub source: String,
}

/// Calibration bins: (mean confidence, accuracy, rows) per tenth of confidence, and the
/// expected calibration error Σ (rows / n) · |accuracy − confidence|.
pub fn calibration(s: &Scored, classes: usize) -> (Vec<(f64, f64, usize)>, f64) {
    let mut sums = vec![(0.0, 0.0, 0usize); 10];
    for (i, &t) in s.truth.iter().enumerate() {
        let row = &s.probs[i * classes..(i + 1) * classes];
        let best = crate::model::batched::top_k_indices(row, 1)[0] as usize;
        let conf = f64::from(row[best]);
        let bin = ((conf * 10.0) as usize).min(9);
        sums[bin].0 += conf;
        sums[bin].1 += f64::from(u8::from(best == t));
        sums[bin].2 += 1;
    }
    let n = s.truth.len().max(1) as f64;
    let mut ece = 0.0;
    let bins = sums
        .into_iter()
        .map(|(c, a, k)| {
            if k == 0 {
                return (0.0, 0.0, 0);
            }
            let (conf, acc) = (c / k as f64, a / k as f64);
            ece += k as f64 / n * (acc - conf).abs();
            (conf, acc, k)
        })
        .collect();
    (bins, ece)
}

fn metric_chart(
    meta: &RunMeta,
    pick: fn(&crate::checkpoint::meta::EpochRecord) -> Option<&Evaluation>,
    title: &str,
) -> Option<String> {
    let evals: Vec<Option<&Evaluation>> = meta.epochs.iter().map(pick).collect();
    if evals.iter().all(Option::is_none) {
        return None;
    }
    let xs: Vec<String> = meta.epochs.iter().map(|e| e.epoch.to_string()).collect();
    let series = |name: &str, f: fn(&Evaluation) -> f64| Series {
        name: name.into(),
        values: evals.iter().map(|e| e.map(f)).collect(),
        dashed: false,
    };
    Some(lines(
        title,
        &xs,
        &[
            series("accuracy", |e| e.accuracy),
            series("f1_weighted", |e| e.f1_weighted),
            series("f1_macro", |e| e.f1_macro),
            series("f1_min", |e| e.f1_min),
        ],
        0.0,
        1.0,
    ))
}

/// The report of the run in `meta`, with `scored` predictions and `monitoring` windows when
/// given.
pub fn render(
    meta: &RunMeta,
    title: &str,
    scored: Option<&Scored>,
    monitoring: Option<&Monitoring>,
) -> String {
    let classes = &meta.labels;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:sans-serif;margin:24px;max-width:1100px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}td.n{{text-align:right}}section{{margin:18px 0}}</style></head><body><h1>{t}</h1>",
        t = esc(title)
    );
    let best = meta.best_epoch.unwrap_or(0);
    let _ = write!(
        h,
        "<p>Base model <code>{}</code>; {} classes; {} epochs run, best epoch {best} by {} ({}); device {}, {}.</p>",
        esc(&meta.base_model),
        classes.len(),
        meta.epochs.len(),
        esc(&meta.metric.to_string()),
        meta.best_score.map_or("-".into(), |s| format!("{s:.4}")),
        esc(&meta.device),
        esc(&meta.precision)
    );
    // Training loss and metrics per epoch.
    let xs: Vec<String> = meta.epochs.iter().map(|e| e.epoch.to_string()).collect();
    let losses: Vec<Option<f64>> = meta.epochs.iter().map(|e| Some(e.train_loss)).collect();
    let hold: Vec<Option<f64>> = (meta.epochs.iter())
        .map(|e| e.holdout.as_ref().and_then(|v| v.loss))
        .collect();
    let top = losses
        .iter()
        .chain(&hold)
        .flatten()
        .fold(0.0f64, |a, &b| a.max(b));
    let loss_series = [
        Series {
            name: "train loss".into(),
            values: losses,
            dashed: false,
        },
        Series {
            name: "hold-out loss".into(),
            values: hold,
            dashed: true,
        },
    ];
    let _ = write!(
        h,
        "<section>{}",
        lines(
            "Loss per epoch",
            &xs,
            &loss_series,
            0.0,
            top.max(1e-6) * 1.05
        )
    );
    let per_step: Vec<&[f32]> = meta
        .epochs
        .iter()
        .map(|e| e.step_losses.as_slice())
        .collect();
    if per_step.iter().all(|e| !e.is_empty()) && !per_step.is_empty() {
        h.push_str(&svg::steps("Training loss per step", &per_step));
    }
    for (pick, name) in [
        (
            (|e| e.holdout.as_ref())
                as fn(&crate::checkpoint::meta::EpochRecord) -> Option<&Evaluation>,
            "Hold-out metrics per epoch",
        ),
        (|e| e.eval.as_ref(), "Eval metrics per epoch"),
    ] {
        if let Some(chart) = metric_chart(meta, pick, name) {
            h.push_str(&chart);
        }
    }
    h.push_str("</section>");
    // The kept epoch in detail.
    if let Some(e) = meta
        .epochs
        .iter()
        .find(|e| e.epoch == best)
        .and_then(|e| e.selection())
    {
        let _ = write!(
            h,
            "<section><h2>Best epoch {best}: {} rows</h2><p>accuracy {:.4}, weighted F1 {:.4}, macro F1 {:.4}, f1_min {:.4} ({})</p><table><tr><th>#</th><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>",
            e.n, e.accuracy, e.f1_weighted, e.f1_macro, e.f1_min,
            esc(classes.get(e.f1_min_class).map_or("-", String::as_str))
        );
        for (i, (c, m)) in classes.iter().zip(&e.per_class).enumerate() {
            let _ = write!(
                h,
                "<tr><td class=n>{i}</td><td>{}</td><td class=n>{:.4}</td><td class=n>{:.4}</td><td class=n>{:.4}</td><td class=n>{}</td></tr>",
                esc(c), m.precision, m.recall, m.f1, m.support
            );
        }
        h.push_str("</table>");
        let cm = &e.confusion;
        let max = cm.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
        let row_sum = |i: usize| cm[i].iter().sum::<usize>().max(1) as f64;
        h.push_str(&heatmap(
            "Confusion matrix (counts)",
            classes,
            &|i, j| cm[i][j] as f64 / max,
            &|i, j| cm[i][j].to_string(),
        ));
        h.push_str(&heatmap(
            "Confusion matrix (share of each true class)",
            classes,
            &|i, j| cm[i][j] as f64 / row_sum(i),
            &|i, j| format!("{:.2}", cm[i][j] as f64 / row_sum(i)),
        ));
        h.push_str("</section>");
    }
    if let Some(s) = scored {
        h.push_str(&scored_section(s, classes));
    }
    if let Some(m) = monitoring {
        h.push_str(&timeline::section(m));
    }
    h.push_str("</body></html>\n");
    h
}

/// Confusions with examples and calibration, from predictions on labelled rows.
fn scored_section(s: &Scored, classes: &[String]) -> String {
    let k = classes.len();
    let mut h = format!(
        "<section><h2>On {} labelled rows of {}</h2>",
        s.truth.len(),
        esc(&s.source)
    );
    let mut pairs: std::collections::BTreeMap<(usize, usize), Vec<usize>> = Default::default();
    for (i, &t) in s.truth.iter().enumerate() {
        let row = &s.probs[i * k..(i + 1) * k];
        let p = crate::model::batched::top_k_indices(row, 1)[0] as usize;
        if p != t {
            pairs.entry((t, p)).or_default().push(i);
        }
    }
    let mut ranked: Vec<_> = pairs.into_iter().collect();
    ranked.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    h.push_str("<h3>Most frequent confusions</h3><table><tr><th>true</th><th>predicted</th><th>rows</th><th>examples</th></tr>");
    for ((t, p), rows) in ranked.iter().take(10) {
        let examples: Vec<String> = rows.iter().take(3).map(|&r| esc(&s.texts[r])).collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td>{}</td></tr>",
            esc(&classes[*t]),
            esc(&classes[*p]),
            rows.len(),
            examples.join("<br>")
        );
    }
    h.push_str("</table>");
    let (bins, ece) = calibration(s, k);
    let _ = write!(
        h,
        "<h3>Calibration: expected calibration error {ece:.4}</h3>"
    );
    h.push_str(&reliability(
        "Reliability (accuracy per confidence bin)",
        &bins,
    ));
    h.push_str("</section>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_by_hand() {
        // Two rows at confidence 0.9 (one right), one at 0.6 (right).
        let texts = vec!["a".to_string(), "b".into(), "c".into()];
        let probs = [0.9, 0.1, 0.9, 0.1, 0.6, 0.4];
        let s = Scored {
            texts: &texts,
            truth: &[0, 1, 0],
            probs: &probs,
            source: "t".into(),
        };
        let (bins, ece) = calibration(&s, 2);
        assert_eq!(bins[9].2, 0);
        assert_eq!((bins[8].2, bins[6].2), (2, 1));
        // (2/3)·|0.5 − 0.9| + (1/3)·|1 − 0.6|
        assert!(
            (ece - (2.0 / 3.0 * 0.4 + 1.0 / 3.0 * 0.4)).abs() < 1e-6,
            "{ece}"
        );
    }

    #[test]
    fn the_step_chart_marks_epochs_and_thins_long_runs() {
        let epoch: Vec<f32> = (0..2000).map(|i| 2.0 - i as f32 / 2000.0).collect();
        let svg = svg::steps("loss", &[&epoch, &epoch]);
        // One rule between the two epochs, both labelled, 4,000 steps on the last tick.
        assert_eq!(svg.matches("stroke-dasharray=\"4,3\"").count(), 1);
        assert!(svg.contains(">epoch 1<") && svg.contains(">epoch 2<"));
        assert!(svg.contains(">4000<"));
        // 4,000 steps are averaged in threes: at most 1,500 points per line.
        for line in svg.split("points=\"").skip(1) {
            let points = line.split('"').next().unwrap().split(' ').count();
            assert!(points <= 1500, "{points}");
        }
    }
}
