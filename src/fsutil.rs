//! Atomic file output: write beside the target, flush to disk, rename over it. A crash or a
//! full disk never leaves a half-written file where a good one was.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The temporary sibling used while `path` is being written: `.NAME.tmp-PID` beside it.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Write `path` atomically through `fill`, which gets a buffered writer.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> std::result::Result<(), String>,
{
    let write_err = |reason: String| Error::Write {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| write_err(format!("cannot create folder: {e}")))?;
    }
    remove_stale_temps(path);
    let tmp = temp_path(path);
    let _active = ActiveTemp::register(&tmp);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| format!("cannot write: {e}"))?;
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| format!("cannot write: {}", e.error()))?;
        file.sync_all().map_err(|e| format!("cannot write: {e}"))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename into place: {e}"))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

/// Temporary files being written right now, for [`remove_active_temps`].
static ACTIVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Registers a temporary file while it is written; unregisters on drop.
struct ActiveTemp(PathBuf);

impl ActiveTemp {
    fn register(tmp: &Path) -> Self {
        if let Ok(mut active) = ACTIVE.lock() {
            active.push(tmp.to_path_buf());
        }
        Self(tmp.to_path_buf())
    }
}

impl Drop for ActiveTemp {
    fn drop(&mut self) {
        if let Ok(mut active) = ACTIVE.lock() {
            active.retain(|p| p != &self.0);
        }
    }
}

/// Delete the temporary files being written now: a front end calls this when the process is
/// interrupted (SIGINT, SIGTERM) before it exits.
pub fn remove_active_temps() {
    if let Ok(active) = ACTIVE.lock() {
        for p in active.iter() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Delete temporary siblings of `path` (files or folders named `.NAME.tmp-PID`) left by
/// processes that no longer run (killed while writing it).
pub fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let p = entry.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// Write bytes atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes).map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        write_bytes_atomic(&path, b"good").unwrap();
        let err = write_atomic(&path, |w| {
            w.write_all(b"half").unwrap();
            Err("disk full".into())
        })
        .unwrap_err();
        assert!(err.to_string().ends_with("out.csv: disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temp_files_of_dead_processes_are_removed_on_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        // No process has this id (above the kernel's pid_max).
        let stale = dir.path().join(".out.csv.tmp-4194305");
        let other = dir.path().join(".other.csv.tmp-4194305");
        std::fs::write(&stale, "half").unwrap();
        std::fs::write(&other, "half").unwrap();
        write_bytes_atomic(&path, b"good").unwrap();
        assert!(!stale.exists());
        assert!(other.exists(), "only temps of the same output");
    }
}
