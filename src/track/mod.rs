//! Run tracking and the model registry: every fine-tune a tracked run ([`RunTracker`], a
//! [`crate::train::Callback`]), every kept checkpoint a numbered version that aliases such as
//! `champion` point at ([`Registry`]). Two stores behind one [`Store`] trait: an MLflow server
//! spoken to over its REST API ([`mlflow::MlflowStore`]) when a tracking URI is set, else the
//! local registry in plain files ([`local::LocalStore`]).

pub mod cache;
pub mod gate;
pub mod local;
mod lock;
pub mod mlflow;
pub mod mlmodel;
pub mod promote;
pub mod registry;
pub mod store;
pub mod tracker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use gate::{Condition, Gate};
pub use registry::{Promotion, Registry};
pub use store::{Batch, MetricPoint, ModelInfo, RunHandle, RunStatus, Store, VersionInfo};
pub use tracker::RunTracker;

use crate::error::{Error, Result};

/// The store a tracking URI names: MLflow for `http(s)://…`, the local registry
/// (`CATBERT_HOME`, default `~/.catbert`) for none.
pub fn open_store(tracking_uri: Option<&str>) -> Result<Arc<dyn Store>> {
    let home = local::LocalStore::default_root();
    Ok(match tracking_uri.filter(|u| !u.is_empty()) {
        Some(uri) => Arc::new(mlflow::MlflowStore::new(uri, &home)?),
        None => Arc::new(local::LocalStore::new(&home)),
    })
}

/// Registered model names: letters, digits, `.`, `_` and `-`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Registry(format!(
            "model name {name:?} is not allowed: use letters, digits, '.', '_' and '-' (not first '.')"
        )))
    }
}

/// Every file under `dir`, as `/`-separated paths relative to it, sorted.
pub fn list_files(dir: &Path) -> Result<Vec<String>> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // temporaries of atomic writes
            }
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), &rel, out)?;
            } else {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// Hard-link `from` to `to` (creating folders), or copy when linking is impossible (another
/// file system). Every file catbert writes is replaced by rename, never edited in place, so a
/// link never changes under its reader.
pub fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    let err = |e: std::io::Error| Error::Write {
        path: to.to_path_buf(),
        reason: e.to_string(),
    };
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).map_err(err)?;
    }
    Ok(())
}

/// Link or copy every file under `from` to the same place under `to`.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if !from.is_dir() {
        return Err(Error::FileNotFound {
            path: from.to_path_buf(),
        });
    }
    for rel in list_files(from)? {
        link_or_copy(&from.join(&rel), &to.join(&rel))?;
    }
    Ok(())
}

/// A temporary folder removed when dropped.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("catbert-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
