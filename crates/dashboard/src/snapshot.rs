//! What the views read from the store: one [`Status`] per request, built from a handful of
//! bounded reads (counts, open work by kind, finished items per minute, the registry, the
//! in-progress items, the latest failures, the paused kinds, the items awaiting a decision),
//! and the overall [`Health`] judged from them.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use leasehold_core::{
    leased_items, FinishedBucket, ItemFilter, ItemStatus, KindDepth, NodeRecord, PausedKind,
    ScheduleRecord, StatusCounts, Store, StoreResult, Timestamp, WorkerCounts, WorkerState,
    WorkerTypeCounts, WorkerView,
};

/// Minutes of finished items the chart shows.
pub const THROUGHPUT_MINUTES: u32 = 15;

/// Failures the page lists.
pub const RECENT_FAILURES: u32 = 10;

/// Items awaiting a decision the overview lists (oldest first).
pub const AWAITING_SHOWN: u32 = 50;

/// Minutes back in which a dead-lettered item makes the health `degraded`.
pub const HEALTH_FAILURE_MINUTES: u32 = 5;

/// Everything `/api/status` serves and the page shows.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// When it was read (ms since the epoch).
    pub now: Timestamp,
    /// Items by status.
    pub items: StatusCounts,
    /// All items.
    pub total: u64,
    /// Open items (pending, in progress) by kind.
    pub by_kind: Vec<KindDepth>,
    /// Registry rows by state.
    pub workers: WorkerCounts,
    /// Registry rows by worker type and state.
    pub workers_by_type: Vec<WorkerTypeCounts>,
    /// Finished items per minute over the last [`THROUGHPUT_MINUTES`].
    pub throughput: Throughput,
    /// The latest dead-lettered items, newest first.
    pub recent_failures: Vec<FailureView>,
    /// Recovery statistics.
    pub recovery: RecoveryView,
    /// Missed heartbeat intervals after which a node counts as dead.
    pub dead_after_missed: u32,
    /// The kinds no node takes until resumed, by name.
    pub paused_kinds: Vec<PausedKind>,
    /// Items parked awaiting a decision, oldest first, at most [`AWAITING_SHOWN`] (the
    /// `awaiting` count says how many there are).
    pub awaiting: Vec<AwaitingView>,
    /// The overall health.
    pub health: Health,
    /// The schedules, by name, with their next run.
    pub schedules: Vec<ScheduleRecord>,
}

/// An item parked awaiting a decision, as the overview lists it.
#[derive(Clone, Debug, Serialize)]
pub struct AwaitingView {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// The question it waits on.
    pub question: Option<String>,
    /// The answers the question accepts.
    pub answers: Vec<String>,
    /// When it was parked.
    pub asked_at: Option<Timestamp>,
}

/// The overall health, by one rule: `down` when no node is alive; else `degraded` when any
/// node is dead or an item was dead-lettered in the last [`HEALTH_FAILURE_MINUTES`]; else
/// `ok`.
#[derive(Clone, Debug, Serialize)]
pub struct Health {
    /// The verdict.
    pub state: HealthState,
    /// Why it is not `ok`, one sentence each (empty when it is).
    pub reasons: Vec<String>,
    /// The dead node incarnations, as `node (incarnation N)`: the page's banner.
    pub dead_nodes: Vec<String>,
}

/// The verdict of [`Health`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Some node is alive, none is dead, nothing was dead-lettered lately.
    Ok,
    /// A node is dead, or items were dead-lettered lately, but some node is alive.
    Degraded,
    /// No node is alive: nothing takes work.
    Down,
}

