//! `leasehold workers`: the worker registry — every node's row, judged alive, dead or stopped
//! by the same rule the reaper and the monitor use.

use leasehold_core::{
    leased_items, Clock, Timestamp, WorkerTypeCounts, WorkerView, DEFAULT_MISSED_INTERVALS,
    METADATA_HOST, METADATA_PID,
};

use crate::args;
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;
use crate::output::{duration, one_line, relative, table};

/// Arguments of `workers`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A node is dead after this many missed heartbeat intervals.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MISSED_INTERVALS,
          value_parser = args::positive_count, allow_negative_numbers = true)]
    dead_after: u32,
}

/// Opens an existing database and prints its registry.
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, Access::Existing).await?;
    let nodes = store
        .nodes_list()
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    let leased = leased_items(store.as_ref())
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    let now = clock.now();
    let views: Vec<WorkerView> = nodes
        .iter()
        .map(|n| WorkerView::of(n, now, args.dead_after).with_leases(&leased))
        .collect();
    if ctx.out.is_json() {
        return ctx.out.json(&views);
    }
    if views.is_empty() {
        return ctx.out.text("no workers registered");
    }
    let rows: Vec<Vec<String>> = views.iter().map(|v| row(v, now)).collect();
    let by_type: Vec<String> = WorkerTypeCounts::of(&nodes, now, args.dead_after)
        .iter()
        .map(|t| {
            format!(
                "{}: {} alive, {} dead, {} stopped",
                t.worker_type, t.counts.alive, t.counts.dead, t.counts.stopped
            )
        })
        .collect();
    let mut text = table(
        &[
            "NODE",
            "INCARNATION",
            "PROCESS",
            "TYPE",
            "STATUS",
            "STATE",
            "ITEM",
            "LEASE",
            "LAST HEARTBEAT",
            "INTERVAL",
            "TASK",
        ],
        &rows,
    );
    for v in &views {
        text.push_str(&worker_lines(v, now));
    }
    text.push_str(&format!("by type: {}\n", by_type.join("; ")));
    ctx.out.text(&text)
}

/// `host:pid` of the process the row says it is (what a start refused under the same node id
/// names), or `-` for a row written without them.
fn process(v: &WorkerView) -> String {
    let host = v.metadata.get(METADATA_HOST).and_then(|h| h.as_str());
    let pid = v.metadata.get(METADATA_PID).and_then(|p| p.as_u64());
    match (host, pid) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, Some(p)) => format!("pid {p}"),
        (None, None) => "-".into(),
    }
}

/// One line per busy worker of a node that reports its workers (`metadata.worker_tasks`):
/// `  node-a/w0  item 7 for 12s: Researching example.com`.
fn worker_lines(v: &WorkerView, now: Timestamp) -> String {
    let Some(workers) = v.metadata.get("worker_tasks").and_then(|w| w.as_array()) else {
        return String::new();
    };
    let mut text = String::new();
    for w in workers {
        let Some(item) = w.get("item").and_then(|i| i.as_i64()) else {
            continue;
        };
        let owner = w.get("owner").and_then(|o| o.as_str()).unwrap_or("?");
        let since = w
            .get("since")
            .and_then(|s| s.as_i64())
            .map(|s| format!(" since {}", relative(Timestamp(s), now)))
            .unwrap_or_default();
        let task = w
            .get("task")
            .and_then(|t| t.as_str())
            .map(|t| format!(": {}", one_line(t, 60)))
            .unwrap_or_default();
        text.push_str(&format!("  {owner}  item {item}{since}{task}\n"));
    }
    text
}

fn row(v: &WorkerView, now: Timestamp) -> Vec<String> {
    vec![
        v.node_id.clone(),
        v.incarnation.to_string(),
        process(v),
        v.worker_type.clone(),
        v.status.to_string(),
        v.state.to_string(),
        v.current_item
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into()),
        v.lease_expires_at
            .map(|t| relative(t, now))
            .unwrap_or_else(|| "-".into()),
        relative(v.last_heartbeat_at, now),
        duration(std::time::Duration::from_millis(
            u64::try_from(v.heartbeat_interval_ms).unwrap_or(0),
        )),
        v.task_text
            .as_deref()
            .map(|t| one_line(t, 50))
            .unwrap_or_else(|| "-".into()),
    ]
}
