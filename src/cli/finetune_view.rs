//! What `catbert finetune` shows: the prepared run, a progress bar per epoch (or log lines),
//! each epoch's metrics, and the closing summary.

use std::path::Path;
use std::time::{Duration, Instant};

use super::progress::{Bar, Ui};
use crate::error::Result;
use crate::metrics::format_table;
use crate::train::{
    Callback, Control, EpochEnd, FinetuneConfig, Hyper, Outcome, PreparedSummary, Saved, Step,
};

/// The lines about the data, model and device, once the run is prepared.
pub fn print_prepared(
    ui: &Ui,
    p: &PreparedSummary,
    config: &FinetuneConfig,
    train: &Path,
    eval: Option<&Path>,
    out: &Path,
) {
    ui.info(&format!(
        "training on {} (text column {:?}, label column {:?})",
        train.display(),
        p.text_col,
        p.label_col
    ));
    if p.skipped_unlabelled > 0 {
        ui.notice(&format!(
            "{} training rows have an empty label and are skipped",
            p.skipped_unlabelled
        ));
    }
    if let (Some(path), Some((rows, skipped))) = (eval, p.eval_rows) {
        ui.info(&format!(
            "eval on {}: {rows} labelled rows, {skipped} unlabelled skipped",
            path.display()
        ));
    }
    p.notices.iter().for_each(|n| ui.notice(n));
    ui.info(&format!(
        "{} classes; {} training rows, {} hold-out, {} eval; tokenised in {:.1} s; class weights {:?}",
        p.classes.len(),
        p.train_rows,
        p.holdout_rows,
        p.eval_rows.map_or(0, |(rows, _)| rows),
        p.tokenize_seconds,
        p.class_weights.iter().map(|w| (w * 1e4).round() / 1e4).collect::<Vec<_>>()
    ));
    let h = &config.hyper;
    if let Some(done) = p.resumed_after {
        ui.info(&format!("resuming after epoch {done} of {}", h.epochs));
    } else if !p.fresh_tensors.is_empty() {
        ui.info(&format!(
            "initialised fresh: {}",
            p.fresh_tensors.join(", ")
        ));
    }
    ui.info(&format!(
        "base {} on {}, {}; {} epochs, batch {}, lr {}, metric {}; output {}",
        p.base_model,
        p.device,
        p.precision.name(),
        h.epochs,
        h.batch_size,
        h.lr,
        h.metric,
        out.display()
    ));
    let mut beyond = Vec::new();
    if h.sampler != crate::train::Sampler::Random {
        beyond.push(format!("sampler {}", h.sampler.name()));
    }
    if h.label_smoothing > 0.0 {
        beyond.push(format!("label smoothing {}", h.label_smoothing));
    }
    if h.layer_lr_decay < 1.0 {
        beyond.push(format!("layer-wise lr decay {}", h.layer_lr_decay));
    }
    if h.near_tie > 0.0 {
        beyond.push(format!(
            "near ties within {}×SE settled by weighted F1",
            h.near_tie
        ));
    }
    if !beyond.is_empty() {
        ui.info(&format!(
            "beyond the reference recipe: {}",
            beyond.join(", ")
        ));
    }
}

