//! [`RunTracker`]: a fine-tune as a tracked run — a [`Callback`] of the Finetune job that logs
//! params, per-epoch metrics and the training loss, then the checkpoint as artifacts. Tracking
//! never costs a training result: a call that fails is retried with backoff, and when the
//! store stays unreachable everything that should have been logged goes to a buffer file
//! (JSON lines) in the output folder instead, and the run goes on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::mlmodel;
use super::store::{now_ms, Batch, MetricPoint, RunHandle, RunStatus, Store};
use crate::checkpoint::meta::{EpochRecord, RunMeta};
use crate::error::Result;
use crate::metrics::Evaluation;
use crate::train::{Callback, Control, EpochEnd, Saved, Step};

/// The buffer's file name in the output folder.
pub const BUFFER_FILE: &str = "tracking-unsent.jsonl";

/// How a run is tracked.
#[derive(Debug, Clone)]
pub struct TrackerOptions {
    /// The experiment (created if missing).
    pub experiment: String,
    /// The run's name.
    pub run_name: String,
    /// Log the training loss every this many optimizer steps (0: per epoch only).
    pub log_every: usize,
    /// Where to keep what could not be sent.
    pub buffer: PathBuf,
    /// Waits between retries of a failed call.
    pub retry_delays: Vec<Duration>,
}

/// Reports a [`RunTracker`] makes for the user (the front end prints them).
pub type Notify = Box<dyn FnMut(&str) + Send>;

/// A tracked run.
pub struct RunTracker {
    store: Arc<dyn Store>,
    run: Option<RunHandle>,
    opts: TrackerOptions,
    lost: bool,
    pending: Vec<MetricPoint>,
    notify: Notify,
    labels: Vec<String>,
}

impl RunTracker {
    /// Start a run with `tags` and `params`. When the store cannot be reached, `optional`
    /// keeps going with everything buffered (said once through `notify`); otherwise it is the
    /// error, before any training.
    pub fn start(
        store: Arc<dyn Store>,
        opts: TrackerOptions,
        meta: &RunMeta,
        tags: Vec<(String, String)>,
        optional: bool,
        notify: Notify,
    ) -> Result<Self> {
        let mut tracker = Self {
            store,
            run: None,
            opts,
            lost: false,
            pending: Vec::new(),
            notify,
            labels: meta.labels.clone(),
        };
        let started =
            tracker
                .store
                .start_run(&tracker.opts.experiment, &tracker.opts.run_name, &tags);
        match started {
            Ok(run) => tracker.run = Some(run),
            Err(e) if optional => {
                let msg = format!(
                    "{e}; training goes on untracked, what should have been logged is kept in {}",
                    tracker.opts.buffer.display()
                );
                (tracker.notify)(&msg);
                tracker.lost = true;
                tracker.buffer(
                    json!({ "op": "start", "experiment": tracker.opts.experiment,
                    "run_name": tracker.opts.run_name, "tags": tags }),
                );
            }
            Err(e) => return Err(e),
        }
        let batch = Batch {
            params: run_params(meta),
            ..Batch::default()
        };
        tracker.send_batch(batch);
        Ok(tracker)
    }

