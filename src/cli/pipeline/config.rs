//! `clients.toml`: the output root and shared defaults at the top, one table per client. Every
//! key is checked before any work: an unknown one is refused naming the client and the key.

use std::path::{Path, PathBuf};

use clap::Args as _;
use toml::{Table, Value};

use crate::error::Error;

/// Keys of a client (or `[defaults]`) that the pipeline reads itself; every other key is a
/// `catbert finetune` setting.
const PIPELINE_KEYS: &[&str] = &[
    "train",
    "score",
    "promote_if",
    "promote_if_better",
    "key_cols",
    "top_k",
    "wide",
    "retrain_on_feedback",
];
/// Keys of the top level.
const TOP_KEYS: &[&str] = &["output", "jobs", "tracking_uri", "defaults", "clients"];

/// One client, its defaults merged in.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client id (the table name); the registered model is `ID_model`.
    pub id: String,
    /// Training files or globs (`*`, `?` in the file name); empty: never trained here.
    pub train: Vec<String>,
    /// Folder or file of the day's new rows; `{date}` is replaced by the date scored.
    pub score: Option<String>,
    /// The promotion gate, e.g. `f1_min>=0.75`.
    pub promote_if: Option<String>,
    /// Promote only when not worse than the champion on the same rows [default: true
    /// unless `promote_if` is given].
    pub promote_if_better: bool,
    /// Input columns carried into the long layout [default: every column but the text].
    pub key_cols: Option<Vec<String>>,
    /// Categories per row.
    pub top_k: usize,
    /// Wide layout (one row per input row) instead of long.
    pub wide: bool,
    /// Retrain when feedback newer than the champion has arrived.
    pub retrain_on_feedback: bool,
    /// The `catbert finetune` settings (defaults merged in), as TOML.
    pub finetune: Table,
    /// The text column (for the key columns' default).
    pub text_col: String,
}

/// The whole file.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Root of the partitioned outputs.
    pub output: PathBuf,
    /// Clients run at once, unless `--jobs` says.
    pub jobs: usize,
    /// Tracking server for every client's runs and models [default: the local registry].
    pub tracking_uri: Option<String>,
    /// The clients, in the file's order.
    pub clients: Vec<Client>,
}

fn bad(path: &Path, reason: String) -> Error {
    Error::BadConfig {
        path: path.to_path_buf(),
        reason,
    }
}

/// The settings `catbert finetune --config` takes (its flags' ids).
fn finetune_keys() -> Vec<String> {
    let cmd = super::super::finetune::Settings::augment_args(clap::Command::new("finetune"));
    cmd.get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

impl PipelineConfig {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let top: Table = super::super::finetune::read_toml(path)?;
        for key in top.keys() {
            if !TOP_KEYS.contains(&key.as_str()) {
                return Err(bad(
                    path,
                    format!(
                        "unknown key `{key}` at the top (keys: {})",
                        TOP_KEYS.join(", ")
                    ),
                ));
            }
        }
        let output = match top.get("output") {
            Some(Value::String(s)) => PathBuf::from(s),
            Some(_) => return Err(bad(path, "`output` must be a string (a folder)".into())),
            None => {
                return Err(bad(
                    path,
                    "`output = \"folder\"` is missing at the top".into(),
                ))
            }
        };
        let jobs = match top.get("jobs") {
            Some(Value::Integer(n)) if *n >= 1 => *n as usize,
            Some(_) => return Err(bad(path, "`jobs` must be a whole number ≥ 1".into())),
            None => 1,
        };
        let tracking_uri = match top.get("tracking_uri") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(bad(path, "`tracking_uri` must be a string".into())),
            None => None,
        };
        let table = |key: &str| -> Result<Table, Error> {
            match top.get(key) {
                Some(Value::Table(t)) => Ok(t.clone()),
                Some(_) => Err(bad(path, format!("`{key}` must be a table ([{key}])"))),
                None => Ok(Table::new()),
            }
        };
        let defaults = table("defaults")?;
        let known = finetune_keys();
        check_keys(path, "[defaults]", &defaults, &known)?;
        let mut clients = Vec::new();
        for (id, section) in table("clients")? {
            let Value::Table(section) = section else {
                return Err(bad(
                    path,
                    format!("client {id}: must be a table [clients.{id}]"),
                ));
            };
            crate::track::validate_name(&id).map_err(|e| bad(path, format!("client {id}: {e}")))?;
            check_keys(path, &format!("client {id}"), &section, &known)?;
            let mut merged = defaults.clone();
            merged.extend(section);
            clients.push(client(path, id, merged)?);
        }
        if clients.is_empty() {
            return Err(bad(path, "no clients: add a [clients.ID] table".into()));
        }
        Ok(Self {
            output,
            jobs,
            tracking_uri,
            clients,
        })
    }
}

fn check_keys(path: &Path, whose: &str, t: &Table, known: &[String]) -> Result<(), Error> {
    for key in t.keys() {
        if !PIPELINE_KEYS.contains(&key.as_str()) && !known.iter().any(|k| k == key) {
            return Err(bad(
                path,
                format!("{whose}: unknown key `{key}` (pipeline keys: {}; or any catbert finetune setting)", PIPELINE_KEYS.join(", ")),
            ));
        }
    }
    Ok(())
}

