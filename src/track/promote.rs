//! Whether a newly registered version becomes the champion: the `--promote-if` conditions on
//! its metrics, and `--promote-if-better`, which scores the new version and the current
//! champion with catbert on the same rows and wants the new one no worse.

use std::collections::BTreeMap;
use std::path::Path;

use super::gate::{Check, Gate};
use super::registry::{Registry, CHAMPION};
use crate::checkpoint::{ModelRef, RegistryResolver, Selector};
use crate::device::DeviceChoice;
use crate::error::Result;
use crate::infer::{PredictOptions, Predictor};
use crate::metrics::{evaluate, Metric};

/// What the promotion asks for.
#[derive(Debug, Clone, Default)]
pub struct PromotionRule {
    /// `--promote-if` conditions.
    pub gate: Option<Gate>,
    /// `--promote-if-better`.
    pub if_better: bool,
}

impl PromotionRule {
    /// Whether any promotion was asked for.
    pub fn wanted(&self) -> bool {
        self.gate.is_some() || self.if_better
    }
}

/// The new version against the champion, on the same rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The metric compared.
    pub metric: Metric,
    /// The champion's version.
    pub champion: u64,
    /// Its score.
    pub champion_score: f64,
    /// The new version's score.
    pub new_score: f64,
    /// Rows scored.
    pub rows: usize,
}

/// The decision and the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Whether the new version becomes the champion.
    pub promote: bool,
    /// Each `--promote-if` condition with its value.
    pub checks: Vec<Check>,
    /// The comparison with the champion, when asked for and there is one.
    pub comparison: Option<Comparison>,
}

impl Decision {
    /// One line: `promoted: f1_min 0.81 >= 0.75; f1_min 0.81 vs champion v2 0.78 on 450 rows`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.checks.iter().map(Check::to_string).collect();
        if let Some(c) = &self.comparison {
            parts.push(format!(
                "{} {:.4} vs champion version {} {:.4} on {} rows",
                c.metric, c.new_score, c.champion, c.champion_score, c.rows
            ));
        }
        if parts.is_empty() {
            parts.push("no champion yet".into());
        }
        format!(
            "{}: {}",
            if self.promote {
                "promoted"
            } else {
                "not promoted"
            },
            parts.join("; ")
        )
    }
}

/// The version up for promotion: its checkpoint folder, its logged metrics, and the labelled
/// rows (texts, labels) both it and the champion are scored on when asked.
pub struct Candidate<'a> {
    /// The new version's checkpoint folder.
    pub dir: &'a Path,
    /// Its logged metrics (what the gate reads).
    pub metrics: &'a BTreeMap<String, f64>,
    /// Texts and labels for the champion comparison.
    pub rows: (&'a [String], &'a [String]),
}

/// Decide on `candidate`, comparing it with the champion of `name` by `metric` when the rule
/// asks for it.
pub fn decide(
    registry: &Registry,
    name: &str,
    rule: &PromotionRule,
    candidate: &Candidate,
    metric: Metric,
    device: DeviceChoice,
) -> Result<Decision> {
    let Candidate {
        dir: new_dir,
        metrics,
        rows,
    } = *candidate;
    let checks = match &rule.gate {
        Some(gate) => gate.check(metrics)?,
        None => Vec::new(),
    };
    let mut promote = checks.iter().all(|c| c.passed);
    let mut comparison = None;
    if rule.if_better && promote {
        let model = registry.model(name)?;
        if let Some(&champion) = model.aliases.get(CHAMPION) {
            // Loss needs the weighted logits; compare top-1 predictions by weighted F1 instead.
            let metric = if metric == Metric::Loss {
                Metric::F1Weighted
            } else {
                metric
            };
            let old = registry.resolve(name, &Selector::Version(champion))?;
            let champion_score = score(&old.dir, rows, metric, device)?;
            let new_score = score(new_dir, rows, metric, device)?;
            promote = !metric.improves(champion_score, new_score);
            comparison = Some(Comparison {
                metric,
                champion,
                champion_score,
                new_score,
                rows: rows.0.len(),
            });
        }
    }
    Ok(Decision {
        promote,
        checks,
        comparison,
    })
}

/// `metric` of the model at `dir` on labelled rows. Labels the model does not know count as
/// misses; classes the rows lack do not drag the minimum down.
fn score(
    dir: &Path,
    rows: (&[String], &[String]),
    metric: Metric,
    device: DeviceChoice,
) -> Result<f64> {
    let (texts, labels) = rows;
    let predictor = Predictor::load(
        &ModelRef::Folder(dir.to_path_buf()),
        device,
        PredictOptions::default(),
    )?;
    let predicted = predictor.predict(texts, 1)?;
    let mut names: Vec<String> = labels.to_vec();
    names.sort();
    names.dedup();
    let index = |l: &str| names.binary_search_by(|n| n.as_str().cmp(l)).ok();
    let n = names.len();
    let y_true: Vec<usize> = labels.iter().map(|l| index(l).expect("listed")).collect();
    let y_pred: Vec<usize> = predicted
        .iter()
        .map(|top| top.first().and_then(|(l, _)| index(l)).unwrap_or(n))
        .collect();
    // One extra class for "a label outside these rows": it counts as a miss but is not a
    // class of its own in the averages.
    let mut e = evaluate(&y_true, &y_pred, n + 1);
    e.per_class.truncate(n);
    let f1s: Vec<f64> = e.per_class.iter().map(|c| c.f1).collect();
    e.f1_macro = f1s.iter().sum::<f64>() / n.max(1) as f64;
    e.f1_min = f1s.iter().copied().fold(f64::INFINITY, f64::min);
    if !e.f1_min.is_finite() {
        e.f1_min = 0.0;
    }
    Ok(metric.value(&e).unwrap_or(e.f1_weighted))
}
