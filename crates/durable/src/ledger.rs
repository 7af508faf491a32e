//! [`ToolLedger`] (seed 003's ToolLedger): `execute_or_replay` keyed by (tool, command, task,
//! call), execution history, statistics with the replay rate, expiry (30 days), and
//! `force_execute`.
//!
//! # A call's identity
//! Seed 003 keyed the ledger by (tool, command, task) alone, so a task that ran the same command
//! twice (`git pull` before and after a change) silently got the first result back the second
//! time. Here each call also has its own identity, `call`, chosen by the caller:
//! [`Task::tool`](crate::Task::tool) numbers the calls of each (tool, command) within their
//! step (`step 2 #0`, `step 2 #1`; `task #0` outside any step), and
//! [`Task::tool_keyed`](crate::Task::tool_keyed) takes a key of the caller's. Calls with the
//! same tool, command and identity are the same call: the second one replays the first's
//! result. Because steps run in the same order on every run and a step's calls are numbered in
//! the order they are made, a resumed step's calls get the identities they had before the
//! crash and replay their own results, in order.
//!
//! A tool's result is recorded in the same transaction as its `tool_executed` checkpoint, and
//! that write is fenced by the lease. So once a tool's result is recorded, a crash anywhere
//! after it (before the item completes) leads to a replay, never a second execution; and a
//! stale holder cannot record anything. The one window left is between the tool's own effect
//! and that commit: a crash there runs the tool again on retry (at-least-once), which is why
//! tools should be idempotent where they can.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::durable::{
    CheckpointType, DurableStore, Evidence, EvidencePack, LedgerEntry, NewLedgerEntry, NewStep,
    StepCommit,
};
use leasehold_core::{Clock, ItemId, LeaseRef};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cache::ratio;
use crate::error::DurableError;
use crate::evidence::sha256_hex;

/// How long a recorded execution is replayed by default (seed 003): 30 days.
pub const DEFAULT_LEDGER_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The ledger key of (tool, command, task, call): a SHA-256 of the four, unambiguous whatever
/// characters they contain. `call` is the call's identity within its task (see the module docs).
pub fn ledger_key(tool: &str, command: &str, task: ItemId, call: &str) -> String {
    let joined = json!(["tool", tool, command, task.0, call]).to_string();
    sha256_hex(joined.as_bytes())
}

/// What a tool returns: its result, and evidence for its checkpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolOutput {
    /// The result recorded and replayed.
    pub result: Value,
    /// Evidence committed with the tool's checkpoint (e.g. its exit code).
    pub evidence: Vec<Evidence>,
}

impl From<Value> for ToolOutput {
    fn from(result: Value) -> Self {
        ToolOutput {
            result,
            evidence: Vec::new(),
        }
    }
}

/// A tool's result, and whether it was replayed from the ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolResult {
    /// The result.
    pub result: Value,
    /// Replayed (`true`) or executed by this call.
    pub replayed: bool,
    /// The `tool_executed` checkpoint recorded with it, when known.
    pub checkpoint_id: Option<i64>,
}

/// The ledger's counters since creation or [`ToolLedger::reset_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LedgerStats {
    /// Results served from the ledger.
    pub replays: u64,
    /// Tools executed (and recorded).
    pub executions: u64,
    /// Tool executions that failed (nothing recorded).
    pub failures: u64,
    /// `replays / (replays + executions)`, 0 when there were none.
    pub replay_rate: f64,
}

#[derive(Debug, Default)]
struct Counters {
    replays: AtomicU64,
    executions: AtomicU64,
    failures: AtomicU64,
}

/// The tool ledger over any [`DurableStore`]. Clones share counters.
#[derive(Debug, Clone)]
pub struct ToolLedger {
    store: Arc<dyn DurableStore>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    counters: Arc<Counters>,
}

impl ToolLedger {
    /// A ledger with the default expiry (30 days).
    pub fn new(store: Arc<dyn DurableStore>, clock: Arc<dyn Clock>) -> Self {
        ToolLedger {
            store,
            clock,
            ttl: DEFAULT_LEDGER_TTL,
            counters: Arc::default(),
        }
    }

    /// Sets how long records are replayed; refuses zero.
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self, DurableError> {
        if ttl.is_zero() {
            return Err(DurableError::InvalidInput(
                "ledger expiry must be positive".into(),
            ));
        }
        self.ttl = ttl;
        Ok(self)
    }

