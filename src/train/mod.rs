//! Fine-tuning: the epoch loop, per-epoch evaluation, best-epoch selection, and resumable
//! state. The loop reports through [`TrainObserver`]; it never prints.

pub mod loss;
pub mod optim;

use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::checkpoint::CheckpointWriter;
use crate::data::split::bucketed_batches;
use crate::error::{CandleContext, Error, Result};
use crate::infer::{collate, predict_probs, top_k_indices, Quiet};
use crate::metrics::{evaluate, Evaluation, Metric};
use crate::model::{BertClassifier, Mode, ModelParams};
use crate::rng::Rng;
use loss::{weighted_cross_entropy, weighted_cross_entropy_host};
use optim::{linear_schedule, AdamW, AdamWConfig};

/// Training hyperparameters (defaults: those of the PyTorch reference).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hyper {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    pub eval_batch_size: usize,
    pub metric: Metric,
    /// Batches per length-sorted window when drawing batches (1 = plain random batches).
    pub bucket_window: usize,
}

/// Tokenised rows with class indices.
#[derive(Debug, Clone, Default)]
pub struct Examples {
    pub ids: Vec<Vec<u32>>,
    pub labels: Vec<usize>,
}

impl Examples {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// What one run trains and evaluates on.
pub struct TrainData {
    pub train: Examples,
    /// The stratified hold-out that picks the best epoch (if any).
    pub holdout: Option<Examples>,
    /// The labelled rows of `--eval` (if any); picks the best epoch when there is no hold-out.
    pub eval: Option<Examples>,
    pub class_weights: Vec<f32>,
    pub pad_id: u32,
}

/// The record of one epoch, as written to `metrics.json` and `catbert.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Optimizer steps in this epoch.
    pub steps: usize,
    pub train_loss: f64,
    pub train_seconds: f64,
    pub train_samples_per_s: f64,
    pub learning_rate_end: f64,
    /// Where the training time went (host clock; on a GPU, queued work lands in later phases).
    pub phase_seconds: PhaseSeconds,
    pub holdout: Option<Evaluation>,
    pub eval: Option<Evaluation>,
}

impl EpochRecord {
    /// The evaluation that selects the best epoch: the hold-out, else `--eval`.
    pub fn selection(&self) -> Option<&Evaluation> {
        self.holdout.as_ref().or(self.eval.as_ref())
    }
}

/// Seconds spent in each phase of the training steps of one epoch.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct PhaseSeconds {
    /// Batch preparation, forward pass and loss.
    pub forward: f64,
    pub backward: f64,
    /// Gradient clipping and the AdamW update.
    pub optimizer: f64,
}

/// Counters and history saved after every epoch so an interrupted run continues exactly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// Identifies the run's settings; resuming with different ones is refused.
    pub fingerprint: String,
    pub epochs_done: usize,
    pub optimizer_steps: usize,
    pub dropout_rng: Rng,
    pub history: Vec<EpochRecord>,
    pub best_epoch: Option<usize>,
    pub best_score: Option<f64>,
}

/// Progress callbacks (the CLI draws bars from them).
pub trait TrainObserver {
    fn epoch_start(&self, _epoch: usize, _samples: usize) {}
    fn step(&self, _samples: usize, _mean_loss: f64) {}
    fn evaluating(&self, _what: &str) {}
    fn epoch_end(&self, _record: &EpochRecord, _is_best: bool) {}
}

/// The outcome of [`fit`].
pub struct Outcome {
    pub state: RunState,
}

/// The static part of `catbert.json` (columns, arguments, versions...) that [`fit`] completes
/// with the per-epoch history and the best epoch.
pub type StaticMeta = serde_json::Map<String, Value>;

