//! The learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural
//! Networks", 2017; fastai's `lr_find`): train from the base model for a short run whose
//! learning rate grows exponentially from `start_lr` to `end_lr`, one step per batch, and watch
//! the smoothed training loss. It falls while the rate is useful and blows up once it is too
//! large; a rate an order of magnitude below the loss's minimum is a safe peak rate for the
//! real run. Nothing is saved: the trained weights are thrown away.

use crate::data::batch::TokenBatch;
use crate::error::{with_batch_size, CandleContext, Error, Result};
use crate::model::{BertClassifier, Mode, ModelParams};
use crate::rng::Rng;

use super::loss::training_loss;
use super::optim::{AdamW, AdamWConfig};
use super::{Hyper, TrainData};

/// How the range test runs.
#[derive(Debug, Clone, Copy)]
pub struct LrFindOptions {
    /// Learning rate of the first step.
    pub start_lr: f64,
    /// Learning rate of the last step.
    pub end_lr: f64,
    /// Optimizer steps (batches); the rows are cycled through again if there are fewer.
    pub steps: usize,
    /// Weight of the running average of the loss (0.98: about the last 50 steps).
    pub smoothing: f64,
    /// Stop once the smoothed loss exceeds this many times its lowest value.
    pub diverge: f64,
}

impl Default for LrFindOptions {
    fn default() -> Self {
        Self {
            start_lr: 1e-7,
            end_lr: 1.0,
            steps: 100,
            smoothing: 0.98,
            diverge: 4.0,
        }
    }
}

impl LrFindOptions {
    /// Refuse settings the test cannot run with.
    pub fn validate(&self) -> Result<()> {
        let ok = self.start_lr > 0.0
            && self.end_lr > self.start_lr
            && self.end_lr.is_finite()
            && self.steps >= 2
            && (0.0..1.0).contains(&self.smoothing)
            && self.diverge > 1.0;
        if ok {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "lr-find needs 0 < start_lr < end_lr, at least 2 steps, smoothing in [0, 1) and diverge > 1 (got start {}, end {}, steps {}, smoothing {}, diverge {})",
                self.start_lr, self.end_lr, self.steps, self.smoothing, self.diverge
            )))
        }
    }

    /// The learning rate of step `i` (0-based): exponential from `start_lr` to `end_lr`.
    pub fn lr_at(&self, i: usize) -> f64 {
        let t = i as f64 / (self.steps - 1) as f64;
        self.start_lr * (self.end_lr / self.start_lr).powf(t)
    }
}

/// One step of the test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrPoint {
    /// The learning rate the step used.
    pub lr: f64,
    /// The batch's training loss (before the step).
    pub loss: f64,
    /// The bias-corrected running average of the loss.
    pub smoothed: f64,
}

/// The curve and what it suggests.
#[derive(Debug, Clone)]
pub struct LrCurve {
    /// One point per step taken.
    pub points: Vec<LrPoint>,
    /// Learning rate at the lowest smoothed loss.
    pub min_loss_lr: f64,
    /// Learning rate where the smoothed loss fell fastest against log(lr), before its minimum.
    pub steepest_lr: Option<f64>,
    /// The suggested peak `--lr`: a tenth of `min_loss_lr`.
    pub suggested_lr: f64,
    /// Why the test ended before its last step, if it did.
    pub stopped: Option<String>,
}

