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
    /// Anything else (host, pid, worker count).
    pub metadata: Value,
}

impl NodeRecord {
    /// Whether, at `now`, this incarnation counts as alive: not stopped, and heard from within
    /// `missed_intervals` heartbeat intervals.
    pub fn is_alive(&self, now: Timestamp, missed_intervals: u32) -> bool {
        if self.status == NodeStatus::Stopped {
            return false;
        }
        let window = self
            .heartbeat_interval_ms
            .max(1)
            .saturating_mul(i64::from(missed_intervals.max(1)));
        now.0.saturating_sub(self.last_heartbeat_at.0) <= window
    }
}
