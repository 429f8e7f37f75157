//! `catbert report`: the training report of a checkpoint as one self-contained HTML file,
//! with predictions on labelled rows when a data file is given.

use std::path::PathBuf;

use clap::Args;

use super::monitor::WindowOptions;
use super::progress::Ui;
use super::tracking::StoreArgs;
use crate::checkpoint::meta::RunMeta;
use crate::checkpoint::{Checkpoint, HubSettings, ModelRef};
use crate::data::Table;
use crate::error::Error;
use crate::infer::{PredictOptions, Predictor, Quiet};
use crate::monitor::Profile;
use crate::report::{render, Monitoring, Scored};
use crate::track::Registry;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A checkpoint written by catbert finetune: folder, Hub id or models:/ reference.
    pub model: String,
    /// Labelled rows to score for the confusions and the reliability diagram.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Text column of --data [default: the model's].
    #[arg(long)]
    pub text_col: Option<String>,
    /// Label column of --data [default: the model's].
    #[arg(long)]
    pub label_col: Option<String>,
    /// Prediction files of `catbert infer` (or folders of them), one window each as in
    /// `catbert monitor`: adds the quality and drift timelines.
    #[arg(long, num_args = 1..)]
    pub predictions: Vec<PathBuf>,
    #[command(flatten)]
    pub windows: WindowOptions,
    /// Output file.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The report of `meta`'s run, scoring `texts` against `labels` (labels the model lacks are
/// left out), with the monitoring timelines when given.
pub fn html(
    predictor: &Predictor,
    meta: &RunMeta,
    (texts, labels, source): (&[String], &[String], &str),
    monitoring: Option<&Monitoring>,
) -> anyhow::Result<String> {
    let classes = predictor.labels();
    let (mut keep, mut truth) = (Vec::new(), Vec::new());
    for (t, l) in texts.iter().zip(labels) {
        if let Some(i) = classes.iter().position(|c| c == l) {
            keep.push(t.clone());
            truth.push(i);
        }
    }
    let k = classes.len();
    let top = predictor.predict_encoded(&predictor.encode(&keep)?, k, &Quiet)?;
    let mut probs = vec![0f32; keep.len() * k];
    for r in 0..top.rows() {
        for (c, p) in top.row(r) {
            probs[r * k + c as usize] = p;
        }
    }
    let scored = (!keep.is_empty()).then_some(Scored {
        texts: &keep,
        truth: &truth,
        probs: &probs,
        source: source.to_string(),
    });
    let title = format!("catbert report: {}", predictor.origin());
    Ok(render(meta, &title, scored.as_ref(), monitoring))
}

pub fn run(args: ReportArgs, ui: &Ui) -> anyhow::Result<()> {
    let reference = ModelRef::try_parse(&args.model)?;
    let registry = Registry::new(args.store.open()?);
    let folder = reference.resolve_with(&HubSettings::from_env(), Some(&registry))?;
    let predictor = Predictor::from_checkpoint(
        Checkpoint::open(&folder.dir)?,
        &folder.origin,
        crate::device::DeviceChoice::Cpu,
        PredictOptions::default(),
    )?;
    let Some(meta) = predictor.meta().cloned() else {
        return Err(Error::Usage(format!(
            "{} has no catbert.json: a report needs a checkpoint written by catbert finetune",
            predictor.origin()
        ))
        .into());
    };
    let (texts, labels, source) = match &args.data {
        Some(path) => {
            let table = Table::read(path, None)?;
            let text_col = args.text_col.clone().unwrap_or(meta.text_column.clone());
            let label_col = args.label_col.clone().unwrap_or(meta.label_column.clone());
            let texts = table.texts(&text_col)?;
            let labels = table.labels(&label_col)?;
            let (t, l): (Vec<String>, Vec<String>) = texts
                .into_iter()
                .zip(labels)
                .filter_map(|(t, l)| Some((t, l?)))
                .unzip();
            (t, l, path.display().to_string())
        }
        None => (Vec::new(), Vec::new(), String::new()),
    };
    let assessed = if args.predictions.is_empty() {
        Vec::new()
    } else {
        let reference = Profile::load(&folder.dir)?;
        let text_col = args.text_col.clone().unwrap_or(meta.text_column.clone());
        (args.windows).assess(&predictor, reference.as_ref(), &args.predictions, &text_col)?
    };
    let monitoring = (!assessed.is_empty()).then(|| Monitoring {
        windows: &assessed,
        thresholds: args.windows.thresholds(),
        source: (args.predictions.iter())
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    });
    let page = html(
        &predictor,
        &meta,
        (&texts, &labels, &source),
        monitoring.as_ref(),
    )?;
    crate::fsutil::write_bytes_atomic(&args.out, page.as_bytes())?;
    ui.result(&format!("report: {}", args.out.display()));
    Ok(())
}