impl super::Finetune {
    /// The learning-rate range test on `train` with this job's settings: the rows it would
    /// train on (the hold-out split off), its class weights, batch size, weight decay,
    /// clipping, seed, base model and fresh head. Nothing is written: the model is prepared in a
    /// temporary folder, removed afterwards.
    pub fn lr_find(
        &self,
        train: &crate::data::Table,
        opts: &LrFindOptions,
    ) -> Result<(super::PreparedSummary, LrCurve)> {
        opts.validate()?;
        let scratch = std::env::temp_dir().join(format!(
            "catbert-lr-find-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let prepared = self.prepare(train, None, &scratch, super::OutputMode::New);
        let _ = std::fs::remove_dir_all(&scratch);
        let prepared = prepared?;
        let curve = run(
            &prepared.loaded.model,
            &prepared.loaded.params,
            &prepared.data,
            &self.config().hyper,
            opts,
        )?;
        Ok((prepared.summary, curve))
    }
}

/// Run the test on `data` from `model` (a base model with a fresh head, trained in place).
pub(crate) fn run(
    model: &BertClassifier,
    params: &ModelParams,
    data: &TrainData,
    hyper: &Hyper,
    opts: &LrFindOptions,
) -> Result<LrCurve> {
    opts.validate()?;
    if data.train.is_empty() {
        return Err(Error::Usage("lr-find: no training rows".into()));
    }
    let adam = AdamWConfig {
        lr: opts.start_lr,
        weight_decay: hyper.weight_decay,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(&params.vars, adam).ctx("setting up AdamW")?;
    opt.scale_lr(&super::recipe::layer_lr_scales(
        opt.names(),
        hyper.layer_lr_decay,
    ));
    model.keep_word_gradient(true);
    let lengths: Vec<usize> = data.train.ids.iter().map(Vec::len).collect();
    let mut dropout = Rng::new(hyper.seed ^ 0xD0_0D);
    let (mut points, mut stopped) = (Vec::with_capacity(opts.steps), None);
    let (mut average, mut best) = (0.0f64, f64::INFINITY);
    let mut batches = Vec::new().into_iter();
    let mut pass = 0u64;
    for i in 0..opts.steps {
        let rows = match batches.next() {
            Some(rows) => rows,
            None => {
                // Same order as the first epochs of `finetune` with this seed.
                pass += 1;
                let mut order = Rng::new(
                    hyper
                        .seed
                        .wrapping_add(pass.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                );
                batches =
                    super::recipe::epoch_batches(hyper, &lengths, &data.train.labels, &mut order)
                        .into_iter();
                batches.next().expect("at least one row, so one batch")
            }
        };
        let lr = opts.lr_at(i);
        let labels: Vec<usize> = rows.iter().map(|&r| data.train.labels[r]).collect();
        let batch = TokenBatch::select(&data.train.ids, &rows, data.pad_id);
        let logits = with_batch_size(
            model
                .forward(&batch, &mut Mode::Train { rng: &mut dropout })
                .ctx("forward pass"),
            hyper.batch_size,
        )?;
        let loss = training_loss(&logits, &labels, &data.class_weights, hyper.label_smoothing)
            .ctx("loss")?;
        let value = loss.to_scalar::<f32>().ctx("loss")? as f64;
        if !value.is_finite() {
            stopped = Some(format!("the loss became {value} at lr {lr:.3e}"));
            break;
        }
        average = opts.smoothing * average + (1.0 - opts.smoothing) * value;
        let smoothed = average / (1.0 - opts.smoothing.powi(i as i32 + 1));
        points.push(LrPoint {
            lr,
            loss: value,
            smoothed,
        });
        best = best.min(smoothed);
        if i > 0 && smoothed > opts.diverge * best {
            stopped = Some(format!(
                "the smoothed loss passed {} × its lowest at lr {lr:.3e}",
                opts.diverge
            ));
            break;
        }
        let mut grads = with_batch_size(loss.backward().ctx("backward pass"), hyper.batch_size)?;
        model.finish_gradients(&mut grads).ctx("backward pass")?;
        opt.step(&grads, lr, hyper.max_grad_norm)
            .ctx("AdamW step")?;
    }
    let (min_loss_lr, steepest_lr) = suggest(&points);
    Ok(LrCurve {
        points,
        min_loss_lr,
        steepest_lr,
        suggested_lr: min_loss_lr / 10.0,
        stopped,
    })
}

/// The learning rate at the lowest smoothed loss, and where the smoothed loss fell fastest
/// against log(lr) before that minimum (a central difference; none with fewer than 3 points
/// before it).
pub fn suggest(points: &[LrPoint]) -> (f64, Option<f64>) {
    let Some(min) = (0..points.len()).min_by(|&a, &b| {
        points[a]
            .smoothed
            .partial_cmp(&points[b].smoothed)
            .unwrap_or(std::cmp::Ordering::Equal)
    }) else {
        return (f64::NAN, None);
    };
    let slope = |i: usize| {
        (points[i + 1].smoothed - points[i - 1].smoothed)
            / (points[i + 1].lr.ln() - points[i - 1].lr.ln())
    };
    let steepest = (1..min)
        .filter(|&i| slope(i) < 0.0)
        .min_by(|&a, &b| {
            slope(a)
                .partial_cmp(&slope(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .map(|i| points[i].lr);
    (points[min].lr, steepest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_grow_exponentially_from_start_to_end() {
        let o = LrFindOptions {
            start_lr: 1e-6,
            end_lr: 1e-2,
            steps: 5,
            ..Default::default()
        };
        let lrs: Vec<f64> = (0..5).map(|i| o.lr_at(i)).collect();
        for (got, want) in lrs.iter().zip([1e-6, 1e-5, 1e-4, 1e-3, 1e-2]) {
            assert!((got / want - 1.0).abs() < 1e-12, "{got} vs {want}");
        }
        assert!(LrFindOptions { steps: 1, ..o }.validate().is_err());
        assert!(LrFindOptions { end_lr: 1e-7, ..o }.validate().is_err());
    }

    #[test]
    fn suggestion_is_a_tenth_of_the_minimum_and_steepest_is_before_it() {
        // A valley: flat, falling fastest at 1e-4, lowest at 1e-3, then rising.
        let curve = [
            (1e-6, 2.0),
            (1e-5, 1.95),
            (1e-4, 1.5),
            (1e-3, 0.9),
            (1e-2, 1.2),
            (1e-1, 5.0),
        ];
        let points: Vec<LrPoint> = curve
            .iter()
            .map(|&(lr, s)| LrPoint {
                lr,
                loss: s,
                smoothed: s,
            })
            .collect();
        let (min, steepest) = suggest(&points);
        assert_eq!(min, 1e-3);
        assert_eq!(steepest, Some(1e-4));
    }
}