    /// The run, when the store has it.
    pub fn run(&self) -> Option<&RunHandle> {
        self.run.as_ref().filter(|_| !self.lost)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A closure that ends the run as KILLED, for a signal handler.
    pub fn kill_switch(&self) -> Box<dyn Fn() + Send + Sync> {
        let store = self.store.clone();
        let run = self.run().cloned();
        Box::new(move || {
            if let Some(run) = &run {
                let _ = store.end_run(run, RunStatus::Killed);
            }
        })
    }

    fn buffer(&mut self, record: serde_json::Value) {
        let mut record = record;
        if let Some(run) = &self.run {
            record["run_id"] = json!(run.run_id);
        }
        record["timestamp"] = json!(now_ms());
        let path = &self.opts.buffer;
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let line = format!("{record}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            (self.notify)(&format!(
                "cannot keep tracking data in {}: {e}",
                path.display()
            ));
        }
    }

    /// Run `call` with retries; on failure switch to the buffer for the rest of the run.
    /// Returns whether the store took it.
    fn attempt(
        &mut self,
        what: &str,
        record: serde_json::Value,
        call: &dyn Fn(&dyn Store, &RunHandle) -> Result<()>,
    ) -> bool {
        if self.lost || self.run.is_none() {
            self.buffer(record);
            return false;
        }
        let run = self.run.clone().expect("checked");
        let mut last = None;
        for delay in std::iter::once(Duration::ZERO).chain(self.opts.retry_delays.clone()) {
            std::thread::sleep(delay);
            match call(&*self.store, &run) {
                Ok(()) => return true,
                Err(e) => last = Some(e),
            }
        }
        self.lost = true;
        let err = last.map(|e| e.to_string()).unwrap_or_default();
        let msg = format!(
            "tracking lost while {what} ({err}); training goes on, and the rest of what this run logs is kept in {}",
            self.opts.buffer.display()
        );
        (self.notify)(&msg);
        self.buffer(record);
        false
    }

    fn send_batch(&mut self, batch: Batch) -> bool {
        if batch.is_empty() {
            return true;
        }
        let record = json!({ "op": "log", "batch": batch });
        self.attempt("logging", record, &|s, r| s.log(r, &batch))
    }

    /// Upload the checkpoint at `out` as the run's artifacts: `model/` (an MLmodel folder, see
    /// [`mlmodel`]) and `metrics.json`. Returns whether the store has them.
    pub fn log_checkpoint(&mut self, out: &Path, base_model: &str) -> Result<bool> {
        let staged = super::TempDir::new("mlmodel");
        mlmodel::stage(out, &staged.0, base_model)?;
        let record = json!({ "op": "artifacts", "dir": out, "path": "model" });
        let dir = staged.0.clone();
        let mut ok = self.attempt("uploading the checkpoint", record, &|s, r| {
            s.log_artifacts(r, &dir, "model")
        });
        let metrics = out.join("metrics.json");
        if ok && metrics.is_file() {
            let record = json!({ "op": "artifact", "file": metrics, "path": "" });
            ok = self.attempt("uploading metrics.json", record, &|s, r| {
                s.log_artifact(r, &metrics, "")
            });
        }
        Ok(ok)
    }

    /// Log tags on the run.
    pub fn set_tags(&mut self, tags: Vec<(String, String)>) -> bool {
        self.send_batch(Batch {
            tags,
            ..Batch::default()
        })
    }

    /// End the run with `status` (and the error, for FAILED).
    pub fn end(&mut self, status: RunStatus, error: Option<&str>) {
        if let Some(error) = error {
            let message: String = error.chars().take(4000).collect();
            self.set_tags(vec![("catbert.error".into(), message)]);
        }
        let record = json!({ "op": "end", "status": status.name() });
        self.attempt("ending the run", record, &|s, r| s.end_run(r, status));
    }

    fn epoch_metrics(&self, record: &EpochRecord) -> Vec<MetricPoint> {
        let step = record.epoch as i64;
        let ts = now_ms();
        let mut out = vec![MetricPoint {
            key: "train_loss_epoch".into(),
            value: record.train_loss,
            timestamp: ts,
            step,
        }];
        for (key, value) in epoch_values(record, &self.labels) {
            out.push(MetricPoint {
                key,
                value,
                timestamp: ts,
                step,
            });
        }
        out
    }
}

