//! Human-verified labels sent to the server, appended durably to a CSV file that `catbert
//! finetune --train` reads as it is (columns `text`, `label`, plus `model_version` and
//! `received_at`). One request is one `write` followed by `fsync`: after the answer, the
//! items are on disk; a crash mid-write leaves at most one torn last line, which the next
//! append completes on a line of its own.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::track::store::{format_time, now_ms};

/// The feedback file and the lock that keeps appends whole.
pub struct FeedbackLog {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FeedbackLog {
    /// Append to `path` (created with its header on first use).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `(text, label)` items answered by `version`, and flush them to disk.
    pub fn append(&self, items: &[(String, String)], version: &str) -> Result<()> {
        let _one_writer = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let fail = |e: std::io::Error| Error::Write {
            path: self.path.clone(),
            reason: format!("cannot store feedback: {e}"),
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)
            .map_err(fail)?;
        let len = file.metadata().map_err(fail)?.len();
        let mut text = String::new();
        if len == 0 {
            text.push_str("text,label,model_version,received_at\n");
        } else {
            // A torn last line (a crash mid-append) must not swallow the next row.
            let mut last = [0u8];
            file.seek(SeekFrom::Start(len - 1)).map_err(fail)?;
            file.read_exact(&mut last).map_err(fail)?;
            if last[0] != b'\n' {
                text.push('\n');
            }
        }
        let when = format_time(now_ms());
        for (t, label) in items {
            let fields = [t.as_str(), label, version, &when];
            let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            text.push_str(&row.join(","));
            text.push('\n');
        }
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.sync_data().map_err(fail)
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_whole_rows_after_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = FeedbackLog::new(dir.path().join("d/feedback.csv"));
        log.append(&[("Oat \"milk\", 1L".into(), "dairy".into())], "3")
            .unwrap();
        // A crash mid-append left half a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap();
        f.write_all(b"torn").unwrap();
        log.append(&[("Cola".into(), "drinks".into())], "3").unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "text,label,model_version,received_at");
        assert!(lines[1].starts_with("\"Oat \"\"milk\"\", 1L\",dairy,3,"));
        assert_eq!(lines[2], "torn");
        assert!(lines[3].starts_with("Cola,drinks,3,"));
    }
}
