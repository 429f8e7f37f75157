//! `catbert infer`: flags → [`Predictor`] → read rows → predict → write.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::progress::Ui;
use super::tracking::StoreArgs;
use super::{parse_format, RunArgs};
use crate::checkpoint::{Checkpoint, HubSettings, ModelRef};
use crate::data::{write_table, Format, Table};
use crate::error::Error;
use crate::feedback::{default_dir, FeedbackRow, FeedbackStore};
use crate::infer::output::{default_output, long_frame, wide_frame};
use crate::infer::review::{keep_top, review_frame, review_queue};
use crate::infer::scoring::{score_labelled_rows, Scored};
use crate::infer::{PredictOptions, Predictor};
use crate::metrics::format_table;
use crate::model::batched::TopK;
use crate::track::Registry;

#[derive(Debug, Args)]
pub struct InferArgs {
    /// Fine-tuned checkpoint: a folder in Hugging Face layout, a Hub id `org/name[@revision]`,
    /// or a registered version: models:/NAME@champion, models:/NAME/3, models:/NAME@latest.
    #[arg(long)]
    pub model: String,

    /// Input rows: .csv, .tsv, .jsonl/.ndjson or .parquet; `-` streams rows from stdin
    /// (with --format jsonl or arrow) and predictions to stdout as they are made.
    #[arg(long)]
    pub file: PathBuf,

    /// Output file; its extension picks the format. Default: `<input stem>.predictions.csv`
    /// beside the input; `-` (stdout) when streaming.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Input format, overriding the extension; when streaming (`--file -`): `jsonl` (JSON
    /// Lines) or `arrow` (an Arrow IPC stream), the output's format too.
    #[arg(long)]
    pub format: Option<String>,

    /// Input columns carried into the long layout (--long), e.g. a product id.
    #[arg(long, value_delimiter = ',')]
    pub key_cols: Vec<String>,

    /// Text column (default: the one recorded in the checkpoint, else `text`).
    #[arg(long)]
    pub text_col: Option<String>,

    /// How many categories per row (clamped to the number of classes, with a notice).
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,

    /// Rows per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,

    /// Truncate texts to this many tokens, at most the model's positions [default: 128, capped
    /// by the model's positions].
    #[arg(long)]
    pub max_len: Option<usize>,

    /// int8: the encoder's linear layers in int8 (weights per channel, activations per row),
    /// on the CPU — faster, at a small accuracy cost (see the README).
    #[arg(long, value_enum, default_value = "none")]
    pub quantize: crate::model::Quantize,

    /// With --quantize int8: rows whose top-1 probability leads the runner-up by less than P
    /// are computed again in fp32, so int8 cannot flip a close call (0 turns this off).
    #[arg(long, value_name = "P", default_value_t = crate::model::INT8_RECHECK)]
    pub int8_recheck: f32,

    /// One output row per (row, rank): row_id, rank (0 = best), category, probability.
    #[arg(long)]
    pub long: bool,

    /// Column of human-verified labels. Rows that have one are scored (accuracy, F1s, f1_min,
    /// confusion matrix → `<out stem>.metrics.json`) and kept as feedback for the next fine-tune
    /// (`<out stem>.feedback.csv`: text and label columns).
    #[arg(long)]
    pub label_col: Option<String>,

    /// Replace --out when it already exists.
    #[arg(long)]
    pub overwrite: bool,

    /// Feedback store for the rows --label-col verifies [default: the model's entry in the
    /// local registry, CATBERT_HOME/models/NAME/feedback, or CATBERT_HOME/feedback/<folder>].
    #[arg(long, requires = "label_col")]
    pub feedback: Option<PathBuf>,

    /// The client these rows belong to (recorded with the feedback).
    #[arg(long)]
    pub client: Option<String>,

    /// Write the rows most worth verifying to this file (smallest margin between the top two
    /// probabilities first, ties by entropy; rows already verified in --label-col left out).
    #[arg(long)]
    pub review_out: Option<PathBuf>,