    /// Replays the recorded result of call `call` of (tool, command) for the lease's item, or
    /// executes `execute` and records its result with a `tool_executed` checkpoint in one
    /// fenced transaction. A failed execution records nothing and returns its error.
    ///
    /// `call` is the call's identity within the task (see the module docs): two calls of the
    /// same command with different identities both execute; with the same identity the second
    /// replays the first. Counting the replay is fenced too: a stale holder gets `LeaseLost`.
    pub async fn execute_or_replay<F, Fut, O>(
        &self,
        lease: &LeaseRef,
        tool: &str,
        command: &str,
        call: &str,
        execute: F,
    ) -> Result<ToolResult, DurableError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<O, DurableError>>,
        O: Into<ToolOutput>,
    {
        check_names(tool, command)?;
        let key = ledger_key(tool, command, lease.item, call);
        if let Some(entry) = self
            .store
            .ledger_get(&key, Some(lease), self.clock.now())
            .await?
        {
            self.counters.replays.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(item = %lease.item, tool, command, call, "tool result replayed from the ledger");
            return Ok(ToolResult {
                result: entry.result,
                replayed: true,
                checkpoint_id: entry.checkpoint_id,
            });
        }
        self.execute_and_record(lease, tool, command, call, key, execute)
            .await
    }

    /// Executes `execute` even when a result is recorded for call `call`, and records the new
    /// result in place of the old one (seed 003's `force_execute=True`).
    pub async fn force_execute<F, Fut, O>(
        &self,
        lease: &LeaseRef,
        tool: &str,
        command: &str,
        call: &str,
        execute: F,
    ) -> Result<ToolResult, DurableError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<O, DurableError>>,
        O: Into<ToolOutput>,
    {
        check_names(tool, command)?;
        let key = ledger_key(tool, command, lease.item, call);
        self.execute_and_record(lease, tool, command, call, key, execute)
            .await
    }

    async fn execute_and_record<F, Fut, O>(
        &self,
        lease: &LeaseRef,
        tool: &str,
        command: &str,
        call: &str,
        key: String,
        execute: F,
    ) -> Result<ToolResult, DurableError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<O, DurableError>>,
        O: Into<ToolOutput>,
    {
        // Begun before the tool runs, so a stale holder is refused before any effect.
        let step = NewStep {
            step: None,
            name: format!("tool:{tool}"),
            checkpoint_type: CheckpointType::ToolExecuted,
            snapshot: json!({ "tool": tool, "command": command, "call": call }),
        };
        let checkpoint = self
            .store
            .step_begin(lease, &step, self.clock.now())
            .await?;
        let output: ToolOutput = match execute().await {
            Ok(o) => o.into(),
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                return Err(e.context(format!("tool {tool}")));
            }
        };
        let now = self.clock.now();
        let evidence = EvidencePack::new(output.evidence);
        evidence.validate().map_err(DurableError::InvalidInput)?;
        let entry = NewLedgerEntry {
            key,
            tool: tool.to_owned(),
            command: command.to_owned(),
            call: call.to_owned(),
            result: output.result.clone(),
            expires_at: now.plus(self.ttl),
        };
        let commit = StepCommit {
            lease,
            checkpoint,
            evidence: &evidence,
            snapshot: None,
            tool: Some(&entry),
        };
        let record = self.store.step_commit(&commit, now).await?;
        self.counters.executions.fetch_add(1, Ordering::Relaxed);
        Ok(ToolResult {
            result: output.result,
            replayed: false,
            checkpoint_id: Some(record.id),
        })
    }

    /// The item's recorded executions, newest first (seed 003's `get_execution_history`).
    pub async fn history(
        &self,
        item: ItemId,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, DurableError> {
        if limit == 0 {
            return Err(DurableError::InvalidInput(
                "history limit must be at least 1".into(),
            ));
        }
        Ok(self.store.ledger_history(item, limit).await?)
    }

    /// Deletes expired records; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, DurableError> {
        Ok(self.store.ledger_purge_expired(self.clock.now()).await?)
    }

    /// The counters and replay rate.
    pub fn stats(&self) -> LedgerStats {
        let replays = self.counters.replays.load(Ordering::Relaxed);
        let executions = self.counters.executions.load(Ordering::Relaxed);
        LedgerStats {
            replays,
            executions,
            failures: self.counters.failures.load(Ordering::Relaxed),
            replay_rate: ratio(replays, replays + executions),
        }
    }

    /// Sets the counters back to zero.
    pub fn reset_stats(&self) {
        self.counters.replays.store(0, Ordering::Relaxed);
        self.counters.executions.store(0, Ordering::Relaxed);
        self.counters.failures.store(0, Ordering::Relaxed);
    }
}

fn check_names(tool: &str, command: &str) -> Result<(), DurableError> {
    if tool.trim().is_empty() {
        return Err(DurableError::InvalidInput(
            "tool name must not be empty".into(),
        ));
    }
    if command.is_empty() {
        return Err(DurableError::InvalidInput(format!(
            "tool {tool}: command must not be empty"
        )));
    }
    Ok(())
}
