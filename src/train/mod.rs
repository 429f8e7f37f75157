//! Fine-tuning as a library. [`Finetune`] is the job: [`Finetune::prepare`] turns tables into
//! training data (label map, split, class weights, evaluation rows, the base model, the resume
//! decision) and [`Finetune::fit`] runs the epoch loop, reporting to [`Callback`]s. The loop
//! never prints.

pub mod callbacks;
mod config;
mod job;
pub mod loss;
mod lr_find;
pub mod optim;
mod output;
pub mod recipe;
mod select;
mod steplog;

use std::collections::HashMap;
use std::time::Instant;

use candle_core::Tensor;

pub use crate::checkpoint::meta::{
    ClassWeights, EpochRecord, Hyper, PhaseSeconds, RunMeta, RunState, Sampler,
};
pub use callbacks::{
    BestCheckpoint, Callback, Control, EarlyStopping, EpochEnd, MetricsFile, RunEnd, RunStart,
    Saved, SavedKind, Step,
};
pub use config::{FinetuneConfig, DEFAULT_BASE_MODEL};
pub use job::{default_out, pick_label_column, Finetune, Prepared, PreparedSummary};
pub use lr_find::{suggest as suggest_lr, LrCurve, LrFindOptions, LrPoint};
pub use output::OutputMode;

use crate::checkpoint::CheckpointWriter;
use crate::data::batch::TokenBatch;
use crate::error::{with_batch_size, CandleContext, Error, Result};
use crate::metrics::bootstrap::RowOutcomes;
use crate::metrics::{evaluate, Evaluation};
use crate::model::batched::{predict_probs, top_k_indices, Quiet};
use crate::model::{BertClassifier, Mode, ModelParams};
use crate::rng::Rng;
use loss::{training_loss, weighted_cross_entropy_host};
use optim::{linear_schedule, AdamW, AdamWConfig};

/// Tokenised rows with class indices.
#[derive(Debug, Clone, Default)]
pub struct Examples {
    /// Token ids per row.
    pub ids: Vec<Vec<u32>>,
    /// Class index per row.
    pub labels: Vec<usize>,
}

impl Examples {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What one run trains and evaluates on.
pub struct TrainData {
    /// The rows trained on.
    pub train: Examples,
    /// The stratified hold-out that picks the best epoch (if any).
    pub holdout: Option<Examples>,
    /// The labelled evaluation rows (if any); they pick the best epoch when there is no
    /// hold-out.
    pub eval: Option<Examples>,
    /// Loss weight per class.
    pub class_weights: Vec<f32>,
    /// The tokenizer's padding id.
    pub pad_id: u32,
}

/// How a run ended.
pub struct Outcome {
    /// Final counters and history.
    pub state: RunState,
    /// Final `catbert.json`.
    pub meta: RunMeta,
    /// Why it stopped before its last epoch, if a callback stopped it.
    pub stopped: Option<String>,
    /// Whether the run state was deleted at the end (a finished run without `keep_state`).
    pub state_removed: bool,
}

/// A saved run to continue: its state and the AdamW moments.
pub type Resume = (RunState, HashMap<String, Tensor>);

/// The loop's inputs that are not data.
pub(crate) struct LoopParts<'a> {
    pub model: &'a BertClassifier,
    pub params: &'a ModelParams,
    pub writer: &'a CheckpointWriter,
    pub config: &'a FinetuneConfig,
    /// `catbert.json` without history; the loop completes it.
    pub meta: RunMeta,
}

