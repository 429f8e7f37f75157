//! Real-time classification as a service, without HTTP: [`Service`] admits requests (a
//! concurrency limit), tokenises them on the caller's thread, queues every text for the
//! dynamic [`batcher`], turns logits into ranked labels, stores human feedback, and swaps in a
//! newer model when its registry alias moves. The HTTP front end (`server`) maps its
//! [`ServeError`]s to statuses and renders its answers as TEI's or catbert's JSON.

pub mod batcher;
pub mod metrics;
pub mod model;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batcher::{BatchLimits, Batcher, Scored};
use metrics::ServeMetrics;
use model::{LoadedModel, ModelSlot, ModelSource};

use crate::error::Result;
use crate::feedback::{FeedbackRow, FeedbackStore};

/// Limits and behaviour of a [`Service`].
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Real tokens per batch.
    pub max_batch_tokens: usize,
    /// Texts per batch.
    pub max_batch_requests: usize,
    /// Requests in flight at once; more are refused as overloaded.
    pub max_concurrent_requests: usize,
    /// Texts per request.
    pub max_client_batch_size: usize,
    /// Truncate over-long texts when a request does not say.
    pub auto_truncate: bool,
    /// The feedback store's folder.
    pub feedback_dir: PathBuf,
}

/// What went wrong with a request, by the class of HTTP answer it deserves.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    /// The request is malformed or asks for what cannot be done (422).
    #[error("{0}")]
    Validation(String),
    /// The request has nothing to classify (400).
    #[error("{0}")]
    Empty(String),
    /// Too many requests in flight (429).
    #[error("{0}")]
    Overloaded(String),
    /// The model failed on the batch (424, as TEI).
    #[error("{0}")]
    Backend(String),
    /// The service cannot answer (503).
    #[error("{0}")]
    Unhealthy(String),
}

/// The answers to one request: the model that gave them and each text's scores.
pub struct Classified {
    /// The model that answered.
    pub model: Arc<LoadedModel>,
    /// Per text: logits, queue and inference time.
    pub texts: Vec<Scored>,
    /// Per text: class probabilities (softmax of the logits), in class order.
    pub probs: Vec<Vec<f32>>,
    /// Tokens of all texts after truncation.
    pub tokens: usize,
    /// Time spent tokenising.
    pub tokenization: Duration,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq)]
pub enum Reload {
    /// The reference still points at the version being served.
    Unchanged(String),
    /// A new model answers now.
    Swapped {
        /// Version label before.
        from: String,
        /// Version label now.
        to: String,
    },
}

/// A request's place among those in flight; dropping it frees the place.
pub struct Permit<'a>(&'a AtomicUsize);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The serving application: one per server.
pub struct Service {
    slot: ModelSlot,
    source: ModelSource,
    batcher: Batcher,
    metrics: Arc<ServeMetrics>,
    settings: ServeSettings,
    in_flight: AtomicUsize,
    feedback: FeedbackStore,
    /// Held while reloading; the version whose load failed last (not retried until the
    /// reference moves again or a forced reload).
    reloading: Mutex<Option<u64>>,
    /// The latest predictions (top-1 class, its probability), for the drift gauges.
    recent: Mutex<std::collections::VecDeque<(usize, f32)>>,
}

/// Predictions the drift gauges look back over.
pub const DRIFT_WINDOW: usize = 1000;

