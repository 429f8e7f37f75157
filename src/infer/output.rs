//! Predictions as tables: wide (every input column plus `category_1..k`, `probability_1..k`)
//! or long (one row per input row and rank).

use std::path::{Path, PathBuf};

use polars::prelude::{Column, DataFrame, IdxCa, IdxSize, NamedFrom, PolarsResult, Series};

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

/// One row per (input row, rank): the `keys` columns of `input`, `row_id`, `rank` (0 = best),
/// `category`, `probability`.
pub fn long_frame(
    top: &TopK,
    labels: &[String],
    input: &DataFrame,
    keys: &[String],
) -> PolarsResult<DataFrame> {
    let n = top.classes.len();
    let mut columns: Vec<Column> = Vec::new();
    if !keys.is_empty() {
        let idx: Vec<IdxSize> = (0..n).map(|i| (i / top.k) as IdxSize).collect();
        let repeated = input
            .select(keys.iter().map(String::as_str))?
            .take(&IdxCa::from_vec("idx".into(), idx))?;
        columns.extend(repeated.columns().iter().cloned());
    }
    let row_id: Vec<u64> = (0..n).map(|i| (i / top.k) as u64).collect();
    let rank: Vec<u32> = (0..n).map(|i| (i % top.k) as u32).collect();
    let category: Vec<&str> = top
        .classes
        .iter()
        .map(|&c| labels[c as usize].as_str())
        .collect();
    columns.extend([
        Series::new("row_id".into(), row_id).into(),
        Series::new("rank".into(), rank).into(),
        Series::new("category".into(), category).into(),
        Series::new("probability".into(), top.probs.clone()).into(),
    ]);
    DataFrame::new_infer_height(columns)
}
