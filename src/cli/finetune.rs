//! `catbert finetune`: flags over a TOML config over [`FinetuneConfig::default`], then
//! prepare → fit → summary through the library's [`Finetune`] job.

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::finetune_view::{print_outcome, print_prepared, Progress};
use super::lr_find::{auto_lr, LrArg};
use super::progress::Ui;
use super::tracking::{TrackArgs, Tracking};
use super::RunArgs;
use crate::data::Table;
use crate::error::Error;
use crate::metrics::Metric;
use crate::train::{default_out, ClassWeights, Finetune, FinetuneConfig, OutputMode, Sampler};

/// Every setting a TOML config (`--config`) may hold; flags override it.
#[derive(Debug, Default, Clone, Deserialize, Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Training rows (.csv, .tsv, .jsonl, .parquet) with a text and a label column [required].
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Extra evaluation rows, scored every epoch; rows with an empty label are skipped.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Text column [default: text].
    #[arg(long)]
    pub text_col: Option<String>,
    /// Label column [default: `label`, else the only column besides the text].
    #[arg(long)]
    pub label_col: Option<String>,
    /// Label column of --eval [default: the training label column].
    #[arg(long)]
    pub eval_label_col: Option<String>,
    /// Base model: a folder in Hugging Face layout or a Hub id `org/name[@revision]`
    /// [default: sentence-transformers/all-MiniLM-L6-v2].
    #[arg(long)]
    pub model: Option<String>,
    /// Passes over the training rows [default: 2].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// What picks the best epoch: f1_min, f1_weighted, f1_macro, accuracy or loss [default: f1_min].
    #[arg(long)]
    pub metric: Option<Metric>,
    /// Rows per optimizer step [default: 32].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate of AdamW, or `auto`: the suggestion of `catbert lr-find` with these
    /// settings, found before the run [default: 5e-5].
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<LrArg>,
    /// Fraction of steps of linear warm-up before linear decay to 0 [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    pub warmup_ratio: Option<f64>,
    /// Decoupled weight decay, not applied to biases and LayerNorm weights [default: 0.01].
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Clip the global gradient norm to this (0 = off) [default: 1.0].
    #[arg(long, allow_negative_numbers = true)]
    pub max_grad_norm: Option<f64>,
    /// Truncate texts to this many tokens, at most the model's positions [default: 128, capped
    /// by the model's positions].
    #[arg(long)]
    pub max_len: Option<usize>,
    /// balanced (n / (classes · count)) or none [default: balanced; none with --sampler
    /// balanced].
    #[arg(long)]
    pub class_weights: Option<ClassWeights>,
    /// How each epoch's rows are drawn: random (every row once) or balanced (as many rows,
    /// drawn with replacement, every class equally likely) [default: random].
    #[arg(long)]
    pub sampler: Option<Sampler>,
    /// Label smoothing of the training loss, in [0, 1) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub label_smoothing: Option<f64>,
    /// Layer-wise learning-rate decay in (0, 1]: each encoder layer trains at this factor times
    /// the rate of the layer above it, the head at --lr [default: 1, off].
    #[arg(long, allow_negative_numbers = true)]
    pub layer_lr_decay: Option<f64>,
    /// Epochs whose --metric differs from the best by at most this many standard errors of
    /// the difference (paired bootstrap on the hold-out) count as tied, settled by weighted
    /// F1 then loss; 0 keeps only exact ties [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub near_tie: Option<f64>,
    /// Stratified fraction of the training rows held out to pick the best epoch [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    pub val_split: Option<f64>,
    /// Seed of the split, shuffling, dropout and the new head [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output folder [default: checkpoints/<train file stem>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rows per forward pass when evaluating [default: 64].
    #[arg(long)]
    pub eval_batch_size: Option<usize>,
    /// Batches per window of length-sorted rows when drawing training batches: larger pads
    /// less, 1 gives plain random batches [default: 1].
    #[arg(long)]
    pub bucket_window: Option<usize>,
    /// Stop when --metric has not improved for this many epochs [default: never].
    #[arg(long)]
    pub patience: Option<usize>,
    /// Feedback store (see `catbert feedback`): its verified rows join the training rows, a
    /// verified label overriding the training label of the same text.
    #[arg(long)]
    pub feedback: Option<PathBuf>,
    /// Only feedback verified on or after this day (YYYY-MM-DD).
    #[arg(long, requires = "feedback")]
    pub feedback_since: Option<String>,
    /// Share of the newest verified rows held out as the evaluation set when there is no
    /// --eval (0: none) [default: 0.2].
    #[arg(long, requires = "feedback")]
    pub feedback_eval: Option<f64>,
}

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// TOML file with any of the settings above (keys as the flags, with underscores).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the interrupted run saved in --out.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Replace the catbert run in --out (files catbert did not write are never touched).
    #[arg(long)]
    pub overwrite: bool,
    /// Keep the run state (run/: weights and AdamW moments) after the run finishes, to continue
    /// it later with more --epochs; by default it is deleted.
    #[arg(long)]
    pub keep_state: bool,
    #[command(flatten)]
    pub track: TrackArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

