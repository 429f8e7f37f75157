//! The local registry's writer lock: an advisory `flock` on one file, so that two catbert
//! processes registering at once take turns. The kernel drops the lock when its holder dies, so
//! a killed writer never leaves the registry locked.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a writer waits for the lock unless `CATBERT_LOCK_TIMEOUT` (seconds) says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Held until dropped.
#[derive(Debug)]
pub struct RegistryLock {
    _file: File,
}

/// The wait allowed: `CATBERT_LOCK_TIMEOUT` seconds, else [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Duration {
    std::env::var("CATBERT_LOCK_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64)
}

impl Drop for RegistryLock {
    fn drop(&mut self) {
        // Empty the file before the kernel drops the lock, so a later holder that is not
        // catbert (which writes no pid) is not taken for this process.
        let _ = self._file.set_len(0);
    }
}

impl RegistryLock {
    /// Take the lock on `path`, waiting up to `timeout`.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<Self> {
        let io_err = |e: std::io::Error| Error::Write {
            path: path.to_path_buf(),
            reason: format!("cannot open the registry lock: {e}"),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err)?;
        let started = Instant::now();
        loop {
            // SAFETY: flock on a file descriptor this function owns.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                let _ = file.set_len(0);
                let _ = write!(file, "{}", std::process::id());
                return Ok(Self { _file: file });
            }
            if started.elapsed() >= timeout {
                return Err(lock_timeout(path, timeout));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn lock_timeout(path: &Path, timeout: Duration) -> Error {
    let holder = std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map(|pid| format!(" by process {pid}"))
        .unwrap_or_default();
    Error::LockTimeout {
        path: PathBuf::from(path),
        detail: format!(
            "held{holder} for more than {}s; another catbert is writing the registry (wait for it, or raise CATBERT_LOCK_TIMEOUT)",
            timeout.as_secs_f64()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_waits_then_times_out_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = RegistryLock::acquire(&path, Duration::ZERO).unwrap();
        let err = RegistryLock::acquire(&path, Duration::from_millis(120)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: registry lock held by process {} for more than 0.12s; another catbert is writing the registry (wait for it, or raise CATBERT_LOCK_TIMEOUT)",
                path.display(),
                std::process::id()
            )
        );
        drop(held);
        RegistryLock::acquire(&path, Duration::ZERO).unwrap();
    }
}
