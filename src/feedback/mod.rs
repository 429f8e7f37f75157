//! The feedback store: human-verified labels kept as Parquet files partitioned by day
//! (`DIR/date=YYYY-MM-DD/part-….parquet`, the layout Spark and pandas read as a dataset).
//! Every append is one new file written atomically (temporary name, then rename), so
//! concurrent writers never meet and a killed append leaves every earlier row readable.
//! Reading deduplicates by text — the latest verification wins — and reports conflicts.

mod merge;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::data::{write_table, Table};
use crate::error::{Error, Result};
use crate::track::store::{format_time, now_ms};

pub use merge::{merge, MergeSummary, Merged};
pub use stats::{stats, FeedbackStats};

/// One verified row.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackRow {
    /// The text.
    pub text: String,
    /// Its verified class.
    pub label: String,
    /// The model's top-1 class, when known.
    pub predicted: Option<String>,
    /// Its probability, when known.
    pub probability: Option<f32>,
    /// The model that predicted (a name or folder), when known.
    pub model: Option<String>,
    /// Its version, when known.
    pub model_version: Option<String>,
    /// The client the row belongs to, when known.
    pub client: Option<String>,
    /// Where the row came from: `infer`, `serve`, `file:<name>`.
    pub source: String,
    /// When it was verified (received), ms since the epoch (UTC).
    pub verified_at: i64,
}

impl FeedbackRow {
    /// A row verified now with nothing known but text, label and source.
    pub fn new(text: String, label: String, source: &str) -> Self {
        Self {
            text,
            label,
            predicted: None,
            probability: None,
            model: None,
            model_version: None,
            client: None,
            source: source.to_string(),
            verified_at: now_ms(),
        }
    }
}

/// What reading the store gives.
#[derive(Debug, Default)]
pub struct FeedbackSet {
    /// One row per text, the latest verification, oldest first.
    pub rows: Vec<FeedbackRow>,
    /// Rows read before deduplication.
    pub read: usize,
    /// Texts verified with different labels: (text, labels oldest first). The latest wins.
    pub conflicts: Vec<(String, Vec<String>)>,
    /// Part files read.
    pub files: usize,
}

/// A feedback folder.
#[derive(Debug, Clone)]
pub struct FeedbackStore {
    dir: PathBuf,
}

const COLUMNS: [&str; 9] = [
    "text",
    "label",
    "predicted",
    "probability",
    "model",
    "model_version",
    "client",
    "source",
    "verified_at",
];

impl FeedbackStore {
    /// The store in `dir` (created on first append).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append `rows` as one new part file per day they fall on. Empty text is refused, naming
    /// the row.
    pub fn append(&self, rows: &[FeedbackRow]) -> Result<usize> {
        for (i, r) in rows.iter().enumerate() {
            if r.text.trim().is_empty() {
                return Err(Error::Usage(format!("feedback row {i}: empty text")));
            }
            if r.label.trim().is_empty() {
                return Err(Error::Usage(format!("feedback row {i}: empty label")));
            }
        }
        let mut by_day: BTreeMap<String, Vec<&FeedbackRow>> = BTreeMap::new();
        for r in rows {
            by_day.entry(day(r.verified_at)).or_default().push(r);
        }
        for (day, rows) in by_day {
            let folder = self.dir.join(format!("date={day}"));
            std::fs::create_dir_all(&folder).map_err(|e| Error::Write {
                path: folder.clone(),
                reason: format!("cannot create the feedback folder: {e}"),
            })?;
            let file = folder.join(format!("part-{}-{}.parquet", now_ms(), unique()));
            let mut table = frame(&rows).map_err(|e| Error::Write {
                path: file.clone(),
                reason: e.to_string(),
            })?;
            write_table(&mut table, &file, None)?;
        }
        Ok(rows.len())
    }

    /// Every part file, in name order (dates, then times).
    fn parts(&self) -> Result<Vec<PathBuf>> {
        let mut parts = Vec::new();
        let Ok(days) = std::fs::read_dir(&self.dir) else {
            return Ok(parts);
        };
        for day in days.filter_map(|d| d.ok()) {
            let name = day.file_name().to_string_lossy().into_owned();
            if !name.starts_with("date=") || !day.path().is_dir() {
                continue;
            }
            let files = std::fs::read_dir(day.path()).map_err(|source| Error::Io {
                path: day.path(),
                source,
            })?;
            for f in files.filter_map(|f| f.ok()) {
                let file = f.file_name().to_string_lossy().into_owned();
                // Temporary files of an append in progress (or killed) start with a dot.
                if file.ends_with(".parquet") && !file.starts_with('.') {
                    parts.push(f.path());
                }
            }
        }
        parts.sort();
        Ok(parts)
    }

