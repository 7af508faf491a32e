//! The node's supervisor: spawns the registry, the workers, the reaper and (when configured)
//! the monitor; restarts whichever fails under the same name and owner id; escalates when
//! restarts exceed the intensity; drives the graceful shutdown.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::watch;

use crate::events::NodeEvent;
use crate::handle::{ShutdownReport, TreeExit};
use crate::monitor::Monitor;
use crate::node::{Metrics, NodeCtx};
use crate::reaper::Reaper;
use crate::registry::{Registry, RegistryMsg};
use crate::schedule::Scheduler;
use crate::worker::{DrainOutcome, Worker, WorkerArgs, WorkerMsg};

/// How long an escalation waits to mark its registry row stopped.
const ESCALATION_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages the supervisor handles.
pub(crate) enum SupervisorMsg {
    /// Graceful shutdown with this drain timeout.
    Shutdown {
        drain: Duration,
        reply: RpcReplyPort<ShutdownReport>,
    },
    /// A worker's heartbeat child died (counted against the restart intensity).
    HeartbeatDied { worker: usize, reason: String },
    /// Try again to restart a child whose restart failed.
    Respawn(Child),
    /// The registry found a newer incarnation of this node id in its row: stop the tree.
    Superseded {
        /// The incarnation that replaced this one.
        by: i64,
        /// The store's message.
        reason: String,
    },
}

/// The supervisor's direct children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Child {
    Worker(usize),
    Reaper,
    Registry,
    Monitor,
    Scheduler,
}

pub(crate) struct Supervisor;

pub(crate) struct SupervisorArgs {
    pub(crate) ctx: Arc<NodeCtx>,
    pub(crate) exit: watch::Sender<Option<TreeExit>>,
}

pub(crate) struct SupervisorState {
    ctx: Arc<NodeCtx>,
    exit: watch::Sender<Option<TreeExit>>,
    children: Vec<(Child, ActorCell)>,
    restarts: VecDeque<tokio::time::Instant>,
    stopping: bool,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            ctx: args.ctx,
            exit: args.exit,
            children: Vec::new(),
            restarts: VecDeque::new(),
            stopping: false,
        };
        // The registry row first, so remote reapers see this incarnation before its workers
        // hold anything.
        state.spawn(&myself, Child::Registry).await?;
        for i in 0..state.ctx.cfg.workers {
            state.spawn(&myself, Child::Worker(i)).await?;
        }
        if state.ctx.cfg.reaper {
            state.spawn(&myself, Child::Reaper).await?;
        }
        if state.ctx.cfg.monitor {
            state.spawn(&myself, Child::Monitor).await?;
        }
        if !state.ctx.schedules.is_empty() {
            state.spawn(&myself, Child::Scheduler).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Shutdown { drain, reply } => {
                let report = state.shutdown(drain).await;
                let _ = state.exit.send(Some(TreeExit::Shutdown));
                let _ = reply.send(report);
                myself.stop(Some("graceful shutdown".into()));
            }
            SupervisorMsg::HeartbeatDied { worker, reason } => {
                if !state.stopping {
                    if let Err(reason) =
                        state.count_restart(&format!("heartbeat of worker {worker}: {reason}"))
                    {
                        state.escalate(&myself, reason).await;
                    }
                }
            }
            SupervisorMsg::Respawn(child) => {
                if !state.stopping && state.cell(child).is_none() {
                    state.restart(&myself, child).await;
                }
            }
            SupervisorMsg::Superseded { by, reason } => {
                if !state.stopping {
                    tracing::error!(node = %state.ctx.node_id, incarnation = state.ctx.incarnation, by, %reason, "superseded: another process runs under this node id; stopping the tree");
                    let event = NodeEvent::Superseded {
                        incarnation: state.ctx.incarnation,
                        by,
                    };
                    state
                        .stop_tree(&myself, TreeExit::Superseded(reason), event)
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Restarts a child that failed or was killed. Overridden because ractor's default stops
    /// the supervisor when any child ends.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!(
                    "terminated: {}",
                    reason.unwrap_or_else(|| "no reason".into())
                ),
            ),
            _ => return Ok(()),
        };
        let Some(pos) = state
            .children
            .iter()
            .position(|(_, c)| c.get_id() == cell.get_id())
        else {
            return Ok(());
        };
        let (child, _) = state.children.remove(pos);
        if state.stopping {
            return Ok(());
        }
        tracing::warn!(?child, node = %state.ctx.node_id, reason = %why, "child ended; restarting it");
        match state.count_restart(&format!("{child:?} {why}")) {
            Ok(()) => {
                // Announced before the replacement starts, so its own start event always follows.
                state.ctx.emit(NodeEvent::ChildRestarted {
                    child: format!("{child:?}"),
                });
                state.restart(&myself, child).await;
            }
            Err(reason) => state.escalate(&myself, reason).await,
        }
        Ok(())
    }
}

