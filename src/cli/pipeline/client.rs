//! One client's day: retrain when asked or when new feedback has arrived (a `catbert
//! finetune` child process registering `ID_model` through its gate), then score the day's new
//! rows with the champion into `OUTPUT/client=ID/date=DATE/`, written whole or not at all.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::config::{expand, Client};
use crate::checkpoint::{Checkpoint, HubSettings, ModelRef};
use crate::data::{write_table, Table};
use crate::feedback::FeedbackStore;
use crate::infer::output::{long_frame, wide_frame};
use crate::infer::{PredictOptions, Predictor, Quiet};
use crate::track::{Registry, VersionInfo};

/// What the run of every client shares.
pub struct Day<'a> {
    /// Root of the partitioned outputs.
    pub output: &'a Path,
    /// The date scored, `YYYY-MM-DD`.
    pub date: &'a str,
    /// Retrain every client (`--retrain`).
    pub retrain: bool,
    /// Wide layout for every client (`--wide`).
    pub wide: bool,
    /// Math threads of each fine-tune child.
    pub threads: usize,
    /// Where scoring and the fine-tunes run.
    pub device: crate::device::DeviceChoice,
    /// Scoring precision [default: bf16 on a capable GPU, else fp32].
    pub precision: Option<crate::device::Precision>,
    /// Tracking server, when not the local registry.
    pub tracking_uri: Option<&'a str>,
    /// The registry the clients' models live in.
    pub registry: &'a Registry,
}

/// How a client's day ended, short of failing.
#[derive(Debug, Clone, Default)]
pub struct Done {
    /// `scored` or `skipped`.
    pub status: &'static str,
    /// Input rows scored.
    pub rows: usize,
    /// The champion version that scored them.
    pub version: Option<u64>,
    /// Why it trained, if it did.
    pub trained: Option<String>,
    /// What happened, in words.
    pub note: String,
}

/// The marker of a finished partition.
pub const SUCCESS: &str = "_SUCCESS";

/// The partition folder of a client and day.
pub fn partition(output: &Path, id: &str, date: &str) -> PathBuf {
    output
        .join(format!("client={id}"))
        .join(format!("date={date}"))
}

fn champion(registry: &Registry, name: &str) -> Result<Option<VersionInfo>, String> {
    let models = registry.store().list_models().map_err(|e| e.to_string())?;
    let Some(model) = models.into_iter().find(|m| m.name == name) else {
        return Ok(None);
    };
    let Some(&v) = model.aliases.get(crate::track::registry::CHAMPION) else {
        return Ok(None);
    };
    Ok(model.version(v).cloned())
}

/// Run one client's day. `Err` is the one line saying why it failed.
pub fn run(c: &Client, day: &Day, log: &Path) -> Result<Done, String> {
    let part = partition(day.output, &c.id, day.date);
    if part.join(SUCCESS).is_file() {
        let rows = std::fs::read_to_string(part.join(SUCCESS))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["rows"].as_u64())
            .unwrap_or(0) as usize;
        return Ok(Done {
            status: "skipped",
            rows,
            note: format!("already scored ({})", part.display()),
            ..Done::default()
        });
    }
    let name = format!("{}_model", c.id);
    let mut done = Done::default();
    let mut current = champion(day.registry, &name)?;
    if let Some(why) = train_reason(c, day, &name, current.as_ref())? {
        if c.train.is_empty() {
            if current.is_none() {
                return Err(format!(
                    "{name} has no champion yet and the client has no `train` data to make one"
                ));
            }
        } else {
            train(c, day, log, &why)?;
            done.trained = Some(why);
            current = champion(day.registry, &name)?;
            if current.is_none() {
                return Err(format!(
                    "{name} has no champion: the new version was not promoted (see {})",
                    log.display()
                ));
            }
        }
    }
    let version = current.as_ref().map(|v| v.version);
    done.version = version;
    let Some(source) = &c.score else {
        done.status = "skipped";
        done.note = "no `score` folder configured".into();
        return Ok(done);
    };
    let inputs = score_files(&source.replace("{date}", day.date))?;
    if inputs.is_empty() {
        done.status = "skipped";
        done.note = format!("no new rows in {}", source.replace("{date}", day.date));
        return Ok(done);
    }
    let (rows, written) = score(c, day, (&name, version), &inputs, &part)?;
    done.rows = rows;
    done.status = if rows == 0 { "skipped" } else { "scored" };
    done.note = if rows == 0 {
        "no new rows".into()
    } else {
        format!("{written} output rows in {}", part.display())
    };
    Ok(done)
}