/// Train `model` on `data` for `hyper.epochs`, evaluating after every epoch, keeping the best
/// epoch by `hyper.metric` in `writer`'s folder and the run state beside it. `resume` continues
/// an interrupted run from its saved state.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    model: &BertClassifier,
    params: &ModelParams,
    data: &TrainData,
    hyper: &Hyper,
    device: &Device,
    writer: &CheckpointWriter,
    meta: &StaticMeta,
    resume: Option<(
        RunState,
        std::collections::HashMap<String, candle_core::Tensor>,
    )>,
    observer: &dyn TrainObserver,
) -> Result<Outcome> {
    let fingerprint = fingerprint(hyper, data);
    let adam = AdamWConfig {
        lr: hyper.lr,
        weight_decay: hyper.weight_decay,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(&params.vars, adam).ctx("setting up AdamW")?;
    let mut state = match resume {
        Some((state, moments)) => {
            if state.fingerprint != fingerprint {
                return Err(Error::Usage(format!(
                    "{}: the saved run used other settings or data; start afresh without --resume (or use another --out)",
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
        },
    };

    let steps_per_epoch = data.train.len().div_ceil(hyper.batch_size);
    let total_steps = steps_per_epoch * hyper.epochs;
    let warmup = (hyper.warmup_ratio * total_steps as f64) as usize;
    let lengths: Vec<usize> = data.train.ids.iter().map(Vec::len).collect();

    for epoch in state.epochs_done + 1..=hyper.epochs {
        // Each epoch's order depends only on (seed, epoch): a resumed run replays it exactly.
        let mut order_rng = Rng::new(
            hyper
                .seed
                .wrapping_add((epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        let batches = bucketed_batches(
            &lengths,
            hyper.batch_size,
            hyper.bucket_window,
            &mut order_rng,
        );
        observer.epoch_start(epoch, data.train.len());
        let started = Instant::now();
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        let mut lr = 0.0;
        let mut phases = PhaseSeconds::default();
        for batch in &batches {
            lr = hyper.lr * linear_schedule(opt.steps(), warmup, total_steps);
            let rows: Vec<&[u32]> = batch
                .iter()
                .map(|&i| data.train.ids[i].as_slice())
                .collect();
            let labels: Vec<usize> = batch.iter().map(|&i| data.train.labels[i]).collect();
            let t_forward = Instant::now();
            let (ids, mask) = collate(&rows, data.pad_id, device).ctx("preparing a batch")?;
            let logits = model
                .forward(
                    &ids,
                    &mask,
                    &mut Mode::Train {
                        rng: &mut state.dropout_rng,
                    },
                )
                .ctx("forward pass")?;
            let loss = weighted_cross_entropy(&logits, &labels, &data.class_weights).ctx("loss")?;
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
            let grads = loss.backward().ctx("backward pass")?;
            let t_optimizer = Instant::now();
            phases.backward += (t_optimizer - t_backward).as_secs_f64();
            opt.step(&grads, lr, hyper.max_grad_norm)
                .ctx("AdamW step")?;
            phases.optimizer += t_optimizer.elapsed().as_secs_f64();
            loss_sum += loss_value * batch.len() as f64;
            seen += batch.len();
            observer.step(batch.len(), loss_sum / seen as f64);
        }
        let train_seconds = started.elapsed().as_secs_f64();

        let evaluate_on = |what: &str, ex: &Option<Examples>| -> Result<Option<Evaluation>> {
            let Some(ex) = ex else { return Ok(None) };
            observer.evaluating(what);
            Ok(Some(evaluate_examples(model, ex, data, hyper, device)?))
        };
        let holdout = evaluate_on("hold-out", &data.holdout)?;
        let eval = evaluate_on("eval", &data.eval)?;
        let record = EpochRecord {
            epoch,
            steps: batches.len(),
            train_loss: loss_sum / seen.max(1) as f64,
            train_seconds,
            train_samples_per_s: seen as f64 / train_seconds.max(1e-9),
            learning_rate_end: lr,
            phase_seconds: phases,
            holdout,
            eval,
        };
        let score = record
            .selection()
            .and_then(|e| hyper.metric.value(e))
            .unwrap_or(f64::NAN);
        let is_best = match (state.best_epoch, state.best_score) {
            (None, _) => true,
            (Some(_), None) => score.is_finite(),
            (Some(_), Some(best)) => hyper.metric.improves(score, best),
        };
        state.history.push(record.clone());
        state.epochs_done = epoch;
        state.optimizer_steps = opt.steps();
        if is_best {
            state.best_epoch = Some(epoch);
            state.best_score = Some(score).filter(|s| s.is_finite());
            writer.write_best(&params.tensors, &catbert_meta(meta, &state, hyper))?;
        }
        writer.write_state(
            &params.tensors,
            &opt.state_tensors().ctx("saving AdamW state")?,
            &serde_json::to_value(&state).expect("state serialises"),
        )?;
        writer.write_metrics(&serde_json::to_value(&state.history).expect("history serialises"))?;
        observer.epoch_end(&record, is_best);
    }
    Ok(Outcome { state })
}

/// Metrics and weighted loss of the model on labelled examples.
pub fn evaluate_examples(
    model: &BertClassifier,
    ex: &Examples,
    data: &TrainData,
    hyper: &Hyper,
    device: &Device,
) -> Result<Evaluation> {
    let classes = model.num_labels();
    let probs = predict_probs(
        model,
        &ex.ids,
        data.pad_id,
        device,
        hyper.eval_batch_size,
        &Quiet,
    )?;
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
    Ok(e)
}

/// `catbert.json`: the static part plus history, best epoch and selection.
fn catbert_meta(meta: &StaticMeta, state: &RunState, hyper: &Hyper) -> Value {
    let mut m = meta.clone();
    m.insert(
        "epochs".into(),
        serde_json::to_value(&state.history).expect("history serialises"),
    );
    m.insert("best_epoch".into(), json!(state.best_epoch));
    m.insert("best_score".into(), json!(state.best_score));
    m.insert("metric".into(), json!(hyper.metric.name()));
    Value::Object(m)
}

/// A short hash of everything that must match for `--resume` to continue a run.
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
