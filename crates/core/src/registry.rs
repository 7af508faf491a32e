//! A node's row in the worker registry: what the reaper on another node reads to judge liveness.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::item::ItemId;

/// What a registered node is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Started, not yet idle or busy.
    Active,
    /// Running, with no item in hand.
    Idle,
    /// Running an item.
    Processing,
    /// Shut down gracefully.
    Stopped,
}

impl NodeStatus {
    /// The status's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Active => "active",
            NodeStatus::Idle => "idle",
            NodeStatus::Processing => "processing",
            NodeStatus::Stopped => "stopped",
        }
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(NodeStatus::Active),
            "idle" => Ok(NodeStatus::Idle),
            "processing" => Ok(NodeStatus::Processing),
            "stopped" => Ok(NodeStatus::Stopped),
            other => Err(format!(
                "unknown worker status {other:?}; expected active, idle, processing or stopped"
            )),
        }
    }
}

/// One row of the worker registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id (stable across restarts, e.g. from `LEASEHOLD_WORKER_ID`).
    pub node_id: String,
    /// Which start of that node this is: a restarted node gets a new incarnation, so its
    /// predecessor's leases are never taken for its own.
    pub incarnation: i64,
    /// A free-form worker type (e.g. the kinds it serves).
    pub worker_type: String,
    /// What it is doing.
    pub status: NodeStatus,
    /// The item it is working on (one of them, when it runs several workers).
    pub current_item: Option<ItemId>,
    /// A human-readable note of the current work.
    pub task_text: Option<String>,
    /// Its last heartbeat.
    pub last_heartbeat_at: Timestamp,
    /// How often it heartbeats: readers judge it dead after several missed intervals.
    pub heartbeat_interval_ms: i64,
    /// When this incarnation started.
    pub started_at: Timestamp,
    /// Anything else: the process's `host` and `pid` (read them with [`host`](Self::host) and
    /// [`pid`](Self::pid)), its worker count, its running totals.
    pub metadata: Value,
}

/// The `metadata` key of the host name a node runs on.
pub const METADATA_HOST: &str = "host";

/// The `metadata` key of the process id a node runs as.
pub const METADATA_PID: &str = "pid";

impl NodeRecord {
    /// The host this incarnation runs on, as it recorded it in `metadata` (`None` for a row
    /// written without it).
    pub fn host(&self) -> Option<&str> {
        self.metadata.get(METADATA_HOST)?.as_str()
    }

    /// The process id of this incarnation, as it recorded it in `metadata`.
    pub fn pid(&self) -> Option<u32> {
        let pid = self.metadata.get(METADATA_PID)?.as_u64()?;
        u32::try_from(pid).ok()
    }

    /// Whether, at `now`, this incarnation counts as alive: not stopped, and heard from within
    /// `missed_intervals` heartbeat intervals.
    pub fn is_alive(&self, now: Timestamp, missed_intervals: u32) -> bool {
        if self.status == NodeStatus::Stopped {
            return false;
        }
        now.0.saturating_sub(self.last_heartbeat_at.0) <= self.window_ms(missed_intervals)
    }

    /// The moment, at `now`, before which a heartbeat of this node is older than its window
    /// (`missed_intervals` of its heartbeat intervals): the row is dead when its own last
    /// heartbeat is before it, and the monitor takes back only items whose last heartbeat is
    /// before it too.
    pub fn heartbeat_cutoff(&self, now: Timestamp, missed_intervals: u32) -> Timestamp {
        Timestamp(now.0.saturating_sub(self.window_ms(missed_intervals)))
    }

    fn window_ms(&self, missed_intervals: u32) -> i64 {
        self.heartbeat_interval_ms
            .max(1)
            .saturating_mul(i64::from(missed_intervals.max(1)))
    }
}

/// How many heartbeat intervals a node may miss before the registry stops vouching for it,
/// unless configured otherwise (`RuntimeConfig::dead_after_missed`, the CLI's
/// `--dead-after`).
pub const DEFAULT_MISSED_INTERVALS: u32 = 3;

/// What a registry row says about its node at a given time. The one judgement of liveness:
/// the reaper ([`RegistryLiveness`](crate::RegistryLiveness)), the monitor, `leasehold workers`
/// and the dashboard all come here through [`NodeRecord::state`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Heartbeating within its window.
    Alive,
    /// Not stopped, but silent for more than its window: crashed, killed or cut off.
    Dead,
    /// Shut down gracefully.
    Stopped,
}

impl WorkerState {
    /// Every state, in the order reports list them.
    pub const ALL: [WorkerState; 3] = [WorkerState::Alive, WorkerState::Dead, WorkerState::Stopped];

