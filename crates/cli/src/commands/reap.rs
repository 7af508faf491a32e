//! `leasehold reap`: one reaper sweep, judging owners by the worker registry.

use std::time::Duration;

use leasehold_core::{
    Clock, DeadNodesRequest, ReapRequest, RecoveredItem, RecoveryStats, ReleasedNode,
    DEFAULT_MISSED_INTERVALS,
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

    /// Instead of a sweep of expired leases: release at once every item held by node
    /// incarnations the registry judges dead (or stopped while holding items), whatever their
    /// leases say, except items whose own heartbeat is recent (seed 002's
    /// release_dead_worker_leases).
    #[arg(long, conflicts_with_all = ["stale_after", "max_attempts", "batch"])]
    dead_nodes: bool,
}

/// Validates, opens, sweeps once (or releases dead nodes' items), prints what it did.
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    if args.dead_nodes {
        return dead_nodes(&args, ctx).await;
    }
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
    let stats = store
        .items_reap_by_registry(&req, args.dead_after, now)
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    if ctx.out.is_json() {
        ctx.out.json(&stats)
    } else {
        ctx.out.text(&summary(&stats))
    }
}

/// `reap --dead-nodes`: one release of dead incarnations' items; JSON is the list of nodes.
async fn dead_nodes(args: &Args, ctx: &Ctx) -> Result<(), CliError> {
    let req = DeadNodesRequest {
        missed_intervals: args.dead_after,
        dry_run: args.dry_run,
        exclude: None,
    };
    req.validate().map_err(CliError::usage)?;
    let access = if args.dry_run {
        Access::Existing
    } else {
        Access::Create
    };
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, access).await?;
    let nodes = store
        .items_release_dead_nodes(&req, clock.now())
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    if ctx.out.is_json() {
        return ctx.out.json(&nodes);
    }
    ctx.out.text(&dead_nodes_summary(&nodes, args.dry_run))
}

/// The text report of `--dead-nodes`: one summary line, then a line per node and per item.
fn dead_nodes_summary(nodes: &[ReleasedNode], dry_run: bool) -> String {
    let (requeue, dead_letter) = if dry_run {
        ("would requeue", "would dead-letter")
    } else {
        ("requeued", "dead-lettered")
    };
    let items: Vec<&RecoveredItem> = nodes.iter().flat_map(|n| &n.items).collect();
    let dead = items.iter().filter(|i| i.dead_lettered).count();
    let mut text = format!(
        "{}{} node incarnation(s) not alive: {requeue} {}, {dead_letter} {}\n",
        if dry_run {
            "dry run (nothing changed): "
        } else {
            ""
        },
        nodes.len(),
        items.len() - dead,
        dead,
    );
    for n in nodes {
        text.push_str(&format!(
            "node {} incarnation {} is {} (last heartbeat at {}): {} item(s)\n",
            n.node_id,
            n.incarnation,
            n.state,
            n.last_heartbeat_at,
            n.items.len()
        ));
        for item in &n.items {
            text.push_str(&format!("  {}", item_line(item, requeue, dead_letter)));
        }
    }
    text
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
