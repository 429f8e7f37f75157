//! `catbert report`: the training report of a checkpoint as one self-contained HTML file,
//! with predictions on labelled rows when a data file is given.

use std::path::PathBuf;

use clap::Args;

use super::progress::Ui;
use super::tracking::StoreArgs;
use crate::checkpoint::meta::RunMeta;
use crate::checkpoint::{HubSettings, ModelRef};
use crate::data::Table;
use crate::error::Error;
use crate::infer::{PredictOptions, Predictor, Quiet};
use crate::report::{render, Scored};
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
    /// Output file.
    #[arg(long, default_value = "report.html")]
    pub out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The report of `meta`'s run, scoring `texts` against `labels` (labels the model lacks are
/// left out).
pub fn html(
    predictor: &Predictor,
    meta: &RunMeta,
    texts: &[String],
    labels: &[String],
    source: &str,
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
    Ok(render(meta, &title, scored.as_ref()))
}

pub fn run(args: ReportArgs, ui: &Ui) -> anyhow::Result<()> {
    let reference = ModelRef::try_parse(&args.model)?;
    let registry = Registry::new(args.store.open()?);
    let options = PredictOptions {
        registry: Some(registry.resolver()),
        hub: Some(HubSettings::from_env()),
        ..PredictOptions::default()
    };
    let predictor = Predictor::load(&reference, crate::device::DeviceChoice::Cpu, options)?;
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
    let page = html(&predictor, &meta, &texts, &labels, &source)?;
    crate::fsutil::write_bytes_atomic(&args.out, page.as_bytes())?;
    ui.result(&format!("report: {}", args.out.display()));
    Ok(())
}