/// A class label as part of a metric or param name: MLflow allows letters, digits, `_`, `-`,
/// `.`, ` ` and `:` (and `/`, which nests); anything else becomes `_`.
pub fn key_part(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "_-. :".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The metrics of one evaluation, keys prefixed by `prefix`.
fn eval_values(e: &Evaluation, prefix: &str, labels: &[String], out: &mut Vec<(String, f64)>) {
    let mut push = |k: &str, v: f64| out.push((format!("{prefix}{k}"), v));
    if let Some(loss) = e.loss {
        push("loss", loss);
    }
    push("accuracy", e.accuracy);
    push("f1_weighted", e.f1_weighted);
    push("f1_macro", e.f1_macro);
    push("f1_min", e.f1_min);
    for (label, c) in labels.iter().zip(&e.per_class) {
        push(&format!("f1.{}", key_part(label)), c.f1);
    }
}

/// An epoch's metrics by logged name: the selection evaluation (hold-out, else `--eval`)
/// unprefixed, `--eval` also as `eval.<name>`.
pub fn epoch_values(record: &EpochRecord, labels: &[String]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    if let Some(sel) = record.selection() {
        eval_values(sel, "", labels, &mut out);
    }
    if let Some(e) = &record.eval {
        eval_values(e, "eval.", labels, &mut out);
    }
    out
}

/// Every hyperparameter and setting of the run, as MLflow params.
pub fn run_params(meta: &RunMeta) -> Vec<(String, String)> {
    let mut params = Vec::new();
    if let Ok(serde_json::Value::Object(h)) = serde_json::to_value(&meta.args.hyper) {
        for (k, v) in h {
            params.push((k, v.as_str().map_or_else(|| v.to_string(), String::from)));
        }
    }
    let a = &meta.args;
    // Left out of the JSON at their defaults; always logged, so runs compare in MLflow.
    let h = &a.hyper;
    for (key, value) in [
        ("sampler", h.sampler.name().to_string()),
        ("label_smoothing", h.label_smoothing.to_string()),
        ("layer_lr_decay", h.layer_lr_decay.to_string()),
        ("near_tie", h.near_tie.to_string()),
    ] {
        params.retain(|(k, _)| k != key);
        params.push((key.into(), value));
    }
    params.push(("max_len".into(), a.max_len.to_string()));
    params.push(("val_split".into(), a.val_split.to_string()));
    params.push((
        "patience".into(),
        a.patience.map_or("none".into(), |p| p.to_string()),
    ));
    params.push((
        "class_weights".into(),
        format!("{:?}", meta.class_weight_mode).to_lowercase(),
    ));
    for (label, w) in meta.labels.iter().zip(&meta.class_weights) {
        params.push((format!("class_weight.{}", key_part(label)), w.to_string()));
    }
    params.push(("base_model".into(), meta.base_model.clone()));
    params.push(("text_col".into(), meta.text_column.clone()));
    params.push(("label_col".into(), meta.label_column.clone()));
    params.push(("num_labels".into(), meta.labels.len().to_string()));
    params
}

impl Callback for RunTracker {
    fn on_step(&mut self, step: &Step) -> Result<Control> {
        let every = self.opts.log_every;
        if every > 0 && step.global_step.is_multiple_of(every) {
            let ts = now_ms();
            for (key, value) in [("train_loss", step.mean_loss), ("lr", step.lr)] {
                self.pending.push(MetricPoint {
                    key: key.into(),
                    value,
                    timestamp: ts,
                    step: step.global_step as i64,
                });
            }
            // Sent in batches of a few hundred points, so logging never waits per step.
            if self.pending.len() >= 200 {
                let metrics = std::mem::take(&mut self.pending);
                self.send_batch(Batch {
                    metrics,
                    ..Batch::default()
                });
            }
        }
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, end: &EpochEnd, _saved: &mut Vec<Saved>) -> Result<Control> {
        let mut metrics = std::mem::take(&mut self.pending);
        metrics.extend(self.epoch_metrics(end.record));
        let mut tags = Vec::new();
        if end.is_best {
            tags.push((
                "catbert.best_epoch".to_string(),
                end.record.epoch.to_string(),
            ));
        }
        self.send_batch(Batch {
            metrics,
            tags,
            ..Batch::default()
        });
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_become_names_mlflow_accepts() {
        assert_eq!(
            super::key_part("Dry Goods & Pantry/Staples"),
            "Dry Goods _ Pantry_Staples"
        );
        assert_eq!(super::key_part("café: 1.5-x_y"), "café: 1.5-x_y");
    }
}