impl SupervisorState {
    fn cell(&self, child: Child) -> Option<&ActorCell> {
        self.children
            .iter()
            .find(|(c, _)| *c == child)
            .map(|(_, cell)| cell)
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        child: Child,
    ) -> Result<(), ActorProcessingErr> {
        let ctx = self.ctx.clone();
        let sup = myself.get_cell();
        let cell = match child {
            Child::Worker(index) => Actor::spawn_linked(
                Some(ctx.worker_name(index)),
                Worker,
                WorkerArgs {
                    ctx: ctx.clone(),
                    index,
                },
                sup,
            )
            .await?
            .0
            .get_cell(),
            Child::Reaper => {
                Actor::spawn_linked(Some(ctx.actor_name("reaper")), Reaper, ctx.clone(), sup)
                    .await?
                    .0
                    .get_cell()
            }
            Child::Monitor => {
                Actor::spawn_linked(Some(ctx.actor_name("monitor")), Monitor, ctx.clone(), sup)
                    .await?
                    .0
                    .get_cell()
            }
            Child::Scheduler => Actor::spawn_linked(
                Some(ctx.actor_name("scheduler")),
                Scheduler,
                ctx.clone(),
                sup,
            )
            .await?
            .0
            .get_cell(),
            Child::Registry => {
                let started = ctx.clock.now();
                Actor::spawn_linked(
                    Some(ctx.actor_name("registry")),
                    Registry,
                    (ctx.clone(), started, myself.clone()),
                    sup,
                )
                .await?
                .0
                .get_cell()
            }
        };
        self.children.push((child, cell));
        Ok(())
    }

    async fn restart(&mut self, myself: &ActorRef<SupervisorMsg>, child: Child) {
        if let Err(e) = self.spawn(myself, child).await {
            tracing::warn!(?child, error = %e, "restart failed; trying again shortly");
            myself.send_after(Duration::from_millis(20), move || {
                SupervisorMsg::Respawn(child)
            });
        }
    }

    /// Records one restart; `Err(reason)` when the intensity is exceeded (the caller
    /// escalates).
    fn count_restart(&mut self, what: &str) -> Result<(), String> {
        Metrics::bump(&self.ctx.metrics.restarts);
        let now = tokio::time::Instant::now();
        let window = self.ctx.cfg.restart_window;
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() as u64 > u64::from(self.ctx.cfg.max_restarts) {
            return Err(format!(
                "restart intensity exceeded: {} restarts within {:?} (limit {}); last: {what}",
                self.restarts.len(),
                window,
                self.ctx.cfg.max_restarts
            ));
        }
        Ok(())
    }

    /// Gives up: kills every child, marks this incarnation stopped in the registry, publishes
    /// the exit and the event, and stops.
    async fn escalate(&mut self, myself: &ActorRef<SupervisorMsg>, reason: String) {
        tracing::error!(node = %self.ctx.node_id, %reason, "escalating: stopping the tree");
        let event = NodeEvent::Escalated {
            reason: reason.clone(),
        };
        self.stop_tree(myself, TreeExit::Escalated(reason), event)
            .await;
    }

