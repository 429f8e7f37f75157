//! Command-line interface: parses flags, calls the library, draws progress, prints results.
//! The only module that writes to the terminal.

mod finetune;
mod infer;
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
}

/// A `--format` value.
pub fn parse_format(s: &str) -> Result<Format, String> {
    Format::from_name(s)
        .ok_or_else(|| format!("unknown format {s:?} (expected csv, tsv, jsonl or parquet)"))
}

/// A path argument (kept as given, for messages).
pub type PathArg = PathBuf;

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let ui = progress::Ui { quiet: cli.quiet };
    match cli.command {
        Command::Finetune(args) => finetune::run(*args, &ui),
        Command::Infer(args) => infer::run(args, &ui),
    }
}

/// Make the math use `threads` cores. Candle's CPU kernels and the tokenizer read rayon's
/// pool size, so this must happen before either starts a thread.
pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads.filter(|&n| n > 0) {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
}
