//! `catbert monitor`: per window of predictions (one file each, e.g. a day's batch output),
//! quality on the rows people verified and drift against the model's reference profile;
//! exit code 3 when the latest window alerts.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;

use super::progress::Ui;
use super::tracking::StoreArgs;
use crate::checkpoint::{HubSettings, ModelRef};
use crate::infer::{PredictOptions, Predictor};
use crate::monitor::windows::{read_windows, verified_labels, Assessment, Monitor};
use crate::monitor::{Profile, Thresholds};
use crate::track::Registry;

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The model that made the predictions: a folder, Hub id or models:/ reference.
    #[arg(long)]
    pub model: String,
    /// Prediction files of `catbert infer` (wide layout), one window each, in the order
    /// given; a folder stands for its .csv/.tsv/.jsonl/.parquet files in name order (not the
    /// .feedback.csv / .metrics.json files infer writes beside its output).
    #[arg(long, required = true, num_args = 1..)]
    pub predictions: Vec<PathBuf>,
    /// Text column [default: the model's, else `text`].
    #[arg(long)]
    pub text_col: Option<String>,
    #[command(flatten)]
    pub windows: WindowOptions,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// How windows are formed, scored and marked (shared by `monitor` and `report`).
#[derive(Debug, Args)]
pub struct WindowOptions {
    /// Column of a time (`YYYY-MM-DD…`, e.g. ISO 8601) per row: windows are then days across
    /// all files instead of files.
    #[arg(long)]
    pub time_col: Option<String>,
    /// Feedback store whose verified labels score the windows' predictions.
    #[arg(long)]
    pub feedback: Option<PathBuf>,
    /// Warn at a Jensen–Shannon distance of the predicted classes at least this.
    #[arg(long, default_value_t = 0.1)]
    pub warn_js: f64,
    /// Warn at a PSI (predicted classes or top-1 probability) at least this.
    #[arg(long, default_value_t = 0.1)]
    pub warn_psi: f64,
    /// Alert at a PSI at least this (monitor's exit code 3 when the latest window alerts).
    #[arg(long, default_value_t = 0.25)]
    pub alert_psi: f64,
    /// Top-1 probabilities below this count as low confidence.
    #[arg(long, default_value_t = 0.5)]
    pub confidence_floor: f64,
}

impl WindowOptions {
    /// The thresholds these flags set.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            warn_js: self.warn_js,
            warn_psi: self.warn_psi,
            alert_psi: self.alert_psi,
        }
    }

    /// Every window of `predictions` measured against `predictor` and its reference profile.
    pub fn assess(
        &self,
        predictor: &Predictor,
        reference: Option<&Profile>,
        predictions: &[PathBuf],
        text_col: &str,
    ) -> anyhow::Result<Vec<Assessment>> {
        let verified = match &self.feedback {
            Some(dir) => verified_labels(dir)?,
            None => HashMap::new(),
        };
        let monitor = Monitor {
            predictor,
            reference,
            verified: &verified,
            thresholds: self.thresholds(),
            confidence_floor: self.confidence_floor,
        };
        let windows = read_windows(predictions, text_col, self.time_col.as_deref())?;
        Ok(windows
            .iter()
            .map(|w| monitor.assess(w))
            .collect::<crate::error::Result<_>>()?)
    }
}

pub fn run(args: MonitorArgs, ui: &Ui) -> anyhow::Result<()> {
    let reference = ModelRef::try_parse(&args.model)?;
    let registry = Registry::new(args.store.open()?);
    let folder = reference.resolve_with(&HubSettings::from_env(), Some(&registry))?;
    let profile = Profile::load(&folder.dir)?;
    let predictor = Predictor::load(
        &ModelRef::Folder(folder.dir.clone()),
        crate::device::DeviceChoice::Cpu,
        PredictOptions::default(),
    )?;
    if profile.is_none() {
        ui.notice(&format!(
            "{} has no reference profile ({}; checkpoints from before catbert monitor): showing label-based figures only",
            folder.origin,
            crate::monitor::PROFILE_FILE
        ));
    }
    let text_col = (args.text_col.clone())
        .or_else(|| predictor.text_column().map(String::from))
        .unwrap_or_else(|| "text".into());
    let assessed =
        (args.windows).assess(&predictor, profile.as_ref(), &args.predictions, &text_col)?;
    println!(
        "{:<28} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9} {:>8} {:>6} {:>6}  status",
        "window",
        "rows",
        "verified",
        "accuracy",
        "f1_w",
        "f1_min",
        "js_cls",
        "psi_cls",
        "psi_top1",
        "mean_top1",
        "low_conf",
        "unk",
        "trunc"
    );
    for a in &assessed {
        let q = |f: fn(&crate::metrics::Evaluation) -> f64| {
            (a.quality.as_ref()).map_or("-".to_string(), |e| format!("{:.4}", f(e)))
        };
        let d = |f: fn(&crate::monitor::Drift) -> f64| {
            (a.drift.as_ref()).map_or("-".to_string(), |x| format!("{:.4}", f(x)))
        };
        println!(
            "{:<28} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9.4} {:>8.4} {:>6.4} {:>6.4}  {}",
            a.name.chars().take(28).collect::<String>(),
            a.profile.rows,
            a.verified,
            q(|e| e.accuracy),
            q(|e| e.f1_weighted),
            q(|e| e.f1_min),
            d(|x| x.js_classes),
            d(|x| x.psi_classes),
            d(|x| x.psi_top1),
            a.profile.mean_top1,
            a.low_confidence,
            a.profile.unk_rate,
            a.profile.truncation_rate,
            a.drift.as_ref().map_or("-", |x| x.status)
        );
    }
    if (assessed.last())
        .and_then(|a| a.drift.as_ref())
        .is_some_and(|d| d.status == "alert")
    {
        ui.result(&format!(
            "alert: the latest window drifted past PSI {} (exit code 3)",
            args.windows.alert_psi
        ));
        std::process::exit(3);
    }
    Ok(())
}
