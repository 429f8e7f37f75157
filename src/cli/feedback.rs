//! `catbert feedback add|stats`: put verified rows from a file into a feedback store, and say
//! what a store holds.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse_format;
use super::progress::Ui;
use crate::checkpoint::{Checkpoint, HubSettings, ModelRef};
use crate::data::{Format, Table};
use crate::error::Error;
use crate::feedback::{default_dir, stats, FeedbackRow, FeedbackStore};

#[derive(Debug, Args)]
pub struct FeedbackArgs {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Append the verified rows of a file (rows with an empty label are skipped).
    Add {
        /// .csv, .tsv, .jsonl or .parquet.
        file: PathBuf,
        /// Column of verified labels.
        #[arg(long)]
        label_col: String,
        /// Column of texts.
        #[arg(long, default_value = "text")]
        text_col: String,
        /// Input format, overriding the extension.
        #[arg(long, value_parser = parse_format)]
        format: Option<Format>,
        #[command(flatten)]
        store: StoreChoice,
        /// The client these rows belong to.
        #[arg(long)]
        client: Option<String>,
    },
    /// Rows per day and per label, agreement with the model, conflicts, unknown labels.
    Stats {
        /// The store's folder (or name it by --model).
        dir: Option<PathBuf>,
        /// The model whose store this is (its default folder) and whose classes are known.
        #[arg(long)]
        model: Option<String>,
    },
}

/// `--feedback DIR`, else the default folder of `--model`.
#[derive(Debug, Args)]
pub struct StoreChoice {
    /// The feedback store's folder.
    #[arg(long)]
    pub feedback: Option<PathBuf>,
    /// The model the rows are for: its default feedback folder.
    #[arg(long)]
    pub model: Option<String>,
}

fn store_for(dir: Option<PathBuf>, model: Option<&str>) -> anyhow::Result<FeedbackStore> {
    match (dir, model) {
        (Some(dir), _) => Ok(FeedbackStore::new(dir)),
        (None, Some(m)) => Ok(FeedbackStore::new(default_dir(&ModelRef::try_parse(m)?))),
        (None, None) => Err(Error::Usage(
            "name the feedback store: a folder (`feedback`) or the model it belongs to (`model`)"
                .into(),
        )
        .into()),
    }
}

/// The classes of `model` when it is a folder or a cached Hub model (for flagging labels).
fn classes_of(model: &str) -> anyhow::Result<Option<Vec<String>>> {
    let reference = ModelRef::try_parse(model)?;
    if matches!(reference, ModelRef::Registry { .. }) {
        return Ok(None);
    }
    let folder = reference.resolve(&HubSettings::from_env())?;
    let id2label = Checkpoint::open(&folder.dir)?.config.id2label;
    Ok((!id2label.is_empty()).then_some(id2label))
}

pub fn run(args: FeedbackArgs, ui: &Ui) -> anyhow::Result<()> {
    match args.action {
        Action::Add {
            file,
            label_col,
            text_col,
            format,
            store,
            client,
        } => {
            let target = store_for(store.feedback, store.model.as_deref())?;
            let table = Table::read(&file, format)?;
            let texts = table.texts(&text_col)?;
            let labels = table.labels(&label_col)?;
            let name = file
                .file_name()
                .map_or("file".into(), |n| n.to_string_lossy().into_owned());
            let rows: Vec<FeedbackRow> = texts
                .into_iter()
                .zip(labels)
                .filter_map(|(text, label)| Some((text, label?)))
                .map(|(text, label)| FeedbackRow {
                    client: client.clone(),
                    model: store.model.clone(),
                    ..FeedbackRow::new(text, label, &format!("file:{name}"))
                })
                .collect();
            let skipped = table.rows() - rows.len();
            target.append(&rows)?;
            ui.result(&format!(
                "{} verified rows added to {} ({skipped} rows without a label skipped)",
                rows.len(),
                target.dir().display()
            ));
            Ok(())
        }
        Action::Stats { dir, model } => {
            let store = store_for(dir, model.as_deref())?;
            if !store.dir().is_dir() {
                return Err(Error::FileNotFound {
                    path: store.dir().to_path_buf(),
                }
                .into());
            }
            let set = store.read(None)?;
            let known = match &model {
                Some(m) => classes_of(m)?,
                None => None,
            };
            print!("{}", render(&store, &set, known.as_deref()));
            Ok(())
        }
    }
}

fn render(
    store: &FeedbackStore,
    set: &crate::feedback::FeedbackSet,
    known: Option<&[String]>,
) -> String {
    use std::fmt::Write as _;
    let s = stats(set, known);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "feedback in {}: {} rows ({} read from {} files; {} texts with conflicting labels, the latest verification wins)",
        store.dir().display(),
        set.rows.len(),
        set.read,
        set.files,
        set.conflicts.len()
    );
    let width = s
        .per_label
        .keys()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(5)
        .max(10);
    let _ = writeln!(out, "per day:");
    for (day, n) in &s.per_day {
        let _ = writeln!(out, "  {day:<width$} {n:>7}");
    }
    let _ = writeln!(out, "per label:");
    for (label, n) in &s.per_label {
        let _ = writeln!(out, "  {label:<width$} {n:>7}");
    }
    match s.agreement() {
        Some(a) => {
            let _ = writeln!(
                out,
                "agreement with the model: {:.1} % of {} rows with a prediction",
                a * 100.0,
                s.with_prediction
            );
        }
        None => {
            let _ = writeln!(out, "agreement with the model: no row has a prediction");
        }
    }
    if !s.unknown_labels.is_empty() {
        let list: Vec<String> = (s.unknown_labels.iter())
            .map(|(l, n)| format!("{l} ({n})"))
            .collect();
        let _ = writeln!(
            out,
            "labels the model does not know (kept, not used for retraining): {}",
            list.join(", ")
        );
    }
    for (text, labels) in set.conflicts.iter().take(10) {
        let _ = writeln!(out, "conflict: {text:?}: {}", labels.join(" → "));
    }
    out
}
