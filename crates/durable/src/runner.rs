//! [`TaskRunner::run_with_recovery`] (seed 003): run a task as a sequence of named steps, each
//! committed as a checkpoint; after a crash, resume from the last verified checkpoint,
//! skipping the steps it covers and replaying tool results and cached LLM outputs instead of
//! executing them again.
//!
//! A step's checkpoint is begun before it runs and committed (with its evidence and the task's
//! state after it: every finished step's output) when it returns. On resume, steps up to the
//! checkpoint's position return their recorded outputs without running; the first step after
//! it runs again, and its tool calls that had committed replay from the ledger.
//!
//! Each tool call has its own identity: its step's position and its number among the calls of
//! the same tool and command in that step (or a key the caller passes to
//! [`Task::tool_keyed`]), so a step that runs the same command twice executes it twice, and a
//! rerun of that step replays both results, in order.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use leasehold_core::durable::{CheckpointType, DurableStore, EvidencePack, NewStep};
use leasehold_core::{Clock, LeaseRef};
use leasehold_runtime::{JobContext, JobError, JobMetrics};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::cache::LlmCache;
use crate::checkpoint::CheckpointManager;
use crate::error::DurableError;
use crate::ledger::{ToolLedger, ToolOutput, ToolResult};

/// What a step returns: its output (recorded in the checkpoint) and evidence for it.
pub type StepOutput = ToolOutput;

/// What one run of a task did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// The checkpoint the run resumed from, if it resumed.
    pub resumed_from_checkpoint: Option<i64>,
    /// The position of the last step that checkpoint covers.
    pub resumed_after_step: Option<i64>,
    /// Steps that ran in this run.
    pub steps_run: u64,
    /// Steps skipped because the checkpoint covered them.
    pub steps_skipped: u64,
    /// Tools executed in this run.
    pub tool_executions: u64,
    /// Tool results replayed from the ledger.
    pub tool_replays: u64,
    /// LLM outputs generated in this run.
    pub llm_calls: u64,
    /// LLM outputs served from the cache.
    pub llm_cache_hits: u64,
}

/// A task's output and the report of the run that produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recovered<T> {
    /// What the task returned.
    pub output: T,
    /// What the run did.
    pub report: RunReport,
}

/// The runner's snapshot: every finished step's name, in order, and output.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    runner: u32,
    steps: Vec<String>,
    outputs: Map<String, Value>,
}

const SNAPSHOT_VERSION: u32 = 1;

/// Runs tasks with checkpoint-based recovery, an LLM output cache and a tool ledger.
#[derive(Debug, Clone)]
pub struct TaskRunner {
    checkpoints: CheckpointManager,
    cache: LlmCache,
    ledger: ToolLedger,
}

impl TaskRunner {
    /// A runner with default checkpoint retention, cache expiry and ledger expiry.
    pub fn new(store: Arc<dyn DurableStore>, clock: Arc<dyn Clock>) -> Self {
        TaskRunner {
            checkpoints: CheckpointManager::new(store.clone(), clock.clone()),
            cache: LlmCache::new(store.clone(), clock.clone()),
            ledger: ToolLedger::new(store, clock),
        }
    }

    /// A runner over parts configured separately (they should share one store).
    pub fn from_parts(checkpoints: CheckpointManager, cache: LlmCache, ledger: ToolLedger) -> Self {
        TaskRunner {
            checkpoints,
            cache,
            ledger,
        }
    }

    /// The checkpoint manager.
    pub fn checkpoints(&self) -> &CheckpointManager {
        &self.checkpoints
    }

    /// The LLM output cache.
    pub fn cache(&self) -> &LlmCache {
        &self.cache
    }

    /// The tool ledger.
    pub fn ledger(&self) -> &ToolLedger {
        &self.ledger
    }

