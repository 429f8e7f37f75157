//! Command-line interface: parses flags, calls the library, draws progress, prints results.
//! The only module that writes to the terminal, and the one place where library errors become
//! a line and an exit code.

mod feedback;
mod finetune;
mod finetune_view;
mod infer;
mod infer_stream;
pub mod launch;
mod lr_find;
mod monitor;
mod pipeline;
mod progress;
mod registry;
mod report;
mod serve;
pub mod signals;
mod tracking;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::data::Format;
use crate::device::DeviceChoice;
use crate::error::{rename_settings, ErrorKind};

/// Fine-tune BERT-family text classifiers and run batched top-k inference.
#[derive(Debug, Parser)]
#[command(name = "catbert", version, about, propagate_version = true)]
pub struct Cli {
    /// Print the full error chain on failure.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// No progress bars and no informational lines (results, notices and errors are still printed).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fine-tune a BERT-family base model into a classifier and keep its best epoch.
    #[command(
        override_usage = "catbert finetune --train <TRAIN> [OPTIONS]\n       catbert finetune --config <CONFIG> [OPTIONS]"
    )]
    Finetune(Box<finetune::FinetuneArgs>),
    /// Predict the top-k categories (with probabilities) of every row of a file.
    Infer(infer::InferArgs),
    /// Suggest a peak --lr: a short run from the base model with the rate growing exponentially
    /// (the learning-rate range test), with finetune's settings; nothing is saved.
    #[command(name = "lr-find")]
    LrFind(Box<lr_find::LrFindArgs>),
    /// Registered models: list, show, promote, rollback, delete.
    Registry(registry::RegistryArgs),
    /// The feedback store: add verified rows from a file, show what a store holds.
    Feedback(feedback::FeedbackArgs),
    /// Quality and drift per window of predictions; exit code 3 when the latest alerts.
    Monitor(monitor::MonitorArgs),
    /// The training report of a checkpoint as one self-contained HTML file.
    Report(report::ReportArgs),
    /// Serve a classifier over HTTP (TEI-compatible /predict, /v1/predict, /v1/feedback).
    Serve(Box<serve::ServeArgs>),
    /// Every client's day from a clients.toml: retrain when due, register, score the new rows
    /// into partitions by client and date.
    Pipeline(pipeline::PipelineArgs),
}

/// Options shared by every command that runs a model.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// CPU threads for the math (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,

    /// auto (CUDA when usable, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,

    /// fp32 or bf16 [default: bf16 on a GPU of compute capability ≥ 8.0, else fp32].
    #[arg(long, value_enum)]
    pub precision: Option<crate::device::Precision>,
}

/// A `--format` value.
pub fn parse_format(s: &str) -> Result<Format, String> {
    Format::from_name(s)
        .ok_or_else(|| format!("unknown format {s:?} (expected csv, tsv, jsonl or parquet)"))
}

/// A path argument (kept as given, for messages).
pub type PathArg = PathBuf;

impl Command {
    fn run_args(&self) -> Option<&RunArgs> {
        match self {
            Command::Finetune(a) => Some(&a.run),
            Command::Infer(a) => Some(&a.run),
            Command::LrFind(a) => Some(&a.run),
            Command::Serve(a) => Some(&a.run),
            Command::Pipeline(a) => Some(&a.run),
            Command::Registry(_)
            | Command::Feedback(_)
            | Command::Monitor(_)
            | Command::Report(_) => None,
        }
    }

    /// The `--device` of the command (CPU for commands that run no model).
    pub fn device(&self) -> DeviceChoice {
        self.run_args().map_or(DeviceChoice::Cpu, |r| r.device)
    }

    /// The `--threads` of the command.
    pub fn threads(&self) -> Option<usize> {
        self.run_args().and_then(|r| r.threads)
    }
}

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let ui = progress::Ui { quiet: cli.quiet };
    let result = match cli.command {
        Command::Finetune(args) => crate::runtime::on_math_thread(|| finetune::run(*args, &ui)),
        Command::Infer(args) => infer::run(args, &ui),
        Command::LrFind(args) => crate::runtime::on_math_thread(|| lr_find::run(*args, &ui)),
        Command::Registry(args) => registry::run(args, &ui),
        Command::Serve(args) => serve::run(*args, &ui),
        Command::Feedback(args) => feedback::run(args, &ui),
        Command::Monitor(args) => monitor::run(args, &ui),
        Command::Report(args) => report::run(args, &ui),
        Command::Pipeline(args) => pipeline::run(args, &ui),
    };
    report_kernel_fallbacks(&ui);
    result
}

/// Say which of our GPU kernels failed their self-check, each once per process (a command
/// may call this early, as `serve` does after its first prediction; `run` calls it at the end).
pub(crate) fn report_kernel_fallbacks(ui: &progress::Ui) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SAID: AtomicUsize = AtomicUsize::new(0);
    let lines = crate::kernels::selfcheck::fallbacks();
    let from = SAID.swap(lines.len(), Ordering::Relaxed);
    for line in lines.iter().skip(from) {
        ui.notice(line);
    }
}

/// The flag of a config key: `batch_size` → `--batch-size`.
pub fn flag(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// The error as one line (the whole chain and a backtrace when `verbose`), settings named by
/// their flags.
pub fn render_error(err: &anyhow::Error, verbose: bool) -> String {
    let text = if verbose {
        format!("{err:?}")
    } else {
        format!("{err:#}")
    };
    rename_settings(&text, &flag)
}

/// Exit code of a failed run: 2 when the input is at fault (as clap does for bad flags), 1
/// otherwise.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let kind = err
        .chain()
        .find_map(|e| e.downcast_ref::<crate::Error>())
        .map(crate::Error::kind);
    match kind {
        Some(ErrorKind::Input) => 2,
        Some(ErrorKind::Resources | ErrorKind::Internal) | None => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{with_batch_size, CandleContext};

    #[test]
    fn out_of_memory_names_the_batch_size_to_try() {
        let cuda_oom: candle_core::Result<()> = Err(candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        ));
        let err: anyhow::Error = with_batch_size(cuda_oom.ctx("forward pass"), 64)
            .unwrap_err()
            .into();
        assert_eq!(
            render_error(&err, false),
            "out of GPU memory with --batch-size 64; try --batch-size 32"
        );
        assert_eq!(exit_code(&err), 1);
        let other: anyhow::Error = crate::Error::Usage("x".into()).into();
        assert_eq!(render_error(&other, false), "x");
        assert_eq!(exit_code(&other), 2);
    }
}
