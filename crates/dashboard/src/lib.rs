//! leasehold's web dashboard: an HTML page that refreshes itself, a JSON API and Prometheus
//! metrics, all read from a [`Store`] — so it runs beside the workers, in another process, on
//! any backend. `leasehold dashboard` serves it; [`router`] embeds it in your own axum app.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn leasehold_core::Store>) -> Result<(), leasehold_dashboard::DashboardError> {
//! use leasehold_dashboard::{Dashboard, DashboardConfig};
//! let cfg = DashboardConfig::new("127.0.0.1:8080".parse().unwrap());
//! let dashboard = Dashboard::bind(store, cfg).await?;
//! println!("serving on http://{}", dashboard.local_addr());
//! dashboard.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//! - `GET /`, `GET /items`, `GET /items/{id}`: the page — overview, items view, item page —
//!   (no data in it: its script fetches the API, sending the token from the page's
//!   `#token=…` fragment, which browsers never send to the server).
//! - `GET /api/status`: queue depth by status and kind, finished items per minute, workers by
//!   state, recent failures, recovery statistics.
//! - `GET /api/workers`: every registry row with its state and seconds since its heartbeat.
//! - `GET /api/items?status=…&kind=…&group=…&id=…&limit=…&after=…`: items, by id (keyset
//!   paging: the next page is `after=` the last id shown).
//! - `GET /api/items/{id}`: one item with its checkpoints and, when the config has the
//!   durable store ([`DashboardConfig::durable`]), its durable checkpoints with evidence,
//!   tool-ledger entries and LLM cache keys (`404` for an unknown item).
//! - `GET /metrics`: Prometheus text.
//!
//! Operators' actions, each a `POST` with a JSON body (`Content-Type: application/json`; `{}`
//! when there is nothing to say), each one store call:
//! - `POST /api/items/{id}/retry` (`{}` or `{"max_attempts": N}`): a failed or cancelled item
//!   back to pending.
//! - `POST /api/items/{id}/cancel`: a pending item cancelled, an in-progress one marked for
//!   cancellation (its holder ends it at its next renewal).
//! - `POST /api/items/{id}/decide` (`{"answer": A}`): an awaiting item resumed with the answer.
//! - `POST /api/kinds/{kind}/pause`, `POST /api/kinds/{kind}/resume`.
//!
//! A bad query parameter or body gets `400` with `{"error": "…"}`, an unknown item `404`, an
//! item in a state the action does not apply to `409` with the store's message naming the
//! state; each of these changes nothing. With a token configured, every endpoint but the page
//! — reads and writes — needs `Authorization: Bearer <token>` (else `401`, and nothing
//! changes); off loopback a token is required to start at all.
//!
//! # Layout
//! - `lib.rs` (this file): [`DashboardConfig`], [`Dashboard`] (bind, then run until a shutdown
//!   future), [`router`] and [`DashboardError`].
//! - `snapshot`: what every view reads from the store, once per request.
//! - `api`: the JSON read endpoints and their query parsing.
//! - `actions`: the write endpoints (retry, cancel, delete, decide, pause, resume).
//! - `metrics`: the Prometheus text.
//! - `auth`: the bearer-token check.
//! - `page`: the HTML page (inline CSS, JS and SVG: nothing from the network).

mod actions;
mod api;
mod auth;
mod metrics;
mod page;
mod snapshot;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

use leasehold_core::durable::DurableStore;
use leasehold_core::{Clock, Store, SystemClock, DEFAULT_MISSED_INTERVALS};

pub use api::ITEM_PAGE_ROWS;
pub use snapshot::{
    AwaitingView, FailureView, Health, HealthState, RecoveryView, Status, Throughput,
    AWAITING_SHOWN, HEALTH_FAILURE_MINUTES, RECENT_FAILURES, THROUGHPUT_MINUTES,
};

