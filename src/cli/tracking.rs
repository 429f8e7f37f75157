//! Tracking and registration around `catbert finetune`: flags → a [`RunTracker`] before
//! training, then the checkpoint uploaded, registered and (if the gate holds) promoted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::progress::Ui;
use crate::error::Error;
use crate::track::promote::{decide, Candidate, PromotionRule};
use crate::track::registry::CHAMPION;
use crate::track::tracker::{epoch_values, TrackerOptions, BUFFER_FILE};
use crate::track::{
    mlmodel::sha256_file, open_store, Gate, Registry, RunStatus, RunTracker, Store,
};
use crate::train::{Outcome, Prepared};

/// Where runs and models are kept: shared by every command that uses the registry.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// MLflow tracking server, http(s)://host:port [default: the local registry in
    /// CATBERT_HOME, else ~/.catbert].
    #[arg(long, env = "MLFLOW_TRACKING_URI", hide_env_values = true)]
    pub tracking_uri: Option<String>,
}

impl StoreArgs {
    /// The store these flags name.
    pub fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(open_store(self.tracking_uri.as_deref())?)
    }
}

/// The tracking and registry flags of `catbert finetune`.
#[derive(Debug, Clone, Args)]
pub struct TrackArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Experiment of the run [default: the --client, else the --register name, else the base
    /// model's name].
    #[arg(long)]
    pub experiment: Option<String>,
    /// Name of the run [default: <out folder>-<UTC time>].
    #[arg(long)]
    pub run_name: Option<String>,
    /// Register the kept checkpoint as a new version of this model.
    #[arg(long)]
    pub register: Option<String>,
    /// Multi-client defaults: experiment ID, registered model ID_model.
    #[arg(long)]
    pub client: Option<String>,
    /// Make the new version the champion only if these hold, e.g. "f1_min>=0.75,accuracy>=0.9"
    /// (metrics of the kept epoch as logged; >= or <=).
    #[arg(long, value_parser = clap::value_parser!(Gate))]
    pub promote_if: Option<Gate>,
    /// Make the new version the champion only if it is not worse than the current one on the
    /// same rows (--eval, else the hold-out), both scored by catbert.
    #[arg(long)]
    pub promote_if_better: bool,
    /// Train even when the tracking server is unreachable; what should have been logged is
    /// kept in <out>/tracking-unsent.jsonl.
    #[arg(long)]
    pub tracking_optional: bool,
    /// Do not track this run (and do not register it).
    #[arg(long, conflicts_with_all = ["register", "client", "promote_if", "promote_if_better"])]
    pub no_tracking: bool,
    /// Log the training loss every this many optimizer steps.
    #[arg(long, default_value_t = 50)]
    pub log_every: usize,
}

impl clap::builder::ValueParserFactory for Gate {
    type Parser = fn(&str) -> Result<Gate, String>;
    fn value_parser() -> Self::Parser {
        |s| s.parse()
    }
}

impl TrackArgs {
    /// The registered model name, if the run registers.
    pub fn model_name(&self) -> Option<String> {
        self.register
            .clone()
            .or_else(|| self.client.as_ref().map(|c| format!("{c}_model")))
    }

    fn rule(&self) -> PromotionRule {
        PromotionRule {
            gate: self.promote_if.clone(),
            if_better: self.promote_if_better,
        }
    }

    /// Refuse combinations that cannot work, before anything runs.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.rule().wanted() && self.model_name().is_none() {
            return Err(Error::Usage(
                "`promote_if` and `promote_if_better` need `register` (or `client`)".into(),
            )
            .into());
        }
        if let Some(name) = self.model_name() {
            crate::track::validate_name(&name)?;
        }
        Ok(())
    }
}

/// What the tracking side of a fine-tune holds between the steps.
pub struct Tracking {
    pub registry: Registry,
    args: TrackArgs,
}

impl Tracking {
    /// Open the store and, unless the run may go untracked, check that it answers — before
    /// any data is read or any model loaded.
    pub fn open(args: &TrackArgs) -> anyhow::Result<Self> {
        args.validate()?;
        let store = args.store.open()?;
        if !args.tracking_optional && !args.no_tracking {
            store.check()?;
        }
        Ok(Self {
            registry: Registry::new(store),
            args: args.clone(),
        })
    }

    /// Start the run (None with --no-tracking).
    pub fn start(
        &self,
        ui: &Ui,
        prepared: &Prepared,
        out: &Path,
        data: &[(&str, &Path, usize)],
    ) -> anyhow::Result<Option<RunTracker>> {
        if self.args.no_tracking {
            return Ok(None);
        }
        let meta = prepared.meta();
        let experiment = experiment_name(&self.args, meta);
        let out_name = out
            .file_name()
            .map_or("run".into(), |n| n.to_string_lossy().into_owned());
        let stamp = crate::track::store::format_time(crate::track::store::now_ms());
        let run_name = self.args.run_name.clone().unwrap_or_else(|| {
            format!(
                "{out_name}-{}",
                stamp
                    .trim_end_matches(" UTC")
                    .replace([' ', ':'], "-")
                    .replace('-', "")
            )
        });
        let mut tags: Vec<(String, String)> = vec![
            ("mlflow.source.name".into(), "catbert".into()),
            ("mlflow.source.type".into(), "LOCAL".into()),
            ("catbert.version".into(), env!("CARGO_PKG_VERSION").into()),
            ("catbert.device".into(), meta.device.clone()),
            ("catbert.precision".into(), meta.precision.clone()),
            ("catbert.base_model".into(), meta.base_model.clone()),
            ("catbert.out".into(), out.display().to_string()),
            ("host".into(), hostname()),
        ];
        if let Ok(user) = std::env::var("USER") {
            tags.push(("mlflow.user".into(), user));
        }
        for (what, path, rows) in data {
            tags.push((format!("data.{what}.path"), path.display().to_string()));
            // A folder (the feedback store) has no single digest; its rows are counted.
            if path.is_file() {
                tags.push((format!("data.{what}.sha256"), sha256_file(path)?));
            }
            tags.push((format!("data.{what}.rows"), rows.to_string()));
        }
        let opts = TrackerOptions {
            experiment,
            run_name,
            log_every: self.args.log_every,
            buffer: out.join(BUFFER_FILE),
            retry_delays: retry_delays(),
        };
        // Warnings are printed even with --quiet: the run is not being tracked as asked.
        let notify = Box::new(|line: &str| eprintln!("warning: {line}"));
        let tracker = RunTracker::start(
            self.registry.store().clone(),
            opts,
            meta,
            tags,
            self.args.tracking_optional,
            notify,
        )?;
        if let Some(run) = tracker.run() {
            ui.info(&format!(
                "tracking: run {} in experiment {:?} in {}",
                run.run_id,
                experiment_name(&self.args, meta),
                self.registry.store().describe()
            ));
        }
        Ok(Some(tracker))
    }

