//! Predictions as tables: wide (every input column plus `category_1..k`, `probability_1..k`)
//! or long (one row per input row and rank).

use std::path::{Path, PathBuf};

use polars::prelude::{Column, DataFrame, NamedFrom, PolarsResult, Series};

use crate::model::batched::TopK;

/// `<input stem>.predictions.csv` beside the input.
pub fn default_output(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    input.with_file_name(format!("{stem}.predictions.csv"))
}

/// Every column of `frame` plus `category_1..k` and `probability_1..k`.
pub fn wide_frame(mut frame: DataFrame, top: &TopK, labels: &[String]) -> PolarsResult<DataFrame> {
    let rows = top.rows();
    for rank in 0..top.k {
        let cats: Vec<&str> = (0..rows)
            .map(|r| labels[top.classes[r * top.k + rank] as usize].as_str())
            .collect();
        frame.with_column(Column::new(format!("category_{}", rank + 1).into(), cats))?;
    }
    for rank in 0..top.k {
        let probs: Vec<f32> = (0..rows).map(|r| top.probs[r * top.k + rank]).collect();
        frame.with_column(Column::new(
            format!("probability_{}", rank + 1).into(),
            probs,
        ))?;
    }
    Ok(frame)
}

/// One row per (input row, rank): `row_id`, `rank` (0 = best), `category`, `probability`.
pub fn long_frame(top: &TopK, labels: &[String]) -> PolarsResult<DataFrame> {
    let n = top.classes.len();
    let row_id: Vec<u64> = (0..n).map(|i| (i / top.k) as u64).collect();
    let rank: Vec<u32> = (0..n).map(|i| (i % top.k) as u32).collect();
    let category: Vec<&str> = top
        .classes
        .iter()
        .map(|&c| labels[c as usize].as_str())
        .collect();
    DataFrame::new_infer_height(vec![
        Series::new("row_id".into(), row_id).into(),
        Series::new("rank".into(), rank).into(),
        Series::new("category".into(), category).into(),
        Series::new("probability".into(), top.probs.clone()).into(),
    ])
}
