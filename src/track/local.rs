//! The local registry: runs and registered models in plain files under one folder
//! (`CATBERT_HOME`, default `~/.catbert`), readable without catbert:
//!
//! ```text
//! registry.lock                           flock'd by a writer of models/
//! runs/<experiment>/<run id>/run.json     name, status, start/end times, params, tags
//! runs/<experiment>/<run id>/metrics.jsonl  one {"key","value","timestamp","step"} per line
//! runs/<experiment>/<run id>/artifacts/   the run's files (model/ is the MLmodel folder)
//! models/<name>/model.json                created_at, aliases, tags
//! models/<name>/<version>/version.json    version, created_at, run_id, source, tags
//! models/<name>/<version>/                MLmodel, model/ (Hugging Face layout), components/
//! ```
//!
//! Every JSON file is replaced atomically; a version folder is assembled under a temporary
//! name and renamed into place, so a kill at any point leaves either no version or a whole one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::lock::{timeout_from_env, RegistryLock};
use super::store::{
    now_ms, Batch, MetricPoint, ModelInfo, RunHandle, RunStatus, Store, VersionInfo,
};
use super::{copy_tree, validate_name};
use crate::checkpoint::meta::read_json;
use crate::error::{Error, Result};
use crate::fsutil::write_bytes_atomic;

/// The local registry rooted at a folder.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunFile {
    run_id: String,
    experiment: String,
    name: String,
    status: Option<RunStatus>,
    start_time: i64,
    end_time: Option<i64>,
    params: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ModelFile {
    name: String,
    created_at: i64,
    aliases: BTreeMap<String, u64>,
    tags: BTreeMap<String, String>,
    /// The highest version ever registered: numbers are not reused after a delete.
    #[serde(default)]
    last_version: u64,
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).expect("registry files serialise");
    write_bytes_atomic(path, &text)
}