/// The closing lines; the last one always starts with `best epoch`.
pub fn print_outcome(ui: &Ui, outcome: &Outcome, hyper: &Hyper, out: &Path, took: Duration) {
    if let Some(reason) = &outcome.stopped {
        ui.info(&format!(
            "stopped after epoch {}: {reason}",
            outcome.state.epochs_done
        ));
    }
    if outcome.state_removed {
        ui.info("run state (run/) deleted: the run is finished (--keep-state keeps it to continue with more --epochs)");
    }
    let state = &outcome.state;
    let best = state.best_epoch.unwrap_or(0);
    let rec = &state.history[best.saturating_sub(1)];
    let mut line = match (rec.selection(), state.best_score) {
        (Some(_), Some(score)) => format!("{} {:.4}", hyper.metric, score),
        _ => format!("{} n/a", hyper.metric),
    };
    if let Some(why) = &state.best_reason {
        line = format!("{line}; {why}");
    }
    if hyper.metric.higher_is_better() && state.best_score == Some(0.0) {
        ui.notice(&format!(
            "{} was 0 in every epoch (some class is never predicted right): the kept epoch won on the tie-breaks (weighted F1, then loss); train longer or on more rows of the weak class",
            hyper.metric
        ));
    }
    let samples: f64 = (state.history.iter())
        .map(|r| r.train_samples_per_s * r.train_seconds)
        .sum();
    let seconds: f64 = state.history.iter().map(|r| r.train_seconds).sum();
    ui.result(&format!(
        "best epoch {best} ({line}); checkpoint in {}; {:.0} s in all, training {:.1} samples/s",
        out.display(),
        took.as_secs_f64(),
        samples / seconds.max(1e-9)
    ));
}

/// Draws one bar per epoch (log lines every tenth of an epoch when stderr is not a terminal)
/// and prints each epoch's metrics.
pub struct Progress<'a> {
    ui: &'a Ui,
    bar: Option<Bar>,
    /// (epoch, rows in the epoch, rows done, start).
    epoch: (usize, usize, usize, Instant),
    epochs: usize,
    labels: &'a [String],
}

impl<'a> Progress<'a> {
    /// Progress of a run of `epochs` over classes `labels`.
    pub fn new(ui: &'a Ui, epochs: usize, labels: &'a [String]) -> Self {
        Self {
            ui,
            bar: None,
            epoch: (0, 0, 0, Instant::now()),
            epochs,
            labels,
        }
    }
}

impl Callback for Progress<'_> {
    fn on_epoch_start(&mut self, epoch: usize, rows: usize) -> Result<()> {
        let what = format!("epoch {epoch}/{}", self.epochs);
        self.bar = Some(self.ui.bar(rows as u64, &what));
        self.epoch = (epoch, rows, 0, Instant::now());
        Ok(())
    }

    fn on_step(&mut self, step: &Step) -> Result<Control> {
        if let Some(bar) = &self.bar {
            bar.0.inc(step.rows as u64);
            bar.0.set_message(format!("loss {:.4}", step.mean_loss));
        }
        let (epoch, total, done, started) = self.epoch;
        let now = done + step.rows;
        self.epoch.2 = now;
        let tenth = |n: usize| n * 10 / total.max(1);
        if !self.ui.live() && tenth(now) > tenth(done) && now < total {
            let rate = now as f64 / started.elapsed().as_secs_f64().max(1e-9);
            self.ui.info(&format!(
                "epoch {epoch}/{}: {now}/{total} rows, loss {:.4}, {rate:.1} samples/s, eta {:.0} s",
                self.epochs,
                step.mean_loss,
                (total - now) as f64 / rate
            ));
        }
        Ok(Control::Continue)
    }

    fn on_evaluating(&mut self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.0.set_message(format!("evaluating {what}"));
        }
    }

    fn on_epoch_end(&mut self, end: &EpochEnd, _saved: &mut Vec<Saved>) -> Result<Control> {
        self.bar.take();
        let r = end.record;
        self.ui.info(&format!(
            "epoch {}: train loss {:.4}, {:.1} samples/s ({:.0} s){}",
            r.epoch,
            r.train_loss,
            r.train_samples_per_s,
            r.train_seconds,
            if end.is_best {
                " — best so far, saved"
            } else {
                ""
            }
        ));
        for (name, e) in [("hold-out", &r.holdout), ("eval", &r.eval)] {
            if let Some(e) = e {
                let table = format_table(e, self.labels);
                let indented: Vec<String> = table.lines().map(|l| format!("    {l}")).collect();
                self.ui.info(&format!("  {name}:\n{}", indented.join("\n")));
            }
        }
        Ok(Control::Continue)
    }
}