    /// Runs `task` for the lease's item, resuming from its last verified checkpoint when an
    /// earlier attempt left one. The task's steps, tools and LLM calls go through the
    /// [`Task`] it is given.
    pub async fn run_with_recovery<T, F, Fut>(
        &self,
        lease: LeaseRef,
        task: F,
    ) -> Result<Recovered<T>, DurableError>
    where
        F: FnOnce(Task) -> Fut,
        Fut: Future<Output = Result<T, DurableError>>,
    {
        self.run(lease, None, task).await
    }

    /// The run, counting LLM cache lookups and tool calls in `metrics` when given.
    async fn run<T, F, Fut>(
        &self,
        lease: LeaseRef,
        metrics: Option<JobMetrics>,
        task: F,
    ) -> Result<Recovered<T>, DurableError>
    where
        F: FnOnce(Task) -> Fut,
        Fut: Future<Output = Result<T, DurableError>>,
    {
        let mut state = TaskState::default();
        if let Some(cp) = self
            .checkpoints
            .get_last_verified_checkpoint(&lease)
            .await?
        {
            match serde_json::from_value::<Snapshot>(cp.snapshot.clone()) {
                Ok(s) if s.runner == SNAPSHOT_VERSION => {
                    tracing::info!(item = %lease.item, checkpoint = cp.id, step = ?cp.step, "resuming from the last verified checkpoint");
                    state.resumed_through = cp.step;
                    state.recorded = s.steps;
                    state.outputs = s.outputs;
                    state.report.resumed_from_checkpoint = Some(cp.id);
                    state.report.resumed_after_step = cp.step;
                }
                _ => {
                    tracing::warn!(item = %lease.item, checkpoint = cp.id, "the last checkpoint was not written by run_with_recovery; starting from the beginning");
                }
            }
        }
        let handle = Task {
            inner: Arc::new(TaskInner {
                runner: self.clone(),
                lease: lease.clone(),
                metrics,
                state: Mutex::new(state),
            }),
            calls: Arc::new(CallScope::new("task".into())),
        };
        let output = task(handle.clone()).await?;
        if let Err(e) = self.checkpoints.cleanup(&lease).await {
            tracing::warn!(item = %lease.item, error = %e, "checkpoint retention clean-up failed");
        }
        let report = handle.report();
        Ok(Recovered { output, report })
    }

    /// [`run_with_recovery`](Self::run_with_recovery) inside a leasehold handler: uses the
    /// job's lease, stops with [`DurableError::Cancelled`] when the lease is lost or the node
    /// stops, and turns errors into the [`JobError`] the queue acts on (permanent ones
    /// dead-letter the item; the others return it to pending to resume later). Its LLM cache
    /// hits and misses and its tool executions and replays are counted in the node's metrics
    /// under the item's kind ([`JobContext::metrics`]).
    pub async fn run_job<T, F, Fut>(
        &self,
        ctx: &JobContext,
        task: F,
    ) -> Result<Recovered<T>, JobError>
    where
        F: FnOnce(Task) -> Fut,
        Fut: Future<Output = Result<T, DurableError>>,
    {
        let run = self.run(ctx.lease().clone(), Some(ctx.metrics().clone()), task);
        tokio::select! {
            r = run => r.map_err(DurableError::into_job_error),
            _ = ctx.cancelled() => Err(DurableError::Cancelled.into_job_error()),
        }
    }
}

#[derive(Debug, Default)]
struct TaskState {
    /// The next step's position.
    next: i64,
    /// Steps up to this position are covered by the checkpoint resumed from.
    resumed_through: Option<i64>,
    /// The names of finished steps, in order.
    recorded: Vec<String>,
    /// Their outputs.
    outputs: Map<String, Value>,
    report: RunReport,
}

#[derive(Debug)]
struct TaskInner {
    runner: TaskRunner,
    lease: LeaseRef,
    /// The node's metrics, when the task runs inside a handler (`run_job`).
    metrics: Option<JobMetrics>,
    state: Mutex<TaskState>,
}

