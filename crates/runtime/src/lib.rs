//! leasehold's supervised actor tree, on ractor and tokio.
//!
//! ```text
//! Supervisor (one per node; restart intensity: at most R restarts in T, then escalate)
//! ├── Worker 0 ──┬── Heartbeat   (one per worker: renews the worker's lease every heartbeat interval)
//! │              └── handler task (the user's async fn; cancelled when the lease is lost)
//! ├── Worker 1 …
//! ├── Reaper      (sweeps expired leases in batches, pings owners, requeues or dead-letters)
//! ├── Registry    (this node's row in the worker registry)
//! ├── Monitor     (on by default: takes back dead nodes' silent items and alerts; see [`monitor`])
//! └── Scheduler   (with schedules: claims each due cron tick once across nodes; see [`schedule`])
//! ```
//!
//! Build a node with [`Leasehold::builder`], register handlers by kind, and [`start`](LeaseholdBuilder::start)
//! it; the returned [`NodeHandle`] enqueues, reports status and statistics, sweeps on demand and
//! shuts down gracefully. docs/runtime.md states the guarantees and what each fault leads to.
//!
//! ```no_run
//! use leasehold_runtime::{Leasehold, JobContext, JobError};
//! # async fn demo(store: std::sync::Arc<dyn leasehold_core::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! let node = Leasehold::builder(store)
//!     .handler("greet", |ctx: JobContext| async move {
//!         let name = ctx.input()["name"].as_str().unwrap_or("world").to_string();
//!         Ok::<_, JobError>(serde_json::json!({ "greeting": format!("hello, {name}") }))
//!     })
//!     .workers(4)
//!     .start()
//!     .await?;
//! node.enqueue(node.item("greet", serde_json::json!({"name": "ada"}))).await?;
//! node.shutdown(std::time::Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`builder`]: [`Leasehold`], [`LeaseholdBuilder`] and [`RuntimeConfig`].
//! - [`handler`]: [`JobContext`], [`JobError`] and the handler type.
//! - [`handle`]: [`NodeHandle`], statistics and shutdown reports.
//! - [`embed`]: the tree under a user's own ractor supervisor
//!   ([`start_linked`](LeaseholdBuilder::start_linked)), the [`Escalation`] it receives,
//!   [`TreeState`] for health checks, and [`NodeHandle::await_result`].
//! - `node`: the state every actor of one node shares.
//! - `identity`: claiming the node id at start (one live incarnation per id; `takeover`).
//! - `supervisor`, `worker`, `heartbeat`, `reaper`, `registry`: the actors.
//! - [`clock_sync`]: which clock lease times come from ([`ClockSource`]: the database's on
//!   PostgreSQL by default) and the task that resyncs it.
//! - `wakeups`: the task that wakes idle workers on the store's wake-ups
//!   ([`Store::wakeups`](leasehold_core::Store::wakeups)), e.g. PostgreSQL's NOTIFY.
//! - [`schedule`]: [`Schedule`] (periodic work from a cron expression) and the scheduler
//!   actor that claims each due tick once across nodes.
//! - [`monitor`]: the monitor actor, [`DeadNode`] and its reports.
//! - [`liveness`]: how the reaper judges an owner (local ping or the worker registry).
//! - [`chaos`]: a seeded chaos run with random kills, checked by the invariant checker.
//! - [`faults`]: the public fault-injection harness and invariant checker.
//! - [`metrics`]: the node's counts by kind and histograms ([`NodeMetrics`]), published in
//!   its registry row; [`JobMetrics`], a handler's way to add to them.
//! - [`events`]: [`NodeEvent`], the tree's event stream.
//! - [`error`]: the [`RuntimeError`] type.

pub mod builder;
pub mod chaos;
pub mod clock_sync;
pub mod embed;
pub mod error;
pub mod events;
pub mod faults;
pub mod handle;
pub mod handler;
mod heartbeat;
mod identity;
pub mod liveness;
pub mod metrics;
pub mod monitor;
mod node;
mod reaper;
mod registry;
pub mod schedule;
mod supervisor;
mod wakeups;
mod worker;

pub use builder::{Leasehold, LeaseholdBuilder, RuntimeConfig};
pub use clock_sync::ClockSource;
pub use embed::{Escalation, TreeState};
pub use error::RuntimeError;
pub use events::NodeEvent;
pub use handle::{
    MonitorStats, NodeHandle, ReaperStats, RuntimeStats, ShutdownReport, SweepOutcome, TreeExit,
};
pub use handler::{JobContext, JobError};
pub use leasehold_core::metrics::{KindMetrics, NodeMetrics};
pub use leasehold_core::CatchUp;
pub use liveness::NodeLiveness;
pub use metrics::JobMetrics;
pub use monitor::{DeadNode, MonitorOutcome, MonitorReport};
pub use schedule::Schedule;
