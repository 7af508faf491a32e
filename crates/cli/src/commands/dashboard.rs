//! `leasehold dashboard`: serves the web dashboard, its JSON API and Prometheus metrics over
//! the database until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use leasehold_core::DEFAULT_MISSED_INTERVALS;
use leasehold_dashboard::{Dashboard, DashboardConfig, DashboardError};

use crate::args;
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;

/// Arguments of `dashboard`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to listen. Loopback by default; any other address needs --token.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,

    /// The bearer token API and metrics requests must carry (open the page as
    /// http://HOST:PORT/#token=TOKEN). Prefer the environment variable: a flag shows in `ps`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LEASEHOLD_DASHBOARD_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// A node is dead after this many missed heartbeat intervals.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MISSED_INTERVALS,
          value_parser = args::positive_count, allow_negative_numbers = true)]
    dead_after: u32,

    /// How often the page refreshes, in seconds.
    #[arg(long, value_name = "S", default_value = "2", value_parser = args::seconds,
          allow_negative_numbers = true)]
    refresh_s: Duration,
}

/// Validates, opens an existing database, binds and serves until a signal.
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let mut cfg = DashboardConfig::new(args.addr);
    cfg.token = args.token;
    cfg.dead_after_missed = args.dead_after;
    cfg.refresh = args.refresh_s;
    cfg.validate().map_err(|e| CliError::usage(e.to_string()))?;
    let db::Clocked {
        store,
        durable,
        clock,
    } = db::open_clocked(&ctx.db, Access::Existing).await?;
    // Liveness and "expires in" judged by the clock the nodes write with.
    cfg.clock = clock;
    // The item page shows checkpoints, tool-ledger entries and LLM cache keys.
    cfg.durable = Some(durable);
    let dashboard = Dashboard::bind(store, cfg).await.map_err(|e| match e {
        e @ DashboardError::Bind { .. } => CliError::failure(e.to_string()),
        e => CliError::usage(e.to_string()),
    })?;
    // The first line on stderr says where it listens (port 0 picks one): scripts read it.
    eprintln!(
        "leasehold dashboard: serving http://{}/ (Ctrl-C to stop)",
        dashboard.local_addr()
    );
    dashboard
        .run(shutdown_signal())
        .await
        .map_err(|e| CliError::failure(e.to_string()))
}

/// Completes on SIGINT or SIGTERM: how the long-running commands (`dashboard`, `monitor`) stop.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