    /// How many rows --review-out lists.
    #[arg(long, default_value_t = 100, requires = "review_out")]
    pub review_budget: usize,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(args: InferArgs, ui: &Ui) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        return Err(Error::Usage("`batch_size` must be at least 1".into()).into());
    }
    if args.top_k == 0 {
        return Err(Error::Usage("`top_k` must be at least 1".into()).into());
    }
    if args.file.as_os_str() == "-" {
        return super::infer_stream::run(&args, ui);
    }
    if args.out.as_deref().is_some_and(|o| o.as_os_str() == "-") {
        return Err(Error::Usage(
            "`out` - (stdout) streams predictions: give the rows on stdin too (`file` -)".into(),
        )
        .into());
    }
    let format = args
        .format
        .as_deref()
        .map(parse_format)
        .transpose()
        .map_err(Error::Usage)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_output(&args.file));
    check_output_path(&out, &args.file, args.overwrite)?;

    let reference = ModelRef::try_parse(&args.model)?;
    let (model, checkpoint, text_col) = open_model(&reference, &args)?;
    let table = Table::read(&args.file, format)?;
    let texts = table.texts(&text_col)?;
    for col in args.label_col.iter().chain(&args.key_cols) {
        table.labels(col)?; // a missing column, before the model loads
    }

    let predictor = load_predictor(&args, checkpoint, &model.origin)?;
    show_model(ui, &predictor, &args, texts.len());

    let start = Instant::now();
    let bar = ui.bar(texts.len() as u64, "infer");
    // The review queue needs every class's probability; the output keeps the top k.
    let k = if args.review_out.is_some() {
        predictor.labels().len()
    } else {
        args.top_k
    };
    let full = predictor.predict_encoded(&predictor.encode(&texts)?, k, &bar)?;
    if predictor.quantize() == crate::model::Quantize::Int8 && args.int8_recheck > 0.0 {
        let rechecked = predictor.int8_rechecked_rows();
        ui.info(&format!(
            "int8: {rechecked} of {} rows ({:.1} %) led by less than {} and were computed again in fp32",
            texts.len(),
            100.0 * rechecked as f64 / texts.len().max(1) as f64,
            args.int8_recheck
        ));
    }
    drop(bar);
    let top = keep_top(&full, args.top_k);
    let seconds = start.elapsed().as_secs_f64();

    let labels = predictor.labels();
    let mut frame = if args.long {
        long_frame(&top, labels, &table.frame, &args.key_cols)
    } else {
        wide_frame(table.frame.clone(), &top, labels)
    }
    .context("building the output table")?;
    write_table(&mut frame, &out, None)?;
    if let Some(col) = &args.label_col {
        let scored = score_labelled_rows(&table, &texts, &text_col, col, &top, labels, &out)?;
        show_scores(ui, col, scored.as_ref(), labels);
        let store = FeedbackStore::new(
            args.feedback
                .clone()
                .unwrap_or_else(|| default_dir(&reference)),
        );
        let added = store_feedback(
            &store,
            &args,
            &table,
            &texts,
            col,
            &top,
            labels,
            &model.origin,
        )?;
        if added > 0 {
            ui.info(&format!(
                "feedback: {added} verified rows added to {}",
                store.dir().display()
            ));
        }
    }
    if let Some(path) = &args.review_out {
        let verified = match &args.label_col {
            Some(col) => table.labels(col)?.iter().map(Option::is_some).collect(),
            None => vec![false; texts.len()],
        };
        let queue = review_queue(&full, args.review_budget, |r| !verified[r]);
        let mut frame =
            review_frame(&queue, &full, &texts, labels).context("building the review queue")?;
        write_table(&mut frame, path, None)?;
        ui.result(&format!(
            "{} rows to review (smallest margin first) -> {}",
            queue.len(),
            path.display()
        ));
    }
    ui.result(&format!(
        "{} rows in {seconds:.2} s ({:.1} rows/s) -> {}",
        texts.len(),
        texts.len() as f64 / seconds.max(1e-9),
        out.display()
    ));
    Ok(())
}

/// The folder of `reference` (through the registry for `models:/` references), its checkpoint
/// opened (cheap: config and metadata), and the text column to read: `--text-col`, else the
/// one the checkpoint records, else `text`.
pub fn open_model(
    reference: &ModelRef,
    args: &InferArgs,
) -> anyhow::Result<(crate::checkpoint::ModelFolder, Checkpoint, String)> {
    let model = match reference {
        ModelRef::Registry { .. } => {
            let registry = Registry::new(args.store.open()?);
            reference.resolve_with(&HubSettings::from_env(), Some(&registry))?
        }
        _ => reference.resolve(&HubSettings::from_env())?,
    };
    let checkpoint = Checkpoint::open(&model.dir)?;
    let text_col = (args.text_col.as_deref())
        .or(checkpoint.text_column())
        .unwrap_or("text")
        .to_string();
    Ok((model, checkpoint, text_col))
}

