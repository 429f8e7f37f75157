//! What a tracking store and model registry can do: [`Store`], implemented by the local
//! registry ([`super::local::LocalStore`]) and an MLflow server ([`super::mlflow::MlflowStore`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// How a run ended, in MLflow's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunStatus {
    /// Still going.
    Running,
    /// Ended normally.
    Finished,
    /// Ended with an error.
    Failed,
    /// Stopped by Ctrl-C or SIGTERM.
    Killed,
}

impl RunStatus {
    /// `RUNNING`, `FINISHED`, `FAILED` or `KILLED`.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// A started run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHandle {
    /// The run's id.
    pub run_id: String,
    /// Its experiment's id (the name, in the local registry).
    pub experiment_id: String,
    /// Where its artifacts live (`mlflow-artifacts:/…` or a local folder).
    pub artifact_uri: String,
}

/// One metric value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// `loss`, `f1_min`, `holdout.f1.<label>`, …
    pub key: String,
    /// The value.
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The epoch (per-epoch metrics) or the global step (training loss).
    pub step: i64,
}

/// What one logging call carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Parameters (written once; logging the same key again with another value is an error in
    /// MLflow).
    pub params: Vec<(String, String)>,
    /// Metric values.
    pub metrics: Vec<MetricPoint>,
    /// Tags (may be overwritten).
    pub tags: Vec<(String, String)>,
}

impl Batch {
    /// Nothing to log.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty() && self.metrics.is_empty() && self.tags.is_empty()
    }
}

/// One version of a registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// 1, 2, 3, … in order of registration.
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// The run that produced it, if known.
    pub run_id: Option<String>,
    /// Where its files are (the MLmodel folder).
    pub source: String,
    /// Tags, including `metric.<name>` with its evaluation numbers.
    pub tags: BTreeMap<String, String>,
}

impl VersionInfo {
    /// The `metric.<name>` tags as numbers.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        self.tags
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("metric.")?.to_string(), v.parse().ok()?)))
            .collect()
    }
}

/// A registered model with its versions (oldest first) and aliases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Its name.
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Versions, oldest first.
    pub versions: Vec<VersionInfo>,
    /// Alias → version.
    pub aliases: BTreeMap<String, u64>,
    /// Tags of the model (catbert keeps alias histories here).
    pub tags: BTreeMap<String, String>,
}

impl ModelInfo {
    /// The newest version.
    pub fn latest(&self) -> Option<u64> {
        self.versions.iter().map(|v| v.version).max()
    }

    /// Version `v`, if it exists.
    pub fn version(&self, v: u64) -> Option<&VersionInfo> {
        self.versions.iter().find(|x| x.version == v)
    }
}

/// A run store and model registry. Every call either does all it says or returns an error
/// and changes nothing a reader could see half-done.
pub trait Store: Send + Sync {
    /// `MLflow at http://…` or `the local registry at /…`, for messages.
    fn describe(&self) -> String;
    /// Check that the store answers and accepts our credentials.
    fn check(&self) -> Result<()>;
    /// Start a run named `name` in `experiment` (created if missing).
    fn start_run(
        &self,
        experiment: &str,
        name: &str,
        tags: &[(String, String)],
    ) -> Result<RunHandle>;
    /// Log params, metrics and tags.
    fn log(&self, run: &RunHandle, batch: &Batch) -> Result<()>;
    /// Copy the files of `dir` (recursively) to the run's artifacts under `path`.
    fn log_artifacts(&self, run: &RunHandle, dir: &Path, path: &str) -> Result<()>;
    /// Copy one file to the run's artifacts under `path`.
    fn log_artifact(&self, run: &RunHandle, file: &Path, path: &str) -> Result<()>;
    /// Mark the run ended.
    fn end_run(&self, run: &RunHandle, status: RunStatus) -> Result<()>;

    /// Every registered model, by name.
    fn list_models(&self) -> Result<Vec<ModelInfo>>;
    /// One registered model, or an error naming the models that exist.
    fn model(&self, name: &str) -> Result<ModelInfo>;
    /// Register the run's artifacts under `path` (an MLmodel folder) as a new version of
    /// `name`, creating the model if needed. Returns the version number.
    fn create_version(
        &self,
        name: &str,
        run: &RunHandle,
        path: &str,
        tags: &[(String, String)],
    ) -> Result<u64>;
    /// Point `alias` of `name` at `version`.
    fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()>;
    /// Remove `alias` of `name`.
    fn delete_alias(&self, name: &str, alias: &str) -> Result<()>;
    /// Set a tag of the registered model.
    fn set_model_tag(&self, name: &str, key: &str, value: &str) -> Result<()>;
    /// Set a tag of a version.
    fn set_version_tag(&self, name: &str, version: u64, key: &str, value: &str) -> Result<()>;
    /// Delete a version (callers refuse versions behind an alias first).
    fn delete_version(&self, name: &str, version: u64) -> Result<()>;
    /// A local folder holding the version's files in Hugging Face layout (downloaded once
    /// into a cache for a remote store).
    fn fetch_version(&self, name: &str, info: &VersionInfo) -> Result<PathBuf>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `2026-12-02 06:11:55 UTC` from milliseconds since the Unix epoch.
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_796_191_915_000), "2026-12-02 06:11:55 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
