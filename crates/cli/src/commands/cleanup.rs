//! `leasehold cleanup`: removes registry rows of nodes that are stopped or dead and silent for
//! longer than `--older-than`, and finished items (with their checkpoints) finished longer
//! ago than that. `--dry-run` reports the same and removes nothing.

use std::time::Duration;

use serde::Serialize;

use leasehold_core::{
    cleanup_candidates, CleanupReport, CleanupRequest, Clock, Timestamp, DEFAULT_MISSED_INTERVALS,
};

use crate::args;
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;
use crate::output::duration;

/// Arguments of `cleanup`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Report what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,

    /// Only what has been stopped, dead or finished for at least this many seconds
    /// (default 7 days).
    #[arg(long, value_name = "S", default_value = "604800", value_parser = args::seconds,
          allow_negative_numbers = true)]
    older_than: Duration,

    /// A node is dead after this many missed heartbeat intervals (alive nodes are never
    /// removed).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MISSED_INTERVALS,
          value_parser = args::positive_count, allow_negative_numbers = true)]
    dead_after: u32,

    /// Remove registry rows only; keep every item.
    #[arg(long)]
    workers_only: bool,
}

/// What `--json` prints.
#[derive(Serialize)]
struct CleanupJson {
    #[serde(flatten)]
    report: CleanupReport,
    older_than_s: f64,
    cutoff: Timestamp,
}

/// Opens an existing database, picks the rows and items, removes them (or not).
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, Access::Existing).await?;
    let now = clock.now();
    let cutoff = now.minus(args.older_than);
    let nodes = store
        .nodes_list()
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    let req = CleanupRequest {
        nodes: cleanup_candidates(&nodes, now, args.dead_after, args.older_than),
        finished_before: (!args.workers_only).then_some(cutoff),
        dry_run: args.dry_run,
    };
    let report = store
        .cleanup(&req)
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    if ctx.out.is_json() {
        return ctx.out.json(&CleanupJson {
            report,
            older_than_s: args.older_than.as_secs_f64(),
            cutoff,
        });
    }
    let verb = if report.dry_run {
        "dry run (nothing changed): would remove"
    } else {
        "removed"
    };
    let names = if report.nodes_removed.is_empty() {
        String::new()
    } else {
        format!(" ({})", report.nodes_removed.join(", "))
    };
    ctx.out.text(&format!(
        "{verb} {} worker rows{names}, {} finished items and {} checkpoints older than {}",
        report.nodes_removed.len(),
        report.items_removed,
        report.checkpoints_removed,
        duration(args.older_than)
    ))
}