macro_rules! merge {
    ($flags:expr, $file:expr, $($field:ident),*) => {
        Settings { $($field: $flags.$field.clone().or_else(|| $file.$field.clone()),)* }
    };
}

/// A TOML file read into `T`, a syntax or type error named by file, line and column.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::FileNotFound {
            path: path.to_path_buf(),
        },
        _ => Error::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    toml::from_str(&text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let before = &text[..at];
        Error::BadLine {
            path: path.to_path_buf(),
            line: before.matches('\n').count() + 1,
            column: Some(before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1),
            reason: e.message().to_string(),
        }
    })
}

/// Flags over the TOML file `config` (when given).
pub(super) fn load_settings(
    f: &Settings,
    config: Option<&std::path::Path>,
) -> anyhow::Result<Settings> {
    let file = match config {
        None => Settings::default(),
        Some(path) => read_toml(path)?,
    };
    Ok(merge!(
        f,
        file,
        train,
        eval,
        text_col,
        label_col,
        eval_label_col,
        model,
        epochs,
        metric,
        batch_size,
        lr,
        warmup_ratio,
        weight_decay,
        max_grad_norm,
        max_len,
        class_weights,
        sampler,
        label_smoothing,
        layer_lr_decay,
        near_tie,
        val_split,
        seed,
        out,
        eval_batch_size,
        bucket_window,
        patience,
        feedback,
        feedback_since,
        feedback_eval
    ))
}

/// Merge the feedback store at `dir` into `train`, holding out its newest rows as the
/// evaluation set unless `has_eval`; say what came from where.
fn with_feedback(
    ui: &Ui,
    s: &Settings,
    config: &crate::train::FinetuneConfig,
    train: &Table,
    has_eval: bool,
    dir: &std::path::Path,
) -> anyhow::Result<crate::feedback::Merged> {
    if !dir.is_dir() {
        return Err(Error::FileNotFound {
            path: dir.to_path_buf(),
        }
        .into());
    }
    let set = crate::feedback::FeedbackStore::new(dir).read(s.feedback_since.as_deref())?;
    let label_col =
        crate::train::pick_label_column(train, &config.text_col, config.label_col.as_deref())?;
    let share = if has_eval {
        0.0
    } else {
        s.feedback_eval.unwrap_or(0.2)
    };
    let merged = crate::feedback::merge(train, &config.text_col, &label_col, &set, share, dir)?;
    let m = &merged.summary;
    ui.info(&format!(
        "feedback from {}: {} verified rows ({} confirm a training label, {} relabel a training row, {} new; {} newest held out as the evaluation set; {} with a label training lacks, not used; {} conflicting texts, the latest verification kept); training rows {} → {}",
        dir.display(),
        m.feedback_rows,
        m.confirmed,
        m.relabelled,
        m.added,
        m.held_out,
        m.unknown_label,
        m.conflicts,
        m.train_rows,
        merged.train.rows()
    ));
    Ok(merged)
}

/// Beside the checkpoint: the reference profile `catbert monitor` compares later windows with
/// (the kept model on the evaluation rows, else the hold-out), and `report.html` with those
/// rows scored.
fn profile_and_report(
    ui: &Ui,
    out: &std::path::Path,
    (rows, source): (&(Vec<String>, Vec<String>), &str),
    run: &RunArgs,
    max_len: Option<usize>,
) -> anyhow::Result<()> {
    let predictor = crate::infer::Predictor::load(
        &crate::checkpoint::ModelRef::Folder(out.to_path_buf()),
        run.device,
        crate::infer::PredictOptions {
            max_len,
            precision: run.precision,
            ..Default::default()
        },
    )?;
    let profile = crate::monitor::Profile::of(&predictor, &rows.0)?;
    profile.save(out)?;
    ui.info(&format!(
        "reference profile of {} rows for catbert monitor: {}",
        profile.rows,
        out.join(crate::monitor::PROFILE_FILE).display()
    ));
    let Some(meta) = predictor.meta() else {
        return Ok(());
    };
    let html = super::report::html(&predictor, meta, (&rows.0, &rows.1, source), None)?;
    crate::fsutil::write_bytes_atomic(&out.join("report.html"), html.as_bytes())?;
    ui.info(&format!("report: {}", out.join("report.html").display()));
    Ok(())
}

