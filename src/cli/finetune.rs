//! `catbert finetune`: flags over a TOML config over defaults, data checks, then the loop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::DType;
use clap::Args;
use serde::Deserialize;
use serde_json::json;

use super::progress::{Bar, Ui};
use super::{set_threads, RunArgs};
use crate::checkpoint::{resolve, Checkpoint, CheckpointWriter, HubSettings};
use crate::data::split::{balanced_weights, stratified_split, LabelMap};
use crate::data::Table;
use crate::device::Precision;
use crate::error::Error;
use crate::metrics::{format_table, Metric};
use crate::train::{
    fit, EpochRecord, Examples, Hyper, RunState, StaticMeta, TrainData, TrainObserver,
};

/// Every setting a TOML config (`--config`) may hold; flags override it.
#[derive(Debug, Default, Clone, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Training rows (.csv, .tsv, .jsonl, .parquet) with a text and a label column.
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Extra evaluation rows, scored every epoch; rows with an empty label are skipped.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Text column [default: text].
    #[arg(long)]
    pub text_col: Option<String>,
    /// Label column [default: `label`, else the only column besides the text].
    #[arg(long)]
    pub label_col: Option<String>,
    /// Label column of --eval [default: the training label column].
    #[arg(long)]
    pub eval_label_col: Option<String>,
    /// Base model: a folder in Hugging Face layout or a Hub id `org/name[@revision]`
    /// [default: sentence-transformers/all-MiniLM-L6-v2].
    #[arg(long)]
    pub model: Option<String>,
    /// Passes over the training rows [default: 2].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// What picks the best epoch: f1_min, f1_weighted, f1_macro, accuracy or loss [default: f1_min].
    #[arg(long)]
    pub metric: Option<Metric>,
    /// Rows per optimizer step [default: 32].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate of AdamW [default: 5e-5].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Fraction of steps of linear warm-up before linear decay to 0 [default: 0.1].
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    /// Decoupled weight decay, not applied to biases and LayerNorm weights [default: 0.01].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm to this (0 = off) [default: 1.0].
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// Truncate texts to this many tokens [default: 128].
    #[arg(long)]
    pub max_len: Option<usize>,
    /// balanced (n / (classes · count)) or none [default: balanced].
    #[arg(long)]
    pub class_weights: Option<ClassWeights>,
    /// Stratified fraction of the training rows held out to pick the best epoch [default: 0.1].
    #[arg(long)]
    pub val_split: Option<f64>,
    /// Seed of the split, shuffling, dropout and the new head [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output folder [default: checkpoints/<train file stem>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rows per forward pass when evaluating [default: 64].
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Batches per window of length-sorted rows when drawing training batches: larger pads
    /// less, 1 gives plain random batches [default: 1].
    #[arg(long)]
    pub bucket_window: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    Balanced,
    None,
}

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// TOML file with any of the settings above (keys as the flags, with underscores).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the interrupted run saved in --out.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

macro_rules! merge {
    ($flags:expr, $file:expr, $($field:ident),*) => {
        Settings { $($field: $flags.$field.clone().or_else(|| $file.$field.clone()),)* }
    };
}

fn load_settings(args: &FinetuneArgs) -> anyhow::Result<Settings> {
    let file = match &args.config {
        None => Settings::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::FileNotFound { path: path.clone() },
                _ => Error::Io {
                    path: path.clone(),
                    source: e,
                },
            })?;
            toml::from_str(&text).map_err(|e| Error::BadConfig {
                path: path.clone(),
                reason: e.message().to_string(),
            })?
        }
    };
    let f = &args.settings;
    Ok(merge!(
        f,
        file,
        train,
        eval,
        text_col,
        label_col,
        eval_label_col,
        model,
        epochs,
        metric,
        batch_size,
        lr,
        warmup_ratio,
        weight_decay,
        max_grad_norm,
        max_len,
        class_weights,
        val_split,
        seed,
        out,
        eval_batch_size,
        bucket_window
    ))
}

