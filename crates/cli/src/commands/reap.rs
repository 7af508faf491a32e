//! `leasehold reap`: one reaper sweep, judging owners by the worker registry.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{
    Clock, ReapRequest, RecoveredItem, RecoveryStats, RegistryLiveness, DEFAULT_MISSED_INTERVALS,
};

use crate::args;
use crate::commands::{config, Ctx};
use crate::db::{self, Access};
use crate::error::CliError;
use crate::output::duration;

/// Arguments of `reap`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Report what would be requeued or dead-lettered; change nothing (and create no database).
    #[arg(long)]
    dry_run: bool,

    /// Requeue in-progress items not heard from for this many seconds whatever their owner
    /// says [default: LEASEHOLD_STALE_S or TASK_STALE_S, else 900].
    #[arg(long, value_name = "S", value_parser = args::seconds, allow_negative_numbers = true)]
    stale_after: Option<Duration>,

    /// Dead-letter instead of requeue an item whose attempts reached N, when N is below its
    /// own budget.
    #[arg(long, value_name = "N", value_parser = args::positive_count, allow_negative_numbers = true)]
    max_attempts: Option<u32>,

    /// At most this many items in the sweep [default: LEASEHOLD_REAP_BATCH or TASK_REAP_BATCH,
    /// else 200].
    #[arg(long, value_name = "N", value_parser = args::positive_count, allow_negative_numbers = true)]
    batch: Option<u32>,

    /// An owner's node is dead (its items may be requeued once their leases expire) after
    /// this many missed heartbeat intervals.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MISSED_INTERVALS,
          value_parser = args::positive_count, allow_negative_numbers = true)]
    dead_after: u32,
}

/// Validates, opens, sweeps once, prints the statistics.
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let cfg = config()?;
    let req = ReapRequest {
        batch: args.batch.unwrap_or(cfg.reap_batch),
        stale_after: args.stale_after.unwrap_or(cfg.stale),
        dry_run: args.dry_run,
        max_attempts: args.max_attempts,
        after: None,
    };
    req.validate().map_err(CliError::usage)?;

    // A dry run is read-only: it must not create a database as a side effect.
    let access = if args.dry_run {
        Access::Existing
    } else {
        Access::Create
    };
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, access).await?;
    let now = clock.now();
    let liveness = RegistryLiveness::new(Arc::clone(&store), args.dead_after, now);
    let stats = store
        .items_reap_expired(&req, &liveness, now)
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    if ctx.out.is_json() {
        ctx.out.json(&stats)
    } else {
        ctx.out.text(&summary(&stats))
    }
}

/// The text report: one summary line, then one line per item.
fn summary(stats: &RecoveryStats) -> String {
    let (requeue, dead_letter) = if stats.dry_run {
        ("would requeue", "would dead-letter")
    } else {
        ("requeued", "dead-lettered")
    };
    let mut text = format!(
        "{}found {} expired: {requeue} {}, {dead_letter} {}, skipped {} (owner alive), {} (changed during the sweep) in {}\n",
        if stats.dry_run { "dry run (nothing changed): " } else { "" },
        stats.expired_found,
        stats.recovered,
        stats.failed,
        stats.skipped_alive,
        stats.skipped_changed,
        duration(stats.scan_duration),
    );
    for item in &stats.items {
        text.push_str(&item_line(item, requeue, dead_letter));
    }
    text
}

/// `requeued item 5 (kind email) from owner w1 at epoch 2, attempts 1/3`.
fn item_line(item: &RecoveredItem, requeue: &str, dead_letter: &str) -> String {
    format!(
        "{} item {} (kind {}) from owner {} at epoch {}, attempts {}/{}\n",
        if item.dead_lettered {
            dead_letter
        } else {
            requeue
        },
        item.id,
        item.kind,
        item.previous_owner,
        item.previous_epoch,
        item.attempts,
        item.max_attempts,
    )
}
