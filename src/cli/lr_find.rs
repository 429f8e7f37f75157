//! `catbert lr-find`: the learning-rate range test with `finetune`'s settings (flags or the same
//! `--config`); prints the curve and a suggested `--lr`, and with `--curve` writes every step.

use std::path::{Path, PathBuf};

use clap::Args;

use super::finetune::{load_settings, to_config, Settings};
use super::progress::Ui;
use super::RunArgs;
use crate::data::Table;
use crate::error::Error;
use crate::train::{Finetune, LrCurve, LrFindOptions, OutputMode};

#[derive(Debug, Args)]
pub struct LrFindArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// A finetune TOML config; its settings about epochs, evaluation and output do not apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Optimizer steps (batches) of the test.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Learning rate of the first step.
    #[arg(long, default_value_t = 1e-7)]
    pub start_lr: f64,
    /// Learning rate of the last step (rates grow exponentially in between).
    #[arg(long, default_value_t = 1.0)]
    pub end_lr: f64,
    /// Write every step (step, lr, loss, smoothed_loss) to this CSV file.
    #[arg(long)]
    pub curve: Option<PathBuf>,
    /// Replace --curve when it already exists.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of `finetune` that mean nothing to a range test: given, they are refused rather
/// than silently ignored.
fn refuse_unused(s: &Settings) -> Result<(), Error> {
    let given = [
        ("--eval", s.eval.is_some()),
        ("--eval-label-col", s.eval_label_col.is_some()),
        ("--epochs", s.epochs.is_some()),
        ("--metric", s.metric.is_some()),
        ("--lr", s.lr.is_some()),
        ("--warmup-ratio", s.warmup_ratio.is_some()),
        ("--out", s.out.is_some()),
        ("--eval-batch-size", s.eval_batch_size.is_some()),
        ("--patience", s.patience.is_some()),
        ("--feedback", s.feedback.is_some()),
    ];
    match given.iter().find(|(_, on)| *on) {
        Some((flag, _)) => Err(Error::Usage(format!(
            "{flag} does not apply to lr-find (it tries rates from --start-lr to --end-lr and saves no model)"
        ))),
        None => Ok(()),
    }
}

pub fn run(args: LrFindArgs, ui: &Ui) -> anyhow::Result<()> {
    refuse_unused(&args.settings)?;
    let s = load_settings(&args.settings, args.config.as_deref())?;
    let train_path = (s.train.clone())
        .ok_or_else(|| Error::Usage("--train is required (or `train = ...` in --config)".into()))?;
    let opts = LrFindOptions {
        start_lr: args.start_lr,
        end_lr: args.end_lr,
        steps: args.steps,
        ..LrFindOptions::default()
    };
    opts.validate()?;
    if let Some(curve) = &args.curve {
        if curve.exists() && !args.overwrite {
            return Err(Error::Usage(format!(
                "{} already exists; pass --overwrite to replace it, or choose another --curve",
                curve.display()
            ))
            .into());
        }
    }
    let job = Finetune::new(to_config(&s, &args.run, false))?;
    let train = Table::read(&train_path, None)?;
    let hyper = &job.config().hyper;
    ui.info(&format!(
        "lr-find: {} steps of batch {}, lr {:.1e} → {:.1e}, on {} ({} rows)",
        opts.steps,
        hyper.batch_size,
        opts.start_lr,
        opts.end_lr,
        train_path.display(),
        train.rows()
    ));
    let started = std::time::Instant::now();
    let (summary, curve) = job.lr_find(&train, &opts)?;
    ui.info(&format!(
        "{} on {} ({}), {} training rows, {} classes; {:.0} s",
        summary.base_model,
        summary.device,
        summary.precision.name(),
        summary.train_rows,
        summary.classes.len(),
        started.elapsed().as_secs_f64()
    ));
    print_curve(ui, &curve);
    if let Some(path) = &args.curve {
        let mut csv = String::from("step,lr,loss,smoothed_loss\n");
        for (i, p) in curve.points.iter().enumerate() {
            csv.push_str(&format!("{},{:e},{},{}\n", i + 1, p.lr, p.loss, p.smoothed));
        }
        crate::fsutil::write_bytes_atomic(path, csv.as_bytes())?;
        ui.info(&format!("curve -> {}", path.display()));
    }
    Ok(())
}