/// The library config: the settings given, defaults for the rest.
pub(super) fn to_config(s: &Settings, run: &RunArgs, keep_state: bool) -> FinetuneConfig {
    let d = FinetuneConfig::default();
    let h = d.hyper.clone();
    let sampler = s.sampler.unwrap_or(h.sampler);
    FinetuneConfig {
        model: s.model.clone().unwrap_or(d.model),
        text_col: s.text_col.clone().unwrap_or(d.text_col),
        label_col: s.label_col.clone(),
        eval_label_col: s.eval_label_col.clone(),
        max_len: s.max_len,
        val_split: s.val_split.unwrap_or(d.val_split),
        class_weights: s.class_weights.unwrap_or(match sampler {
            Sampler::Balanced => ClassWeights::None,
            Sampler::Random => d.class_weights,
        }),
        patience: s.patience,
        keep_state,
        hyper: crate::train::Hyper {
            epochs: s.epochs.unwrap_or(h.epochs),
            batch_size: s.batch_size.unwrap_or(h.batch_size),
            lr: match s.lr {
                Some(LrArg::Rate(lr)) => lr,
                _ => h.lr,
            },
            warmup_ratio: s.warmup_ratio.unwrap_or(h.warmup_ratio),
            weight_decay: s.weight_decay.unwrap_or(h.weight_decay),
            max_grad_norm: s.max_grad_norm.unwrap_or(h.max_grad_norm),
            seed: s.seed.unwrap_or(h.seed),
            eval_batch_size: s.eval_batch_size.unwrap_or(h.eval_batch_size),
            metric: s.metric.unwrap_or(h.metric),
            bucket_window: s.bucket_window.unwrap_or(h.bucket_window),
            sampler,
            label_smoothing: s.label_smoothing.unwrap_or(h.label_smoothing),
            layer_lr_decay: s.layer_lr_decay.unwrap_or(h.layer_lr_decay),
            near_tie: s.near_tie.unwrap_or(h.near_tie),
        },
        device: run.device,
        precision: run.precision,
    }
}

