//! `leasehold monitor`: the dead-node monitor as a process of its own, not a worker node.
//!
//! Every interval it takes back what dead node incarnations hold through the store's
//! `items_release_dead_nodes` — the take-back a node's own monitor runs, and on PostgreSQL the
//! SQL function `leasehold_release_dead_nodes` — prints one line of statistics, and runs the
//! alert hook once for each node incarnation it newly finds dead. Two monitors on one store
//! take nothing twice: every take-back is conditional on the item's holder and epoch.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use leasehold_core::config::parse_seconds;
use leasehold_core::{
    leased_items, Clock, DeadNodesRequest, ReleasedNode, Store, Timestamp, WorkerState,
    DEFAULT_MISSED_INTERVALS,
};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::args;
use crate::commands::dashboard::shutdown_signal;
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;

/// The interval's variables, in precedence order: leasehold's own, then the seeds' name.
const INTERVAL_VARS: [&str; 2] = ["LEASEHOLD_MONITOR_INTERVAL_S", "HEARTBEAT_MONITOR_INTERVAL"];

/// The interval without flag or variable.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// How long one run of the alert hook may take before it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `monitor`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Seconds between checks [default: LEASEHOLD_MONITOR_INTERVAL_S, or the seeds'
    /// HEARTBEAT_MONITOR_INTERVAL, else 60].
    #[arg(long, value_name = "S", value_parser = args::seconds, allow_negative_numbers = true)]
    interval_s: Option<Duration>,

    /// A node is dead after this many missed heartbeat intervals.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MISSED_INTERVALS,
          value_parser = args::positive_count, allow_negative_numbers = true)]
    dead_after: u32,

    /// Run this through `sh -c` once per newly dead node incarnation, with the node's record
    /// (and the items taken back from it) as JSON on stdin: how to send an e-mail or a chat
    /// message.
    #[arg(long, value_name = "CMD", value_parser = args::non_empty)]
    on_dead_exec: Option<String>,

    /// Run one check and exit (for cron, and for tests).
    #[arg(long)]
    once: bool,
}

/// One check's statistics line.
#[derive(Debug, Default, Serialize)]
struct Stats {
    /// When the check ran (milliseconds since the epoch).
    at: i64,
    /// Registry rows by state.
    alive: u64,
    dead: u64,
    stopped: u64,
    /// Items requeued or dead-lettered this check.
    taken_back: u64,
    /// In-progress items whose lease had expired before the take-back (left to the reapers).
    expired_leases: u64,
    /// Dead incarnations seen for the first time (the hook ran for each).
    newly_dead: u64,
}

/// What the hook gets on stdin.
#[derive(Serialize)]
struct HookInput<'a> {
    /// The node's registry row.
    node: &'a leasehold_core::NodeRecord,
    /// What this check took back from it.
    taken_back: &'a ReleasedNode,
}

/// Validates, opens, checks every interval until SIGTERM or SIGINT (exit 0).
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let interval = match args.interval_s {
        Some(d) => d,
        None => interval_from_env()?,
    };
    let req = DeadNodesRequest::new(args.dead_after);
    req.validate().map_err(CliError::usage)?;
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, Access::Existing).await?;
    let mut alerted: HashSet<(String, i64)> = HashSet::new();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let stats = check(&*store, &req, clock.now(), &mut alerted, &args, ctx).await;
        match stats {
            Ok(stats) => print_stats(&stats, ctx)?,
            // A failing store is reported and retried next interval, not fatal: the monitor
            // is what must outlive an outage.
            Err(e) => {
                if let Some(line) = e.line() {
                    eprintln!("{line} (leasehold monitor: retrying next interval)");
                }
            }
        }
        if args.once {
            return Ok(());
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// The interval from the environment (naming the variable when its value is refused).
fn interval_from_env() -> Result<Duration, CliError> {
    for var in INTERVAL_VARS {
        if let Ok(raw) = std::env::var(var) {
            return parse_seconds(var, &raw).map_err(|e| CliError::usage(e.to_string()));
        }
    }
    Ok(DEFAULT_INTERVAL)
}

/// One check: take back, count, alert.
async fn check(
    store: &dyn Store,
    req: &DeadNodesRequest,
    now: Timestamp,
    alerted: &mut HashSet<(String, i64)>,
    args: &Args,
    ctx: &Ctx,
) -> Result<Stats, CliError> {
    let fail = |e| CliError::store(&ctx.db, e);
    let expired = leased_items(store)
        .await
        .map_err(fail)?
        .iter()
        .filter(|i| i.lease_expires_at.is_some_and(|t| t <= now))
        .count() as u64;
    let released = store
        .items_release_dead_nodes(req, now)
        .await
        .map_err(fail)?;
    let nodes = store.nodes_list().await.map_err(fail)?;
    let mut stats = Stats {
        at: now.0,
        expired_leases: expired,
        ..Stats::default()
    };
    for n in &nodes {
        match n.state(now, req.missed_intervals) {
            WorkerState::Alive => stats.alive += 1,
            WorkerState::Dead => stats.dead += 1,
            WorkerState::Stopped => stats.stopped += 1,
        }
    }
    for r in &released {
        stats.taken_back += r.items.len() as u64;
        if r.state != WorkerState::Dead || !alerted.insert((r.node_id.clone(), r.incarnation)) {
            continue;
        }
        stats.newly_dead += 1;
        let Some(cmd) = &args.on_dead_exec else {
            continue;
        };
        let Some(node) = nodes
            .iter()
            .find(|n| n.node_id == r.node_id && n.incarnation == r.incarnation)
        else {
            continue;
        };
        let input = serde_json::to_vec(&HookInput {
            node,
            taken_back: r,
        })
        .map_err(|e| CliError::failure(format!("cannot encode the hook's input: {e}")))?;
        run_hook(cmd, &input, &r.node_id).await;
    }
    Ok(stats)
}

/// Runs the hook with `input` on stdin; its failure is reported, never fatal.
async fn run_hook(cmd: &str, input: &[u8], node: &str) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("leasehold monitor: cannot run the hook for node {node}: {e}");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its input closes the pipe: not an error of ours.
        let _ = stdin.write_all(input).await;
    }
    match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => {
            eprintln!("leasehold monitor: the hook for node {node} exited with {status}")
        }
        Ok(Err(e)) => eprintln!("leasehold monitor: the hook for node {node} failed: {e}"),
        Err(_) => eprintln!(
            "leasehold monitor: the hook for node {node} ran past {} s; killed",
            HOOK_TIMEOUT.as_secs()
        ),
    }
}

/// The statistics line: JSON with `--json`, else words.
fn print_stats(s: &Stats, ctx: &Ctx) -> Result<(), CliError> {
    if ctx.out.is_json() {
        return ctx.out.json(s);
    }
    ctx.out.text(&format!(
        "monitor: nodes alive {} dead {} stopped {}; items taken back {}; expired leases {}; newly dead {}\n",
        s.alive, s.dead, s.stopped, s.taken_back, s.expired_leases, s.newly_dead
    ))
}
