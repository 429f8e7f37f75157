//! Rows that carry a human-verified label: scored against the predictions
//! (`<out stem>.metrics.json`) and kept as feedback for the next fine-tune
//! (`<out stem>.feedback.csv`: text and label columns).

use std::path::{Path, PathBuf};

use polars::prelude::{Column, DataFrame};

use crate::data::{write_table, Table};
use crate::error::{Error, Result};
use crate::fsutil::write_bytes_atomic;
use crate::metrics::{evaluate, Evaluation};
use crate::model::batched::TopK;

/// What scoring the labelled rows found and wrote.
pub struct Scored {
    /// Rows with a label.
    pub labelled: usize,
    /// Labelled rows whose class the model does not know (kept as feedback, not scored).
    pub unknown: usize,
    /// Metrics over the scored rows.
    pub evaluation: Evaluation,
    /// Where the metrics went.
    pub metrics_path: PathBuf,
    /// Where the feedback rows went.
    pub feedback_path: PathBuf,
}

/// Score the rows of `table` that have a label in `label_col` against `top` (input order) and
/// write metrics and feedback beside `out`. `None` when no row has a label.
pub fn score_labelled_rows(
    table: &Table,
    texts: &[String],
    text_col: &str,
    label_col: &str,
    top: &TopK,
    classes: &[String],
    out: &Path,
) -> Result<Option<Scored>> {
    let labels = table.labels(label_col)?;
    let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i].is_some()).collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let (mut truth, mut predicted, mut unknown) = (Vec::new(), Vec::new(), 0usize);
    for &r in &rows {
        let label = labels[r].as_deref().expect("labelled");
        match classes.iter().position(|c| c == label) {
            Some(c) => {
                truth.push(c);
                predicted.push(top.classes[r * top.k] as usize);
            }
            None => unknown += 1,
        }
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let evaluation = evaluate(&truth, &predicted, classes.len());
    let metrics_path = out.with_file_name(format!("{stem}.metrics.json"));
    let json = serde_json::json!({ "labels": classes, "label_column": label_col, "unknown_label_rows": unknown, "metrics": evaluation });
    let bytes = serde_json::to_string_pretty(&json).expect("metrics serialise");
    write_bytes_atomic(&metrics_path, bytes.as_bytes())?;

    let feedback_texts: Vec<&str> = rows.iter().map(|&r| texts[r].as_str()).collect();
    let feedback_labels: Vec<&str> = rows
        .iter()
        .map(|&r| labels[r].as_deref().expect("labelled"))
        .collect();
    let feedback_path = out.with_file_name(format!("{stem}.feedback.csv"));
    let mut feedback = DataFrame::new_infer_height(vec![
        Column::new(text_col.into(), feedback_texts),
        Column::new(label_col.into(), feedback_labels),
    ])
    .map_err(|e| Error::Write {
        path: feedback_path.clone(),
        reason: e.to_string(),
    })?;
    write_table(&mut feedback, &feedback_path, None)?;
    Ok(Some(Scored {
        labelled: rows.len(),
        unknown,
        evaluation,
        metrics_path,
        feedback_path,
    }))
}