/// Why the client must train today, if it must.
fn train_reason(
    c: &Client,
    day: &Day,
    name: &str,
    current: Option<&VersionInfo>,
) -> Result<Option<String>, String> {
    if day.retrain {
        return Ok(Some("--retrain".into()));
    }
    let Some(current) = current else {
        return Ok(Some("no champion yet".into()));
    };
    if !c.retrain_on_feedback {
        return Ok(None);
    }
    let store = feedback_store(name);
    if !store.dir().is_dir() {
        return Ok(None);
    }
    let set = store.read(None).map_err(|e| e.to_string())?;
    let newer = (set.rows.iter())
        .filter(|r| r.verified_at > current.created_at)
        .count();
    Ok((newer > 0).then(|| {
        format!(
            "{newer} verified rows arrived since version {} was registered",
            current.version
        )
    }))
}

fn feedback_store(name: &str) -> FeedbackStore {
    let reference = ModelRef::try_parse(&format!("models:/{name}@champion"))
        .expect("a validated model name makes a valid reference");
    FeedbackStore::new(crate::feedback::default_dir(&reference))
}

/// The training file: the one file given, else the text and label columns of every file
/// stacked into one Parquet file in the work folder.
fn training_file(c: &Client, work: &Path) -> Result<PathBuf, String> {
    let files = expand(&c.train).map_err(|e| format!("`train`: {e}"))?;
    if let [one] = files.as_slice() {
        return Ok(one.clone());
    }
    let label_col = (c.finetune.get("label_col").and_then(|v| v.as_str()))
        .ok_or("several `train` files need `label_col` to stack them")?;
    let mut stacked: Option<polars::prelude::DataFrame> = None;
    for f in &files {
        let table = Table::read(f, None).map_err(|e| e.to_string())?;
        let texts = table.texts(&c.text_col).map_err(|e| e.to_string())?;
        let labels: Vec<Option<String>> = table.labels(label_col).map_err(|e| e.to_string())?;
        let frame = polars::prelude::df!(c.text_col.as_str() => texts, label_col => labels)
            .map_err(|e| e.to_string())?;
        stacked = Some(match stacked {
            None => frame,
            Some(mut s) => {
                s.vstack_mut(&frame).map_err(|e| e.to_string())?;
                s
            }
        });
    }
    let path = work.join("train.parquet");
    let mut frame = stacked.expect("at least one file");
    write_table(&mut frame, &path, None).map_err(|e| e.to_string())?;
    Ok(path)
}

/// `catbert finetune` for the client as a child process, its output appended to `log`.
fn train(c: &Client, day: &Day, log: &Path, why: &str) -> Result<(), String> {
    let work = day.output.join("_work").join(&c.id);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut settings = c.finetune.clone();
    let train = training_file(c, &work)?;
    settings.insert("train".into(), train.display().to_string().into());
    let name = format!("{}_model", c.id);
    let store = feedback_store(&name);
    if store.dir().is_dir() {
        settings.insert("feedback".into(), store.dir().display().to_string().into());
    }
    let config = work.join("finetune.toml");
    let text = toml::to_string(&settings).map_err(|e| e.to_string())?;
    crate::fsutil::write_bytes_atomic(&config, text.as_bytes()).map_err(|e| e.to_string())?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    use std::io::Write as _;
    let _ = writeln!(&log_file, "== {} training ({why})", c.id);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args(["finetune", "--config"])
        .arg(&config)
        .args(["--client", &c.id, "--overwrite", "--out"])
        .arg(work.join("checkpoint"))
        .args(["--threads", &day.threads.to_string()])
        .args(["--device", &day.device.to_string()]);
    if let Some(g) = &c.promote_if {
        cmd.args(["--promote-if", g]);
    }
    if c.promote_if_better {
        cmd.arg("--promote-if-better");
    }
    if let Some(uri) = day.tracking_uri {
        cmd.args(["--tracking-uri", uri]);
    }
    let err_file = log_file.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(err_file));
    // The child dies with the pipeline: a killed pipeline leaves no orphan writing on.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start catbert finetune: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = (text.lines().rev())
        .find_map(|l| l.strip_prefix("error: "))
        .map(|l| format!("training failed: {l}"))
        .unwrap_or_else(|| format!("training failed ({status}); see {}", log.display()));
    Err(line)
}