/// Train for `hyper.epochs`, evaluating after every epoch; keep the best epoch by
/// `hyper.metric` and the run state (for resuming) in the writer's folder.
pub(crate) fn run_loop(
    parts: LoopParts,
    data: &TrainData,
    resume: Option<Resume>,
    callbacks: &mut [&mut dyn Callback],
) -> Result<Outcome> {
    let LoopParts {
        model,
        params,
        writer,
        config,
        mut meta,
    } = parts;
    let hyper = &config.hyper;
    let fingerprint = fingerprint(hyper, data);
    let adam = AdamWConfig {
        lr: hyper.lr,
        weight_decay: hyper.weight_decay,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(&params.vars, adam).ctx("setting up AdamW")?;
    opt.scale_lr(&recipe::layer_lr_scales(opt.names(), hyper.layer_lr_decay));
    // The word table's gradient in one buffer kept across steps (CPU), not 47 MB afresh.
    model.keep_word_gradient(true);
    let mut state = match resume {
        Some((state, moments)) => {
            if state.fingerprint != fingerprint {
                return Err(Error::Usage(format!(
                    "{}: the saved run used other settings or data; start afresh with `overwrite` (or use another `out`)",
                    writer.dir().display()
                )));
            }
            opt.load_state(&moments, state.optimizer_steps)
                .ctx("restoring AdamW state")?;
            state
        }
        None => RunState {
            fingerprint,
            epochs_done: 0,
            optimizer_steps: 0,
            dropout_rng: Rng::new(hyper.seed ^ 0xD0_0D),
            history: Vec::new(),
            best_epoch: None,
            best_score: None,
            best_reason: None,
            stopped_early: None,
            best_rows: None,
        },
    };
    sync_meta(&mut meta, &state);

    let steps_per_epoch = data.train.len().div_ceil(hyper.batch_size);
    let total_steps = steps_per_epoch * hyper.epochs;
    let warmup = (hyper.warmup_ratio * total_steps as f64) as usize;
    let lengths: Vec<usize> = data.train.ids.iter().map(Vec::len).collect();
    let mut step_log = steplog::StepLog::from_env(steplog::Inputs {
        data,
        lr: hyper.lr,
        warmup,
        total_steps,
        weight_decay: hyper.weight_decay,
        max_grad_norm: hyper.max_grad_norm,
        decayed: opt.decayed(),
        label_smoothing: hyper.label_smoothing,
        lr_scales: opt.lr_scales(),
    })?;
    for cb in callbacks.iter_mut() {
        cb.on_start(&RunStart {
            config,
            meta: &meta,
            state: &state,
            out: writer.dir(),
            rows_per_epoch: data.train.len(),
            steps_per_epoch,
        })?;
    }

    let first = state.epochs_done + 1;
    let last = if state.stopped_early.is_some() {
        state.epochs_done
    } else {
        hyper.epochs
    };
    let mut stopped = state.stopped_early.clone();
    'epochs: for epoch in first..=last {
        // Each epoch's order depends only on (seed, epoch): a resumed run replays it exactly.
        let mut order_rng = Rng::new(
            hyper
                .seed
                .wrapping_add((epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        let batches = recipe::epoch_batches(hyper, &lengths, &data.train.labels, &mut order_rng);
        for cb in callbacks.iter_mut() {
            cb.on_epoch_start(epoch, data.train.len())?;
        }
        let started = Instant::now();
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        let mut lr = 0.0;
        let mut phases = PhaseSeconds::default();
        let mut step_losses = Vec::with_capacity(batches.len());
        for rows in &batches {
            lr = hyper.lr * linear_schedule(opt.steps(), warmup, total_steps);
            let labels: Vec<usize> = rows.iter().map(|&i| data.train.labels[i]).collect();
            let t_forward = Instant::now();
            let batch = TokenBatch::select(&data.train.ids, rows, data.pad_id);
            let logits = with_batch_size(
                model
                    .forward(
                        &batch,
                        &mut Mode::Train {
                            rng: &mut state.dropout_rng,
                        },
                    )
                    .ctx("forward pass"),
                hyper.batch_size,
            )?;
            let loss = training_loss(&logits, &labels, &data.class_weights, hyper.label_smoothing)
                .ctx("loss")?;
            let loss_value = loss.to_scalar::<f32>().ctx("loss")? as f64;
            if !loss_value.is_finite() {
                return Err(Error::Diverged {
                    epoch,
                    step: opt.steps() + 1,
                    loss: loss_value,
                    kept: state
                        .best_epoch
                        .map(|e| {
                            format!(
                                "the checkpoint of epoch {e} in {} is kept",
                                writer.dir().display()
                            )
                        })
                        .unwrap_or_else(|| "no checkpoint was written".to_string()),
                });
            }
            let t_backward = Instant::now();
            phases.forward += (t_backward - t_forward).as_secs_f64();
            let mut grads =
                with_batch_size(loss.backward().ctx("backward pass"), hyper.batch_size)?;
            model.finish_gradients(&mut grads).ctx("backward pass")?;
            let t_optimizer = Instant::now();
            phases.backward += (t_optimizer - t_backward).as_secs_f64();
            let grad_norm = opt
                .step(&grads, lr, hyper.max_grad_norm)
                .ctx("AdamW step")?;
            // A log that cannot be written is dropped: it never costs the run.
            if let Some(log) = step_log.as_mut() {
                if log
                    .step(epoch, opt.steps(), rows, loss_value, grad_norm, lr)
                    .is_err()
                {
                    step_log = None;
                }
            }
            phases.optimizer += t_optimizer.elapsed().as_secs_f64();
            loss_sum += loss_value * rows.len() as f64;
            seen += rows.len();
            step_losses.push(loss_value as f32);
            let step = Step {
                epoch,
                global_step: opt.steps(),
                rows: rows.len(),
                mean_loss: loss_sum / seen as f64,
                lr,
            };
            for cb in callbacks.iter_mut() {
                if let Control::Stop(reason) = cb.on_step(&step)? {
                    stopped = Some(format!(
                        "{reason} (during epoch {epoch}; epoch {} is the last saved)",
                        state.epochs_done
                    ));
                    break 'epochs;
                }
            }
        }
        let train_seconds = started.elapsed().as_secs_f64();

        let mut evaluate_on = |what: &str, ex: &Option<Examples>| -> Result<Option<Scored>> {
            let Some(ex) = ex else { return Ok(None) };
            for cb in callbacks.iter_mut() {
                cb.on_evaluating(what);
            }
            Ok(Some(evaluate_rows(model, ex, data, hyper.eval_batch_size)?))
        };
        let holdout = evaluate_on("hold-out", &data.holdout)?;
        let eval = evaluate_on("eval", &data.eval)?;
        // The rows that select: the hold-out, else the evaluation rows (as `selection()`).
        let selecting = match (&holdout, &data.holdout) {
            (Some((_, rows)), Some(ex)) => Some((rows, ex)),
            _ => eval.as_ref().map(|(_, rows)| rows).zip(data.eval.as_ref()),
        };
        let selection_se = match (selecting, &state.best_rows) {
            (Some((rows, ex)), Some(best)) => crate::metrics::bootstrap::paired_se(
                hyper.metric,
                &ex.labels,
                &data.class_weights,
                best,
                rows,
                crate::metrics::bootstrap::RESAMPLES,
                hyper.seed ^ ((epoch as u64) << 32),
            ),
            _ => None,
        };
        let rows = selecting.map(|(rows, _)| rows.clone());
        let record = EpochRecord {
            epoch,
            steps: batches.len(),
            train_loss: loss_sum / seen.max(1) as f64,
            train_seconds,
            train_samples_per_s: seen as f64 / train_seconds.max(1e-9),
            learning_rate_end: lr,
            phase_seconds: phases,
            holdout: holdout.map(|(e, _)| e),
            eval: eval.map(|(e, _)| e),
            step_losses,
            selection_se,
        };
        let score = record
            .selection()
            .and_then(|e| hyper.metric.value(e))
            .unwrap_or(f64::NAN);
        let candidate = select::Candidate {
            record: &record,
            score,
            se: selection_se,
        };
        let incumbent =
            (state.best_epoch.and_then(|b| state.history.get(b - 1))).map(|r| select::Incumbent {
                record: r,
                score: state.best_score,
            });
        let (is_best, why) =
            select::pick_best(hyper.metric, hyper.near_tie, &candidate, incumbent.as_ref());
        state.history.push(record.clone());
        state.epochs_done = epoch;
        state.optimizer_steps = opt.steps();
        if is_best {
            state.best_epoch = Some(epoch);
            state.best_score = Some(score).filter(|s| s.is_finite());
            state.best_reason = why;
            state.best_rows = rows;
        } else if why.is_some() {
            state.best_reason = why;
        }
        sync_meta(&mut meta, &state);

        let mut saved = Vec::new();
        let mut stop = None;
        let end = EpochEnd {
            record: &record,
            is_best,
            state: &state,
            meta: &meta,
            params: &params.tensors,
            writer,
        };
        for cb in callbacks.iter_mut() {
            if let Control::Stop(reason) = cb.on_epoch_end(&end, &mut saved)? {
                stop.get_or_insert(reason);
            }
        }
        if epoch < hyper.epochs {
            state.stopped_early = stop;
        }
        writer.write_state(
            &params.tensors,
            &opt.state_tensors().ctx("saving AdamW state")?,
            &state,
        )?;
        saved.push(Saved {
            kind: SavedKind::RunState,
            path: writer.dir().join(crate::checkpoint::save::RUN_DIR),
            epoch,
        });
        for s in &saved {
            for cb in callbacks.iter_mut() {
                cb.on_saved(s)?;
            }
        }
        if let Some(reason) = state.stopped_early.clone() {
            stopped = Some(reason);
            break;
        }
    }
    sync_meta(&mut meta, &state);
    for cb in callbacks.iter_mut() {
        cb.on_end(&RunEnd {
            state: &state,
            meta: &meta,
            stopped: stopped.as_deref(),
            writer,
        })?;
    }
    Ok(Outcome {
        state,
        meta,
        stopped,
        state_removed: false,
    })
}

/// Copy history, best epoch and stop reason into `catbert.json`'s fields.
fn sync_meta(meta: &mut RunMeta, state: &RunState) {
    meta.epochs = state.history.clone();
    meta.best_epoch = state.best_epoch;
    meta.best_score = state.best_score;
    meta.best_reason = state.best_reason.clone();
    meta.stopped_early = state.stopped_early.clone();
    meta.kernel_fallbacks = crate::kernels::selfcheck::fallbacks();
}

/// An evaluation with what the model did on each row.
type Scored = (Evaluation, RowOutcomes);

/// Metrics and weighted loss of the model on labelled examples, with the per-row outcomes.
pub fn evaluate_rows(
    model: &BertClassifier,
    ex: &Examples,
    data: &TrainData,
    batch_size: usize,
) -> Result<Scored> {
    let classes = model.num_labels();
    let probs = predict_probs(model, &ex.ids, data.pad_id, batch_size, &Quiet)?;
    let predicted: Vec<usize> = probs
        .chunks(classes)
        .map(|row| top_k_indices(row, 1)[0] as usize)
        .collect();
    let mut e = evaluate(&ex.labels, &predicted, classes);
    e.loss = Some(weighted_cross_entropy_host(
        &probs,
        classes,
        &ex.labels,
        &data.class_weights,
    ));
    let rows = RowOutcomes {
        predicted: predicted.iter().map(|&p| p as u32).collect(),
        nll: (probs.chunks(classes).zip(&ex.labels))
            .map(|(row, &y)| -row[y].max(f32::MIN_POSITIVE).ln())
            .collect(),
    };
    Ok((e, rows))
}

/// A short hash of everything that must match for a resumed run to continue.
fn fingerprint(hyper: &Hyper, data: &TrainData) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    let mut hyper = hyper.clone();
    hyper.epochs = 0; // more epochs may be asked for when resuming
    feed(
        serde_json::to_string(&hyper)
            .expect("serialises")
            .as_bytes(),
    );
    for ex in [Some(&data.train), data.holdout.as_ref(), data.eval.as_ref()]
        .into_iter()
        .flatten()
    {
        for (ids, label) in ex.ids.iter().zip(&ex.labels) {
            feed(&(*label as u32).to_le_bytes());
            for id in ids {
                feed(&id.to_le_bytes());
            }
        }
    }
    format!("{h:016x}")
}
