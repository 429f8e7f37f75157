//! `catbert serve`'s HTTP front end (axum on tokio): routes, API-key check, one log line per
//! request, Prometheus counters, model polling and SIGHUP reloads, graceful shutdown. All the
//! work is [`Service`]'s; this module only speaks HTTP.

mod routes;
pub mod tei;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::serve::{Reload, ServeError, Service};

/// How the server listens and behaves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address to bind (port 0: any free port, printed at start).
    pub addr: SocketAddr,
    /// Bearer key required on every route but `/health`.
    pub api_key: Option<String>,
    /// Largest request body, bytes.
    pub payload_limit: usize,
    /// Seconds between checks of a moving registry reference (0: never).
    pub poll: Duration,
    /// How long in-flight requests may take to finish after SIGTERM / Ctrl-C.
    pub shutdown_timeout: Duration,
    /// HTTP worker threads (they also tokenise).
    pub http_workers: usize,
    /// Log level: error, warn, info or debug.
    pub log_level: Level,
}

/// Log levels, least verbose first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    /// Failures of the server itself.
    Error,
    /// Failed requests and model loads.
    Warn,
    /// Start, model swaps, shutdown.
    Info,
    /// One line per request.
    Debug,
}

/// Structured (logfmt) lines on stderr at or above a level.
#[derive(Debug, Clone, Copy)]
pub struct Log(pub Level);

impl Log {
    /// Print `fields` (`key=value …`) at `level`.
    pub fn at(&self, level: Level, fields: &str) {
        if level <= self.0 {
            let name = format!("{level:?}").to_lowercase();
            let ts = crate::track::store::format_time(crate::track::store::now_ms());
            eprintln!("ts=\"{ts}\" level={name} {fields}");
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    service: Arc<Service>,
    api_key: Option<Arc<str>>,
    log: Log,
    http_workers: usize,
}

/// An error answer: TEI's `{"error", "error_type"}` body with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, error_type: &'static str, message: String) -> Self {
        Self {
            status,
            error_type,
            message,
        }
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        let (status, kind) = match &e {
            ServeError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Validation"),
            ServeError::Empty(_) => (StatusCode::BAD_REQUEST, "Empty"),
            ServeError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "Overloaded"),
            ServeError::Backend(_) => (StatusCode::FAILED_DEPENDENCY, "Backend"),
            ServeError::Unhealthy(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unhealthy"),
        };
        Self::new(status, kind, e.to_string())
    }
}

/// The message of an error answer, for the log line.
#[derive(Clone)]
struct ErrorNote(String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            Json(serde_json::json!({ "error": self.message, "error_type": self.error_type }));
        let mut response = (self.status, body).into_response();
        response.extensions_mut().insert(ErrorNote(self.message));
        response
    }
}

const ROUTES: &[&str] = &[
    "/predict",
    "/info",
    "/health",
    "/metrics",
    "/v1/predict",
    "/v1/feedback",
];

/// API key, then the handler; then one metric sample and one log line.
async fn around(State(app): State<App>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path().to_string();
    let route = ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other");
    let method = request.method().clone();
    let authorised = match (&app.api_key, route) {
        (None, _) | (_, "/health") => true,
        (Some(key), _) => request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes())),
    };
    let response = if authorised {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or wrong API key (send Authorization: Bearer KEY)".into(),
        )
        .into_response()
    };
    let status = response.status();
    let seconds = started.elapsed().as_secs_f64();
    let metrics = app.service.metrics();
    metrics
        .requests
        .add(&[("route", route), ("status", status.as_str())], 1.0);
    metrics
        .request_seconds
        .observe(&[("route", route)], seconds);
    let version = response
        .headers()
        .get("x-model-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let line = format!(
        "method={method} path={path:?} status={} ms={:.2} version={version:?}",
        status.as_u16(),
        seconds * 1e3
    );
    match response.extensions().get::<ErrorNote>() {
        Some(ErrorNote(message)) => app
            .log
            .at(Level::Warn, &format!("{line} error={message:?}")),
        None => app.log.at(Level::Debug, &line),
    }
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router over `app`.
fn router(app: App, payload_limit: usize) -> Router {
    Router::new()
        .route("/predict", post(routes::predict))
        .route("/v1/predict", post(routes::v1_predict))
        .route("/v1/feedback", post(routes::v1_feedback))
        .route("/info", get(routes::info))
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "Validation", "no such route".into())
        })
        .layer(DefaultBodyLimit::max(payload_limit))
        .layer(axum::middleware::from_fn_with_state(app.clone(), around))
        .with_state(app)
}

/// Reload when the reference moved (or always, with `force`), logging what happened.
pub fn reload(service: &Service, log: Log, force: bool, why: &str) {
    match service.reload(force) {
        Ok(Reload::Swapped { from, to }) => log.at(
            Level::Info,
            &format!("event=model_swapped reason={why} from={from:?} to={to:?}"),
        ),
        Ok(Reload::Unchanged(_)) => {}
        Err(e) => log.at(
            Level::Warn,
            &format!(
                "event=model_load_failed reason={why} error={:?} serving={:?}",
                e.to_string(),
                service.model().version_label()
            ),
        ),
    }
}

/// Serve `service` until `stop` turns true, then stop accepting and let in-flight requests
/// finish (at most `shutdown_timeout`, else exit 1). `started` is told the bound address.
pub fn run(
    service: Arc<Service>,
    options: ServerOptions,
    stop: tokio::sync::watch::Receiver<bool>,
    started: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let log = Log(options.log_level);
    let app = App {
        service: service.clone(),
        api_key: options.api_key.as_deref().map(Arc::from),
        log,
        http_workers: options.http_workers,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.http_workers.max(1))
        .thread_name("catbert-http")
        .enable_all()
        .build()?;
    let stopping = Arc::new(AtomicBool::new(false));
    // Polling a moving registry reference.
    if service.follows_registry() && !options.poll.is_zero() {
        let (service, stopping, poll) = (service.clone(), stopping.clone(), options.poll);
        std::thread::Builder::new()
            .name("catbert-poll".into())
            .spawn(move || {
                while !stopping.load(Ordering::Acquire) {
                    std::thread::sleep(poll);
                    reload(&service, log, false, "poll");
                }
            })?;
    }
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.addr).await?;
        started(listener.local_addr()?);
        let mut on_stop = stop.clone();
        let shutdown = async move {
            let _ = on_stop.wait_for(|s| *s).await;
        };
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let timeout = options.shutdown_timeout;
        let watched = service.clone();
        let mut watchdog = stop;
        tokio::spawn(async move {
            let _ = watchdog.wait_for(|s| *s).await;
            log.at(
                Level::Info,
                &format!("event=stopping in_flight={}", watched.in_flight()),
            );
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {
                    log.at(Level::Warn, &format!(
                        "event=shutdown_timeout unfinished={}",
                        watched.in_flight()
                    ));
                    std::process::exit(1);
                }
                _ = drained_rx => {}
            }
        });
        axum::serve(listener, router(app, options.payload_limit))
            .with_graceful_shutdown(shutdown)
            .await?;
        stopping.store(true, Ordering::Release);
        let _ = drained_tx.send(());
        log.at(Level::Info, "event=stopped");
        Ok(())
    })
}