/// The classifier of `checkpoint` loaded with `args`' settings.
pub fn load_predictor(
    args: &InferArgs,
    checkpoint: Checkpoint,
    origin: &str,
) -> anyhow::Result<Predictor> {
    let options = PredictOptions {
        max_len: args.max_len,
        batch_size: args.batch_size,
        precision: args.run.precision,
        hub: None,
        registry: None,
        quantize: args.quantize,
        int8_recheck: args.int8_recheck,
    };
    Ok(Predictor::from_checkpoint(
        checkpoint,
        origin,
        args.run.device,
        options,
    )?)
}

/// Append the rows `col` verifies, with the model's top-1 and its probability, to `store`.
#[allow(clippy::too_many_arguments)]
fn store_feedback(
    store: &FeedbackStore,
    args: &InferArgs,
    table: &Table,
    texts: &[String],
    col: &str,
    top: &TopK,
    labels: &[String],
    origin: &str,
) -> anyhow::Result<usize> {
    let version = origin
        .strip_prefix("models:/")
        .and_then(|r| r.rsplit('/').next());
    let source = format!(
        "infer:{}",
        args.file
            .file_name()
            .map_or("file".into(), |n| n.to_string_lossy())
    );
    let rows: Vec<FeedbackRow> = table
        .labels(col)?
        .into_iter()
        .enumerate()
        .filter_map(|(r, label)| {
            let (class, p) = top.row(r).next()?;
            Some(FeedbackRow {
                predicted: Some(labels[class as usize].clone()),
                probability: Some(p),
                model: Some(args.model.clone()),
                model_version: version.map(String::from),
                client: args.client.clone(),
                ..FeedbackRow::new(texts[r].clone(), label?, &source)
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    Ok(store.append(&rows)?)
}

/// Notices about the loaded model and the line saying what runs where.
fn show_model(ui: &Ui, predictor: &Predictor, args: &InferArgs, rows: usize) {
    predictor.notices().iter().for_each(|n| ui.notice(n));
    let classes = predictor.labels().len();
    if args.top_k > classes {
        ui.notice(&format!(
            "--top-k {} is more than the model's {classes} classes; writing the top {classes}",
            args.top_k
        ));
    }
    ui.info(&format!(
        "model {} ({classes} classes) on {}, {}; {rows} rows from {}",
        predictor.origin(),
        predictor.device_description(),
        predictor.precision_name(),
        args.file.display()
    ));
}

/// What scoring the labelled rows found.
fn show_scores(ui: &Ui, col: &str, scored: Option<&Scored>, labels: &[String]) {
    let Some(s) = scored else {
        ui.notice(&format!(
            "no row has a label in column {col:?}; nothing to score"
        ));
        return;
    };
    if s.unknown > 0 {
        ui.notice(&format!("{} labelled rows carry a class the model does not know; they are kept as feedback but not scored", s.unknown));
    }
    ui.result(&format!(
        "{} labelled rows:\n{}",
        s.labelled,
        format_table(&s.evaluation, labels)
    ));
    ui.info(&format!(
        "metrics in {}; {} feedback rows in {}",
        s.metrics_path.display(),
        s.labelled,
        s.feedback_path.display()
    ));
}

/// Everything about `out` that can be checked before any work: its format, that it is not
/// the input, that it does not exist unless `overwrite`, and that its folder is writable.
fn check_output_path(out: &Path, input: &Path, overwrite: bool) -> anyhow::Result<()> {
    Format::of(out, None)?;
    let same = match (out.canonicalize(), input.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(Error::Usage(format!(
            "`out` {} is the input file; choose another `out`",
            out.display()
        ))
        .into());
    }
    if out.exists() && !overwrite {
        return Err(Error::Usage(format!(
            "{} already exists; pass `overwrite` to replace it, or choose another `out`",
            out.display()
        ))
        .into());
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let probe = dir.join(format!(".catbert-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| Error::Write {
        path: out.to_path_buf(),
        reason: format!("cannot write there: {e}"),
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