    /// The state's name as printed (`alive`, `dead`, `stopped`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Alive => "alive",
            WorkerState::Dead => "dead",
            WorkerState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl NodeRecord {
    /// The row's [`WorkerState`] at `now`: stopped if marked so, else alive or dead by
    /// [`is_alive`](NodeRecord::is_alive).
    pub fn state(&self, now: Timestamp, missed_intervals: u32) -> WorkerState {
        if self.status == NodeStatus::Stopped {
            WorkerState::Stopped
        } else if self.is_alive(now, missed_intervals) {
            WorkerState::Alive
        } else {
            WorkerState::Dead
        }
    }

    /// How long since the last heartbeat, at `now` (zero if the heartbeat is in the future).
    pub fn silent_for(&self, now: Timestamp) -> std::time::Duration {
        now.since(self.last_heartbeat_at)
    }

    /// This row as a [`NodeKey`]: what a clean-up removes only if it is still exactly so.
    pub fn key(&self) -> NodeKey {
        NodeKey {
            node_id: self.node_id.clone(),
            incarnation: self.incarnation,
            last_heartbeat_at: self.last_heartbeat_at,
        }
    }
}

/// What [`Store::node_register`](crate::Store::node_register) did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "claim", content = "row", rename_all = "snake_case")]
pub enum NodeClaim {
    /// The row is the caller's now, as returned: its incarnation is the one the node runs as
    /// (the proposed one, or the previous incarnation + 1 if that is larger).
    Registered(NodeRecord),
    /// A live incarnation of the node id holds the row (alive by [`NodeRecord::state`]);
    /// nothing was written. This is that incarnation's row.
    InUse(NodeRecord),
}

/// The incarnation a node registers as: the one it proposed (its start time, see the runtime),
/// or the previous incarnation + 1 when that is larger, so that incarnations of one node id
/// grow even when the proposing host's clock stepped back. Both backends'
/// [`node_register`](crate::Store::node_register) choose with this.
pub fn next_incarnation(previous: Option<i64>, proposed: i64) -> i64 {
    previous.map_or(proposed, |p| proposed.max(p.saturating_add(1)))
}

/// A registry row as it was read: a clean-up removes the row only when it still has this
/// incarnation and this last heartbeat, so a node that heartbeated (or restarted) after the
/// read keeps its row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeKey {
    /// The node's id.
    pub node_id: String,
    /// The incarnation read.
    pub incarnation: i64,
    /// The last heartbeat read.
    pub last_heartbeat_at: Timestamp,
}

/// What [`Store::cleanup`](crate::Store::cleanup) removes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupRequest {
    /// Registry rows to remove, each only if unchanged since it was read (see [`NodeKey`]) and
    /// if its incarnation holds no in-progress item (the monitor still needs a dead node's row
    /// to take its items back). Choose them with [`cleanup_candidates`].
    pub nodes: Vec<NodeKey>,
    /// Finished items (`completed`, `failed`, `cancelled`) whose `finished_at` is at or before
    /// this time are removed with their checkpoints; `None` removes no item.
    pub finished_before: Option<Timestamp>,
    /// Report what would be removed; remove nothing.
    pub dry_run: bool,
}

/// What a clean-up removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    /// The node ids whose rows were removed, by id.
    pub nodes_removed: Vec<String>,
    /// Finished items removed.
    pub items_removed: u64,
    /// Checkpoints of those items removed.
    pub checkpoints_removed: u64,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// The registry rows a clean-up may remove at `now`: stopped or dead (by
/// [`NodeRecord::state`]) and silent for at least `older_than`. Alive rows are never chosen,
/// whatever their age.
pub fn cleanup_candidates(
    nodes: &[NodeRecord],
    now: Timestamp,
    missed_intervals: u32,
    older_than: std::time::Duration,
) -> Vec<NodeKey> {
    nodes
        .iter()
        .filter(|n| n.state(now, missed_intervals) != WorkerState::Alive)
        .filter(|n| n.silent_for(now) >= older_than)
        .map(NodeRecord::key)
        .collect()
}

