//! What a fine-tune reports to, and what may stop it: [`Callback`]. Writing the best epoch's
//! checkpoint ([`BestCheckpoint`]), `metrics.json` ([`MetricsFile`]) and early stopping
//! ([`EarlyStopping`]) are callbacks; so are a front end's progress display, run tracking and
//! reports.

use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::checkpoint::meta::{EpochRecord, RunMeta, RunState};
use crate::checkpoint::CheckpointWriter;
use crate::error::Result;
use crate::train::FinetuneConfig;

/// Whether the loop goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Keep training.
    Continue,
    /// Stop, for this reason (said in the summary and saved with the run).
    Stop(String),
}

/// The run as it starts (or resumes).
pub struct RunStart<'a> {
    /// The settings.
    pub config: &'a FinetuneConfig,
    /// `catbert.json` as it will be written (no epochs yet on a fresh run).
    pub meta: &'a RunMeta,
    /// Counters and history; not empty when resuming.
    pub state: &'a RunState,
    /// The output folder.
    pub out: &'a Path,
    /// Training rows per epoch.
    pub rows_per_epoch: usize,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
}

/// One optimizer step done.
pub struct Step {
    /// 1-based epoch.
    pub epoch: usize,
    /// Steps taken in all epochs so far (1-based).
    pub global_step: usize,
    /// Rows in this step.
    pub rows: usize,
    /// Mean training loss of the epoch so far.
    pub mean_loss: f64,
    /// This step's learning rate.
    pub lr: f64,
}

/// An epoch done and evaluated.
pub struct EpochEnd<'a> {
    /// What it measured.
    pub record: &'a EpochRecord,
    /// Whether it is the best epoch so far (its weights are to be kept).
    pub is_best: bool,
    /// The run state after it (history includes it).
    pub state: &'a RunState,
    /// `catbert.json` after it.
    pub meta: &'a RunMeta,
    /// The current weights, by transformers name.
    pub params: &'a [(String, Tensor)],
    /// The output folder's writer.
    pub writer: &'a CheckpointWriter,
}

/// What kind of file a [`Saved`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedKind {
    /// The best epoch's checkpoint in Hugging Face layout.
    Best,
    /// `metrics.json`.
    Metrics,
    /// The resumable run state in `run/`.
    RunState,
}

/// A file or folder written during the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    /// What it is.
    pub kind: SavedKind,
    /// Where it is.
    pub path: PathBuf,
    /// After which epoch.
    pub epoch: usize,
}

/// The run is over.
pub struct RunEnd<'a> {
    /// Final counters and history.
    pub state: &'a RunState,
    /// Final `catbert.json`.
    pub meta: &'a RunMeta,
    /// Why it stopped before its last epoch, if it did.
    pub stopped: Option<&'a str>,
    /// The output folder's writer.
    pub writer: &'a CheckpointWriter,
}

/// Hooks into the training loop. Every method has a default that does nothing; an error from
/// any of them ends the run with that error (the last saved state stays resumable).
pub trait Callback {
    /// The run starts or resumes.
    fn on_start(&mut self, _run: &RunStart) -> Result<()> {
        Ok(())
    }
    /// An epoch starts with `rows` training rows.
    fn on_epoch_start(&mut self, _epoch: usize, _rows: usize) -> Result<()> {
        Ok(())
    }
    /// A step is done; `Stop` ends the run after it without finishing the epoch (the last
    /// finished epoch stays saved and resumable).
    fn on_step(&mut self, _step: &Step) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// Evaluation on `what` (`hold-out`, `eval`) starts.
    fn on_evaluating(&mut self, _what: &str) {}
    /// An epoch is done and evaluated. Push what you write to `saved`; `Stop` ends the run
    /// after this epoch.
    fn on_epoch_end(&mut self, _end: &EpochEnd, _saved: &mut Vec<Saved>) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// Something was written (by the loop or a callback).
    fn on_saved(&mut self, _saved: &Saved) -> Result<()> {
        Ok(())
    }
    /// The run is over.
    fn on_end(&mut self, _end: &RunEnd) -> Result<()> {
        Ok(())
    }
}

/// Keeps the best epoch: its weights, config, tokenizer and `catbert.json` in the output
/// folder, weights first and `catbert.json` last. At the end `catbert.json` is rewritten with
/// the whole history (the weights stay the best epoch's).
pub struct BestCheckpoint;

impl Callback for BestCheckpoint {
    fn on_epoch_end(&mut self, end: &EpochEnd, saved: &mut Vec<Saved>) -> Result<Control> {
        if end.is_best {
            end.writer.write_best(end.params, end.meta)?;
            saved.push(Saved {
                kind: SavedKind::Best,
                path: end.writer.dir().to_path_buf(),
                epoch: end.record.epoch,
            });
        }
        Ok(Control::Continue)
    }

    fn on_end(&mut self, end: &RunEnd) -> Result<()> {
        if end.state.best_epoch.is_some() {
            end.writer.write_meta(end.meta)?;
        }
        Ok(())
    }
}

/// Writes `metrics.json` (one entry per epoch so far) after every epoch.
pub struct MetricsFile;

impl Callback for MetricsFile {
    fn on_epoch_end(&mut self, end: &EpochEnd, saved: &mut Vec<Saved>) -> Result<Control> {
        end.writer.write_metrics(&end.state.history)?;
        saved.push(Saved {
            kind: SavedKind::Metrics,
            path: end.writer.dir().join("metrics.json"),
            epoch: end.record.epoch,
        });
        Ok(Control::Continue)
    }
}

/// Stops the run when the selection metric has not improved for `patience` epochs.
pub struct EarlyStopping {
    /// Epochs without improvement to tolerate.
    pub patience: usize,
}

impl Callback for EarlyStopping {
    fn on_epoch_end(&mut self, end: &EpochEnd, _saved: &mut Vec<Saved>) -> Result<Control> {
        let best = end.state.best_epoch.unwrap_or(0);
        let since = end.state.epochs_done.saturating_sub(best);
        Ok(if since >= self.patience {
            Control::Stop(format!(
                "no improvement of {} for {since} epochs since epoch {best} (patience {})",
                end.meta.metric, self.patience
            ))
        } else {
            Control::Continue
        })
    }
}
