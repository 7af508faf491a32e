//! [`NodeHandle`]: what `start()` returns — enqueue, status, statistics, sweeps, shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorRef};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use leasehold_core::metrics::NodeMetrics;
use leasehold_core::{
    ActionReport, Attempt, Clock, Item, ItemId, ItemSelector, NewItem, PausedKind, RecoveryStats,
    RetryRequest, StatusCounts, Store,
};

use crate::builder::RuntimeConfig;
use crate::clock_sync::{self, ClockSource};
use crate::error::RuntimeError;
use crate::events::NodeEvent;
use crate::faults::FaultInjector;
use crate::monitor::{check_once, MonitorMsg, MonitorOutcome};
use crate::node::NodeCtx;
use crate::reaper::{sweep_once, ReaperMsg};
use crate::registry::RegistryMsg;
use crate::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use crate::wakeups;

/// Why a tree stopped. New reasons may be added: match with a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "exit", content = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TreeExit {
    /// A graceful shutdown finished.
    Shutdown,
    /// The restart intensity was exceeded; the supervisor stopped the tree.
    Escalated(String),
    /// Another process registered this node id after this incarnation's registry row went
    /// stale (a stall or a lost database longer than the dead-after window): the tree stopped
    /// itself, as everything it held is being taken back by the newer incarnation. The store's
    /// message says which incarnation replaced it.
    Superseded(String),
}

/// What a graceful shutdown did, worker by worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Workers that held nothing.
    pub idle: usize,
    /// Workers whose in-flight item finished within the drain timeout.
    pub finished: usize,
    /// Workers whose item went back to pending (no attempt counted).
    pub released: usize,
    /// Workers that did not answer or could not release (their items are left to recovery).
    pub unaccounted: usize,
    /// Whether the registry row was marked stopped.
    pub registry_marked_stopped: bool,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

/// The outcome of one reaper sweep.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum SweepOutcome {
    /// The sweep ran.
    Swept(RecoveryStats),
    /// The reaper requeued nothing because this node cannot trust its view of the store.
    StoodDown(String),
}

/// The reaper's running totals (seed 000's `RecoverySweep.get_statistics`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReaperStats {
    /// Sweeps run (not counting stand-downs).
    pub total_scans: u64,
    /// Items requeued.
    pub total_recovered: u64,
    /// Items dead-lettered.
    pub total_failed: u64,
    /// Expired leases left alone because their owner answered.
    pub total_skipped_alive: u64,
    /// Sweeps skipped because the store was unreachable from this node.
    pub stand_downs: u64,
    /// The last sweep's duration.
    pub last_scan_duration: Duration,
}

/// The node's running totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuntimeStats {
    /// This node's id.
    pub node_id: String,
    /// This start's incarnation.
    pub incarnation: i64,
    /// Workers in the tree.
    pub workers: usize,
    /// Workers holding an item now.
    pub busy_workers: usize,
    /// Items acquired.
    pub acquired: u64,
    /// Items completed (acknowledged after the commit).
    pub completed: u64,
    /// Failed attempts sent back to pending.
    pub retried: u64,
    /// Items dead-lettered by a handler failure.
    pub dead_lettered: u64,
    /// Leases lost while working (taken over, renewals failing, heartbeat dead).
    pub lease_lost: u64,
    /// Handler panics (each counted as a failed attempt).
    pub handler_panics: u64,
    /// Items released on graceful shutdown.
    pub released: u64,
    /// Items taken back by `recover_mine` on worker (re)starts.
    pub recovered_on_start: u64,
    /// Child restarts (workers, reaper, registry) and heartbeat deaths.
    pub restarts: u64,
    /// Heartbeat children that died while keeping a lease.
    pub heartbeat_deaths: u64,
    /// Attempts that ran past their execution timeout (each also counted as retried or
    /// dead-lettered).
    pub timed_out: u64,
    /// Attempts an operator cancelled while this node ran them (the heartbeat learned it at a
    /// renewal; the worker ended them `cancelled`).
    pub cancelled: u64,
    /// The reaper's totals.
    pub reaper: ReaperStats,
    /// The monitor's totals.
    pub monitor: MonitorStats,
}

