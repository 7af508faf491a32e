//! The vocabulary of leasehold: work items, leases, the backend-agnostic [`Store`] trait,
//! configuration, the injectable [`Clock`] and the error type. This crate does no I/O; the
//! backends (`leasehold-sqlite`, `leasehold-postgres`) implement [`Store`], and the runtime drives it.
//!
//! # Layout
//! - [`clock`]: [`Clock`] and its implementations; wall time in milliseconds, tied to tokio's
//!   `Instant` so paused-time tests move leases without sleeping.
//! - [`item`]: items, statuses, leases and the argument structs of the store's operations.
//! - [`store`]: the [`Store`] trait (the lease protocol) and [`LivenessCheck`] (the reaper's
//!   question about an owner).
//! - [`registry`]: a node's row in the worker registry, [`WorkerState`] (the one judgement
//!   of alive, dead or stopped) and the clean-up of old rows.
//! - [`history`]: [`Attempt`], one record per ended attempt of an item, and how it ended.
//! - [`action`]: operators' actions — retry, cancel, delete items by id or filter; paused kinds.
//! - [`decision`]: the decision step: a parked item's question and its answer.
//! - [`emergency`]: the operator's emergency operations judged by the registry alone (reap,
//!   release dead nodes' items), in Rust; PostgreSQL runs them as SQL functions.
//! - [`activity`]: the operators' reads: open work by kind, finished items over time.
//! - [`metrics`]: [`NodeMetrics`](metrics::NodeMetrics), what a node counts about its work
//!   and publishes in its registry row (fixed histogram buckets, per kind).
//! - [`schedule`]: periodic work: a schedule's row, its catch-up policy, and the claim of a
//!   due tick.
//! - [`retry`]: the backoff schedule of retryable failures.
//! - [`durable`]: checkpoints with evidence, the tool ledger, the LLM output cache and their
//!   store trait [`DurableStore`](durable::DurableStore).
//! - [`config`]: [`Config`], read from the environment (with the seeds' `TASK_*` aliases) and
//!   validated.
//! - [`error`]: [`StoreError`] (with the typed [`StoreError::LeaseLost`]) and [`ConfigError`].
//!
//! # The fencing rule
//! Every write by a lease holder (renew, complete, fail, release, checkpoint) carries a
//! [`LeaseRef`] — (item, owner, epoch). A backend applies the write only when the item is still
//! `in_progress` under that owner and epoch; otherwise it returns [`StoreError::LeaseLost`] and
//! changes nothing. Every acquisition increments the epoch, so a zombie holder can never write
//! over its successor.

pub mod action;
pub mod activity;
pub mod clock;
pub mod config;
pub mod decision;
pub mod durable;
pub mod emergency;
pub mod error;
pub mod history;
pub mod item;
pub mod metrics;
pub mod registry;
pub mod retry;
pub mod schedule;
pub mod store;

pub use action::{
    ActionFilter, ActionItem, ActionReport, ItemAction, ItemSelector, PausedKind, RetryRequest,
};
pub use activity::{FinishedBucket, KindDepth};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock, Timestamp, TokioClock};
pub use config::{Config, ConfigError};
pub use decision::{Decision, DecisionRequest};
pub use emergency::{DeadNodesRequest, ReleasedNode};
pub use error::{StoreError, StoreResult};
pub use history::{Attempt, AttemptOutcome, DEFAULT_HISTORY_KEEP, TIMED_OUT_PREFIX};
pub use item::{
    dependency_ended, AcquireRequest, Checkpoint, DependantStart, Dependency, FailDisposition,
    FailOutcome, Item, ItemFilter, ItemId, ItemStatus, LeaseRef, LeaseStatus, Leased, NewItem,
    RecoveredItem, ReleaseOutcome, StatusCounts,
};
pub use registry::{
    cleanup_candidates, leased_items, next_incarnation, CleanupReport, CleanupRequest, NodeClaim,
    NodeKey, NodeRecord, NodeStatus, WorkerCounts, WorkerState, WorkerTypeCounts, WorkerView,
    DEFAULT_MISSED_INTERVALS, METADATA_HOST, METADATA_PID,
};
pub use retry::Backoff;
pub use schedule::{CatchUp, ScheduleClaim, ScheduleRecord, ScheduleSpec};
pub use store::{
    Liveness, LivenessCheck, NoLiveness, ReapCandidate, ReapCursor, ReapRequest, RecoveryStats,
    RegistryLiveness, Store,
};