    /// Stops the tree without a drain: kills every child, marks this incarnation stopped in
    /// the registry (a superseded incarnation's row is no longer its own, and stays as it is),
    /// publishes `exit` and `event`, and stops.
    async fn stop_tree(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        exit: TreeExit,
        event: NodeEvent,
    ) {
        self.stopping = true;
        // Nothing of this incarnation may run once its row says stopped (a killed worker's
        // handler is cancelled, and aborted after the cancel grace; its writes are fenced).
        for (_, cell) in std::mem::take(&mut self.children) {
            let _ = cell.kill_and_wait(Some(Duration::from_secs(10))).await;
        }
        // Marked stopped so that a new tree under this node id (the user's supervisor acting
        // on the escalation) starts at once instead of being refused with NodeIdInUse, and its
        // recover_mine takes back what these workers held. Best effort, and bounded: the store
        // may be why the tree gave up; then the row goes silent and is judged dead instead.
        let now = self.ctx.clock.now();
        let stop = self
            .ctx
            .store
            .node_stop(&self.ctx.node_id, self.ctx.incarnation, now);
        match tokio::time::timeout(ESCALATION_STOP_TIMEOUT, stop).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(node = %self.ctx.node_id, error = %e, "could not mark the escalated incarnation stopped")
            }
            Err(_) => {
                tracing::warn!(node = %self.ctx.node_id, "marking the escalated incarnation stopped timed out")
            }
        }
        let reason = match &exit {
            TreeExit::Escalated(r) | TreeExit::Superseded(r) => r.clone(),
            TreeExit::Shutdown => "shut down".to_string(),
        };
        let _ = self.exit.send(Some(exit));
        self.ctx.emit(event);
        myself.stop(Some(reason));
    }

    /// Invariant 7: stop acquiring, let in-flight work finish within `drain`, release the rest,
    /// then stop the reaper and mark the registry row stopped.
    async fn shutdown(&mut self, drain: Duration) -> ShutdownReport {
        self.stopping = true;
        let started = std::time::Instant::now();
        let workers: Vec<ActorRef<WorkerMsg>> = self
            .children
            .iter()
            .filter(|(c, _)| matches!(c, Child::Worker(_)))
            .map(|(_, cell)| ActorRef::from(cell.clone()))
            .collect();
        let answers = join_all(workers.iter().map(|w| {
            w.call(
                |reply| WorkerMsg::Drain {
                    timeout: drain,
                    reply,
                },
                Some(drain + Duration::from_secs(10)),
            )
        }))
        .await;
        let mut report = ShutdownReport::default();
        for answer in answers {
            match answer {
                Ok(CallResult::Success(DrainOutcome::Idle)) => report.idle += 1,
                Ok(CallResult::Success(DrainOutcome::Finished)) => report.finished += 1,
                Ok(CallResult::Success(DrainOutcome::Released)) => report.released += 1,
                _ => report.unaccounted += 1,
            }
        }
        for judge in [Child::Scheduler, Child::Reaper, Child::Monitor] {
            if let Some(cell) = self.cell(judge).cloned() {
                let _ = cell
                    .stop_and_wait(None, Some(Duration::from_secs(10)))
                    .await;
            }
        }
        if let Some(registry) = self.cell(Child::Registry).cloned() {
            let registry: ActorRef<RegistryMsg> = ActorRef::from(registry);
            report.registry_marked_stopped = matches!(
                registry
                    .call(RegistryMsg::MarkStopped, Some(Duration::from_secs(10)))
                    .await,
                Ok(CallResult::Success(true))
            );
        }
        for (_, cell) in &self.children {
            let _ = cell
                .stop_and_wait(None, Some(Duration::from_secs(10)))
                .await;
        }
        report.elapsed = started.elapsed();
        tracing::info!(node = %self.ctx.node_id, ?report, "graceful shutdown complete");
        report
    }
}
