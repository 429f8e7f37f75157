//! The output folder of a fine-tune: what may be written where, decided before any work.

use std::path::Path;

use crate::checkpoint::save::RUN_DIR;
use crate::checkpoint::META_FILE;
use crate::error::{Error, Result};

/// What to do with a run already in the output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Write only into an absent or empty folder; a run there is refused.
    #[default]
    New,
    /// Continue the run saved in the folder (a fresh run when there is none).
    Resume,
    /// Replace the catbert run in the folder (never files catbert did not write).
    Overwrite,
}

/// Files a catbert run writes at the top of its folder (and [`RUN_DIR`]).
const RUN_FILES: &[&str] = &[
    META_FILE,
    "metrics.json",
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

/// Check `out` against `mode` before any work: absent or empty is fine, and so is what a run
/// that never finished an epoch leaves (an empty `run/`, temporary files); a catbert run (a
/// `catbert.json` or a saved run state) is continued, replaced or refused by `mode`; anything
/// else is refused, naming what is there. Nothing is deleted here: see [`clear_run`].
pub fn check_output(out: &Path, mode: OutputMode) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(()); // absent (or not a folder: the writer says why it cannot write)
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let state = out.join(RUN_DIR).join("state.json").is_file();
    let is_run = out.join(META_FILE).is_file() || state;
    let leftover = |n: &String| n == RUN_DIR || n.contains(".tmp-") || n.starts_with(".catbert-");
    if !is_run && names.iter().all(leftover) {
        return Ok(());
    }
    if !is_run {
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        let more = names.len().saturating_sub(5);
        return Err(Error::Usage(format!(
            "{}: not empty and not a catbert output (it holds {}{}); choose a new or empty `out`",
            out.display(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )));
    }
    match mode {
        OutputMode::Resume | OutputMode::Overwrite => Ok(()),
        OutputMode::New => Err(Error::Usage(if state {
            format!("{} already holds a run that can be continued; pass `resume` to continue it, `overwrite` to start afresh, or choose another `out`", out.display())
        } else {
            format!("{} already holds a finished run; pass `overwrite` to replace it, or choose another `out`", out.display())
        })),
    }
}

/// Delete the files of the catbert run in `out` (never other files): what `Overwrite` does,
/// once the new run is ready to write.
pub fn clear_run(out: &Path) -> Result<()> {
    let remove = |p: &Path, r: std::io::Result<()>| {
        r.map_err(|e| Error::Write {
            path: p.to_path_buf(),
            reason: format!("cannot delete the old run: {e}"),
        })
    };
    for name in RUN_FILES {
        let p = out.join(name);
        if p.is_file() {
            remove(&p, std::fs::remove_file(&p))?;
        }
    }
    let run = out.join(RUN_DIR);
    if run.is_dir() {
        remove(&run, std::fs::remove_dir_all(&run))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_folders_are_refused_and_runs_decided_by_mode() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        check_output(&out, OutputMode::New).unwrap();
        std::fs::create_dir(&out).unwrap();
        check_output(&out, OutputMode::New).unwrap();
        // What a run that failed in its first epoch leaves is no run.
        std::fs::create_dir(out.join(RUN_DIR)).unwrap();
        check_output(&out, OutputMode::New).unwrap();
        std::fs::remove_dir(out.join(RUN_DIR)).unwrap();
        for f in ["config.json", "model.safetensors", "vocab.txt"] {
            std::fs::write(out.join(f), "x").unwrap();
        }
        let err = check_output(&out, OutputMode::Overwrite).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: not empty and not a catbert output (it holds config.json, model.safetensors, vocab.txt); choose a new or empty `out`", out.display()));
        assert!(out.join("model.safetensors").is_file(), "nothing deleted");

        std::fs::write(out.join(META_FILE), "{}").unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let err = check_output(&out, OutputMode::New).unwrap_err().to_string();
        assert!(err.ends_with("already holds a finished run; pass `overwrite` to replace it, or choose another `out`"), "{err}");
        check_output(&out, OutputMode::Resume).unwrap();
        check_output(&out, OutputMode::Overwrite).unwrap();
        assert!(out.join(META_FILE).is_file(), "checking deletes nothing");
        clear_run(&out).unwrap();
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["notes.txt"], "only the run's files go");
    }
}
