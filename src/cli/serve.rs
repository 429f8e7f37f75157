//! `catbert serve`: flags → [`Service`] → the HTTP server, with SIGHUP and SIGTERM wired.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::progress::Ui;
use super::tracking::StoreArgs;
use super::RunArgs;
use crate::checkpoint::ModelRef;
use crate::error::Error;
use crate::infer::PredictOptions;
use crate::serve::model::ModelSource;
use crate::serve::{ServeSettings, Service};
use crate::server::{self, Level, Log, ServerOptions};
use crate::track::Registry;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Fine-tuned checkpoint: a folder, a Hub id, or models:/NAME@ALIAS, models:/NAME/N,
    /// models:/NAME@latest (an alias or @latest is followed: see --poll).
    #[arg(long)]
    pub model: String,

    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// Truncate texts to this many tokens [default: 128, capped by the model's positions].
    #[arg(long)]
    pub max_len: Option<usize>,

    /// int8: the encoder's linear layers in int8 (weights per channel, activations per row),
    /// on the CPU — faster, at a small accuracy cost (see the README).
    #[arg(long, value_enum, default_value = "none")]
    pub quantize: crate::model::Quantize,

    /// With --quantize int8: rows whose top-1 probability leads the runner-up by less than P
    /// are computed again in fp32, so int8 cannot flip a close call (0 turns this off).
    #[arg(long, value_name = "P", default_value_t = crate::model::INT8_RECHECK)]
    pub int8_recheck: f32,

    /// Real tokens per batch.
    #[arg(long, default_value_t = 16384)]
    pub max_batch_tokens: usize,

    /// Texts per batch.
    #[arg(long, default_value_t = 256)]
    pub max_batch_requests: usize,

    /// Requests in flight at once; more get 429.
    #[arg(long, default_value_t = 512)]
    pub max_concurrent_requests: usize,

    /// Texts per request; more get 422.
    #[arg(long, default_value_t = 32)]
    pub max_client_batch_size: usize,

    /// Largest request body in bytes; larger gets 413.
    #[arg(long, default_value_t = 2_000_000)]
    pub payload_limit: usize,

    /// Truncate over-long texts when a request does not say (`truncate`); false refuses
    /// them with 422.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_truncate: bool,

    /// Seconds between checks of a models:/NAME@ALIAS (or @latest) reference; a moved alias
    /// is loaded and swapped in without downtime. 0: never (SIGHUP still reloads).
    #[arg(long, default_value_t = 30.0)]
    pub poll: f64,

    /// Seconds in-flight requests get to finish after SIGTERM / Ctrl-C.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout: f64,

    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "CATBERT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Feedback store folder [default: the model's entry in the local registry,
    /// CATBERT_HOME/models/NAME/feedback, or CATBERT_HOME/feedback/<folder name>].
    #[arg(long)]
    pub feedback: Option<PathBuf>,

    /// HTTP worker threads (they also tokenise).
    #[arg(long, default_value_t = 2)]
    pub http_workers: usize,

    /// error, warn (failed requests), info (start, swaps, stop) or debug (every request).
    #[arg(long, value_enum, default_value = "info")]
    pub log_level: Level,

    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub run: RunArgs,
}

fn seconds(value: f64, key: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| Error::Usage(format!("`{key}` must be a number of seconds ≥ 0")).into())
}

fn at_least_one(value: usize, key: &str) -> anyhow::Result<()> {
    if value == 0 {
        return Err(Error::Usage(format!("`{key}` must be at least 1")).into());
    }
    Ok(())
}

pub fn run(args: ServeArgs, ui: &Ui) -> anyhow::Result<()> {
    for (v, key) in [
        (args.max_batch_tokens, "max_batch_tokens"),
        (args.max_batch_requests, "max_batch_requests"),
        (args.max_concurrent_requests, "max_concurrent_requests"),
        (args.max_client_batch_size, "max_client_batch_size"),
        (args.payload_limit, "payload_limit"),
        (args.http_workers, "http_workers"),
    ] {
        at_least_one(v, key)?;
    }
    let poll = seconds(args.poll, "poll")?;
    let shutdown_timeout = seconds(args.shutdown_timeout, "shutdown_timeout")?;
    let model = ModelRef::try_parse(&args.model)?;
    let registry = Registry::new(args.store.open()?);
    let options = PredictOptions {
        max_len: args.max_len,
        precision: args.run.precision,
        quantize: args.quantize,
        int8_recheck: args.int8_recheck,
        ..PredictOptions::default()
    };
    let feedback_dir = args
        .feedback
        .clone()
        .unwrap_or_else(|| crate::feedback::default_dir(&model));
    let source = ModelSource::new(model, registry, args.run.device, options);
    let settings = ServeSettings {
        max_batch_tokens: args.max_batch_tokens,
        max_batch_requests: args.max_batch_requests,
        max_concurrent_requests: args.max_concurrent_requests,
        max_client_batch_size: args.max_client_batch_size,
        auto_truncate: args.auto_truncate,
        feedback_dir,
    };
    let service = Arc::new(Service::start(source, settings)?);
    let log = Log(args.log_level);
    {
        let service = service.clone();
        super::signals::on_hangup(Box::new(move || {
            let service = service.clone();
            std::thread::spawn(move || server::reload(&service, log, true, "sighup"));
        }));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    super::signals::on_terminate(Box::new(move || {
        let _ = stop_tx.send(true);
    }));
    let options = ServerOptions {
        addr: SocketAddr::new(args.host, args.port),
        api_key: args.api_key.clone(),
        payload_limit: args.payload_limit,
        poll,
        shutdown_timeout,
        http_workers: args.http_workers,
        log_level: args.log_level,
    };
    let model = service.model();
    let p = &model.predictor;
    let described = format!(
        "model {} ({} classes) on {}, {}, max {} tokens; feedback to {}",
        p.origin(),
        p.labels().len(),
        p.device_description(),
        p.precision_name(),
        p.max_len(),
        service.settings().feedback_dir.display()
    );
    for notice in p.notices() {
        ui.notice(notice);
    }
    // One prediction before listening: on a GPU it runs our kernels' first-use self-check now,
    // so a fallback is said at start rather than at shutdown.
    p.predict(&["catbert"], 1)
        .map_err(|e| anyhow::anyhow!(e).context("a first prediction before serving"))?;
    super::report_kernel_fallbacks(ui);
    drop(model);
    server::run(service, options, stop_rx, |addr| {
        // Always printed (scripts read the port from it), even with --quiet.
        eprintln!("listening on http://{addr}: {described}");
    })
}