/// Why the dashboard could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// A non-loopback address was given without a token: anyone on the network could read the
    /// queue.
    #[error("refusing to serve on {0} without a token: a non-loopback address needs --token (or LEASEHOLD_DASHBOARD_TOKEN)")]
    TokenRequired(SocketAddr),
    /// The token is empty or has characters a header cannot carry.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A setting is out of range.
    #[error("{setting}: {reason}")]
    InvalidConfig {
        /// The setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("dashboard server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// How the dashboard runs.
#[derive(Clone, Debug)]
pub struct DashboardConfig {
    /// Where to listen (loopback unless a token is set).
    pub addr: SocketAddr,
    /// The bearer token every API request — reads and the operators' writes — must carry;
    /// required off loopback.
    pub token: Option<String>,
    /// A node is dead after this many missed heartbeat intervals (default 3).
    pub dead_after_missed: u32,
    /// How often the page refreshes (default 2 s).
    pub refresh: Duration,
    /// The clock "now" is read from (default: the system clock).
    pub clock: Arc<dyn Clock>,
    /// The same store's durable side (checkpoints with evidence, the tool ledger, the LLM
    /// cache), which the item page shows; without it the page shows the item alone.
    pub durable: Option<Arc<dyn DurableStore>>,
}

impl DashboardConfig {
    /// Defaults on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        DashboardConfig {
            addr,
            token: None,
            dead_after_missed: DEFAULT_MISSED_INTERVALS,
            refresh: Duration::from_secs(2),
            clock: Arc::new(SystemClock),
            durable: None,
        }
    }

    /// Sets the durable store the item page reads checkpoints, tool-ledger entries and LLM
    /// cache keys from (the same database as the queue's store).
    pub fn durable(mut self, durable: Arc<dyn DurableStore>) -> Self {
        self.durable = Some(durable);
        self
    }

    /// Sets the bearer token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Refuses a non-loopback address without a token, a bad token, zero missed intervals or
    /// a refresh under 100 ms.
    pub fn validate(&self) -> Result<(), DashboardError> {
        if let Some(t) = &self.token {
            auth::validate_token(t)?;
        } else if !self.addr.ip().is_loopback() {
            return Err(DashboardError::TokenRequired(self.addr));
        }
        if self.dead_after_missed == 0 {
            return Err(DashboardError::InvalidConfig {
                setting: "dead_after_missed",
                reason: "must be at least 1".into(),
            });
        }
        if self.refresh < Duration::from_millis(100) {
            return Err(DashboardError::InvalidConfig {
                setting: "refresh",
                reason: "must be at least 0.1 s".into(),
            });
        }
        Ok(())
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cfg: Arc<DashboardConfig>,
}

/// The dashboard's routes over `store`, for embedding in an axum app. The config is
/// validated first.
pub fn router(store: Arc<dyn Store>, cfg: DashboardConfig) -> Result<Router, DashboardError> {
    cfg.validate()?;
    let state = AppState {
        store,
        cfg: Arc::new(cfg),
    };
    let api = Router::new()
        .route("/api/status", get(api::status))
        .route("/api/workers", get(api::workers))
        .route("/api/items", get(api::items))
        .route("/api/items/{id}", get(api::item))
        .route("/api/items/{id}/retry", post(actions::retry))
        .route("/api/items/{id}/cancel", post(actions::cancel))
        .route("/api/items/{id}/delete", post(actions::delete))
        .route("/api/items/{id}/decide", post(actions::decide))
        .route("/api/kinds/{kind}/pause", post(actions::pause))
        .route("/api/kinds/{kind}/resume", post(actions::resume))
        .route("/metrics", get(metrics::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Ok(Router::new()
        .route("/", get(page::page))
        .route("/items", get(page::page))
        .route("/items/{id}", get(page::page))
        .merge(api)
        .with_state(state))
}

/// A dashboard bound to its address, not yet serving.
#[derive(Debug)]
pub struct Dashboard {
    listener: tokio::net::TcpListener,
    router: Router,
    local: SocketAddr,
}

impl Dashboard {
    /// Validates `cfg` and binds its address (port 0 picks a free port: see
    /// [`local_addr`](Self::local_addr)).
    pub async fn bind(store: Arc<dyn Store>, cfg: DashboardConfig) -> Result<Self, DashboardError> {
        let addr = cfg.addr;
        let router = router(store, cfg)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DashboardError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| DashboardError::Bind { addr, source })?;
        Ok(Dashboard {
            listener,
            router,
            local,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        tracing::info!(addr = %self.local, "dashboard serving");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(DashboardError::Serve)
    }
}