/// The monitor's running totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MonitorStats {
    /// Node incarnations found dead (one alert each).
    pub dead_nodes: u64,
    /// Items of dead or stopped incarnations requeued.
    pub recovered: u64,
    /// Items of dead or stopped incarnations dead-lettered (attempts spent).
    pub dead_lettered: u64,
    /// Checks skipped because the store was unreachable from this node.
    pub stand_downs: u64,
}

/// A running node. Dropping the handle does not stop the tree: call
/// [`shutdown`](NodeHandle::shutdown).
pub struct NodeHandle {
    pub(crate) ctx: Arc<NodeCtx>,
    supervisor: ActorRef<SupervisorMsg>,
    join: tokio::sync::Mutex<Option<ractor::concurrency::JoinHandle<()>>>,
    /// The task waking idle workers on the store's wake-ups, when the store has them; it ends
    /// by itself once the tree stops.
    listener: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    exit: watch::Receiver<Option<TreeExit>>,
    /// Where lease times come from.
    clock_source: ClockSource,
    /// Set when [`shutdown`](NodeHandle::shutdown) begins: [`state`](NodeHandle::state) says
    /// `Draining` until the tree has stopped.
    draining: Arc<AtomicBool>,
    /// The actor that represents the tree in the user's supervision tree, when it was started
    /// with [`start_linked`](crate::LeaseholdBuilder::start_linked).
    anchor: OnceLock<ActorCell>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("node_id", &self.ctx.node_id)
            .field("incarnation", &self.ctx.incarnation)
            .finish()
    }
}

impl NodeHandle {
    pub(crate) async fn start(
        ctx: Arc<NodeCtx>,
        clock: clock_sync::Chosen,
    ) -> Result<NodeHandle, RuntimeError> {
        let (tx, rx) = watch::channel(None);
        // Listening before the workers' first poll: what commits before it is found by that
        // poll, what commits after it is announced.
        let wakeups = wakeups::subscribe(&ctx).await;
        let (supervisor, join) = Actor::spawn(
            Some(ctx.actor_name("supervisor")),
            Supervisor,
            SupervisorArgs {
                ctx: ctx.clone(),
                exit: tx,
            },
        )
        .await
        .map_err(|e| RuntimeError::Spawn {
            what: "supervisor".into(),
            reason: e.to_string(),
        })?;
        let listener = wakeups.map(|source| wakeups::spawn(ctx.clone(), source, rx.clone()));
        // Ends by itself once the tree stops, like the listener.
        if let Some(shared) = clock.shared {
            clock_sync::spawn_resync(
                ctx.node_id.clone(),
                shared,
                ctx.cfg.clock_resync,
                rx.clone(),
            );
        }
        tracing::info!(node = %ctx.node_id, incarnation = ctx.incarnation, workers = ctx.cfg.workers, kinds = ?ctx.kinds, listening = listener.is_some(), clock = ?clock.source, "leasehold node started");
        Ok(NodeHandle {
            ctx,
            supervisor,
            join: tokio::sync::Mutex::new(Some(join)),
            listener: tokio::sync::Mutex::new(listener),
            exit: rx,
            clock_source: clock.source,
            draining: Arc::new(AtomicBool::new(false)),
            anchor: OnceLock::new(),
        })
    }

    /// Where this node's lease times come from: the clock given to the builder, the
    /// database's (PostgreSQL, by default), or the system's.
    pub fn clock_source(&self) -> ClockSource {
        self.clock_source
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.ctx.node_id
    }

    /// This start's incarnation number.
    pub fn incarnation(&self) -> i64 {
        self.ctx.incarnation
    }

    /// The stable owner id of worker `i` (`{node_id}/w{i}`).
    pub fn owner_id(&self, i: usize) -> String {
        self.ctx.owner_id(i)
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.ctx.cfg
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.ctx.store
    }