/// A registry row as operators see it at one time: the row, its [`WorkerState`] and how long
/// it has been silent. What `leasehold workers --json` prints and the dashboard serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// The node's id.
    pub node_id: String,
    /// Its incarnation.
    pub incarnation: i64,
    /// Its worker type (the kinds it serves, `*` for any).
    pub worker_type: String,
    /// What it last reported (`active`, `idle`, `processing`, `stopped`).
    pub status: NodeStatus,
    /// Alive, dead or stopped, judged by [`NodeRecord::state`].
    pub state: WorkerState,
    /// Whether `state` is alive.
    pub alive: bool,
    /// The item it reported working on.
    pub current_item: Option<ItemId>,
    /// Its note of the current work.
    pub task_text: Option<String>,
    /// Its last heartbeat (ms since the epoch).
    pub last_heartbeat_at: Timestamp,
    /// Seconds since that heartbeat.
    pub seconds_since_heartbeat: f64,
    /// Its heartbeat interval.
    pub heartbeat_interval_ms: i64,
    /// When this incarnation started.
    pub started_at: Timestamp,
    /// What it reported besides (pid, workers, busy items, running totals).
    pub metadata: Value,
    /// When the lease on `current_item` runs out, if the node holds it now (filled by
    /// [`WorkerView::with_leases`]).
    #[serde(default)]
    pub lease_expires_at: Option<Timestamp>,
}

impl WorkerView {
    /// `node` as seen at `now`, dead after `missed_intervals` missed heartbeats.
    pub fn of(node: &NodeRecord, now: Timestamp, missed_intervals: u32) -> Self {
        let state = node.state(now, missed_intervals);
        WorkerView {
            node_id: node.node_id.clone(),
            incarnation: node.incarnation,
            worker_type: node.worker_type.clone(),
            status: node.status,
            state,
            alive: state == WorkerState::Alive,
            current_item: node.current_item,
            task_text: node.task_text.clone(),
            last_heartbeat_at: node.last_heartbeat_at,
            seconds_since_heartbeat: node.silent_for(now).as_secs_f64(),
            heartbeat_interval_ms: node.heartbeat_interval_ms,
            started_at: node.started_at,
            metadata: node.metadata.clone(),
            lease_expires_at: None,
        }
    }

    /// Fills [`lease_expires_at`](Self::lease_expires_at) from `in_progress` (the leased items,
    /// e.g. `items_list` with status `in_progress`): the expiry of `current_item` when this
    /// node's incarnation holds it.
    pub fn with_leases(mut self, in_progress: &[crate::item::Item]) -> Self {
        self.lease_expires_at = self.current_item.and_then(|id| {
            in_progress
                .iter()
                .find(|i| {
                    i.id == id
                        && i.status == crate::item::ItemStatus::InProgress
                        && i.owner_node.as_deref() == Some(self.node_id.as_str())
                        && i.owner_incarnation == Some(self.incarnation)
                })
                .and_then(|i| i.lease_expires_at)
        });
        self
    }
}

/// Every in-progress item, read by keyset pages of 1000. Leased items are bounded by the
/// fleet's worker count, so this is a few pages at most: what the monitor, `leasehold workers`
/// and the dashboard read to see who holds what.
pub async fn leased_items(
    store: &dyn crate::store::Store,
) -> crate::error::StoreResult<Vec<crate::item::Item>> {
    const PAGE: u32 = 1000;
    let mut all = Vec::new();
    let mut filter = crate::item::ItemFilter {
        status: Some(crate::item::ItemStatus::InProgress),
        limit: PAGE,
        ..crate::item::ItemFilter::default()
    };
    loop {
        let page = store.items_list(&filter).await?;
        let full = page.len() == PAGE as usize;
        filter.after = page.last().map(|i| i.id);
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// Registry rows counted by [`WorkerState`] at one time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounts {
    /// Heartbeating.
    pub alive: u64,
    /// Silent past their window.
    pub dead: u64,
    /// Shut down gracefully.
    pub stopped: u64,
}

impl WorkerCounts {
    /// Counts `nodes` by their state at `now`.
    pub fn of(nodes: &[NodeRecord], now: Timestamp, missed_intervals: u32) -> Self {
        let mut c = WorkerCounts::default();
        for n in nodes {
            match n.state(now, missed_intervals) {
                WorkerState::Alive => c.alive += 1,
                WorkerState::Dead => c.dead += 1,
                WorkerState::Stopped => c.stopped += 1,
            }
        }
        c
    }

    /// The count for one state.
    pub fn get(&self, state: WorkerState) -> u64 {
        match state {
            WorkerState::Alive => self.alive,
            WorkerState::Dead => self.dead,
            WorkerState::Stopped => self.stopped,
        }
    }
}

/// Registry rows of one worker type counted by state (seed 002's statistics by type).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerTypeCounts {
    /// The worker type (the kinds a node serves, `*` for any).
    pub worker_type: String,
    /// Its rows by state.
    #[serde(flatten)]
    pub counts: WorkerCounts,
}

