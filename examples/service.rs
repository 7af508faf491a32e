//! A small HTTP service that embeds a leasehold tree on SQLite: the shape of a real service
//! that owns its work queue.
//!
//! - `POST /jobs` with a JSON object enqueues a `job` item (optional `"ms"`: how long the job
//!   works, at most 600000) and answers `202 {"id": N}`; `503` while the service drains.
//! - `GET /jobs/{id}` answers the item's `status`, `attempts`, `output` and `error`
//!   (`?wait_s=S`, at most 60, waits that long for a terminal status first, through
//!   `NodeHandle::await_result`); `404` for an unknown id.
//! - `GET /healthz` answers the tree's state (`NodeHandle::state`): `200` while it runs
//!   (with `store_reachable`), `503` while it drains, once it stopped, or when it escalated.
//! - SIGTERM or SIGINT drains: new jobs are refused, in-flight jobs get `--grace-s` to finish
//!   and are otherwise released back to pending (without spending an attempt), the registry
//!   row is marked stopped, then the process exits 0. A restart under the same node id takes
//!   the released jobs up again. An escalation of the tree exits 1.
//!
//! Logs go to stderr through `tracing-subscriber`, filtered by `RUST_LOG` (default `info`),
//! pretty or one JSON object a line (`--log-format json`); stdout carries one JSON line,
//! `{"listening":"ADDR"}`, once the service accepts connections.
//!
//! Run with `cargo run --example service -- --db service.db --addr 127.0.0.1:8080`, then
//! `curl -XPOST localhost:8080/jobs -d '{"ms": 2000}' -H 'content-type: application/json'`.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};

use leasehold::runtime::{JobContext, JobError, Leasehold, NodeHandle, TreeExit, TreeState};
use leasehold::{ItemId, SqliteStore, Store};

/// The longest a job may ask to work.
const MAX_JOB_MS: u64 = 600_000;
/// The longest `GET /jobs/{id}?wait_s=` waits.
const MAX_WAIT_S: f64 = 60.0;

/// The service's flags.
#[derive(Parser, Debug, Clone)]
#[command(about = "An HTTP service embedding a leasehold tree on SQLite.")]
pub struct Args {
    /// The SQLite database file (created if missing).
    #[arg(long, default_value = "service.db")]
    pub db: PathBuf,
    /// The address to listen on (port 0 picks a free one; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Workers in the tree.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// The node id. Keep it stable across restarts: a restart under the same id takes back at
    /// once what a crashed predecessor held.
    #[arg(long, env = "LEASEHOLD_WORKER_ID", default_value = "service")]
    pub node_id: String,
    /// Seconds in-flight jobs get to finish on SIGTERM before they are released.
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    pub grace_s: Duration,
    /// Log lines on stderr: `pretty` for people, `json` for a log pipeline.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Appends `start ID PID` and `done ID PID` for every job run to this file (to see, after
    /// restarts, which process ran what and that nothing finished twice).
    #[arg(long)]
    pub journal: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, several lines per event.
    Pretty,
    /// One JSON object per line.
    Json,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// Sets up logging to stderr as services do: `RUST_LOG` filter (default `info`), pretty or
/// JSON lines.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.pretty().init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// What the handlers share.
#[derive(Clone)]
struct App {
    node: Arc<NodeHandle>,
    /// Set the moment a signal arrives, before the drain starts: from then on new jobs are
    /// refused and /healthz answers 503.
    draining: Arc<AtomicBool>,
}

impl App {
    /// The tree's state, `Draining` from the moment the signal arrived.
    fn state(&self) -> TreeState {
        match self.node.state() {
            TreeState::Running { .. } if self.draining.load(Ordering::Relaxed) => {
                TreeState::Draining
            }
            state => state,
        }
    }
}

/// An error answer: a status and `{"error": message}`.
type Refusal = (StatusCode, Json<Value>);

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    (status, Json(json!({ "error": message.into() })))
}

/// Runs the service until SIGTERM or SIGINT (drains, then `Ok`) or an escalation (`Err`).
pub async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    // Before anything runs: a signal that arrives later is a drain, never an abrupt end.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&args.db).await?);
    let journal = args.journal.clone();
    let node = Leasehold::builder(store)
        .node_id(&args.node_id)
        .workers(args.workers)
        .drain_timeout(args.grace_s)
        .handler("job", move |ctx: JobContext| work(ctx, journal.clone()))
        .start()
        .await?;
    let node = Arc::new(node);
    let draining = Arc::new(AtomicBool::new(false));

    let app = Router::new()
        .route("/jobs", post(enqueue))
        .route("/jobs/{id}", get(job))
        .route("/healthz", get(healthz))
        .with_state(App {
            node: node.clone(),
            draining: draining.clone(),
        });
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, node = %node.node_id(), db = %args.db.display(), "listening");
    println!("{}", json!({ "listening": local.to_string() }));

    // The HTTP server stays up while the tree drains, so load balancers see /healthz go 503
    // and clients see new jobs refused; it stops once the tree has.
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .into_future(),
    );

    let result = tokio::select! {
        _ = term.recv() => drain(&node, &draining, "SIGTERM").await,
        _ = int.recv() => drain(&node, &draining, "SIGINT").await,
        exit = node.wait() => match exit {
            TreeExit::Escalated(reason) => {
                tracing::error!(%reason, "the tree escalated; exiting");
                Err(format!("the tree escalated: {reason}").into())
            }
            TreeExit::Superseded(reason) => {
                tracing::error!(%reason, "another process took over this node id; exiting");
                Err(reason.into())
            }
            TreeExit::Shutdown => Ok(()),
            other => Err(format!("the tree stopped: {other:?}").into()),
        },
    };
    let _ = stop_http.send(());
    server.await??;
    result
}