    /// The node's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.ctx.clock
    }

    /// A new item of `kind` with the node's configured retry budget.
    pub fn item(&self, kind: impl Into<String>, input: Value) -> NewItem {
        NewItem::new(kind, input).max_attempts(self.ctx.cfg.base.max_attempts)
    }

    /// Enqueues one item and wakes an idle worker at once.
    pub async fn enqueue(&self, item: NewItem) -> Result<ItemId, RuntimeError> {
        let id = self
            .ctx
            .store
            .item_enqueue(item, self.ctx.clock.now())
            .await?;
        self.ctx.wake(1);
        Ok(id)
    }

    /// Enqueues a batch in one transaction and wakes as many idle workers.
    pub async fn enqueue_many(&self, items: Vec<NewItem>) -> Result<Vec<ItemId>, RuntimeError> {
        let ids = self
            .ctx
            .store
            .items_enqueue(items, self.ctx.clock.now())
            .await?;
        self.ctx.wake(ids.len());
        Ok(ids)
    }

    /// An operator's retry ([`Store::items_retry`]): failed or cancelled items back to
    /// pending with a fresh budget; wakes as many idle workers.
    pub async fn retry(&self, req: &RetryRequest) -> Result<ActionReport, RuntimeError> {
        let report = self
            .ctx
            .store
            .items_retry(req, self.ctx.clock.now())
            .await?;
        if !report.dry_run {
            self.ctx.wake(report.items.len());
        }
        Ok(report)
    }

    /// An operator's cancel ([`Store::items_cancel`]): pending items are cancelled; running
    /// ones are marked, and their holders (on this node or any other) cancel their handlers at
    /// their next renewal, ending them `cancelled`.
    pub async fn cancel(
        &self,
        target: &ItemSelector,
        dry_run: bool,
    ) -> Result<ActionReport, RuntimeError> {
        Ok(self
            .ctx
            .store
            .items_cancel(target, dry_run, self.ctx.clock.now())
            .await?)
    }

    /// An operator's delete of finished items ([`Store::items_delete`]).
    pub async fn delete(
        &self,
        target: &ItemSelector,
        dry_run: bool,
    ) -> Result<ActionReport, RuntimeError> {
        Ok(self.ctx.store.items_delete(target, dry_run).await?)
    }

    /// Pauses `kind` on every node of the store ([`Store::kind_pause`]); in-flight work
    /// finishes. Whether it was not paused already.
    pub async fn pause(&self, kind: &str) -> Result<bool, RuntimeError> {
        Ok(self
            .ctx
            .store
            .kind_pause(kind, self.ctx.clock.now())
            .await?)
    }

    /// Resumes `kind` ([`Store::kind_resume`]) and wakes this node's idle workers. Whether it
    /// was paused.
    pub async fn resume(&self, kind: &str) -> Result<bool, RuntimeError> {
        let resumed = self.ctx.store.kind_resume(kind).await?;
        if resumed {
            self.ctx.wake(self.ctx.cfg.workers);
        }
        Ok(resumed)
    }

    /// The paused kinds ([`Store::kinds_paused`]).
    pub async fn paused_kinds(&self) -> Result<Vec<PausedKind>, RuntimeError> {
        Ok(self.ctx.store.kinds_paused().await?)
    }

    /// An item's ended attempts, oldest first ([`Store::item_attempts`]).
    pub async fn attempts(&self, id: ItemId) -> Result<Vec<Attempt>, RuntimeError> {
        Ok(self.ctx.store.item_attempts(id).await?)
    }

    /// Answers a parked item's question ([`Store::item_decide`]): it goes back to pending
    /// with the answer, and an idle worker is woken for it. An item that is not awaiting a
    /// decision, or an answer its question does not accept, is refused (the error names the
    /// status or the answer) and changes nothing.
    pub async fn decide(&self, id: ItemId, answer: &str) -> Result<Item, RuntimeError> {
        let item = self
            .ctx
            .store
            .item_decide(id, answer, self.ctx.clock.now())
            .await?;
        self.ctx.wake(1);
        Ok(item)
    }

    /// Counts of items by status.
    pub async fn status(&self) -> Result<StatusCounts, RuntimeError> {
        Ok(self.ctx.store.items_count().await?)
    }

    /// The node's running totals.
    pub fn stats(&self) -> RuntimeStats {
        let m = &self.ctx.metrics;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        RuntimeStats {
            node_id: self.ctx.node_id.clone(),
            incarnation: self.ctx.incarnation,
            workers: self.ctx.cfg.workers,
            busy_workers: self.ctx.busy_items().len(),
            acquired: get(&m.acquired),
            completed: get(&m.completed),
            retried: get(&m.retried),
            dead_lettered: get(&m.dead_lettered),
            lease_lost: get(&m.lease_lost),
            handler_panics: get(&m.handler_panics),
            released: get(&m.released),
            recovered_on_start: get(&m.recovered_on_start),
            restarts: get(&m.restarts),
            heartbeat_deaths: get(&m.heartbeat_deaths),
            timed_out: get(&m.timed_out),
            cancelled: get(&m.cancelled),
            reaper: ReaperStats {
                total_scans: get(&m.reaper_scans),
                total_recovered: get(&m.reaper_recovered),
                total_failed: get(&m.reaper_failed),
                total_skipped_alive: get(&m.reaper_skipped_alive),
                stand_downs: get(&m.reaper_stand_downs),
                last_scan_duration: Duration::from_micros(get(&m.reaper_last_scan_us)),
            },
            monitor: MonitorStats {
                dead_nodes: get(&m.monitor_dead_nodes),
                recovered: get(&m.monitor_recovered),
                dead_lettered: get(&m.monitor_dead_lettered),
                stand_downs: get(&m.monitor_stand_downs),
            },
        }
    }

    /// What this node has counted since it started, by kind (attempts started, completed,
    /// retried, failed, timed out, lease lost; LLM cache hits and misses, tool executions and
    /// replays; run time and queue wait histograms), and node-wide (items recovered by
    /// recover_mine, the reaper and the monitor; lease renewals that succeeded and failed):
    /// the same numbers the registry row publishes at every heartbeat for `/metrics`.
    pub fn metrics(&self) -> NodeMetrics {
        self.ctx.recorder.snapshot(&self.ctx.metrics)
    }

    /// Writes this node's registry row now, its metrics included, instead of at the next
    /// heartbeat; returns whether it reached the store (false too once a newer incarnation
    /// holds the row). (A graceful shutdown writes it last too.)
    pub async fn publish_metrics(&self) -> Result<bool, RuntimeError> {
        self.ensure_running()?;
        let registry: ActorRef<RegistryMsg> =
            ractor::registry::where_is(self.ctx.actor_name("registry"))
                .map(ActorRef::from)
                .ok_or_else(|| RuntimeError::NotRunning("the registry is restarting".into()))?;
        match registry
            .call(RegistryMsg::Beat, Some(Duration::from_secs(60)))
            .await
        {
            Ok(CallResult::Success(ok)) => Ok(ok),
            Ok(_) => Err(RuntimeError::NotRunning(
                "the registry did not answer".into(),
            )),
            Err(e) => Err(RuntimeError::NotRunning(format!(
                "the registry is gone: {e}"
            ))),
        }
    }

    /// Runs one reaper sweep now (through the reaper actor, or directly when the node runs
    /// without one).
    pub async fn sweep_now(&self) -> Result<SweepOutcome, RuntimeError> {
        self.ensure_running()?;
        if !self.ctx.cfg.reaper {
            return Ok(sweep_once(&self.ctx).await);
        }
        let reaper: ActorRef<ReaperMsg> = ractor::registry::where_is(self.ctx.actor_name("reaper"))
            .map(ActorRef::from)
            .ok_or_else(|| RuntimeError::NotRunning("the reaper is restarting".into()))?;
        match reaper
            .call(ReaperMsg::SweepNow, Some(Duration::from_secs(120)))
            .await
        {
            Ok(CallResult::Success(outcome)) => Ok(outcome),
            Ok(_) => Err(RuntimeError::NotRunning("the reaper did not answer".into())),
            Err(e) => Err(RuntimeError::NotRunning(format!("the reaper is gone: {e}"))),
        }
    }

    /// Runs one monitor check now: takes back the items of node incarnations the registry
    /// judges dead (or stopped with items held) and alerts on newly dead ones. Through the
    /// monitor actor when it runs (so its alerts are not repeated), else directly (every
    /// dead node found counts as newly seen).
    pub async fn monitor_now(&self) -> Result<MonitorOutcome, RuntimeError> {
        self.ensure_running()?;
        if !self.ctx.cfg.monitor {
            return Ok(check_once(&self.ctx, &mut Default::default()).await);
        }
        let monitor: ActorRef<MonitorMsg> =
            ractor::registry::where_is(self.ctx.actor_name("monitor"))
                .map(ActorRef::from)
                .ok_or_else(|| RuntimeError::NotRunning("the monitor is restarting".into()))?;
        match monitor
            .call(MonitorMsg::CheckNow, Some(Duration::from_secs(120)))
            .await
        {
            Ok(CallResult::Success(outcome)) => Ok(outcome),
            Ok(_) => Err(RuntimeError::NotRunning(
                "the monitor did not answer".into(),
            )),
            Err(e) => Err(RuntimeError::NotRunning(format!(
                "the monitor is gone: {e}"
            ))),
        }
    }

    /// Stops the tree gracefully: workers stop acquiring, in-flight handlers get `drain` to
    /// finish, whatever is still running is cancelled and released without counting an attempt,
    /// and the registry row is marked stopped (invariant 7).
    pub async fn shutdown(&self, drain: Duration) -> Result<ShutdownReport, RuntimeError> {
        self.ensure_running()?;
        self.draining.store(true, Ordering::Relaxed);
        let answer = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Shutdown { drain, reply },
                Some(drain + Duration::from_secs(60)),
            )
            .await;
        let report = match answer {
            Ok(CallResult::Success(r)) => r,
            Ok(_) | Err(_) => {
                return Err(RuntimeError::NotRunning(
                    "the supervisor did not complete the shutdown".into(),
                ))
            }
        };
        if let Some(join) = self.join.lock().await.take() {
            let _ = join.await;
        }
        // The exit is set by now, so the listener is ending: when shutdown returns, nothing of
        // the node is left running.
        if let Some(listener) = self.listener.lock().await.take() {
            let _ = listener.await;
        }
        // A linked tree's anchor stops on its own once it sees the exit; waiting for it here
        // means the user's supervisor has its event before this returns.
        if let Some(anchor) = self.anchor.get() {
            let _ = anchor
                .stop_and_wait(
                    Some(crate::embed::SHUTDOWN_REASON.into()),
                    Some(Duration::from_secs(10)),
                )
                .await;
        }
        Ok(report)
    }

    /// Waits for SIGINT or SIGTERM, then shuts down with the configured drain timeout.
    pub async fn shutdown_on_signal(&self) -> Result<ShutdownReport, RuntimeError> {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down gracefully");
        self.shutdown(self.ctx.cfg.drain_timeout).await
    }

    /// Waits until the tree stops (a shutdown, or an escalation) and says why.
    pub async fn wait(&self) -> TreeExit {
        let mut rx = self.exit.clone();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                return rx
                    .borrow()
                    .clone()
                    .unwrap_or(TreeExit::Escalated("the supervisor ended".into()));
            }
        }
    }

    /// Why the tree stopped, if it has.
    pub fn exit_status(&self) -> Option<TreeExit> {
        self.exit.borrow().clone()
    }

    /// Subscribes to the node's events from now on.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<NodeEvent> {
        self.ctx.events.subscribe()
    }

    /// The fault-injection harness for this node.
    pub fn faults(&self) -> FaultInjector {
        FaultInjector::new(self.ctx.clone())
    }

    /// Links the tree into a user's supervision tree through an anchor actor (see
    /// [`embed`](crate::embed)).
    pub(crate) async fn link_to(&self, supervisor: ActorCell) -> Result<(), RuntimeError> {
        let args = crate::embed::AnchorArgs {
            node_id: self.ctx.node_id.clone(),
            incarnation: self.ctx.incarnation,
            supervisor: self.supervisor.clone(),
            exit: self.exit.clone(),
            drain: self.ctx.cfg.drain_timeout,
            draining: self.draining.clone(),
        };
        let anchor =
            crate::embed::spawn_anchor(self.ctx.actor_name("anchor"), args, supervisor).await?;
        let _ = self.anchor.set(anchor);
        Ok(())
    }

    /// The tree's actor in the user's supervision tree, if it was started with
    /// [`start_linked`](crate::LeaseholdBuilder::start_linked): the cell the user's
    /// supervisor receives events about.
    pub fn anchor(&self) -> Option<&ActorCell> {
        self.anchor.get()
    }

    /// A receiver of the tree's exit (`None` while it runs).
    pub(crate) fn exit_receiver(&self) -> watch::Receiver<Option<TreeExit>> {
        self.exit.clone()
    }

    /// Whether a graceful shutdown through this handle has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// `Ok` while the tree runs; otherwise the error every handle call that needs it returns.
    pub(crate) fn ensure_running(&self) -> Result<(), RuntimeError> {
        match self.exit_status() {
            None => Ok(()),
            Some(TreeExit::Shutdown) => Err(RuntimeError::NotRunning("it was shut down".into())),
            Some(TreeExit::Escalated(why)) => Err(RuntimeError::Escalated(why)),
            Some(TreeExit::Superseded(why)) => Err(RuntimeError::Superseded(why)),
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