impl Service {
    /// Load the model and start the inference thread.
    pub fn start(source: ModelSource, settings: ServeSettings) -> Result<Self> {
        let metrics = Arc::new(ServeMetrics::default());
        let model = source.load()?;
        record_model(&metrics, &model, "ok");
        let batcher = Batcher::start(
            BatchLimits {
                max_tokens: settings.max_batch_tokens,
                max_rows: settings.max_batch_requests,
            },
            metrics.clone(),
        );
        Ok(Self {
            slot: ModelSlot::new(model),
            source,
            batcher,
            metrics,
            feedback: FeedbackStore::new(settings.feedback_dir.clone()),
            settings,
            in_flight: AtomicUsize::new(0),
            reloading: Mutex::new(None),
            recent: Mutex::new(std::collections::VecDeque::with_capacity(DRIFT_WINDOW)),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &ServeSettings {
        &self.settings
    }

    /// The model answering now.
    pub fn model(&self) -> Arc<LoadedModel> {
        self.slot.current()
    }

    /// The metrics.
    pub fn metrics(&self) -> &ServeMetrics {
        &self.metrics
    }

    /// Whether the reference can move, so watching it makes sense.
    pub fn follows_registry(&self) -> bool {
        self.source.follows()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A place among the requests in flight, or `Overloaded`.
    pub fn admit(&self) -> std::result::Result<Permit<'_>, ServeError> {
        let max = self.settings.max_concurrent_requests;
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match admitted {
            Ok(_) => Ok(Permit(&self.in_flight)),
            Err(_) => Err(ServeError::Overloaded(format!(
                "model is overloaded: {max} requests in flight (max_concurrent_requests)"
            ))),
        }
    }

    /// Classify `texts` (one request): validate, tokenise, queue, wait for the batches.
    /// `truncate` (default: the server's `auto_truncate`) cuts over-long texts; otherwise
    /// they are refused.
    pub async fn classify(
        &self,
        texts: &[String],
        truncate: Option<bool>,
    ) -> std::result::Result<Classified, ServeError> {
        if texts.is_empty() {
            return Err(ServeError::Empty("batch is empty".into()));
        }
        let max_batch = self.settings.max_client_batch_size;
        if texts.len() > max_batch {
            return Err(ServeError::Validation(format!(
                "batch size {} > maximum allowed batch size {max_batch}",
                texts.len()
            )));
        }
        let truncate = truncate.unwrap_or(self.settings.auto_truncate);
        let model = self.slot.current();
        let started = std::time::Instant::now();
        let mut encoded = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let invalid = |e: crate::Error| ServeError::Validation(e.to_string());
            let (ids, cut) = model.predictor.encode_one(text).map_err(invalid)?;
            if cut && !truncate {
                let full = model.predictor.count_tokens(text).map_err(invalid)?;
                return Err(ServeError::Validation(format!(
                    "input {i} has {full} tokens, more than the model's maximum of {}; send `truncate: true` to cut it",
                    model.predictor.max_len()
                )));
            }
            encoded.push(ids);
        }
        let tokenization = started.elapsed();
        let tokens = encoded.iter().map(Vec::len).sum();
        let waits: Vec<_> = encoded
            .into_iter()
            .map(|ids| self.batcher.submit(ids, model.clone()))
            .collect();
        self.metrics
            .queue_size
            .set(&[], self.batcher.waiting() as f64);
        let mut scored = Vec::with_capacity(waits.len());
        for wait in waits {
            match wait.await {
                Ok(Ok(s)) => scored.push(s),
                Ok(Err(e)) => return Err(ServeError::Backend(e)),
                Err(_) => return Err(ServeError::Backend("the inference thread stopped".into())),
            }
        }
        let labels = model.predictor.labels();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let probs: Vec<Vec<f32>> = scored.iter().map(|s| softmax(&s.logits)).collect();
        for p in &probs {
            let best = top_indices(p, 1)[0];
            if recent.len() == DRIFT_WINDOW {
                recent.pop_front();
            }
            recent.push_back((best, p[best]));
            self.metrics
                .predictions
                .add(&[("class", labels[best].as_str())], 1.0);
            self.metrics
                .top1_probability
                .observe(&[], f64::from(p[best]));
        }
        drop(recent);
        Ok(Classified {
            model,
            texts: scored,
            probs,
            tokens,
            tokenization,
        })
    }

    /// Store human-verified labels; a label the model does not know is refused, naming it.
    pub fn feedback(&self, items: &[(String, String)]) -> std::result::Result<usize, ServeError> {
        if items.is_empty() {
            return Err(ServeError::Empty("`items` is empty".into()));
        }
        let model = self.slot.current();
        let labels = model.predictor.labels();
        for (i, (text, label)) in items.iter().enumerate() {
            if text.trim().is_empty() {
                return Err(ServeError::Validation(format!("items[{i}]: empty text")));
            }
            if !labels.iter().any(|l| l == label) {
                return Err(ServeError::Validation(format!(
                    "items[{i}]: label {label:?} is not a class of the model (classes: {})",
                    labels.join(", ")
                )));
            }
        }
        // What the serving model says of each text, for the store's agreement figures.
        let texts: Vec<&str> = items.iter().map(|(t, _)| t.as_str()).collect();
        let predicted = model.predictor.predict(&texts, 1).unwrap_or_default();
        let rows: Vec<FeedbackRow> = items
            .iter()
            .enumerate()
            .map(|(i, (text, label))| {
                let top = predicted.get(i).and_then(|p| p.first());
                FeedbackRow {
                    predicted: top.map(|(l, _)| l.clone()),
                    probability: top.map(|(_, p)| *p),
                    model: Some(model.reference.clone()),
                    model_version: Some(model.version_label()),
                    ..FeedbackRow::new(text.clone(), label.clone(), "serve")
                }
            })
            .collect();
        self.feedback
            .append(&rows)
            .map_err(|e| ServeError::Unhealthy(e.to_string()))?;
        for (_, label) in items {
            self.metrics.feedback.add(&[("class", label)], 1.0);
        }
        Ok(items.len())
    }

    /// Check the reference and, if it points elsewhere now (or `force`), load the new model
    /// beside the old one and swap. A model that fails to load leaves the old one serving.
    pub fn reload(&self, force: bool) -> Result<Reload> {
        let mut failed = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.slot.current();
        let from = current.version_label();
        if !force {
            let now = self.source.current_version()?;
            if now.is_none() || now == current.version || now == *failed {
                return Ok(Reload::Unchanged(from));
            }
        }
        drop(current);
        let model = match self.source.load() {
            Ok(m) => m,
            Err(e) => {
                self.metrics.model_loads.add(&[("outcome", "failed")], 1.0);
                *failed = self.source.current_version().ok().flatten();
                return Err(e);
            }
        };
        *failed = None;
        record_model(&self.metrics, &model, "ok");
        let to = model.version_label();
        self.slot.swap(model);
        // The recent predictions were the old model's.
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(Reload::Swapped { from, to })
    }
}

impl Service {
    /// Set the drift gauges from the recent predictions and the model's reference profile
    /// (nothing when the checkpoint has no profile or nothing was predicted yet).
    pub fn update_drift(&self) {
        let model = self.slot.current();
        let Some(reference) = &model.profile else {
            return;
        };
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.is_empty() || reference.classes.len() != model.predictor.labels().len() {
            return;
        }
        let mut predicted = vec![0.0; reference.classes.len()];
        for &(c, _) in recent.iter() {
            predicted[c] += 1.0;
        }
        let probs: Vec<f64> = recent.iter().map(|&(_, p)| f64::from(p)).collect();
        let top1 = crate::monitor::drift::histogram(
            probs.iter().copied(),
            crate::monitor::PROB_BINS,
            0.0,
            1.0,
        );
        let n = recent.len() as f64;
        drop(recent);
        let g = &self.metrics.drift;
        let js = crate::monitor::drift::js_distance(&reference.predicted, &predicted);
        g.set(&[("measure", "js_classes")], js);
        let psi = crate::monitor::drift::psi(&reference.predicted, &predicted);
        g.set(&[("measure", "psi_classes")], psi);
        let psi_top1 = crate::monitor::drift::psi(&reference.top1, &top1);
        g.set(&[("measure", "psi_top1")], psi_top1);
        g.set(&[("measure", "mean_top1")], probs.iter().sum::<f64>() / n);
        g.set(&[("measure", "window_rows")], n);
    }
}

fn record_model(metrics: &ServeMetrics, model: &LoadedModel, outcome: &str) {
    metrics.model_loads.add(&[("outcome", outcome)], 1.0);
    metrics.model_version.clear();
    metrics.model_version.set(
        &[("reference", model.reference.as_str())],
        model.version.unwrap_or(0) as f64,
    );
}

/// Softmax of logits, in f32 as `catbert infer` computes it.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// Indices of the `k` highest scores, best first, ties to the lower index.
pub fn top_indices(scores: &[f32], k: usize) -> Vec<usize> {
    crate::model::batched::top_k_indices(scores, k)
        .into_iter()
        .map(|i| i as usize)
        .collect()
}
