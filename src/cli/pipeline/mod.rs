//! `catbert pipeline --config clients.toml`: every client's day — retrain when asked or when
//! feedback has arrived, register `ID_model` through its gate, score the day's new rows with
//! the champion into `OUTPUT/client=ID/date=DATE/` — clients in parallel, one failing client
//! never stopping the others; a summary table, a JSON status file, exit code 0 only when
//! every client succeeded. Re-running a date skips finished partitions.

mod client;
mod config;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::Args;

use super::progress::Ui;
use crate::error::Error;
use crate::track::{open_store, Registry};
use client::{Day, Done};
use config::PipelineConfig;

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// The clients file (TOML): `output`, `[defaults]`, one `[clients.ID]` table per client.
    #[arg(long)]
    pub config: PathBuf,
    /// Run only this client (repeat for several).
    #[arg(long)]
    pub client: Vec<String>,
    /// The day to score, YYYY-MM-DD [default: today, UTC].
    #[arg(long)]
    pub date: Option<String>,
    /// Clients run at once [default: the config's `jobs`, else 1].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Retrain every client before scoring.
    #[arg(long)]
    pub retrain: bool,
    /// Wide outputs (one row per input row) for every client.
    #[arg(long)]
    pub wide: bool,
    /// MLflow tracking server [default: the config's `tracking_uri`, else the local registry].
    #[arg(long, env = "MLFLOW_TRACKING_URI", hide_env_values = true)]
    pub tracking_uri: Option<String>,
    /// Device and threads for scoring (and, passed on, for every client's fine-tune).
    #[command(flatten)]
    pub run: super::RunArgs,
}

/// One client's line of the summary.
struct Row {
    id: String,
    seconds: f64,
    result: Result<Done, String>,
}

fn check_date(d: &str) -> Result<(), Error> {
    let ok = d.len() == 10
        && d.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!("`date` {d:?} is not YYYY-MM-DD")))
    }
}

pub fn run(args: PipelineArgs, ui: &Ui) -> anyhow::Result<()> {
    let config = PipelineConfig::load(&args.config)?;
    let date = match args.date.clone() {
        Some(d) => d,
        None => crate::feedback::day(crate::track::store::now_ms()),
    };
    check_date(&date)?;
    let mut clients = config.clients.clone();
    if !args.client.is_empty() {
        for id in &args.client {
            if !clients.iter().any(|c| &c.id == id) {
                let known: Vec<&str> = clients.iter().map(|c| c.id.as_str()).collect();
                return Err(Error::Usage(format!(
                    "no client {id:?} in {} (clients: {})",
                    args.config.display(),
                    known.join(", ")
                ))
                .into());
            }
        }
        clients.retain(|c| args.client.contains(&c.id));
    }
    let jobs = args.jobs.unwrap_or(config.jobs).max(1).min(clients.len());
    let tracking_uri = args.tracking_uri.clone().or(config.tracking_uri.clone());
    let registry = Registry::new(open_store(tracking_uri.as_deref())?);
    let logs = config.output.join("_logs").join(&date);
    std::fs::create_dir_all(&logs).map_err(|e| Error::Write {
        path: logs.clone(),
        reason: e.to_string(),
    })?;
    let cores = (args.run.threads)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let day = Day {
        output: &config.output,
        date: &date,
        retrain: args.retrain,
        wide: args.wide,
        threads: (cores / jobs).max(1),
        device: args.run.device,
        precision: args.run.precision,
        tracking_uri: tracking_uri.as_deref(),
        registry: &registry,
    };
    ui.info(&format!(
        "pipeline {}: {} clients for {date}, {jobs} at a time; outputs under {}",
        args.config.display(),
        clients.len(),
        config.output.display()
    ));
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let rows: Mutex<Vec<Row>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(c) = clients.get(i) else { break };
                let t = Instant::now();
                let log = logs.join(format!("{}.log", c.id));
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    client::run(c, &day, &log)
                }))
                .unwrap_or_else(|_| Err("internal error: the client's run panicked".into()));
                let line = match &result {
                    Ok(d) => format!("{}: {} — {}", c.id, d.status, d.note),
                    Err(e) => format!("{}: FAILED — {e}", c.id),
                };
                ui.info(&line);
                rows.lock().expect("no panics hold it").push(Row {
                    id: c.id.clone(),
                    seconds: t.elapsed().as_secs_f64(),
                    result,
                });
            });
        }
    });
    let mut rows = rows.into_inner().expect("threads joined");
    rows.sort_by_key(|r| clients.iter().position(|c| c.id == r.id));
    print_summary(&rows);
    let status = status_json(&rows, &date, started.elapsed().as_secs_f64());
    let status_file = config.output.join("_status").join(format!("{date}.json"));
    if let Some(dir) = status_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    crate::fsutil::write_bytes_atomic(
        &status_file,
        serde_json::to_string_pretty(&status)
            .expect("JSON")
            .as_bytes(),
    )?;
    let failed = rows.iter().filter(|r| r.result.is_err()).count();
    ui.result(&format!(
        "{} of {} clients succeeded in {:.1} s; status in {}",
        rows.len() - failed,
        rows.len(),
        started.elapsed().as_secs_f64(),
        status_file.display()
    ));
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn print_summary(rows: &[Row]) {
    println!(
        "{:<20} {:<8} {:>10} {:>8} {:>9}  detail",
        "client", "status", "rows", "version", "seconds"
    );
    for r in rows {
        let (status, n, version, detail) = match &r.result {
            Ok(d) => (
                d.status,
                d.rows.to_string(),
                d.version.map_or("-".into(), |v| v.to_string()),
                match &d.trained {
                    Some(why) => format!("trained ({why}); {}", d.note),
                    None => d.note.clone(),
                },
            ),
            Err(e) => ("failed", "-".into(), "-".into(), e.clone()),
        };
        println!(
            "{:<20} {:<8} {:>10} {:>8} {:>9.1}  {detail}",
            r.id, status, n, version, r.seconds
        );
    }
}

fn status_json(rows: &[Row], date: &str, seconds: f64) -> serde_json::Value {
    let clients: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| match &r.result {
            Ok(d) => serde_json::json!({
                "client": r.id, "status": d.status, "rows": d.rows, "version": d.version,
                "trained": d.trained, "detail": d.note, "seconds": r.seconds,
            }),
            Err(e) => serde_json::json!({
                "client": r.id, "status": "failed", "error": e, "seconds": r.seconds,
            }),
        })
        .collect();
    serde_json::json!({
        "date": date,
        "seconds": seconds,
        "succeeded": rows.iter().all(|r| r.result.is_ok()),
        "clients": clients,
    })
}
