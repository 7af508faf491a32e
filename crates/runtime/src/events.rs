//! [`NodeEvent`]: what the tree reports as it happens, for observers and for tests that
//! synchronise on events instead of sleeping.

use serde::Serialize;

use leasehold_core::ItemId;

/// Something that happened in a node. Subscribe with
/// [`NodeHandle::events`](crate::NodeHandle::events); a slow subscriber misses events (the
/// channel is bounded) rather than slowing the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeEvent {
    /// Worker `worker` (re)started and its recover_mine took back `recovered` items.
    WorkerStarted {
        /// The worker index.
        worker: usize,
        /// Items recover_mine requeued or dead-lettered.
        recovered: usize,
    },
    /// A worker acquired an item.
    Acquired {
        /// The worker index.
        worker: usize,
        /// The item.
        item: ItemId,
        /// The lease's epoch.
        epoch: i64,
    },
    /// An item's completion committed.
    Completed {
        /// The item.
        item: ItemId,
        /// The epoch it completed under.
        epoch: i64,
    },
    /// An attempt failed; the item went back to pending or was dead-lettered.
    AttemptFailed {
        /// The item.
        item: ItemId,
        /// Whether it was dead-lettered.
        dead_lettered: bool,
    },
    /// A worker lost its lease; the handler was cancelled and its result will be dropped.
    LeaseLost {
        /// The item.
        item: ItemId,
        /// The lost epoch.
        epoch: i64,
    },
    /// An attempt ran past its execution timeout: the worker stopped renewing its lease and
    /// fails the attempt (an [`AttemptFailed`](NodeEvent::AttemptFailed) follows once that is
    /// written), then cancels the handler.
    TimedOut {
        /// The item.
        item: ItemId,
        /// The attempt's epoch.
        epoch: i64,
        /// The timeout that applied (the item's, its kind's or the node's), in milliseconds.
        timeout_ms: u64,
    },
    /// An operator cancelled an item this node was running: the heartbeat's renewal was
    /// refused with `CancelRequested`, the worker ended the attempt `cancelled` (a fenced
    /// write; `confirmed` says whether it landed, else whoever takes the item back finishes
    /// the cancel), then cancelled the handler.
    Cancelled {
        /// The item.
        item: ItemId,
        /// The attempt's epoch.
        epoch: i64,
        /// Whether the worker's `item_cancel_confirm` was written.
        confirmed: bool,
    },
    /// A handler parked its item awaiting a decision
    /// ([`JobError::awaiting_decision`](crate::JobError::awaiting_decision)); the park
    /// committed.
    Parked {
        /// The item.
        item: ItemId,
        /// The question it waits on.
        question: String,
    },
    /// An item went back to pending on graceful shutdown.
    Released {
        /// The item.
        item: ItemId,
    },
    /// The supervisor is restarting a child that failed or was killed (sent just before the
    /// replacement starts).
    ChildRestarted {
        /// Which child (`Worker(3)`, `Reaper`, `Registry`).
        child: String,
    },
    /// A heartbeat child died while keeping a lease.
    HeartbeatDied {
        /// The worker index.
        worker: usize,
    },
    /// A reaper sweep finished.
    Swept {
        /// Items requeued.
        recovered: u64,
        /// Items dead-lettered.
        failed: u64,
        /// Items left with a live owner.
        skipped_alive: u64,
    },
    /// The reaper stood down (the store is unreachable from this node).
    ReaperStoodDown {
        /// Why.
        reason: String,
    },
    /// The monitor found a node incarnation dead (no heartbeat for the configured number of
    /// intervals) and took back what it held; sent once per incarnation per monitor.
    NodeDead {
        /// The dead node's id.
        node_id: String,
        /// Its incarnation.
        incarnation: i64,
        /// Items requeued or dead-lettered from it.
        recovered: usize,
    },
    /// The monitor judged no node this check (the store is unreachable from this node).
    MonitorStoodDown {
        /// Why.
        reason: String,
    },
    /// The start found a live incarnation of this node id and, with
    /// [`takeover`](crate::LeaseholdBuilder::takeover), waits until it is dead (sent once per
    /// incarnation waited for, before the node runs; subscribe through the builder).
    WaitingForTakeover {
        /// The node id.
        node_id: String,
        /// The live incarnation waited for.
        incarnation: i64,
    },
    /// This node claimed a schedule's due tick: the tick's items were enqueued in the claim's
    /// commit (one per tick; several when missed ticks were caught up).
    ScheduleFired {
        /// The schedule's name.
        name: String,
        /// The ticks claimed, oldest first.
        ticks: Vec<leasehold_core::Timestamp>,
        /// The items enqueued, one per tick.
        items: Vec<leasehold_core::ItemId>,
    },
    /// The restart intensity was exceeded and the tree stopped.
    Escalated {
        /// Why.
        reason: String,
    },
    /// A newer incarnation of this node id holds the registry row (another process registered
    /// the id while this one's row was stale), and the tree stopped itself.
    Superseded {
        /// This tree's incarnation.
        incarnation: i64,
        /// The incarnation that replaced it.
        by: i64,
    },
}