pub fn run(args: FinetuneArgs, ui: &Ui) -> anyhow::Result<()> {
    set_threads(args.run.threads);
    let s = load_settings(&args)?;
    let usage = |m: String| -> anyhow::Error { Error::Usage(m).into() };
    let train_path = s
        .train
        .clone()
        .ok_or_else(|| usage("--train is required (or `train` in --config)".into()))?;
    let hyper = Hyper {
        epochs: s.epochs.unwrap_or(2),
        batch_size: s.batch_size.unwrap_or(32),
        lr: s.lr.unwrap_or(5e-5),
        warmup_ratio: s.warmup_ratio.unwrap_or(0.1),
        weight_decay: s.weight_decay.unwrap_or(0.01),
        max_grad_norm: s.max_grad_norm.unwrap_or(1.0),
        seed: s.seed.unwrap_or(42),
        eval_batch_size: s.eval_batch_size.unwrap_or(64),
        metric: s.metric.unwrap_or(Metric::F1Min),
        bucket_window: s.bucket_window.unwrap_or(1).max(1),
    };
    let val_split = s.val_split.unwrap_or(0.1);
    let max_len = s.max_len.unwrap_or(128);
    if hyper.epochs == 0 || hyper.batch_size == 0 || hyper.eval_batch_size == 0 {
        return Err(usage(
            "--epochs, --batch-size and --eval-batch-size must be at least 1".into(),
        ));
    }
    if !(0.0..1.0).contains(&val_split) {
        return Err(usage(format!("--val-split {val_split} must be in [0, 1)")));
    }
    if val_split == 0.0 && s.eval.is_none() {
        return Err(usage(
            "--val-split 0 needs --eval: some labelled rows must pick the best epoch".into(),
        ));
    }
    let out = s.out.clone().unwrap_or_else(|| {
        let stem = train_path
            .file_stem()
            .map(|x| x.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        PathBuf::from("checkpoints").join(stem)
    });

    // Data: every check before any expensive work.
    let train_table = Table::read(&train_path, None)?;
    let text_col = s.text_col.clone().unwrap_or_else(|| "text".to_string());
    let texts = train_table.texts(&text_col)?;
    let label_col = pick_label_column(&train_table, &text_col, s.label_col.as_deref())?;
    ui.info(&format!(
        "training on {} (text column {text_col:?}, label column {label_col:?})",
        train_path.display()
    ));
    let raw_labels = train_table.labels(&label_col)?;
    let labelled: Vec<usize> = (0..texts.len())
        .filter(|&i| raw_labels[i].is_some())
        .collect();
    if labelled.len() < texts.len() {
        ui.notice(&format!(
            "{} training rows have an empty label and are skipped",
            texts.len() - labelled.len()
        ));
    }
    let label_map = LabelMap::from_labels(
        labelled
            .iter()
            .map(|&i| raw_labels[i].as_deref().expect("labelled")),
    );
    if label_map.len() < 2 {
        return Err(Error::BadData {
            path: train_path.clone(),
            reason: match label_map.names.first() {
                Some(only) => format!("column {label_col:?} has only one class ({only:?}); a classifier needs at least 2"),
                None => format!("column {label_col:?} has no labels"),
            },
        }
        .into());
    }
    let y: Vec<usize> = labelled
        .iter()
        .map(|&i| {
            label_map
                .index(raw_labels[i].as_deref().expect("labelled"))
                .expect("known")
        })
        .collect();

    let split = if val_split > 0.0 {
        stratified_split(&y, label_map.len(), val_split, hyper.seed).map_err(|(class, rows)| Error::BadData {
            path: train_path.clone(),
            reason: format!(
                "--val-split {val_split} leaves class {:?} ({rows} rows) without training or hold-out rows; add rows or change --val-split",
                label_map.names[class]
            ),
        })?
    } else {
        crate::data::split::Split {
            train: (0..y.len()).collect(),
            holdout: Vec::new(),
        }
    };

    let eval_rows = match &s.eval {
        None => None,
        Some(path) => Some(read_eval(
            path,
            &text_col,
            s.eval_label_col.as_deref().unwrap_or(&label_col),
            &label_map,
            ui,
        )?),
    };

    // Model and tokenizer.
    let selected = crate::device::select(args.run.device)?;
    if let Some(n) = &selected.notice {
        ui.notice(n);
    }
    let model_spec = s
        .model
        .clone()
        .unwrap_or_else(|| "sentence-transformers/all-MiniLM-L6-v2".into());
    let folder = resolve(&model_spec, &HubSettings::from_env())?;
    let base = Checkpoint::open(&folder.dir)?;
    let encoder = base.text_encoder(max_len)?;
    let tokenize_start = Instant::now();
    let train_ids = encoder.encode_all(
        &labelled
            .iter()
            .map(|&i| texts[i].as_str())
            .collect::<Vec<_>>(),
    )?;
    let pick = |rows: &[usize]| Examples {
        ids: rows.iter().map(|&r| train_ids[r].clone()).collect(),
        labels: rows.iter().map(|&r| y[r]).collect(),
    };
    let train = pick(&split.train);
    let holdout = (!split.holdout.is_empty()).then(|| pick(&split.holdout));
    let eval = match &eval_rows {
        None => None,
        Some((eval_texts, labels)) => Some(Examples {
            ids: encoder.encode_all(eval_texts)?,
            labels: labels.clone(),
        }),
    };
    let class_weights = match s.class_weights.unwrap_or(ClassWeights::Balanced) {
        ClassWeights::Balanced => balanced_weights(&train.labels, label_map.len()),
        ClassWeights::None => vec![1.0; label_map.len()],
    };
    ui.info(&format!(
        "{} classes; {} training rows, {} hold-out, {} eval; tokenised in {:.1} s; class weights {:?}",
        label_map.len(),
        train.len(),
        holdout.as_ref().map_or(0, Examples::len),
        eval.as_ref().map_or(0, Examples::len),
        tokenize_start.elapsed().as_secs_f64(),
        class_weights.iter().map(|w| (w * 1e4).round() / 1e4).collect::<Vec<_>>()
    ));

    let writer = CheckpointWriter::new(&out, &base, &label_map.names)?;
    let saved = writer.read_state()?;
    let resume = match (args.resume, saved) {
        (true, Some(saved)) => {
            let state: RunState =
                serde_json::from_value(saved.state.clone()).map_err(|e| Error::BadConfig {
                    path: out.join("run/state.json"),
                    reason: e.to_string(),
                })?;
            ui.info(&format!(
                "resuming after epoch {} of {}",
                state.epochs_done, hyper.epochs
            ));
            Some((state, saved.params, saved.optimizer))
        }
        (true, None) => {
            ui.notice(&format!(
                "nothing to resume in {}; starting afresh",
                out.display()
            ));
            None
        }
        (false, Some(saved)) => {
            let done = saved
                .state
                .get("epochs_done")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            return Err(usage(format!(
                "{} already holds a run ({done} epochs done); pass --resume to continue it, or choose another --out",
                out.display()
            )));
        }
        (false, None) => None,
    };
    let (resume_state, init_tensors) = match resume {
        Some((state, params, optimizer)) => (Some((state, optimizer)), Some(params)),
        None => (None, None),
    };
    let precision = Precision::resolve(args.run.precision, &selected.device)?;
    let loaded = base.load_for_training(
        &selected.device,
        DType::F32,
        precision.dtype(),
        &label_map.names,
        hyper.seed,
        init_tensors,
    )?;
    let fresh: Vec<&str> = loaded.report.missing.iter().map(String::as_str).collect();
    if resume_state.is_none() && !fresh.is_empty() {
        ui.info(&format!("initialised fresh: {}", fresh.join(", ")));
    }
    ui.info(&format!(
        "base {} on {}, {}; {} epochs, batch {}, lr {}, metric {}; output {}",
        folder.origin,
        selected.describe(),
        precision.name(),
        hyper.epochs,
        hyper.batch_size,
        hyper.lr,
        hyper.metric,
        out.display()
    ));

    let meta = json!({
        "catbert_version": env!("CARGO_PKG_VERSION"),
        "base_model": folder.origin,
        "text_column": text_col,
        "label_column": label_col,
        "eval_label_column": s.eval_label_col.as_deref().unwrap_or(&label_col),
        "labels": label_map.names,
        "class_weights": class_weights,
        "class_weight_mode": match s.class_weights.unwrap_or(ClassWeights::Balanced) {
            ClassWeights::Balanced => "balanced",
            ClassWeights::None => "none",
        },
        "train_file": s.train,
        "eval_file": s.eval,
        "args": { "hyper": hyper, "max_len": max_len, "val_split": val_split },
        "device": selected.describe(),
        "precision": precision.name(),
    });
    let meta: StaticMeta = meta.as_object().cloned().expect("object");
    let data = TrainData {
        train,
        holdout,
        eval,
        class_weights,
        pad_id: encoder.pad_id(),
    };
    let observer = Observer {
        ui,
        bar: std::cell::RefCell::new(None),
        epoch: std::cell::Cell::new((0, 0, 0, Instant::now())),
        epochs: hyper.epochs,
        labels: &label_map.names,
    };
    let started = Instant::now();
    let outcome = super::oom_hint(
        fit(
            &loaded.model,
            &loaded.params,
            &data,
            &hyper,
            &selected.device,
            &writer,
            &meta,
            resume_state,
            &observer,
        ),
        "--batch-size",
        hyper.batch_size,
    )?;
    let best = outcome.state.best_epoch.unwrap_or(0);
    let rec = &outcome.state.history[best.saturating_sub(1)];
    let line = match (rec.selection(), outcome.state.best_score) {
        (Some(_), Some(score)) => format!("{} {:.4}", hyper.metric, score),
        _ => format!("{} n/a", hyper.metric),
    };
    let samples: f64 = outcome
        .state
        .history
        .iter()
        .map(|r| r.train_samples_per_s * r.train_seconds)
        .sum();
    let seconds: f64 = outcome.state.history.iter().map(|r| r.train_seconds).sum();
    ui.info(&format!(
        "best epoch {best} ({line}); checkpoint in {}; {:.0} s in all, training {:.1} samples/s",
        out.display(),
        started.elapsed().as_secs_f64(),
        samples / seconds.max(1e-9)
    ));
    Ok(())
}

/// `label` when present, else the only column besides the text; the choice is printed.
fn pick_label_column(table: &Table, text_col: &str, asked: Option<&str>) -> anyhow::Result<String> {
    if let Some(c) = asked {
        if !table.has_column(c) {
            table.labels(c)?; // reports the missing column with the columns that exist
        }
        return Ok(c.to_string());
    }
    if table.has_column("label") {
        return Ok("label".into());
    }
    let others: Vec<String> = table
        .column_names()
        .into_iter()
        .filter(|c| c != text_col)
        .collect();
    match others.as_slice() {
        [only] => Ok(only.clone()),
        _ => Err(Error::Usage(format!(
            "{}: no column \"label\" and {} other columns ({}); pass --label-col",
            table.path.display(),
            others.len(),
            others.join(", ")
        ))
        .into()),
    }
}

/// Labelled rows of the `--eval` file; unlabelled rows are skipped (and counted), a label not
/// seen in training is an error naming it and its row.
fn read_eval(
    path: &Path,
    text_col: &str,
    label_col: &str,
    labels: &LabelMap,
    ui: &Ui,
) -> anyhow::Result<(Vec<String>, Vec<usize>)> {
    let table = Table::read(path, None)?;
    let texts = table.texts(text_col)?;
    let raw = table.labels(label_col)?;
    let mut keep_texts = Vec::new();
    let mut keep_labels = Vec::new();
    for (i, (text, label)) in texts.into_iter().zip(raw).enumerate() {
        let Some(label) = label else { continue };
        let Some(index) = labels.index(&label) else {
            return Err(table
                .bad_value(
                    i,
                    label_col,
                    &format!(
                        "label {label:?} does not occur in the training data (classes: {})",
                        labels.names.join(", ")
                    ),
                )
                .into());
        };
        keep_texts.push(text);
        keep_labels.push(index);
    }
    ui.info(&format!(
        "eval on {}: {} labelled rows, {} unlabelled skipped",
        path.display(),
        keep_texts.len(),
        table.rows() - keep_texts.len()
    ));
    Ok((keep_texts, keep_labels))
}

/// Draws one bar per epoch and prints each epoch's metrics.
struct Observer<'a> {
    ui: &'a Ui,
    bar: std::cell::RefCell<Option<Bar>>,
    /// (epoch, rows in the epoch, rows done, start) for log-style progress lines.
    epoch: std::cell::Cell<(usize, usize, usize, Instant)>,
    epochs: usize,
    labels: &'a [String],
}