impl Health {
    /// Judges the registry rows `nodes` at `now` (dead after `missed` intervals) and the
    /// recent minutes of `throughput` (its last [`HEALTH_FAILURE_MINUTES`] buckets).
    pub fn judge(
        nodes: &[NodeRecord],
        now: Timestamp,
        missed: u32,
        throughput: &Throughput,
    ) -> Health {
        let workers = WorkerCounts::of(nodes, now, missed);
        let dead_nodes: Vec<String> = nodes
            .iter()
            .filter(|n| n.state(now, missed) == WorkerState::Dead)
            .map(|n| format!("{} (incarnation {})", n.node_id, n.incarnation))
            .collect();
        let recent = throughput
            .buckets
            .len()
            .min(HEALTH_FAILURE_MINUTES as usize);
        let failed: u64 = throughput.buckets[throughput.buckets.len() - recent..]
            .iter()
            .map(|b| b.failed)
            .sum();
        let mut reasons = Vec::new();
        if workers.alive == 0 {
            reasons.push("no node is alive: nothing takes work".to_string());
        }
        if workers.dead > 0 {
            reasons.push(format!("{} node(s) dead", workers.dead));
        }
        if failed > 0 {
            reasons.push(format!(
                "{failed} item(s) dead-lettered in the last {HEALTH_FAILURE_MINUTES} minutes"
            ));
        }
        let state = if workers.alive == 0 {
            HealthState::Down
        } else if reasons.is_empty() {
            HealthState::Ok
        } else {
            HealthState::Degraded
        };
        Health {
            state,
            reasons,
            dead_nodes,
        }
    }
}

/// Finished items per minute.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    /// Bucket width in seconds (60).
    pub bucket_s: u64,
    /// One bucket per minute, oldest first, empty minutes included; the last one is the
    /// current (partial) minute.
    pub buckets: Vec<FinishedBucket>,
}

/// A dead-lettered item as the page lists it.
#[derive(Clone, Debug, Serialize)]
pub struct FailureView {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// The error kept.
    pub error: Option<String>,
    /// Attempts used.
    pub attempts: u32,
    /// Its budget.
    pub max_attempts: u32,
    /// When it was dead-lettered.
    pub finished_at: Option<Timestamp>,
    /// Its last holder.
    pub owner: Option<String>,
}

/// Recovery statistics: what is waiting to be recovered now, and what nodes report they
/// recovered (the sums of the `metadata.stats` of every registry row; a row removed by
/// `cleanup` takes its counts with it).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecoveryView {
    /// In-progress items whose lease has expired.
    pub expired_leases: u64,
    /// In-progress items held by a node incarnation that is not alive.
    pub held_by_dead_nodes: u64,
    /// Items taken back in all (the three below).
    pub recovered_total: u64,
    /// Taken back by restarted workers (`recover_mine`).
    pub recovered_on_start: u64,
    /// Requeued by reapers.
    pub reaper_recovered: u64,
    /// Requeued by monitors from dead nodes.
    pub monitor_recovered: u64,
    /// Dead-lettered by reapers (attempts spent).
    pub reaper_dead_lettered: u64,
    /// Dead node incarnations monitors alerted on.
    pub dead_nodes_alerted: u64,
}

/// The registry rows as views at `now`, with the lease expiry of each node's current item.
pub(crate) async fn worker_views(
    store: &dyn Store,
    nodes: &[NodeRecord],
    now: Timestamp,
    missed: u32,
) -> StoreResult<Vec<WorkerView>> {
    let leased = leased_items(store).await?;
    Ok(nodes
        .iter()
        .map(|n| WorkerView::of(n, now, missed).with_leases(&leased))
        .collect())
}