/// A folder name for an experiment (MLflow allows any name; folders do not).
fn dir_name(experiment: &str) -> String {
    experiment
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// 32 hex digits, like MLflow's run ids.
fn new_run_id() -> String {
    use sha2::{Digest, Sha256};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let digest = Sha256::digest(format!("{nanos}-{}-{n}", std::process::id()));
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl LocalStore {
    /// The registry at `root` (created on first write).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// `CATBERT_HOME`, else `~/.catbert`.
    pub fn default_root() -> PathBuf {
        match std::env::var_os("CATBERT_HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home),
            None => std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
                .join(".catbert"),
        }
    }

    /// The registry's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn run_dir(&self, run: &RunHandle) -> PathBuf {
        self.root
            .join("runs")
            .join(&run.experiment_id)
            .join(&run.run_id)
    }

    fn model_dir(&self, name: &str) -> PathBuf {
        self.root.join("models").join(name)
    }

    fn lock(&self) -> Result<RegistryLock> {
        RegistryLock::acquire(&self.root.join("registry.lock"), timeout_from_env())
    }

    fn update_run(&self, run: &RunHandle, f: impl FnOnce(&mut RunFile)) -> Result<()> {
        let path = self.run_dir(run).join("run.json");
        let mut file: RunFile = read_json(&path)?;
        f(&mut file);
        write_json(&path, &file)
    }

    fn read_model(&self, name: &str) -> Result<ModelFile> {
        validate_name(name)?;
        let path = self.model_dir(name).join("model.json");
        if !path.exists() {
            return Err(self.unknown_model(name));
        }
        read_json(&path)
    }

    fn unknown_model(&self, name: &str) -> Error {
        let names: Vec<String> = self.model_names().unwrap_or_default();
        Error::Registry(format!(
            "no registered model {name:?} in {} (models: {})",
            self.describe(),
            if names.is_empty() {
                "none yet".to_string()
            } else {
                names.join(", ")
            }
        ))
    }

    fn model_names(&self) -> Result<Vec<String>> {
        let dir = self.root.join("models");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("model.json").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn versions(&self, name: &str) -> Result<Vec<VersionInfo>> {
        let mut versions = Vec::new();
        let dir = self.model_dir(name);
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.filter_map(|e| e.ok()) {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.parse::<u64>().is_ok() {
                versions.push(read_json::<VersionInfo>(
                    &entry.path().join("version.json"),
                )?);
            }
        }
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    fn edit_model(&self, name: &str, f: impl FnOnce(&mut ModelFile) -> Result<()>) -> Result<()> {
        let _lock = self.lock()?;
        let mut model = self.read_model(name)?;
        f(&mut model)?;
        write_json(&self.model_dir(name).join("model.json"), &model)
    }
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("the local registry at {}", self.root.display())
    }

    fn check(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::Write {
            path: self.root.clone(),
            reason: format!("cannot create the local registry: {e}"),
        })
    }

    fn start_run(
        &self,
        experiment: &str,
        name: &str,
        tags: &[(String, String)],
    ) -> Result<RunHandle> {
        let experiment_id = dir_name(experiment);
        let run_id = new_run_id();
        let dir = self.root.join("runs").join(&experiment_id).join(&run_id);
        let handle = RunHandle {
            artifact_uri: dir.join("artifacts").display().to_string(),
            run_id,
            experiment_id,
        };
        let file = RunFile {
            run_id: handle.run_id.clone(),
            experiment: experiment.to_string(),
            name: name.to_string(),
            status: Some(RunStatus::Running),
            start_time: now_ms(),
            end_time: None,
            params: BTreeMap::new(),
            tags: tags.iter().cloned().collect(),
        };
        write_json(&dir.join("run.json"), &file)?;
        Ok(handle)
    }

    fn log(&self, run: &RunHandle, batch: &Batch) -> Result<()> {
        if !batch.params.is_empty() || !batch.tags.is_empty() {
            self.update_run(run, |f| {
                f.params.extend(batch.params.iter().cloned());
                f.tags.extend(batch.tags.iter().cloned());
            })?;
        }
        if !batch.metrics.is_empty() {
            let path = self.run_dir(run).join("metrics.jsonl");
            let mut text = Vec::new();
            for m in &batch.metrics {
                serde_json::to_writer(&mut text, m).expect("metrics serialise");
                text.push(b'\n');
            }
            // One append of whole lines: a kill can cut off at most the last line, which
            // readers skip.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(&text))
                .map_err(|e| Error::Write {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }

    fn log_artifacts(&self, run: &RunHandle, dir: &Path, path: &str) -> Result<()> {
        copy_tree(dir, &self.run_dir(run).join("artifacts").join(path))
    }

    fn log_artifact(&self, run: &RunHandle, file: &Path, path: &str) -> Result<()> {
        let name = file.file_name().unwrap_or_default();
        let to = self.run_dir(run).join("artifacts").join(path).join(name);
        let bytes = std::fs::read(file).map_err(|source| Error::Io {
            path: file.to_path_buf(),
            source,
        })?;
        write_bytes_atomic(&to, &bytes)
    }

    fn end_run(&self, run: &RunHandle, status: RunStatus) -> Result<()> {
        self.update_run(run, |f| {
            f.status = Some(status);
            f.end_time = Some(now_ms());
        })
    }

    fn list_models(&self) -> Result<Vec<ModelInfo>> {
        self.model_names()?
            .iter()
            .map(|name| self.model(name))
            .collect()
    }

    fn model(&self, name: &str) -> Result<ModelInfo> {
        let file = self.read_model(name)?;
        Ok(ModelInfo {
            name: file.name,
            created_at: file.created_at,
            versions: self.versions(name)?,
            aliases: file.aliases,
            tags: file.tags,
        })
    }

    fn create_version(
        &self,
        name: &str,
        run: &RunHandle,
        path: &str,
        tags: &[(String, String)],
    ) -> Result<u64> {
        validate_name(name)?;
        let _lock = self.lock()?;
        let dir = self.model_dir(name);
        let model_json = dir.join("model.json");
        let mut model = if model_json.exists() {
            read_json(&model_json)?
        } else {
            ModelFile {
                name: name.to_string(),
                created_at: now_ms(),
                ..ModelFile::default()
            }
        };
        remove_dead_temps(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let version = self
            .versions(name)?
            .iter()
            .map(|v| v.version)
            .fold(model.last_version, u64::max)
            + 1;
        let tmp = dir.join(format!(".tmp-{version}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        copy_tree(&self.run_dir(run).join("artifacts").join(path), &tmp)?;
        let final_dir = dir.join(version.to_string());
        let info = VersionInfo {
            version,
            created_at: now_ms(),
            run_id: Some(run.run_id.clone()),
            source: final_dir.display().to_string(),
            tags: tags.iter().cloned().collect(),
        };
        write_json(&tmp.join("version.json"), &info)?;
        std::fs::rename(&tmp, &final_dir).map_err(|e| Error::Write {
            path: final_dir.clone(),
            reason: format!("cannot register the version: {e}"),
        })?;
        model.last_version = version;
        write_json(&model_json, &model)?;
        Ok(version)
    }

    fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()> {
        self.edit_model(name, |m| {
            m.aliases.insert(alias.to_string(), version);
            Ok(())
        })
    }

    fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        self.edit_model(name, |m| {
            m.aliases.remove(alias);
            Ok(())
        })
    }

    fn set_model_tag(&self, name: &str, key: &str, value: &str) -> Result<()> {
        self.edit_model(name, |m| {
            m.tags.insert(key.to_string(), value.to_string());
            Ok(())
        })
    }

    fn set_version_tag(&self, name: &str, version: u64, key: &str, value: &str) -> Result<()> {
        let _lock = self.lock()?;
        let path = self
            .model_dir(name)
            .join(version.to_string())
            .join("version.json");
        let mut info: VersionInfo = read_json(&path)?;
        info.tags.insert(key.to_string(), value.to_string());
        write_json(&path, &info)
    }

    fn delete_version(&self, name: &str, version: u64) -> Result<()> {
        let _lock = self.lock()?;
        let dir = self.model_dir(name);
        let from = dir.join(version.to_string());
        // Rename first so that readers never see a half-deleted version.
        let doomed = dir.join(format!(".tmp-deleted-{version}-{}", std::process::id()));
        std::fs::rename(&from, &doomed).map_err(|e| Error::Write {
            path: from.clone(),
            reason: format!("cannot delete the version: {e}"),
        })?;
        let _ = std::fs::remove_dir_all(&doomed);
        Ok(())
    }

    fn fetch_version(&self, name: &str, info: &VersionInfo) -> Result<PathBuf> {
        let dir = self
            .model_dir(name)
            .join(info.version.to_string())
            .join("model");
        if dir.join("config.json").is_file() {
            Ok(dir)
        } else {
            Err(Error::Registry(format!(
                "version {} of {name:?} in {} has no model files at {}",
                info.version,
                self.describe(),
                dir.display()
            )))
        }
    }
}

/// Remove `.tmp-*` folders left by writers that died (the caller holds the lock, so no live
/// writer is using them).
fn remove_dead_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Read `metrics.jsonl` of a local run: every whole line (a cut-off last line is skipped).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricPoint>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