impl TrainObserver for Observer<'_> {
    fn epoch_start(&self, epoch: usize, samples: usize) {
        *self.bar.borrow_mut() = Some(
            self.ui
                .bar(samples as u64, &format!("epoch {epoch}/{}", self.epochs)),
        );
        self.epoch.set((epoch, samples, 0, Instant::now()));
    }

    fn step(&self, samples: usize, mean_loss: f64) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            bar.0.inc(samples as u64);
            bar.0.set_message(format!("loss {mean_loss:.4}"));
        }
        // Without a live bar (logs, cron), a line at every tenth of the epoch.
        let (epoch, total, done, started) = self.epoch.get();
        let now = done + samples;
        self.epoch.set((epoch, total, now, started));
        if !self.ui.live() && (now * 10 / total.max(1)) > (done * 10 / total.max(1)) && now < total
        {
            let rate = now as f64 / started.elapsed().as_secs_f64().max(1e-9);
            self.ui.info(&format!(
                "epoch {epoch}/{}: {now}/{total} rows, loss {mean_loss:.4}, {rate:.1} samples/s, eta {:.0} s",
                self.epochs,
                (total - now) as f64 / rate
            ));
        }
    }

    fn evaluating(&self, what: &str) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            bar.0.set_message(format!("evaluating {what}"));
        }
    }

    fn epoch_end(&self, r: &EpochRecord, is_best: bool) {
        self.bar.borrow_mut().take();
        self.ui.info(&format!(
            "epoch {}: train loss {:.4}, {:.1} samples/s ({:.0} s){}",
            r.epoch,
            r.train_loss,
            r.train_samples_per_s,
            r.train_seconds,
            if is_best {
                " — best so far, saved"
            } else {
                ""
            }
        ));
        for (name, e) in [("hold-out", &r.holdout), ("eval", &r.eval)] {
            if let Some(e) = e {
                self.ui.info(&format!(
                    "  {name}:\n{}",
                    indent(&format_table(e, self.labels))
                ));
            }
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> FinetuneArgs {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: FinetuneArgs,
        }
        Wrap::parse_from(std::iter::once("catbert").chain(args.iter().copied())).args
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let args = parse(&["--config", path.to_str().unwrap()]);
            let s = load_settings(&args).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(s.train.is_some() && s.model.is_some(), "{}", path.display());
        }
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "train = \"a.csv\"\nepochs = 5\nlr = 1e-4\nmetric = \"accuracy\"\nclass_weights = \"none\"\n").unwrap();
        let s = load_settings(&parse(&[
            "--config",
            cfg.to_str().unwrap(),
            "--epochs",
            "3",
        ]))
        .unwrap();
        assert_eq!(s.epochs, Some(3));
        assert_eq!(s.lr, Some(1e-4));
        assert_eq!(s.metric, Some(Metric::Accuracy));
        assert_eq!(s.class_weights, Some(ClassWeights::None));
        assert_eq!(s.train.as_deref(), Some(Path::new("a.csv")));

        std::fs::write(&cfg, "trian = \"a.csv\"\n").unwrap();
        let err = load_settings(&parse(&["--config", cfg.to_str().unwrap()])).unwrap_err();
        assert!(
            format!("{err:#}").starts_with(&format!("{}: unknown field `trian`", cfg.display())),
            "{err:#}"
        );
    }
}
