//! `catbert monitor`: per window of predictions (one file each, e.g. a day's batch output),
//! quality on the rows people verified and drift against the model's reference profile;
//! exit code 3 when the latest window alerts.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;

use super::progress::Ui;
use super::tracking::StoreArgs;
use crate::checkpoint::{HubSettings, ModelRef};
use crate::data::Table;
use crate::error::Error;
use crate::feedback::FeedbackStore;
use crate::infer::{PredictOptions, Predictor};
use crate::metrics::evaluate;
use crate::monitor::{compare, Profile, Thresholds};
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
    /// Alert at a PSI at least this (exit code 3 when the latest window alerts).
    #[arg(long, default_value_t = 0.25)]
    pub alert_psi: f64,
    /// Top-1 probabilities below this count as low confidence.
    #[arg(long, default_value_t = 0.5)]
    pub confidence_floor: f64,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The window files: each file given, a folder's table files in name order.
fn windows(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| Error::Io {
                    path: p.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| crate::data::Format::of(f, None).is_ok() && f.is_file())
                // The side files `catbert infer --label-col` writes beside its output.
                .filter(|f| {
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                    !name.is_some_and(|n| {
                        n.ends_with(".feedback.csv") || n.ends_with(".metrics.json")
                    })
                })
                .collect();
            files.sort();
            out.extend(files);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(Error::FileNotFound { path: p.clone() }.into());
        }
    }
    Ok(out)
}

fn floats(table: &Table, col: &str) -> anyhow::Result<Vec<f64>> {
    let texts = table.texts(col)?;
    texts
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.parse::<f64>().map_err(|_| {
                table
                    .bad_value(i, col, &format!("{v:?} is not a number"))
                    .into()
            })
        })
        .collect()
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
    let verified: HashMap<String, String> = match &args.feedback {
        Some(dir) if !dir.is_dir() => {
            return Err(Error::FileNotFound { path: dir.clone() }.into());
        }
        Some(dir) => (FeedbackStore::new(dir).read(None)?.rows.into_iter())
            .map(|r| (r.text, r.label))
            .collect(),
        None => HashMap::new(),
    };
    let t = Thresholds {
        warn_js: args.warn_js,
        warn_psi: args.warn_psi,
        alert_psi: args.alert_psi,
    };
    let labels = predictor.labels().to_vec();
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
    let mut last = "ok";
    for (name, texts, categories, probs) in read_windows(&args, &text_col)? {
        let window = Profile::of_predictions(&predictor, &texts, &categories, &probs)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let (mut y_true, mut y_pred) = (Vec::new(), Vec::new());
        for (text, cat) in texts.iter().zip(&categories) {
            let truth = verified
                .get(text)
                .and_then(|l| labels.iter().position(|k| k == l));
            if let (Some(t), Some(p)) = (truth, labels.iter().position(|k| k == cat)) {
                y_true.push(t);
                y_pred.push(p);
            }
        }
        let quality = (!y_true.is_empty()).then(|| evaluate(&y_true, &y_pred, labels.len()));
        let drift = match &profile {
            Some(p) => Some(compare(p, &window, &t)?),
            None => None,
        };
        let low = probs.iter().filter(|&&p| p < args.confidence_floor).count() as f64
            / probs.len().max(1) as f64;
        let q = |f: fn(&crate::metrics::Evaluation) -> f64| {
            quality
                .as_ref()
                .map_or("-".to_string(), |e| format!("{:.4}", f(e)))
        };
        let d = |f: fn(&crate::monitor::Drift) -> f64| {
            drift
                .as_ref()
                .map_or("-".to_string(), |x| format!("{:.4}", f(x)))
        };
        last = drift.as_ref().map_or("-", |x| x.status);
        println!(
            "{:<28} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9.4} {:>8.4} {:>6.4} {:>6.4}  {}",
            short(&name),
            window.rows,
            y_true.len(),
            q(|e| e.accuracy),
            q(|e| e.f1_weighted),
            q(|e| e.f1_min),
            d(|x| x.js_classes),
            d(|x| x.psi_classes),
            d(|x| x.psi_top1),
            window.mean_top1,
            low,
            window.unk_rate,
            window.truncation_rate,
            last
        );
    }
    if last == "alert" {
        ui.result(&format!(
            "alert: the latest window drifted past PSI {} (exit code 3)",
            args.alert_psi
        ));
        std::process::exit(3);
    }
    Ok(())
}

fn short(name: &str) -> String {
    name.chars().take(28).collect()
}

/// One window: its name, texts, top-1 categories and probabilities.
type Window = (String, Vec<String>, Vec<String>, Vec<f64>);

/// The first ten characters of `v` when they are a date `YYYY-MM-DD`.
fn day_of(v: &str) -> Option<&str> {
    let d = v.get(..10)?;
    let ok = d.bytes().enumerate().all(|(j, b)| match j {
        4 | 7 => b == b'-',
        _ => b.is_ascii_digit(),
    });
    ok.then_some(d)
}

/// The windows: one per file, or with `--time-col` one per day across every file.
fn read_windows(args: &MonitorArgs, text_col: &str) -> anyhow::Result<Vec<Window>> {
    let mut by_day: std::collections::BTreeMap<String, Window> = Default::default();
    let mut per_file = Vec::new();
    for file in windows(&args.predictions)? {
        let table = Table::read(&file, None)?;
        let texts = table.texts(text_col)?;
        let categories = table.texts("category_1")?;
        let probs = floats(&table, "probability_1")?;
        let Some(col) = &args.time_col else {
            let name = file.file_name().map_or_else(
                || file.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            per_file.push((name, texts, categories, probs));
            continue;
        };
        for (i, v) in table.texts(col)?.iter().enumerate() {
            let day = day_of(v).ok_or_else(|| {
                table.bad_value(
                    i,
                    col,
                    &format!("{v:?} does not start with a date YYYY-MM-DD"),
                )
            })?;
            let w = by_day
                .entry(day.to_string())
                .or_insert_with(|| (day.to_string(), Vec::new(), Vec::new(), Vec::new()));
            w.1.push(texts[i].clone());
            w.2.push(categories[i].clone());
            w.3.push(probs[i]);
        }
    }
    if args.time_col.is_some() {
        return Ok(by_day.into_values().collect());
    }
    Ok(per_file)
}