/// A client from its merged table: pipeline keys taken out and typed, the rest kept for
/// `catbert finetune`.
fn client(path: &Path, id: String, mut t: Table) -> Result<Client, Error> {
    let wrong = |key: &str, what: &str| bad(path, format!("client {id}: `{key}` must be {what}"));
    let train = match t.remove("train") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(wrong("train", "a path or a list of paths")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(wrong("train", "a path or a list of paths")),
    };
    let string = |t: &mut Table, key: &str| match t.remove(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong(key, "a string")),
    };
    let flag = |t: &mut Table, key: &str, default: bool| match t.remove(key) {
        None => Ok(default),
        Some(Value::Boolean(b)) => Ok(b),
        Some(_) => Err(wrong(key, "true or false")),
    };
    let score = string(&mut t, "score")?;
    let promote_if = string(&mut t, "promote_if")?;
    if let Some(g) = &promote_if {
        g.parse::<crate::track::Gate>()
            .map_err(|e| bad(path, format!("client {id}: `promote_if`: {e}")))?;
    }
    // Without a gate of its own a client promotes a new version when it is not worse than
    // the champion on the same rows (the first version always).
    let promote_if_better = flag(&mut t, "promote_if_better", promote_if.is_none())?;
    let wide = flag(&mut t, "wide", false)?;
    let retrain_on_feedback = flag(&mut t, "retrain_on_feedback", true)?;
    let top_k = match t.remove("top_k") {
        None => 5,
        Some(Value::Integer(n)) if n >= 1 => n as usize,
        Some(_) => return Err(wrong("top_k", "a whole number ≥ 1")),
    };
    let key_cols = match t.remove("key_cols") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(wrong("key_cols", "a list of column names")),
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(wrong("key_cols", "a list of column names")),
    };
    for key in ["out", "feedback"] {
        if t.contains_key(key) {
            return Err(bad(
                path,
                format!("client {id}: `{key}` is set by the pipeline (checkpoints under the output's _work folder, feedback from the model's store)"),
            ));
        }
    }
    // Values are checked by type the way `catbert finetune --config` will read them.
    let settings: super::super::finetune::Settings = Value::Table(t.clone())
        .try_into()
        .map_err(|e: toml::de::Error| bad(path, format!("client {id}: {}", e.message())))?;
    Ok(Client {
        text_col: settings.text_col.unwrap_or_else(|| "text".into()),
        id,
        train,
        score,
        promote_if,
        promote_if_better,
        key_cols,
        top_k,
        wide,
        retrain_on_feedback,
        finetune: t,
    })
}

/// Whether `name` matches `pattern` (`*` any run of characters, `?` one character).
pub fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The files of `patterns` (a wildcard only in the file name), each pattern's matches in name
/// order; a pattern that matches nothing is an error naming it.
pub fn expand(patterns: &[String]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for pattern in patterns {
        let path = Path::new(pattern);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name.filter(|n| n.contains(['*', '?'])) else {
            if !path.is_file() {
                return Err(Error::FileNotFound {
                    path: path.to_path_buf(),
                });
            }
            out.push(path.to_path_buf());
            continue;
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|_| Error::FileNotFound { path: dir.clone() })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| (p.file_name()).is_some_and(|f| wildcard(&name, &f.to_string_lossy())))
            .collect();
        if found.is_empty() {
            return Err(Error::Usage(format!("`train` {pattern} matches no file")));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("train*.csv", "train-2026.csv"));
        assert!(wildcard("train*.csv", "train.csv"));
        assert!(!wildcard("train*.csv", "train.csv.bak"));
        assert!(wildcard("t?ain.*", "train.parquet"));
        assert!(!wildcard("a*b", "ac"));
    }

    #[test]
    fn unknown_keys_name_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "output = \"o\"\n[defaults]\nepochs = 1\n[clients.acme]\ntrain = \"a.csv\"\ntrian = 1\n",
        )
        .unwrap();
        let e = PipelineConfig::load(&f).unwrap_err().to_string();
        assert!(e.contains("client acme: unknown key `trian`"), "{e}");
        std::fs::write(&f, "output = \"o\"\n[clients.acme]\nepochs = \"two\"\n").unwrap();
        let e = PipelineConfig::load(&f).unwrap_err().to_string();
        assert!(e.contains("client acme: invalid type"), "{e}");
        std::fs::write(
            &f,
            "output = \"o\"\njobs = 2\n[defaults]\nepochs = 1\nmodel = \"m\"\n[clients.acme]\ntrain = [\"a*.csv\"]\nscore = \"new/{date}\"\nepochs = 3\npromote_if = \"f1_min>=0.5\"\n",
        )
        .unwrap();
        let c = PipelineConfig::load(&f).unwrap();
        assert_eq!(c.jobs, 2);
        let acme = &c.clients[0];
        assert_eq!(acme.finetune.get("epochs"), Some(&Value::Integer(3)));
        assert_eq!(acme.finetune.get("model"), Some(&Value::String("m".into())));
        assert_eq!(acme.score.as_deref(), Some("new/{date}"));
        assert!(!acme.finetune.contains_key("promote_if"));
    }
}