async fn drain(
    node: &NodeHandle,
    draining: &AtomicBool,
    signal: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    draining.store(true, Ordering::Relaxed);
    tracing::info!(signal, grace = ?node.config().drain_timeout, "draining: refusing new jobs, finishing in-flight ones");
    let report = node.shutdown(node.config().drain_timeout).await?;
    tracing::info!(
        finished = report.finished,
        released = report.released,
        idle = report.idle,
        unaccounted = report.unaccounted,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "drained"
    );
    Ok(())
}

/// The `job` handler: works `ms` milliseconds (stopping early if cancelled), then answers its
/// input and the process that ran it.
async fn work(ctx: JobContext, journal: Option<PathBuf>) -> Result<Value, JobError> {
    let id = ctx.id();
    let ms = ctx.input()["ms"].as_u64().unwrap_or(0);
    tracing::info!(item = %id, ms, "job started");
    note(&journal, format!("start {id} {}", std::process::id())).await;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
        _ = ctx.cancelled() => {
            tracing::info!(item = %id, "job cancelled");
            return Err(JobError::retryable("cancelled"));
        }
    }
    note(&journal, format!("done {id} {}", std::process::id())).await;
    tracing::info!(item = %id, "job done");
    Ok(json!({ "input": ctx.input(), "pid": std::process::id() }))
}

/// Appends one line to the journal, off the runtime's threads. The line and its newline go in
/// one `write` to a file opened for appending, so lines two jobs write at once never interleave
/// (`writeln!` may write the text and the newline separately).
async fn note(journal: &Option<PathBuf>, line: String) {
    let Some(path) = journal.clone() else { return };
    let written = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        f.write_all(format!("{line}\n").as_bytes())
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::warn!("could not write the journal");
    }
}

/// `POST /jobs`.
async fn enqueue(
    State(app): State<App>,
    Json(input): Json<Value>,
) -> Result<(StatusCode, Json<Value>), Refusal> {
    if !app.state().is_running() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is draining or stopped: not taking new jobs",
        ));
    }
    if !input.is_object() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        ));
    }
    match &input["ms"] {
        Value::Null => {}
        Value::Number(n) if n.as_u64().is_some_and(|ms| ms <= MAX_JOB_MS) => {}
        other => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "\"ms\" must be a whole number of milliseconds up to {MAX_JOB_MS}, not {other}"
                ),
            ))
        }
    }
    let id = app
        .node
        .enqueue(app.node.item("job", input))
        .await
        .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    tracing::info!(item = %id, "job enqueued");
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id.0 }))))
}

/// The query of `GET /jobs/{id}`.
#[derive(Deserialize)]
struct JobQuery {
    /// Seconds to wait for a terminal status.
    wait_s: Option<f64>,
}

/// `GET /jobs/{id}`.
async fn job(
    State(app): State<App>,
    Path(id): Path<i64>,
    Query(q): Query<JobQuery>,
) -> Result<Json<Value>, Refusal> {
    let id = ItemId(id);
    let item = match q.wait_s {
        Some(s) if !(s.is_finite() && (0.0..=MAX_WAIT_S).contains(&s)) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("wait_s must be between 0 and {MAX_WAIT_S} seconds, not {s}"),
            ))
        }
        Some(s) => {
            match tokio::time::timeout(Duration::from_secs_f64(s), app.node.await_result(id)).await
            {
                Ok(Ok(item)) => Some(item),
                // Not finished in time, or the tree stopped: answer what the store says.
                Ok(Err(_)) | Err(_) => read(&app, id).await?,
            }
        }
        None => read(&app, id).await?,
    };
    let item = item.ok_or_else(|| refuse(StatusCode::NOT_FOUND, format!("no job {id}")))?;
    Ok(Json(json!({
        "id": item.id.0,
        "status": item.status.as_str(),
        "attempts": item.attempts,
        "output": item.output,
        "error": item.error,
    })))
}

async fn read(app: &App, id: ItemId) -> Result<Option<leasehold::Item>, Refusal> {
    app.node
        .store()
        .item_get(id)
        .await
        .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// `GET /healthz`.
async fn healthz(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let state = app.state();
    let status = if state.is_running() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!(state)))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    init_tracing(args.log_format);
    if let Err(e) = run(args).await {
        tracing::error!(error = %e, "service stopped");
        eprintln!("service: {e}");
        std::process::exit(1);
    }
}