    /// Read everything (or what was verified on or after `since`, `YYYY-MM-DD`).
    pub fn read(&self, since: Option<&str>) -> Result<FeedbackSet> {
        let mut all = Vec::new();
        let parts = self.parts()?;
        for part in &parts {
            all.extend(read_part(part)?);
        }
        if let Some(since) = since {
            all.retain(|r| day(r.verified_at).as_str() >= since);
        }
        all.sort_by_key(|r| r.verified_at);
        let read = all.len();
        let mut labels: HashMap<&str, Vec<&str>> = HashMap::new();
        for r in &all {
            let seen = labels.entry(r.text.as_str()).or_default();
            if seen.last() != Some(&r.label.as_str()) {
                seen.push(r.label.as_str());
            }
        }
        let mut conflicts: Vec<(String, Vec<String>)> = labels
            .iter()
            .filter(|(_, l)| {
                let mut distinct = l.to_vec();
                distinct.sort();
                distinct.dedup();
                distinct.len() > 1
            })
            .map(|(t, l)| (t.to_string(), l.iter().map(|s| s.to_string()).collect()))
            .collect();
        conflicts.sort();
        let mut latest: HashMap<String, usize> = HashMap::new();
        for (i, r) in all.iter().enumerate() {
            latest.insert(r.text.clone(), i);
        }
        let mut keep: Vec<usize> = latest.into_values().collect();
        keep.sort_unstable();
        let rows = keep.into_iter().map(|i| all[i].clone()).collect();
        Ok(FeedbackSet {
            rows,
            read,
            conflicts,
            files: parts.len(),
        })
    }
}

/// Where a model's feedback goes unless a folder is named: inside its entry of the local
/// registry (`CATBERT_HOME/models/NAME/feedback`) for a `models:/` reference, else
/// `CATBERT_HOME/feedback/<folder or Hub name>`.
pub fn default_dir(model: &crate::checkpoint::ModelRef) -> PathBuf {
    let home = crate::track::local::LocalStore::default_root();
    match model {
        crate::checkpoint::ModelRef::Registry { name, .. } => {
            home.join("models").join(name).join("feedback")
        }
        other => {
            let text = other.to_string();
            let last = text.trim_end_matches('/').rsplit(['/', '\\']).next();
            let name = last.unwrap_or("model").replace(['@', ':'], "_");
            home.join("feedback").join(name)
        }
    }
}

/// `YYYY-MM-DD` (UTC) of a time in ms.
pub fn day(ms: i64) -> String {
    format_time(ms)[..10].to_string()
}

fn unique() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

fn frame(rows: &[&FeedbackRow]) -> PolarsResult<DataFrame> {
    let strings = |f: &dyn Fn(&FeedbackRow) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(|r| f(r)).collect()
    };
    let columns = vec![
        Column::new("text".into(), strings(&|r| Some(r.text.clone()))),
        Column::new("label".into(), strings(&|r| Some(r.label.clone()))),
        Column::new("predicted".into(), strings(&|r| r.predicted.clone())),
        Column::new(
            "probability".into(),
            rows.iter().map(|r| r.probability).collect::<Vec<_>>(),
        ),
        Column::new("model".into(), strings(&|r| r.model.clone())),
        Column::new(
            "model_version".into(),
            strings(&|r| r.model_version.clone()),
        ),
        Column::new("client".into(), strings(&|r| r.client.clone())),
        Column::new("source".into(), strings(&|r| Some(r.source.clone()))),
        Column::new(
            "verified_at".into(),
            rows.iter().map(|r| r.verified_at).collect::<Vec<_>>(),
        ),
    ];
    DataFrame::new_infer_height(columns)
}

fn read_part(path: &Path) -> Result<Vec<FeedbackRow>> {
    let table = Table::read(path, None)?;
    let bad = |reason: String| Error::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    for c in COLUMNS {
        if !table.has_column(c) {
            return Err(bad(format!("not a feedback file: no column {c:?}")));
        }
    }
    let f = &table.frame;
    let text = |name: &str| -> Result<Vec<Option<String>>> {
        let col = f
            .column(name)
            .and_then(|c| c.cast(&DataType::String))
            .map_err(|e| bad(e.to_string()))?;
        let ca = col.str().map_err(|e| bad(e.to_string()))?;
        Ok(ca.iter().map(|v| v.map(String::from)).collect())
    };
    let (texts, labels, predicted) = (text("text")?, text("label")?, text("predicted")?);
    let (models, versions, clients, sources) = (
        text("model")?,
        text("model_version")?,
        text("client")?,
        text("source")?,
    );
    let probability: Vec<Option<f32>> = f
        .column("probability")
        .and_then(|c| c.cast(&DataType::Float32))
        .and_then(|c| c.f32().map(|ca| ca.iter().collect()))
        .map_err(|e| bad(e.to_string()))?;
    let verified: Vec<Option<i64>> = f
        .column("verified_at")
        .and_then(|c| c.cast(&DataType::Int64))
        .and_then(|c| c.i64().map(|ca| ca.iter().collect()))
        .map_err(|e| bad(e.to_string()))?;
    let mut rows = Vec::with_capacity(f.height());
    for i in 0..f.height() {
        let (Some(text), Some(label)) = (texts[i].clone(), labels[i].clone()) else {
            continue;
        };
        rows.push(FeedbackRow {
            text,
            label,
            predicted: predicted[i].clone(),
            probability: probability[i],
            model: models[i].clone(),
            model_version: versions[i].clone(),
            client: clients[i].clone(),
            source: sources[i].clone().unwrap_or_default(),
            verified_at: verified[i].unwrap_or(0),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests;