/// Numbers the tool calls made in one step (or outside any step), per (tool, command): the
/// calls' identities in the ledger. Steps run in the same order on every run, so a rerun of a
/// step numbers its calls as the run that crashed did.
#[derive(Debug)]
struct CallScope {
    /// `step 3`, or `task` for calls made outside any step.
    label: String,
    made: Mutex<HashMap<(String, String), u64>>,
}

impl CallScope {
    fn new(label: String) -> Self {
        CallScope {
            label,
            made: Mutex::default(),
        }
    }

    /// The identity of the next call of (tool, command) here: `step 3 #0`, `step 3 #1`, …
    fn next(&self, tool: &str, command: &str) -> String {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let n = made
            .entry((tool.to_owned(), command.to_owned()))
            .or_insert(0);
        let call = format!("{} #{n}", self.label);
        *n += 1;
        call
    }
}

/// One run of a task: its steps, tool calls and LLM calls. Clones share the run (and, inside a
/// step, the step's numbering of tool calls).
#[derive(Debug, Clone)]
pub struct Task {
    inner: Arc<TaskInner>,
    calls: Arc<CallScope>,
}

enum Plan {
    Skip(Value),
    Run { pos: i64, before: Value },
}

impl Task {
    fn state(&self) -> std::sync::MutexGuard<'_, TaskState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lease the task writes with.
    pub fn lease(&self) -> &LeaseRef {
        &self.inner.lease
    }

    /// The checkpoint this run resumed from, if any.
    pub fn resumed_from(&self) -> Option<i64> {
        self.state().report.resumed_from_checkpoint
    }

    /// What the run has done so far.
    pub fn report(&self) -> RunReport {
        self.state().report.clone()
    }

    /// Runs step `name` (names are unique within a task, and steps must be called in the
    /// same order on every run), or returns its recorded output when the checkpoint resumed
    /// from covers it. The step's checkpoint commits with its output and evidence.
    pub async fn step<F, Fut, O>(&self, name: &str, step: F) -> Result<Value, DurableError>
    where
        F: FnOnce(Task) -> Fut,
        Fut: Future<Output = Result<O, DurableError>>,
        O: Into<StepOutput>,
    {
        if name.trim().is_empty() {
            return Err(DurableError::InvalidInput(
                "step name must not be empty".into(),
            ));
        }
        let plan = {
            let mut st = self.state();
            let pos = st.next;
            st.next += 1;
            if st.resumed_through.is_some_and(|through| pos <= through) {
                let recorded = st.recorded.get(pos as usize).cloned().unwrap_or_default();
                if recorded != name {
                    return Err(DurableError::permanent(format!(
                        "step {pos} is {name:?} but the checkpoint recorded {recorded:?}: the task's steps changed since it was checkpointed"
                    )));
                }
                st.report.steps_skipped += 1;
                Plan::Skip(st.outputs.get(name).cloned().unwrap_or(Value::Null))
            } else {
                if st.outputs.contains_key(name) && st.recorded.iter().any(|n| n == name) {
                    return Err(DurableError::InvalidInput(format!(
                        "step name {name:?} is used twice in one task"
                    )));
                }
                // A step after the resume point that ran before: forget its stale record.
                st.recorded.truncate(pos as usize);
                let keep: Vec<String> = st.recorded.clone();
                st.outputs.retain(|k, _| keep.contains(k));
                Plan::Run {
                    pos,
                    before: snapshot(&st),
                }
            }
        };
        let (pos, before) = match plan {
            Plan::Skip(v) => return Ok(v),
            Plan::Run { pos, before } => (pos, before),
        };
        let runner = &self.inner.runner;
        let id = runner
            .checkpoints
            .begin(
                &self.inner.lease,
                NewStep {
                    step: Some(pos),
                    name: name.to_owned(),
                    checkpoint_type: CheckpointType::StateTransition,
                    snapshot: before,
                },
            )
            .await?;
        let in_step = Task {
            inner: self.inner.clone(),
            calls: Arc::new(CallScope::new(format!("step {pos}"))),
        };
        let out: StepOutput = step(in_step)
            .await
            .map_err(|e| e.context(format!("step {name}")))?
            .into();
        let after = {
            let mut st = self.state();
            st.recorded.push(name.to_owned());
            st.outputs.insert(name.to_owned(), out.result.clone());
            snapshot(&st)
        };
        runner
            .checkpoints
            .commit_with(
                &self.inner.lease,
                id,
                &EvidencePack::new(out.evidence),
                Some(&after),
            )
            .await?;
        self.state().report.steps_run += 1;
        Ok(out.result)
    }