/// About a dozen points of the curve, the minimum, and the suggestion.
fn print_curve(ui: &Ui, curve: &LrCurve) {
    let n = curve.points.len();
    let every = n.div_ceil(12).max(1);
    ui.result("      lr    loss  smoothed");
    for (i, p) in curve.points.iter().enumerate() {
        if i % every == 0 || i + 1 == n {
            ui.result(&format!("{:8.1e} {:7.4} {:9.4}", p.lr, p.loss, p.smoothed));
        }
    }
    if let Some(why) = &curve.stopped {
        ui.result(&format!("stopped after {n} steps: {why}"));
    }
    let steepest = curve
        .steepest_lr
        .map(|lr| format!("; steepest fall at lr {lr:.1e}"))
        .unwrap_or_default();
    ui.result(&format!(
        "lowest smoothed loss at lr {:.1e}{steepest}",
        curve.min_loss_lr
    ));
    ui.result(&format!(
        "suggested --lr {:.1e} (a tenth of the lowest point's rate)",
        curve.suggested_lr
    ));
}

/// `--lr` of `finetune`: a peak rate, or `auto` (the range test's suggestion, found first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrArg {
    /// This rate.
    Rate(f64),
    /// What `catbert lr-find` with the run's settings suggests.
    Auto,
}

impl std::str::FromStr for LrArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(LrArg::Auto);
        }
        s.parse()
            .map(LrArg::Rate)
            .map_err(|_| format!("expected a number or `auto`, not \"{s}\""))
    }
}

impl<'de> serde::Deserialize<'de> for LrArg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = LrArg;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or \"auto\"")
            }
            fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<LrArg, E> {
                Ok(LrArg::Rate(x))
            }
            fn visit_i64<E: serde::de::Error>(self, x: i64) -> Result<LrArg, E> {
                Ok(LrArg::Rate(x as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, x: u64) -> Result<LrArg, E> {
                Ok(LrArg::Rate(x as f64))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<LrArg, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `finetune --lr auto`: the job at the rate the range test suggests for it (rounded to the two
/// digits printed, so `--lr` with the printed value repeats the run). A resumed run keeps the
/// rate it started with, read from its `catbert.json`.
pub(super) fn auto_lr(
    ui: &Ui,
    job: Finetune,
    train: &Table,
    out: &Path,
    mode: OutputMode,
) -> anyhow::Result<Finetune> {
    let saved = out.join(crate::checkpoint::META_FILE);
    if mode == OutputMode::Resume && saved.is_file() {
        let lr = crate::checkpoint::meta::RunMeta::read(&saved)?
            .args
            .hyper
            .lr;
        ui.info(&format!(
            "--lr auto: resuming at the rate found when the run started, {lr:.1e}"
        ));
        return Ok(job.with_lr(lr)?);
    }
    let opts = LrFindOptions::default();
    let started = std::time::Instant::now();
    let (_, curve) = job.lr_find(train, &opts)?;
    let lr: f64 = format!("{:.1e}", curve.suggested_lr).parse()?;
    ui.info(&format!(
        "--lr auto: lr-find ({} steps, {:.0} s) found the lowest smoothed loss at lr {:.1e}; training at a tenth of it, --lr {lr:.1e}",
        curve.points.len(),
        started.elapsed().as_secs_f64(),
        curve.min_loss_lr,
    ));
    Ok(job.with_lr(lr)?)
}

#[cfg(test)]
mod tests {
    use super::LrArg;

    #[test]
    fn lr_is_a_number_or_auto_on_the_command_line_and_in_toml() {
        assert_eq!("auto".parse(), Ok(LrArg::Auto));
        assert_eq!("2e-4".parse(), Ok(LrArg::Rate(2e-4)));
        assert_eq!(
            "fast".parse::<LrArg>(),
            Err("expected a number or `auto`, not \"fast\"".to_string())
        );
        #[derive(serde::Deserialize)]
        struct T {
            lr: LrArg,
        }
        let read = |s: &str| toml::from_str::<T>(s).map(|t| t.lr);
        assert_eq!(read("lr = \"auto\"").unwrap(), LrArg::Auto);
        assert_eq!(read("lr = 1e-4").unwrap(), LrArg::Rate(1e-4));
        assert_eq!(read("lr = 1").unwrap(), LrArg::Rate(1.0));
        let err = read("lr = \"fast\"").unwrap_err().to_string();
        assert!(
            err.contains("expected a number or `auto`, not \"fast\""),
            "{err}"
        );
    }
}