impl WorkerTypeCounts {
    /// `nodes` counted by worker type and state at `now`, by worker type.
    pub fn of(nodes: &[NodeRecord], now: Timestamp, missed_intervals: u32) -> Vec<Self> {
        let mut by_type: std::collections::BTreeMap<&str, Vec<NodeRecord>> =
            std::collections::BTreeMap::new();
        for n in nodes {
            by_type
                .entry(n.worker_type.as_str())
                .or_default()
                .push(n.clone());
        }
        by_type
            .into_iter()
            .map(|(t, rows)| WorkerTypeCounts {
                worker_type: t.to_string(),
                counts: WorkerCounts::of(&rows, now, missed_intervals),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(status: NodeStatus, heartbeat_s: i64) -> NodeRecord {
        NodeRecord {
            node_id: "n".into(),
            incarnation: 1,
            worker_type: "*".into(),
            status,
            current_item: None,
            task_text: None,
            last_heartbeat_at: Timestamp(heartbeat_s * 1000),
            heartbeat_interval_ms: 10_000,
            started_at: Timestamp(0),
            metadata: json!({}),
        }
    }

    #[test]
    fn dead_after_the_missed_intervals_and_stopped_is_never_dead() {
        let r = row(NodeStatus::Idle, 100);
        assert_eq!(r.state(Timestamp(130_000), 3), WorkerState::Alive);
        assert_eq!(r.state(Timestamp(130_001), 3), WorkerState::Dead);
        assert_eq!(r.state(Timestamp(150_000), 5), WorkerState::Alive);
        let s = row(NodeStatus::Stopped, 100);
        assert_eq!(s.state(Timestamp(100_000), 3), WorkerState::Stopped);
        assert_eq!(s.state(Timestamp(999_000), 3), WorkerState::Stopped);
    }

    #[test]
    fn heartbeat_cutoff_agrees_with_the_rows_own_judgement() {
        let r = row(NodeStatus::Idle, 100);
        for now_ms in [100_000, 129_999, 130_000, 130_001, 200_000] {
            let now = Timestamp(now_ms);
            assert_eq!(
                r.is_alive(now, 3),
                r.last_heartbeat_at >= r.heartbeat_cutoff(now, 3),
                "at {now_ms}"
            );
        }
        assert_eq!(
            r.heartbeat_cutoff(Timestamp(130_001), 3),
            Timestamp(100_001)
        );
    }

    #[test]
    fn next_incarnation_grows_past_the_previous_one() {
        assert_eq!(next_incarnation(None, 5), 5);
        assert_eq!(next_incarnation(Some(3), 5), 5);
        assert_eq!(next_incarnation(Some(9), 5), 10, "a clock stepped back");
        assert_eq!(next_incarnation(Some(i64::MAX), 5), i64::MAX);
    }

    #[test]
    fn host_and_pid_are_read_from_metadata() {
        let mut r = row(NodeStatus::Idle, 1);
        assert_eq!((r.host(), r.pid()), (None, None));
        r.metadata = json!({ "host": "web-a", "pid": 4242, "workers": 4 });
        assert_eq!((r.host(), r.pid()), (Some("web-a"), Some(4242)));
        r.metadata = json!({ "host": 7, "pid": -1 });
        assert_eq!((r.host(), r.pid()), (None, None), "wrong types are absent");
    }

    #[test]
    fn cleanup_never_picks_an_alive_row_and_respects_the_age() {
        let rows = vec![
            NodeRecord {
                node_id: "alive".into(),
                ..row(NodeStatus::Idle, 990)
            },
            NodeRecord {
                node_id: "dead-old".into(),
                ..row(NodeStatus::Idle, 100)
            },
            NodeRecord {
                node_id: "stopped-new".into(),
                ..row(NodeStatus::Stopped, 990)
            },
            NodeRecord {
                node_id: "stopped-old".into(),
                ..row(NodeStatus::Stopped, 100)
            },
        ];
        let picked: Vec<String> = cleanup_candidates(
            &rows,
            Timestamp(1_000_000),
            3,
            std::time::Duration::from_secs(60),
        )
        .into_iter()
        .map(|k| k.node_id)
        .collect();
        assert_eq!(
            picked,
            vec!["dead-old".to_string(), "stopped-old".to_string()]
        );
        let counts = WorkerCounts::of(&rows, Timestamp(1_000_000), 3);
        assert_eq!((counts.alive, counts.dead, counts.stopped), (1, 1, 2));
        let mut typed = rows.clone();
        typed[0].worker_type = "email".into();
        let by_type = WorkerTypeCounts::of(&typed, Timestamp(1_000_000), 3);
        let got: Vec<(&str, u64, u64, u64)> = by_type
            .iter()
            .map(|t| {
                (
                    t.worker_type.as_str(),
                    t.counts.alive,
                    t.counts.dead,
                    t.counts.stopped,
                )
            })
            .collect();
        assert_eq!(got, [("*", 0, 1, 2), ("email", 1, 0, 0)]);
    }
}
