//! Durable execution for leasehold handlers (seeds 003 and 004): retry with backoff,
//! checkpoints with evidence, the LLM output cache, the tool ledger, and
//! [`TaskRunner::run_with_recovery`], which resumes a task from its last verified checkpoint
//! after a crash, replaying recorded tool results and cached LLM outputs instead of executing
//! them again.
//!
//! Storage is behind [`leasehold_core::durable::DurableStore`], a
//! backend-agnostic trait in `leasehold-core`; `leasehold-sqlite`'s `SqliteStore` and
//! `leasehold-postgres`'s `PgStore` implement it, with the same semantics (one test suite runs
//! on both; the LLM cache's claims hold across hosts on PostgreSQL). Every durable write made on behalf of an item (checkpoints, verification records,
//! retention, tool records and replay counts, LLM cache claims and outputs) is fenced by the
//! caller's lease (owner, epoch), and a tool's result commits in the same transaction as its
//! checkpoint. Each tool call has its own identity within its task (see [`ledger`]).
//! docs/durable-execution.md states the guarantees.
//!
//! ```no_run
//! use std::sync::Arc;
//! use leasehold_core::{Clock, SystemClock};
//! use leasehold_durable::{DurableError, TaskRunner};
//! use leasehold_runtime::{JobContext, JobError, Leasehold};
//! # async fn demo(store: Arc<leasehold_sqlite::SqliteStore>) -> Result<(), Box<dyn std::error::Error>> {
//! let runner = TaskRunner::new(store.clone(), Arc::new(SystemClock));
//! let node = Leasehold::builder(store)
//!     .handler("research", move |ctx: JobContext| {
//!         let runner = runner.clone();
//!         async move {
//!             let done = runner
//!                 .run_job(&ctx, |task| async move {
//!                     let page = task
//!                         .step("fetch", |t| async move {
//!                             let r = t.tool("http", "GET https://example.com", || async {
//!                                 Ok::<_, DurableError>(serde_json::json!({"status": 200}))
//!                             })
//!                             .await?;
//!                             Ok::<_, DurableError>(r.result)
//!                         })
//!                         .await?;
//!                     Ok(page)
//!                 })
//!                 .await?;
//!             Ok::<_, JobError>(done.output)
//!         }
//!     })
//!     .start()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`retry`](mod@retry): [`RetryPolicy`], [`RetryPolicies`] (per kind, per item) and the [`retry`](fn@retry)
//!   helper around any async call.
//! - [`checkpoint`]: [`CheckpointManager`]: begin/commit/verify/last verified/rollback/retention.
//! - [`evidence`]: checking evidence now, and building it (file hashes, artifacts, exit
//!   codes, database rows).
//! - [`cache`]: [`LlmCache`], single-flight `get_or_generate`.
//! - [`ledger`]: [`ToolLedger`], `execute_or_replay` and `force_execute`.
//! - [`runner`]: [`TaskRunner`], [`Task`] and `run_with_recovery`.
//! - [`error`]: the error type, [`DurableError`].

pub mod cache;
pub mod checkpoint;
pub mod error;
pub mod evidence;
pub mod ledger;
pub mod retry;
pub mod runner;

pub use cache::{cache_key, CacheStats, Cached, LlmCache, DEFAULT_CACHE_TTL, DEFAULT_CLAIM_TTL};
pub use checkpoint::{CheckpointManager, DEFAULT_RETENTION};
pub use error::{BoxError, DurableError};
pub use leasehold_core::durable::{
    ArtifactKind, CacheKeyInfo, CheckpointRecord, CheckpointState, CheckpointType, DurableStore,
    Evidence, EvidencePack, LedgerEntry, RowProbe, Verification,
};
pub use ledger::{ledger_key, LedgerStats, ToolLedger, ToolOutput, ToolResult, DEFAULT_LEDGER_TTL};
pub use retry::{retry, retry_with, FailedAttempt, RetryPolicies, RetryPolicy, Retryable};
pub use runner::{Recovered, RunReport, StepOutput, Task, TaskRunner};