/// The day's input files: a folder's table files in name order, or the one file named.
fn score_files(path: &str) -> Result<Vec<PathBuf>, String> {
    if !Path::new(path).exists() {
        return Err(format!("`score` {path} does not exist"));
    }
    crate::monitor::windows::prediction_files(&[PathBuf::from(path)]).map_err(|e| e.to_string())
}

/// Score `inputs` with the champion into a temporary folder, then rename it to `part`.
/// Returns (input rows, output rows).
fn score(
    c: &Client,
    day: &Day,
    (name, version): (&str, Option<u64>),
    inputs: &[PathBuf],
    part: &Path,
) -> Result<(usize, usize), String> {
    let reference =
        ModelRef::try_parse(&format!("models:/{name}@champion")).map_err(|e| e.to_string())?;
    let folder = reference
        .resolve_with(&HubSettings::from_env(), Some(day.registry))
        .map_err(|e| e.to_string())?;
    let checkpoint = Checkpoint::open(&folder.dir).map_err(|e| e.to_string())?;
    let predictor = Predictor::from_checkpoint(
        checkpoint,
        &folder.origin,
        day.device,
        PredictOptions {
            precision: day.precision,
            ..PredictOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let parent = part.parent().expect("a partition has a client folder");
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    // The temporary folder is named as the atomic writes name theirs, so the same sweep
    // removes what a killed run left.
    crate::fsutil::remove_stale_temps(part);
    let tmp = crate::fsutil::temp_path(part);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let (mut rows, mut written) = (0, 0);
    let wide = day.wide || c.wide;
    for (i, file) in inputs.iter().enumerate() {
        let table = Table::read(file, None).map_err(|e| e.to_string())?;
        let texts = table.texts(&c.text_col).map_err(|e| e.to_string())?;
        if texts.is_empty() {
            continue;
        }
        let top = predictor
            .predict_encoded(
                &predictor.encode(&texts).map_err(|e| e.to_string())?,
                c.top_k,
                &Quiet,
            )
            .map_err(|e| e.to_string())?;
        let keys: Vec<String> = match &c.key_cols {
            Some(k) => k.clone(),
            None => (table.frame.get_column_names().into_iter())
                .map(|n| n.to_string())
                .filter(|n| *n != c.text_col)
                .collect(),
        };
        for k in &keys {
            table.labels(k).map_err(|e| e.to_string())?;
        }
        let mut frame = if wide {
            wide_frame(table.frame.clone(), &top, predictor.labels())
        } else {
            long_frame(&top, predictor.labels(), &table.frame, &keys)
        }
        .map_err(|e| format!("{}: building the output: {e}", file.display()))?;
        let out = tmp.join(format!("part-{i:05}.parquet"));
        write_table(&mut frame, &out, None).map_err(|e| e.to_string())?;
        rows += texts.len();
        written += frame.height();
        crash_point(&c.id);
    }
    let marker = serde_json::json!({
        "client": c.id,
        "date": day.date,
        "rows": rows,
        "output_rows": written,
        "layout": if wide { "wide" } else { "long" },
        "model": name,
        "version": version,
        "inputs": inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "written_at": crate::track::store::format_time(crate::track::store::now_ms()),
    });
    let text = serde_json::to_string_pretty(&marker).expect("JSON");
    crate::fsutil::write_bytes_atomic(&tmp.join(SUCCESS), text.as_bytes())
        .map_err(|e| e.to_string())?;
    if part.exists() {
        // A folder without its marker is not ours to keep: only whole partitions appear.
        std::fs::remove_dir_all(part).map_err(|e| format!("{}: {e}", part.display()))?;
    }
    std::fs::rename(&tmp, part).map_err(|e| format!("{}: {e}", part.display()))?;
    Ok((rows, written))
}

/// Test-only: `CATBERT_TEST_CRASH=pipeline-partition@ID` kills the process (SIGKILL) after
/// client ID's first part file, before its partition is complete.
fn crash_point(id: &str) {
    let hook = std::env::var(crate::checkpoint::save::CRASH_HOOK).unwrap_or_default();
    if hook == format!("pipeline-partition@{id}") {
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
