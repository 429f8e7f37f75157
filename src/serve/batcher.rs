//! Dynamic batching: texts arrive tokenised from many requests, wait in one queue, and an
//! inference thread cuts batches from it — everything waiting, in arrival order, until the
//! next text would pass the token budget or the row limit, or was tokenised for another
//! model (during a swap). No artificial wait: under load the queue fills while a batch runs,
//! so batches grow with the load and a lone request goes at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::ServeMetrics;
use super::model::LoadedModel;
use crate::data::batch::TokenBatch;

/// Limits on one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Real tokens per batch (a text longer than this goes alone).
    pub max_tokens: usize,
    /// Texts per batch.
    pub max_rows: usize,
}

/// One text's answer: its logits and what it cost.
#[derive(Debug)]
pub struct Scored {
    /// Logits, one per class.
    pub logits: Vec<f32>,
    /// Time in the queue.
    pub queue: Duration,
    /// Time of the batch's forward pass.
    pub inference: Duration,
}

/// A text waiting for its batch.
struct Entry {
    ids: Vec<u32>,
    model: Arc<LoadedModel>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Scored, String>>,
}

/// The queue's sending side, shared by every request.
#[derive(Clone)]
pub struct Batcher {
    tx: Sender<Entry>,
    waiting: Arc<AtomicUsize>,
}

impl Batcher {
    /// Start the inference thread.
    pub fn start(limits: BatchLimits, metrics: Arc<ServeMetrics>) -> Self {
        let (tx, rx) = mpsc::channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let counter = waiting.clone();
        // The loop runs on a worker of the math pool, so the many small parallel ops of a
        // forward pass split by work-stealing instead of being injected from outside (which
        // wakes the pool for every op: a one-text forward took 12 ms that way, not ms).
        rayon::spawn(move || run(rx, limits, counter, metrics));
        Self { tx, waiting }
    }

    /// Queue one tokenised text for `model`; the answer comes on the returned channel.
    pub fn submit(
        &self,
        ids: Vec<u32>,
        model: Arc<LoadedModel>,
    ) -> oneshot::Receiver<Result<Scored, String>> {
        let (reply, answer) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            ids,
            model,
            enqueued: Instant::now(),
            reply,
        };
        if let Err(mpsc::SendError(entry)) = self.tx.send(entry) {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            let _ = entry
                .reply
                .send(Err("the inference thread has stopped".into()));
        }
        answer
    }

    /// Texts waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

fn run(
    rx: Receiver<Entry>,
    limits: BatchLimits,
    waiting: Arc<AtomicUsize>,
    metrics: Arc<ServeMetrics>,
) {
    let mut held: Option<Entry> = None;
    let mut trimmed = Instant::now();
    loop {
        let first = match held.take() {
            Some(e) => e,
            None => match rx.recv() {
                Ok(e) => e,
                Err(_) => return, // every sender is gone: the server stopped
            },
        };
        let mut tokens = first.ids.len();
        let mut batch = vec![first];
        while batch.len() < limits.max_rows {
            let Ok(next) = rx.try_recv() else { break };
            let same_model = Arc::ptr_eq(&next.model, &batch[0].model);
            if !same_model || tokens + next.ids.len() > limits.max_tokens {
                held = Some(next);
                break;
            }
            tokens += next.ids.len();
            batch.push(next);
        }
        waiting.fetch_sub(batch.len(), Ordering::Relaxed);
        metrics
            .queue_size
            .set(&[], waiting.load(Ordering::Relaxed) as f64);
        answer(batch, tokens, &metrics);
        if trimmed.elapsed() > TRIM_EVERY {
            release_free_memory();
            trimmed = Instant::now();
        }
    }
}

/// How often freed heap memory is handed back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Batches of varying size leave freed buffers of every size in the allocator's arenas; a
/// long-running server would keep them as resident memory. glibc returns them on request.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Run one batch and answer each of its texts.
fn answer(batch: Vec<Entry>, tokens: usize, metrics: &ServeMetrics) {
    let started = Instant::now();
    let model = batch[0].model.clone();
    let predictor = &model.predictor;
    let rows: Vec<&[u32]> = batch.iter().map(|e| e.ids.as_slice()).collect();
    let token_batch = TokenBatch::new(&rows, predictor.pad_id());
    let result = predictor.logits_batch(&token_batch);
    let inference = started.elapsed();
    metrics
        .inference_seconds
        .observe(&[], inference.as_secs_f64());
    metrics.batch_size.observe(&[], batch.len() as f64);
    metrics.batch_tokens.observe(&[], tokens as f64);
    let classes = predictor.labels().len();
    match result {
        Ok(logits) => {
            for (entry, row) in batch.into_iter().zip(logits.chunks(classes)) {
                let queue = started.saturating_duration_since(entry.enqueued);
                metrics.queue_seconds.observe(&[], queue.as_secs_f64());
                let _ = entry.reply.send(Ok(Scored {
                    logits: row.to_vec(),
                    queue,
                    inference,
                }));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for entry in batch {
                let _ = entry.reply.send(Err(message.clone()));
            }
        }
    }
}
