//! Retraining on feedback: verified rows join the training rows (a verified label overrides
//! the training label of the same text), and the newest of them can be held out as a
//! time-based evaluation set, so a new model and the champion are compared on fresh rows.

use std::collections::{HashMap, HashSet};

use polars::prelude::*;

use super::{FeedbackRow, FeedbackSet};
use crate::data::Table;
use crate::error::{Error, Result};

/// What merging did, for the run's summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MergeSummary {
    /// Labelled rows of the training file.
    pub train_rows: usize,
    /// Verified rows in the store (latest per text).
    pub feedback_rows: usize,
    /// Verified rows that confirmed the training label of their text.
    pub confirmed: usize,
    /// Verified rows that changed the training label of their text.
    pub relabelled: usize,
    /// Verified rows with texts new to training.
    pub added: usize,
    /// Verified rows whose label training lacks: kept in the store, not used.
    pub unknown_label: usize,
    /// The newest verified rows held out as the evaluation set.
    pub held_out: usize,
    /// Texts the store holds with conflicting labels (the latest won).
    pub conflicts: usize,
}

/// The merged training table and, when rows were held out, the evaluation table.
pub struct Merged {
    /// Training rows (two columns: the text and label columns).
    pub train: Table,
    /// The held-out newest verified rows, if any.
    pub eval: Option<Table>,
    /// What happened.
    pub summary: MergeSummary,
}

fn table(
    path: &std::path::Path,
    cols: [&str; 2],
    rows: Vec<(String, Option<String>)>,
) -> Result<Table> {
    let (texts, labels): (Vec<String>, Vec<Option<String>>) = rows.into_iter().unzip();
    let frame = DataFrame::new_infer_height(vec![
        Column::new(cols[0].into(), texts),
        Column::new(cols[1].into(), labels),
    ])
    .map_err(|e| Error::BadData {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Table {
        path: path.to_path_buf(),
        frame,
    })
}

/// Merge `set` into the labelled rows of `train` (`text_col`, `label_col`); hold out the newest
/// `hold_out` share of the usable verified rows (0: none) as evaluation rows, removing their
/// texts from training.
pub fn merge(
    train: &Table,
    text_col: &str,
    label_col: &str,
    set: &FeedbackSet,
    hold_out: f64,
    store_dir: &std::path::Path,
) -> Result<Merged> {
    if !(0.0..1.0).contains(&hold_out) {
        return Err(Error::Usage(format!(
            "`feedback_eval` {hold_out} must be at least 0 and below 1"
        )));
    }
    let texts = train.texts(text_col)?;
    let labels = train.labels(label_col)?;
    let known: HashSet<&str> = labels.iter().flatten().map(String::as_str).collect();
    let mut summary = MergeSummary {
        train_rows: labels.iter().flatten().count(),
        feedback_rows: set.rows.len(),
        conflicts: set.conflicts.len(),
        ..MergeSummary::default()
    };
    let usable: Vec<&FeedbackRow> = set
        .rows
        .iter()
        .filter(|r| known.contains(r.label.as_str()))
        .collect();
    summary.unknown_label = set.rows.len() - usable.len();
    // `set.rows` is oldest first: the newest are at the end.
    let held = (usable.len() as f64 * hold_out).round() as usize;
    let (learn, fresh) = usable.split_at(usable.len() - held);
    summary.held_out = fresh.len();
    let fresh_texts: HashSet<&str> = fresh.iter().map(|r| r.text.as_str()).collect();

    let mut rows: Vec<(String, Option<String>)> = texts.into_iter().zip(labels).collect();
    // Every row of a text: a verified label overrides them all.
    let mut at: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, (t, _)) in rows.iter().enumerate() {
        at.entry(t.clone()).or_default().push(i);
    }
    for r in learn {
        match at.get(&r.text) {
            Some(same) => {
                let label = Some(r.label.clone());
                if same.iter().all(|&i| rows[i].1 == label) {
                    summary.confirmed += 1;
                } else {
                    summary.relabelled += 1;
                    for &i in same {
                        rows[i].1 = label.clone();
                    }
                }
            }
            None => {
                summary.added += 1;
                rows.push((r.text.clone(), Some(r.label.clone())));
            }
        }
    }
    // The evaluation rows must not be learnt.
    rows.retain(|(t, _)| !fresh_texts.contains(t.as_str()));
    let cols = [text_col, label_col];
    let eval_rows = fresh
        .iter()
        .map(|r| (r.text.clone(), Some(r.label.clone())))
        .collect::<Vec<_>>();
    Ok(Merged {
        train: table(&train.path, cols, rows)?,
        eval: if eval_rows.is_empty() {
            None
        } else {
            Some(table(store_dir, cols, eval_rows)?)
        },
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_labels_override_join_and_the_newest_are_held_out() {
        let frame = DataFrame::new_infer_height(vec![
            Column::new("text".into(), vec!["milk", "soap", "cola", "tea", "cola"]),
            Column::new(
                "label".into(),
                vec![
                    Some("dairy"),
                    Some("home"),
                    Some("dairy"),
                    Some("drinks"),
                    Some("dairy"),
                ],
            ),
        ])
        .unwrap();
        let train = Table {
            path: "train.csv".into(),
            frame,
        };
        let row = |t: &str, l: &str, at: i64| FeedbackRow {
            verified_at: at,
            ..FeedbackRow::new(t.into(), l.into(), "test")
        };
        let set = FeedbackSet {
            rows: vec![
                row("milk", "dairy", 1),
                row("cola", "drinks", 2),
                row("cheese", "dairy", 3),
                row("robot", "toys", 4),
                row("tea", "drinks", 5),
            ],
            read: 6,
            conflicts: vec![("x".into(), vec![])],
            files: 2,
        };
        let m = merge(&train, "text", "label", &set, 0.25, "fb".as_ref()).unwrap();
        assert_eq!(
            m.summary,
            MergeSummary {
                train_rows: 5,
                feedback_rows: 5,
                confirmed: 1,
                relabelled: 1,
                added: 1,
                unknown_label: 1,
                held_out: 1,
                conflicts: 1,
            }
        );
        let texts = m.train.texts("text").unwrap();
        assert_eq!(texts, ["milk", "soap", "cola", "cola", "cheese"]);
        let labels = m.train.labels("label").unwrap();
        assert_eq!(labels[2].as_deref(), Some("drinks"));
        assert_eq!(labels[3].as_deref(), Some("drinks"));
        assert_eq!(m.eval.unwrap().texts("text").unwrap(), ["tea"]);
    }
}