    /// Executes a tool through the ledger, or replays its recorded result.
    ///
    /// The call's identity is its position: its step's position and how many calls of the
    /// same tool and command this step made before it (`step 2 #1`; `task #0` outside any
    /// step). So the same command twice in one step executes twice, and after a crash the
    /// rerun of that step replays the two results in the order they were made. Calls are
    /// numbered when they are made: calls of the same command made concurrently should use
    /// [`tool_keyed`](Self::tool_keyed) instead, or their results may be swapped on replay.
    pub async fn tool<F, Fut, O>(
        &self,
        tool: &str,
        command: &str,
        execute: F,
    ) -> Result<ToolResult, DurableError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<O, DurableError>>,
        O: Into<ToolOutput>,
    {
        let call = self.calls.next(tool, command);
        self.tool_call(tool, command, &call, execute).await
    }

    /// [`tool`](Self::tool) with an identity the caller chooses: calls of the same tool and
    /// command with the same `key` in this task are one call (the later ones replay the first),
    /// whichever step makes them. Refuses an empty key.
    pub async fn tool_keyed<F, Fut, O>(
        &self,
        tool: &str,
        command: &str,
        key: &str,
        execute: F,
    ) -> Result<ToolResult, DurableError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<O, DurableError>>,
        O: Into<ToolOutput>,
    {
        if key.is_empty() {
            return Err(DurableError::InvalidInput(format!(
                "tool {tool}: a call's key must not be empty"
            )));
        }
        // Prefixed so that no key can collide with a positional identity.
        self.tool_call(tool, command, &format!("key {key}"), execute)
            .await
    }

    async fn tool_call<F, Fut, O>(
        &self,
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
        let r = self
            .inner
            .runner
            .ledger
            .execute_or_replay(&self.inner.lease, tool, command, call, execute)
            .await?;
        if let Some(m) = &self.inner.metrics {
            m.tool_call(r.replayed);
        }
        let mut st = self.state();
        if r.replayed {
            st.report.tool_replays += 1;
        } else {
            st.report.tool_executions += 1;
        }
        Ok(r)
    }

    /// An LLM output from the cache, scoped to this task's item, or generated once.
    pub async fn llm<F, Fut>(
        &self,
        operation: &str,
        prompt: &str,
        model: &str,
        generate: F,
    ) -> Result<Value, DurableError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Value, DurableError>>,
    {
        let scope = self.inner.lease.item.to_string();
        let c = self
            .inner
            .runner
            .cache
            .get_or_generate(
                &self.inner.lease,
                operation,
                prompt,
                model,
                &scope,
                generate,
            )
            .await?;
        if let Some(m) = &self.inner.metrics {
            m.llm_cache(c.hit);
        }
        let mut st = self.state();
        if c.hit {
            st.report.llm_cache_hits += 1;
        } else {
            st.report.llm_calls += 1;
        }
        Ok(c.output)
    }
}

fn snapshot(st: &TaskState) -> Value {
    json!({
        "runner": SNAPSHOT_VERSION,
        "steps": st.recorded,
        "outputs": st.outputs,
    })
}
