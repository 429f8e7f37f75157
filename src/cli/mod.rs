//! Command-line interface: parses flags, calls the library, draws progress, prints results.
//! The only module that writes to the terminal.

mod finetune;
mod infer;
pub mod launch;
mod progress;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::data::Format;
use crate::device::DeviceChoice;

/// Fine-tune BERT-family text classifiers and run batched top-k inference.
#[derive(Debug, Parser)]
#[command(name = "catbert", version, about, propagate_version = true)]
pub struct Cli {
    /// Print the full error chain on failure.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// No progress bars and no informational lines (errors are still printed).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fine-tune a BERT-family base model into a classifier and keep its best epoch.
    Finetune(Box<finetune::FinetuneArgs>),
    /// Predict the top-k categories (with probabilities) of every row of a file.
    Infer(infer::InferArgs),
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
    /// The `--device` of the command.
    pub fn device(&self) -> DeviceChoice {
        match self {
            Command::Finetune(a) => a.run.device,
            Command::Infer(a) => a.run.device,
        }
    }
}

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let ui = progress::Ui { quiet: cli.quiet };
    match cli.command {
        Command::Finetune(args) => finetune::run(*args, &ui),
        Command::Infer(args) => infer::run(args, &ui),
    }
}

/// Turn a GPU out-of-memory failure into advice: the batch size that was too large and the
/// one to try.
pub fn oom_hint<T>(result: crate::Result<T>, flag: &str, batch_size: usize) -> crate::Result<T> {
    result.map_err(|e| {
        let text = format!("{e:?}");
        if text.contains("OUT_OF_MEMORY") || text.contains("out of memory") {
            crate::Error::OutOfMemory {
                flag: flag.to_string(),
                batch_size,
                try_size: (batch_size / 2).max(1),
            }
        } else {
            e
        }
    })
}

/// Make the math use `threads` cores. Candle's CPU kernels and the tokenizer read rayon's
/// pool size, so this must happen before either starts a thread.
///
/// Candle 0.11 also runs large element-wise ops on a second pool of its own whose threads
/// spin between ops. Beside rayon's pool (GEMMs and our fused kernels) that is one spinning
/// thread more than there are cores, and the main thread spins at its barrier while a worker
/// waits to be scheduled: a profile of a 2-thread training step spent 60 % of its samples
/// spinning. Our hot element-wise work is in fused rayon kernels, so candle's pool gets no
/// workers (`CANDLE_NUM_THREADS=1`) unless the user sets that variable.
pub fn set_threads(threads: Option<usize>) {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if let Some(n) = threads.filter(|&n| n > 0) {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_names_the_batch_size_to_try() {
        let cuda_oom: crate::Result<()> = Err(crate::Error::Candle {
            context: "forward pass".into(),
            source: candle_core::Error::Msg(
                "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
            ),
        });
        let err = oom_hint(cuda_oom, "--batch-size", 64).unwrap_err();
        assert_eq!(
            err.to_string(),
            "out of GPU memory with --batch-size 64; try --batch-size 32"
        );
        assert!(!err.is_input_error());
        let other: crate::Result<()> = Err(crate::Error::Usage("x".into()));
        assert_eq!(
            oom_hint(other, "--batch-size", 64).unwrap_err().to_string(),
            "x"
        );
    }
}
