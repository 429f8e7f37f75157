//! The local cache of model versions downloaded from a remote registry. A version never
//! changes once registered, so a complete download is reused by version number. A download is
//! assembled under a temporary name, checked (every file's size against the listing, and its
//! sha256 against the manifest catbert registers beside the model) and only then renamed into
//! place with a `.complete` record of what it holds; a cached version whose files no longer
//! match that record is removed and downloaded again, never loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::mlmodel::{read_manifest, sha256_file, MANIFEST};
use crate::error::{Error, Result};
use crate::fsutil::write_bytes_atomic;

const COMPLETE: &str = ".complete";

/// Cached versions under one folder: `<root>/<name>/<version>/model/…`.
#[derive(Debug, Clone)]
pub struct VersionCache {
    root: PathBuf,
}

impl VersionCache {
    /// A cache rooted at `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    fn dir(&self, name: &str, version: u64) -> PathBuf {
        self.root.join(name).join(version.to_string())
    }

    /// The cached model folder of `name` version `version`, if it is there whole. A cached
    /// version that does not match its record (truncated, edited, half-deleted) is removed.
    pub fn get(&self, name: &str, version: u64) -> Result<Option<PathBuf>> {
        let dir = self.dir(name, version);
        let Ok(text) = std::fs::read_to_string(dir.join(COMPLETE)) else {
            if dir.exists() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Ok(None);
        };
        let sizes: BTreeMap<String, u64> = serde_json::from_str(&text).unwrap_or_default();
        let whole = !sizes.is_empty()
            && sizes.iter().all(|(rel, size)| {
                std::fs::metadata(dir.join(rel)).is_ok_and(|m| m.len() == *size)
            });
        if whole {
            Ok(Some(dir.join("model")))
        } else {
            let _ = std::fs::remove_dir_all(&dir);
            Ok(None)
        }
    }

    /// Download through `fill` (which writes into the folder it is given and returns the files
    /// it wrote with their expected sizes), check, and put the version in place.
    pub fn fill(
        &self,
        name: &str,
        version: u64,
        fill: impl FnOnce(&Path) -> Result<BTreeMap<String, u64>>,
    ) -> Result<PathBuf> {
        let dir = self.dir(name, version);
        let tmp = self
            .root
            .join(name)
            .join(format!(".tmp-{version}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let result = (|| {
            let sizes = fill(&tmp)?;
            verify(&tmp, &sizes, name, version)?;
            let record = serde_json::to_vec(&sizes).expect("sizes serialise");
            write_bytes_atomic(&tmp.join(COMPLETE), &record)?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir).map_err(|e| Error::Write {
                path: dir.clone(),
                reason: format!("cannot put the downloaded version in the cache: {e}"),
            })
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result.map(|()| dir.join("model"))
    }
}

fn verify(dir: &Path, sizes: &BTreeMap<String, u64>, name: &str, version: u64) -> Result<()> {
    let corrupt = |reason: String| {
        Error::Registry(format!(
            "version {version} of {name:?} downloaded corrupt: {reason}; nothing was cached (run again to retry)"
        ))
    };
    for (rel, size) in sizes {
        let got = std::fs::metadata(dir.join(rel)).map_or(0, |m| m.len());
        if got != *size {
            return Err(corrupt(format!(
                "{rel} has {got} bytes, the server lists {size}"
            )));
        }
    }
    let manifest_path = dir.join(MANIFEST);
    if manifest_path.is_file() {
        // The manifest lists the whole MLmodel folder; the model files are what is downloaded.
        let listed = read_manifest(&manifest_path)?;
        for (rel, want) in listed.iter().filter(|(r, _)| r.starts_with("model/")) {
            let path = dir.join(rel);
            if !path.is_file() {
                return Err(corrupt(format!("{rel} is missing")));
            }
            let got = sha256_file(&path)?;
            if got != *want {
                return Err(corrupt(format!(
                    "sha256 of {rel} is {got}, the manifest says {want}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_version_that_lost_bytes_is_dropped_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = VersionCache::new(dir.path());
        assert!(cache.get("m", 1).unwrap().is_none());
        let got = cache
            .fill("m", 1, |tmp| {
                std::fs::create_dir_all(tmp.join("model")).unwrap();
                std::fs::write(tmp.join("model/config.json"), "{}").unwrap();
                Ok(BTreeMap::from([("model/config.json".to_string(), 2)]))
            })
            .unwrap();
        assert_eq!(cache.get("m", 1).unwrap(), Some(got.clone()));
        std::fs::write(got.join("config.json"), "{").unwrap();
        assert!(cache.get("m", 1).unwrap().is_none());
        assert!(!got.exists());
        let err = cache
            .fill("m", 2, |tmp| {
                std::fs::create_dir_all(tmp.join("model")).unwrap();
                std::fs::write(tmp.join("model/w"), "abc").unwrap();
                Ok(BTreeMap::from([("model/w".to_string(), 5)]))
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "version 2 of \"m\" downloaded corrupt: model/w has 3 bytes, the server lists 5; nothing was cached (run again to retry)"
        );
        assert!(std::fs::read_dir(dir.path().join("m")).unwrap().count() == 0);
    }
}
