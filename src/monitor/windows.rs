//! Windows of predictions (one per file of `catbert infer` output, or one per day) and what
//! a window shows: quality on the rows people verified, drift against the reference profile.
//! `catbert monitor` prints these; the report draws them over time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::{compare, Drift, Profile, Thresholds};
use crate::data::{Format, Table};
use crate::error::{Error, Result};
use crate::infer::Predictor;
use crate::metrics::{evaluate, Evaluation};

/// One window of predictions: a name (file or day), its texts, top-1 categories and top-1
/// probabilities.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// The file name, or the day `YYYY-MM-DD`.
    pub name: String,
    /// The texts predicted.
    pub texts: Vec<String>,
    /// Their top-1 categories (`category_1`).
    pub categories: Vec<String>,
    /// Their top-1 probabilities (`probability_1`).
    pub probs: Vec<f64>,
}

/// What one window shows.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// The window's name.
    pub name: String,
    /// The window's profile (rows, mean top-1, `[UNK]` and truncation rates, …).
    pub profile: Profile,
    /// Rows whose text people verified with a label the model has.
    pub verified: usize,
    /// Accuracy, F1s on those rows (none without verified rows).
    pub quality: Option<Evaluation>,
    /// Drift against the reference (none without a reference profile).
    pub drift: Option<Drift>,
    /// Share of rows whose top-1 probability is under the confidence floor.
    pub low_confidence: f64,
}

/// What windows are measured against: the model, its reference profile, verified labels by
/// text, the thresholds and the confidence floor.
pub struct Monitor<'a> {
    /// The model that made the predictions (its classes and tokenizer).
    pub predictor: &'a Predictor,
    /// The reference profile saved at training time, if the checkpoint has one.
    pub reference: Option<&'a Profile>,
    /// Verified label per text (from a feedback store).
    pub verified: &'a HashMap<String, String>,
    /// Thresholds that mark a window.
    pub thresholds: Thresholds,
    /// Top-1 probabilities below this count as low confidence.
    pub confidence_floor: f64,
}

impl Monitor<'_> {
    /// Measure one window.
    pub fn assess(&self, w: &Window) -> Result<Assessment> {
        let profile = Profile::of_predictions(self.predictor, &w.texts, &w.categories, &w.probs)
            .map_err(|e| Error::BadData {
                path: PathBuf::from(&w.name),
                reason: e.to_string(),
            })?;
        let labels = self.predictor.labels();
        let (mut y_true, mut y_pred) = (Vec::new(), Vec::new());
        for (text, cat) in w.texts.iter().zip(&w.categories) {
            let truth = (self.verified.get(text)).and_then(|l| labels.iter().position(|k| k == l));
            if let (Some(t), Some(p)) = (truth, labels.iter().position(|k| k == cat)) {
                y_true.push(t);
                y_pred.push(p);
            }
        }
        let drift = match self.reference {
            Some(r) => Some(compare(r, &profile, &self.thresholds)?),
            None => None,
        };
        let low = w
            .probs
            .iter()
            .filter(|&&p| p < self.confidence_floor)
            .count();
        Ok(Assessment {
            name: w.name.clone(),
            profile,
            verified: y_true.len(),
            quality: (!y_true.is_empty()).then(|| evaluate(&y_true, &y_pred, labels.len())),
            drift,
            low_confidence: low as f64 / w.probs.len().max(1) as f64,
        })
    }
}

/// The prediction files: each file given, a folder's table files in name order (not hidden or
/// `_` files, nor the `.feedback.csv` / `.metrics.json` files `catbert infer` writes beside its
/// output).
pub fn prediction_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|source| Error::Io {
                path: p.clone(),
                source,
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| Format::of(f, None).is_ok() && f.is_file())
                .filter(|f| {
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                    !name.is_some_and(|n| {
                        n.starts_with(['.', '_'])
                            || n.ends_with(".feedback.csv")
                            || n.ends_with(".metrics.json")
                    })
                })
                .collect();
            files.sort();
            out.extend(files);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(Error::FileNotFound { path: p.clone() });
        }
    }
    Ok(out)
}

fn floats(table: &Table, col: &str) -> Result<Vec<f64>> {
    (table.texts(col)?.iter().enumerate())
        .map(|(i, v)| {
            (v.parse::<f64>())
                .map_err(|_| table.bad_value(i, col, &format!("{v:?} is not a number")))
        })
        .collect()
}

/// The first ten characters of `v` when they are a date `YYYY-MM-DD`.
fn day_of(v: &str) -> Option<&str> {
    let d = v.get(..10)?;
    let ok = d.bytes().enumerate().all(|(j, b)| match j {
        4 | 7 => b == b'-',
        _ => b.is_ascii_digit(),
    });
    ok.then_some(d)
}

fn file_name(file: &Path) -> String {
    file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The windows of `paths` (files or folders of `catbert infer` output, wide layout): one per
/// file, or with `time_col` one per day across every file, in day order.
pub fn read_windows(
    paths: &[PathBuf],
    text_col: &str,
    time_col: Option<&str>,
) -> Result<Vec<Window>> {
    let mut by_day: BTreeMap<String, Window> = BTreeMap::new();
    let mut per_file = Vec::new();
    for file in prediction_files(paths)? {
        let table = Table::read(&file, None)?;
        let texts = table.texts(text_col)?;
        let categories = table.texts("category_1")?;
        let probs = floats(&table, "probability_1")?;
        let Some(col) = time_col else {
            per_file.push(Window {
                name: file_name(&file),
                texts,
                categories,
                probs,
            });
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
            let w = by_day.entry(day.to_string()).or_insert_with(|| Window {
                name: day.to_string(),
                ..Window::default()
            });
            w.texts.push(texts[i].clone());
            w.categories.push(categories[i].clone());
            w.probs.push(probs[i]);
        }
    }
    Ok(match time_col {
        Some(_) => by_day.into_values().collect(),
        None => per_file,
    })
}

/// The latest verified label of every text in the feedback store at `dir`.
pub fn verified_labels(dir: &Path) -> Result<HashMap<String, String>> {
    if !dir.is_dir() {
        return Err(Error::FileNotFound {
            path: dir.to_path_buf(),
        });
    }
    let read = crate::feedback::FeedbackStore::new(dir).read(None)?;
    Ok(read.rows.into_iter().map(|r| (r.text, r.label)).collect())
}
