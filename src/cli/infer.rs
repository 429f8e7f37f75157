//! `catbert infer`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use polars::prelude::{Column, DataFrame, NamedFrom, Series};

use super::progress::Ui;
use super::{parse_format, set_threads, RunArgs};
use crate::checkpoint::{resolve, Checkpoint, HubSettings};
use crate::data::{write_table, Format, Table};
use crate::device::Precision;
use crate::error::Error;
use crate::infer::{predict_top_k, TopK};
use crate::metrics::{evaluate, format_table};

#[derive(Debug, Args)]
pub struct InferArgs {
    /// Fine-tuned checkpoint: a folder in Hugging Face layout, or a Hub id `org/name[@revision]`.
    #[arg(long)]
    pub model: String,

    /// Input rows: .csv, .tsv, .jsonl/.ndjson or .parquet.
    #[arg(long)]
    pub file: PathBuf,

    /// Output file; its extension picks the format. Default: `<input stem>.predictions.csv`
    /// beside the input.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Input format, overriding the extension.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,

    /// Text column (default: the one recorded in the checkpoint, else `text`).
    #[arg(long)]
    pub text_col: Option<String>,

    /// How many categories per row (clamped to the number of classes, with a notice).
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,

    /// Rows per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,

    /// Truncate texts to this many tokens (capped by the model's max_position_embeddings).
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,

    /// One output row per (row, rank): row_id, rank (0 = best), category, probability.
    #[arg(long)]
    pub long: bool,

    /// Column of human-verified labels. Rows that have one are scored (accuracy, F1s, f1_min,
    /// confusion matrix → `<out stem>.metrics.json`) and kept as feedback for the next fine-tune
    /// (`<out stem>.feedback.csv`: text and label columns).
    #[arg(long)]
    pub label_col: Option<String>,

    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: InferArgs, ui: &Ui) -> anyhow::Result<()> {
    set_threads(args.run.threads);
    if args.batch_size == 0 {
        return Err(Error::Usage("--batch-size must be at least 1".into()).into());
    }
    if args.top_k == 0 {
        return Err(Error::Usage("--top-k must be at least 1".into()).into());
    }
    let out = args.out.clone().unwrap_or_else(|| default_out(&args.file));
    // Check the output format before any work is done.
    Format::of(&out, None)?;

    let selected = crate::device::select(args.run.device)?;
    if let Some(n) = &selected.notice {
        ui.notice(n);
    }
    let folder = resolve(&args.model, &HubSettings::from_env())?;
    let ckpt = Checkpoint::open(&folder.dir)?;
    let text_col = args
        .text_col
        .clone()
        .or_else(|| ckpt.meta_str("text_column").map(String::from))
        .unwrap_or_else(|| "text".to_string());

    let table = Table::read(&args.file, args.format)?;
    let texts = table.texts(&text_col)?;

    let precision = Precision::resolve(args.run.precision, &selected.device)?;
    let loaded = ckpt.load_classifier(&selected.device, precision.dtype())?;
    let encoder = ckpt.text_encoder(args.max_len)?;
    if !loaded.report.unexpected.is_empty() {
        ui.notice(&format!(
            "{} tensors in the checkpoint are not used by the classifier: {}",
            loaded.report.unexpected.len(),
            loaded.report.unexpected.join(", ")
        ));
    }
    let classes = loaded.labels.len();
    if args.top_k > classes {
        ui.notice(&format!(
            "--top-k {} is more than the model's {classes} classes; writing the top {classes}",
            args.top_k
        ));
    }
    ui.info(&format!(
        "model {} ({classes} classes) on {}, {}; {} rows from {}",
        folder.origin,
        selected.describe(),
        precision.name(),
        texts.len(),
        args.file.display()
    ));

    let start = Instant::now();
    let encoded = encoder.encode_all(&texts)?;
    let bar = ui.bar(texts.len() as u64, "infer");
    let top = super::oom_hint(
        predict_top_k(
            &loaded.model,
            &encoded,
            encoder.pad_id(),
            &selected.device,
            args.batch_size,
            args.top_k,
            &bar,
        ),
        "--batch-size",
        args.batch_size,
    )?;
    drop(bar);
    let seconds = start.elapsed().as_secs_f64();

    let mut frame = if args.long {
        long_frame(&top, &loaded.labels)
    } else {
        wide_frame(table.frame.clone(), &top, &loaded.labels)
    }
    .context("building the output table")?;
    write_table(&mut frame, &out, None)?;
    if let Some(col) = &args.label_col {
        score_labelled_rows(
            &table,
            &texts,
            &text_col,
            col,
            &top,
            &loaded.labels,
            &out,
            ui,
        )?;
    }
    ui.info(&format!(
        "{} rows in {seconds:.2} s ({:.1} rows/s) -> {}",
        texts.len(),
        texts.len() as f64 / seconds.max(1e-9),
        out.display()
    ));
    Ok(())
}

/// Score the rows that carry a label and keep them, with their label, as feedback.
#[allow(clippy::too_many_arguments)]
fn score_labelled_rows(
    table: &Table,
    texts: &[String],
    text_col: &str,
    label_col: &str,
    top: &TopK,
    classes: &[String],
    out: &Path,
    ui: &Ui,
) -> anyhow::Result<()> {
    let labels = table.labels(label_col)?;
    let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i].is_some()).collect();
    if rows.is_empty() {
        ui.notice(&format!(
            "no row has a label in column {label_col:?}; nothing to score"
        ));
        return Ok(());
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
    if unknown > 0 {
        ui.notice(&format!("{unknown} labelled rows carry a class the model does not know; they are kept as feedback but not scored"));
    }
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let evaluation = evaluate(&truth, &predicted, classes.len());
    ui.info(&format!(
        "{} labelled rows:\n{}",
        rows.len(),
        format_table(&evaluation, classes)
    ));
    let metrics_path = out.with_file_name(format!("{stem}.metrics.json"));
    let json = serde_json::json!({ "labels": classes, "label_column": label_col, "unknown_label_rows": unknown, "metrics": evaluation });
    crate::fsutil::write_bytes_atomic(
        &metrics_path,
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;

    let feedback_texts: Vec<&str> = rows.iter().map(|&r| texts[r].as_str()).collect();
    let feedback_labels: Vec<&str> = rows
        .iter()
        .map(|&r| labels[r].as_deref().expect("labelled"))
        .collect();
    let mut feedback = DataFrame::new_infer_height(vec![
        Column::new(text_col.into(), feedback_texts),
        Column::new(label_col.into(), feedback_labels),
    ])?;
    let feedback_path = out.with_file_name(format!("{stem}.feedback.csv"));
    write_table(&mut feedback, &feedback_path, None)?;
    ui.info(&format!(
        "metrics in {}; {} feedback rows in {}",
        metrics_path.display(),
        rows.len(),
        feedback_path.display()
    ));
    Ok(())
}

fn default_out(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    input.with_file_name(format!("{stem}.predictions.csv"))
}

/// Every input column plus `category_1..k` and `probability_1..k`.
fn wide_frame(
    mut frame: DataFrame,
    top: &TopK,
    labels: &[String],
) -> polars::prelude::PolarsResult<DataFrame> {
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

/// One row per (input row, rank).
fn long_frame(top: &TopK, labels: &[String]) -> polars::prelude::PolarsResult<DataFrame> {
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