pub fn run(args: FinetuneArgs, ui: &Ui) -> anyhow::Result<()> {
    let s = load_settings(&args.settings, args.config.as_deref())?;
    let train_path = (s.train.clone())
        .ok_or_else(|| Error::Usage("--train is required (or `train = ...` in --config)".into()))?;
    let job = Finetune::new(to_config(&s, &args.run, args.keep_state))?;
    let tracking = Tracking::open(&args.track)?;
    let job = job.with_registry(tracking.registry.resolver());
    let out = s.out.clone().unwrap_or_else(|| default_out(&train_path));
    let mut train = Table::read(&train_path, None)?;
    let mut eval = s
        .eval
        .as_deref()
        .map(|p| Table::read(p, None))
        .transpose()?;
    let mut eval_path = s.eval.clone();
    let mut feedback_rows = None;
    if let Some(dir) = &s.feedback {
        let merged = with_feedback(ui, &s, job.config(), &train, eval.is_some(), dir)?;
        feedback_rows = Some(merged.summary.feedback_rows);
        train = merged.train;
        if let Some(fresh) = merged.eval {
            eval = Some(fresh);
            eval_path = Some(dir.clone());
        }
    }
    let mode = match (args.resume, args.overwrite) {
        (true, _) => OutputMode::Resume,
        (_, true) => OutputMode::Overwrite,
        _ => OutputMode::New,
    };
    let job = match s.lr {
        Some(LrArg::Auto) => auto_lr(ui, job, &train, &out, mode)?,
        _ => job,
    };
    let prepared = job.prepare(&train, eval.as_ref(), &out, mode)?;
    print_prepared(
        ui,
        &prepared.summary,
        job.config(),
        &train_path,
        eval_path.as_deref(),
        &out,
    );
    let mut data = vec![("train", train_path.as_path(), train.rows())];
    if let (Some(path), Some(table)) = (s.eval.as_deref(), eval.as_ref()) {
        data.push(("eval", path, table.rows()));
    }
    if let (Some(dir), Some(rows)) = (s.feedback.as_deref(), feedback_rows) {
        data.push(("feedback", dir, rows));
    }
    let mut tracker = tracking.start(ui, &prepared, &out, &data)?;
    if let Some(t) = &tracker {
        super::signals::on_interrupt(t.kill_switch());
    }
    let (texts, labels) = prepared.comparison_rows();
    let rows = (texts.to_vec(), labels.to_vec());
    let started = std::time::Instant::now();
    let classes = prepared.summary.classes.clone();
    let mut progress = Progress::new(ui, job.config().hyper.epochs, &classes);
    let fitted = match tracker.as_mut() {
        Some(t) => job.fit(prepared, &mut [&mut progress, t]),
        None => job.fit(prepared, &mut [&mut progress]),
    };
    let outcome = match fitted {
        Ok(outcome) => outcome,
        Err(e) => {
            if let Some(t) = tracker.as_mut() {
                t.end(crate::track::RunStatus::Failed, Some(&e.to_string()));
            }
            return Err(e.into());
        }
    };
    // What monitoring and people look at later; neither may cost the training result.
    let source = if s.eval.is_some() || s.feedback.is_some() {
        "the evaluation rows"
    } else {
        "the hold-out rows"
    };
    if let Err(e) = profile_and_report(ui, &out, (&rows, source), &args.run, job.config().max_len) {
        ui.notice(&format!("no reference profile or report: {e:#}"));
    }
    print_outcome(ui, &outcome, &job.config().hyper, &out, started.elapsed());
    if let Some(t) = tracker.as_mut() {
        tracking.finish(ui, t, &outcome, &out, (&rows.0, &rows.1), args.run.device)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn settings_of(args: &FinetuneArgs) -> anyhow::Result<Settings> {
        load_settings(&args.settings, args.config.as_deref())
    }

    fn parse(args: &[&str]) -> FinetuneArgs {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: FinetuneArgs,
        }
        Wrap::parse_from(std::iter::once("catbert").chain(args.iter().copied())).args
    }

    use std::path::Path;

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let args = parse(&["--config", path.to_str().unwrap()]);
            let s = load_settings(&args.settings, args.config.as_deref())
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(s.train.is_some() && s.model.is_some(), "{}", path.display());
            to_config(&s, &args.run, false).validate().unwrap();
        }
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "train = \"a.csv\"\nepochs = 5\nlr = 1e-4\nmetric = \"accuracy\"\nclass_weights = \"none\"\n").unwrap();
        let s = settings_of(&parse(&[
            "--config",
            cfg.to_str().unwrap(),
            "--epochs",
            "3",
        ]))
        .unwrap();
        assert_eq!(s.epochs, Some(3));
        assert_eq!(s.lr, Some(LrArg::Rate(1e-4)));
        assert_eq!(s.metric, Some(Metric::Accuracy));
        assert_eq!(s.class_weights, Some(ClassWeights::None));
        assert_eq!(s.train.as_deref(), Some(Path::new("a.csv")));

        std::fs::write(&cfg, "trian = \"a.csv\"\n").unwrap();
        let err = settings_of(&parse(&["--config", cfg.to_str().unwrap()])).unwrap_err();
        assert!(
            format!("{err:#}").starts_with(&format!(
                "{}: line 1, column 1: unknown field `trian`",
                cfg.display()
            )),
            "{err:#}"
        );
    }

    #[test]
    fn the_balanced_sampler_turns_class_weights_off_unless_asked() {
        let config = |flags: &[&str]| {
            let args = parse(flags);
            to_config(&settings_of(&args).unwrap(), &args.run, false)
        };
        let c = config(&["--train", "a.csv", "--sampler", "balanced"]);
        assert_eq!(c.hyper.sampler, Sampler::Balanced);
        assert_eq!(c.class_weights, ClassWeights::None);
        let c = config(&[
            "--train",
            "a.csv",
            "--sampler",
            "balanced",
            "--class-weights",
            "balanced",
        ]);
        assert_eq!(c.class_weights, ClassWeights::Balanced);
        let c = config(&["--train", "a.csv", "--label-smoothing", "0.1"]);
        assert_eq!(
            (c.hyper.sampler, c.class_weights, c.hyper.label_smoothing),
            (Sampler::Random, ClassWeights::Balanced, 0.1)
        );
    }
}