    /// After a successful fit: upload the checkpoint, register it, decide the promotion, end
    /// the run.
    pub fn finish(
        &self,
        ui: &Ui,
        tracker: &mut RunTracker,
        outcome: &Outcome,
        out: &Path,
        rows: (&[String], &[String]),
        device: crate::device::DeviceChoice,
    ) -> anyhow::Result<()> {
        let meta = &outcome.meta;
        let uploaded = tracker.log_checkpoint(out, &meta.base_model)?;
        let Some(name) = self.args.model_name() else {
            tracker.end(RunStatus::Finished, None);
            return Ok(());
        };
        let registered = match (uploaded, tracker.run().cloned()) {
            (true, Some(run)) => {
                let best = outcome.state.best_epoch.unwrap_or(1);
                let metrics: BTreeMap<String, f64> = outcome
                    .state
                    .history
                    .get(best.saturating_sub(1))
                    .map(|r| epoch_values(r, &meta.labels).into_iter().collect())
                    .unwrap_or_default();
                let mut tags: Vec<(String, String)> = metrics
                    .iter()
                    .map(|(k, v)| (format!("metric.{k}"), v.to_string()))
                    .collect();
                tags.push(("catbert.base_model".into(), meta.base_model.clone()));
                tags.push(("catbert.best_epoch".into(), best.to_string()));
                tags.push(("catbert.metric".into(), meta.metric.to_string()));
                let store = self.registry.store();
                let version = store.create_version(&name, &run, "model", &tags);
                Some((version, metrics))
            }
            _ => None,
        };
        let Some((version, metrics)) = registered else {
            tracker.end(RunStatus::Finished, None);
            return Err(Error::Tracking(format!(
                "the run could not reach {}, so {name:?} was not registered; the checkpoint is in {} and the unsent tracking data in {}",
                self.registry.store().describe(),
                out.display(),
                out.join(BUFFER_FILE).display()
            ))
            .into());
        };
        let version = match version {
            Ok(v) => v,
            Err(e) => {
                tracker.end(RunStatus::Finished, None);
                return Err(anyhow::Error::from(e).context(format!(
                    "registering {name:?} failed (the checkpoint is in {})",
                    out.display()
                )));
            }
        };
        ui.result(&format!(
            "registered {name} version {version} in {}",
            self.registry.store().describe()
        ));
        let rule = self.args.rule();
        let mut tags = vec![(
            "catbert.registered".to_string(),
            format!("{name}/{version}"),
        )];
        if rule.wanted() {
            let new_dir = self.registry.store().fetch_version(
                &name,
                &self
                    .registry
                    .model(&name)?
                    .version(version)
                    .cloned()
                    .expect("just registered"),
            )?;
            let decision = decide(
                &self.registry,
                &name,
                &rule,
                &Candidate {
                    dir: &new_dir,
                    metrics: &metrics,
                    rows,
                },
                meta.metric,
                device,
            )?;
            if decision.promote {
                self.registry.promote(&name, version, CHAMPION)?;
            }
            let summary = decision.summary();
            ui.result(&format!("{name} version {version} {summary}"));
            self.registry
                .store()
                .set_version_tag(&name, version, "catbert.promotion", &summary)?;
            tags.push(("catbert.promotion".into(), summary));
        }
        tracker.set_tags(tags);
        tracker.end(RunStatus::Finished, None);
        Ok(())
    }
}

/// --experiment, else the client, else the registered model name, else the base model's name.
fn experiment_name(args: &TrackArgs, meta: &crate::checkpoint::meta::RunMeta) -> String {
    let base = meta
        .base_model
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("catbert");
    (args.experiment.clone())
        .or_else(|| args.client.clone())
        .or_else(|| args.model_name())
        .unwrap_or_else(|| base.to_string())
}

/// Waits between retries of a failed tracking call: `CATBERT_TRACKING_RETRIES` (seconds,
/// comma-separated), else 0.5, 1, 2 and 4.
fn retry_delays() -> Vec<Duration> {
    let from_env = std::env::var("CATBERT_TRACKING_RETRIES").ok().map(|v| {
        v.split(',')
            .filter_map(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .collect::<Vec<_>>()
    });
    from_env.unwrap_or_else(|| [0.5, 1.0, 2.0, 4.0].map(Duration::from_secs_f64).to_vec())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