/// Reads a [`Status`] at `now`.
pub(crate) async fn status(store: &dyn Store, now: Timestamp, missed: u32) -> StoreResult<Status> {
    let items = store.items_count().await?;
    let by_kind = store.items_depth_by_kind().await?;
    let nodes = store.nodes_list().await?;
    let throughput = throughput(store, now).await?;
    let recent_failures = store
        .items_recently_finished(ItemStatus::Failed, RECENT_FAILURES)
        .await?
        .into_iter()
        .map(|i| FailureView {
            id: i.id.0,
            kind: i.kind,
            error: i.error,
            attempts: i.attempts,
            max_attempts: i.max_attempts,
            finished_at: i.finished_at,
            owner: i.owner,
        })
        .collect();
    let recovery = recovery(store, &nodes, now, missed).await?;
    let paused_kinds = store.kinds_paused().await?;
    let awaiting = store
        .items_list(&ItemFilter {
            status: Some(ItemStatus::Awaiting),
            limit: AWAITING_SHOWN,
            ..ItemFilter::default()
        })
        .await?
        .into_iter()
        .map(|i| AwaitingView {
            id: i.id.0,
            kind: i.kind,
            question: i.decision.as_ref().map(|d| d.question.clone()),
            answers: i
                .decision
                .as_ref()
                .map(|d| d.answers.clone())
                .unwrap_or_default(),
            asked_at: i.decision.as_ref().map(|d| d.asked_at),
        })
        .collect();
    let health = Health::judge(&nodes, now, missed, &throughput);
    let schedules = store.schedules_list().await?;
    Ok(Status {
        now,
        total: items.total(),
        items,
        by_kind,
        workers: WorkerCounts::of(&nodes, now, missed),
        workers_by_type: WorkerTypeCounts::of(&nodes, now, missed),
        throughput,
        recent_failures,
        recovery,
        dead_after_missed: missed,
        paused_kinds,
        awaiting,
        health,
        schedules,
    })
}

/// One bucket per minute, aligned to whole minutes, the current minute last.
async fn throughput(store: &dyn Store, now: Timestamp) -> StoreResult<Throughput> {
    const MINUTE_MS: i64 = 60_000;
    let current = now.0.div_euclid(MINUTE_MS) * MINUTE_MS;
    let since = Timestamp(current - i64::from(THROUGHPUT_MINUTES - 1) * MINUTE_MS);
    let found = store
        .items_finished_since(since, Duration::from_secs(60))
        .await?;
    let buckets = (0..i64::from(THROUGHPUT_MINUTES))
        .map(|k| {
            let start = Timestamp(since.0 + k * MINUTE_MS);
            found
                .iter()
                .find(|b| b.start == start)
                .cloned()
                .unwrap_or(FinishedBucket {
                    start,
                    completed: 0,
                    failed: 0,
                    cancelled: 0,
                })
        })
        .collect();
    Ok(Throughput {
        bucket_s: 60,
        buckets,
    })
}

async fn recovery(
    store: &dyn Store,
    nodes: &[NodeRecord],
    now: Timestamp,
    missed: u32,
) -> StoreResult<RecoveryView> {
    let alive: HashSet<(&str, i64)> = nodes
        .iter()
        .filter(|n| n.state(now, missed) == WorkerState::Alive)
        .map(|n| (n.node_id.as_str(), n.incarnation))
        .collect();
    let mut view = RecoveryView::default();
    for item in leased_items(store).await? {
        if item.lease_expires_at.is_some_and(|t| t <= now) {
            view.expired_leases += 1;
        }
        let holder = item.owner_node.as_deref().zip(item.owner_incarnation);
        if !holder.is_some_and(|h| alive.contains(&h)) {
            view.held_by_dead_nodes += 1;
        }
    }
    for node in nodes {
        let stats = &node.metadata["stats"];
        let get = |k: &str| stats.get(k).and_then(Value::as_u64).unwrap_or(0);
        view.recovered_on_start += get("recovered_on_start");
        view.reaper_recovered += get("reaper_recovered");
        view.monitor_recovered += get("monitor_recovered");
        view.reaper_dead_lettered += get("reaper_dead_lettered");
        view.dead_nodes_alerted += get("monitor_dead_nodes");
    }
    view.recovered_total = view.recovered_on_start + view.reaper_recovered + view.monitor_recovered;
    Ok(view)
}
