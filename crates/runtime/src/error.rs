//! The runtime's error type.

use std::time::Duration;

use leasehold_core::{ConfigError, StoreError};

/// What starting, driving or stopping a node can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A setting was refused; nothing was started.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The builder was given something unusable (no handlers, zero workers, …).
    #[error("invalid node setup: {0}")]
    Setup(String),
    /// A live incarnation of this node id heartbeats in the worker registry (fresh heartbeat,
    /// not stopped): starting beside it would take its in-flight items. Nothing was started.
    /// Give each process its own node id, stop the other one, or start with
    /// [`takeover`](crate::LeaseholdBuilder::takeover) to wait until it is dead.
    #[error(
        "node id {node_id:?} is in use by a live incarnation ({incarnation}) on host {}, pid {}, \
         which last beat {:.1}s ago; give each process its own LEASEHOLD_WORKER_ID, stop that \
         one, or start with --takeover to wait until it is dead",
        host.as_deref().unwrap_or("(unknown)"),
        pid.map_or_else(|| "(unknown)".to_string(), |p| p.to_string()),
        since.as_secs_f64()
    )]
    NodeIdInUse {
        /// The node id.
        node_id: String,
        /// The live incarnation.
        incarnation: i64,
        /// The host it recorded, if any.
        host: Option<String>,
        /// The process id it recorded, if any.
        pid: Option<u32>,
        /// How long ago its last heartbeat was.
        since: Duration,
    },
    /// A schedule was refused at start (its cron expression does not parse, or its name or
    /// kind is empty, or two schedules share a name); nothing was started.
    #[error("schedule {name:?} refused: {reason}")]
    Schedule {
        /// The schedule's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store refused or failed an operation.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An actor could not be spawned.
    #[error("could not spawn the {what}: {reason}")]
    Spawn {
        /// Which actor.
        what: String,
        /// Why.
        reason: String,
    },
    /// The tree is not running (it was shut down, or it escalated).
    #[error("the node's tree is not running: {0}")]
    NotRunning(String),
    /// The tree stopped itself because its restart intensity was exceeded.
    #[error("the node's tree escalated and stopped: {0}")]
    Escalated(String),
    /// The tree stopped itself because a newer incarnation of its node id replaced it in the
    /// worker registry (see [`TreeExit::Superseded`](crate::TreeExit::Superseded)).
    #[error("the node's tree stopped: {0}")]
    Superseded(String),
}

impl RuntimeError {
    /// Whether the start was refused because a live incarnation holds the node id.
    pub fn is_node_id_in_use(&self) -> bool {
        matches!(self, RuntimeError::NodeIdInUse { .. })
    }
}
