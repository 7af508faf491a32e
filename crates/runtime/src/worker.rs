//! The worker actor: recover_mine on (re)start, acquire without busy polling, run the handler as
//! a task beside its heartbeat child, settle the result with fencing, answer the reaper's pings,
//! drain on graceful stop.
//!
//! The heartbeat child lives as long as the worker (it is told which lease to keep), so taking
//! an item costs messages, not an actor spawn. Acquisitions, completions and failures go
//! through the store as single calls; the SQLite store group-commits the ones that arrive
//! together from many workers, and answers each only after its transaction commits.
//!
//! Layout: this file holds the messages, the actor, recovery and polling; [`task`] the attempt
//! in hand and its start; [`settle`] every way an attempt ends (written, failed, parked, lost,
//! timed out, cancelled, released).

mod settle;
mod task;

use std::sync::Arc;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::Value;

use leasehold_core::{AcquireRequest, ItemId, NewItem, Timestamp};

use crate::events::NodeEvent;
use crate::handler::JobError;
use crate::heartbeat::{Heartbeat, HeartbeatArgs, HeartbeatMsg};
use crate::node::{Metrics, NodeCtx};
use crate::supervisor::SupervisorMsg;
use task::Current;

/// The shortest idle wait; doubles up to the poll interval while nothing is found.
const MIN_IDLE_BACKOFF: Duration = Duration::from_millis(5);
/// The first wait after a failed `recover_mine`; doubles up to [`MAX_RECOVER_BACKOFF`].
const MIN_RECOVER_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between `recover_mine` attempts while the store is down. A worker whose
/// store is down keeps trying at this pace instead of failing: a restart would only run the
/// same call against the same dead store and spend the supervisor's restart intensity, so an
/// outage of a minute would escalate the whole tree.
const MAX_RECOVER_BACKOFF: Duration = Duration::from_secs(5);

/// Messages a worker handles.
pub(crate) enum WorkerMsg {
    /// Run `recover_mine` (sent by `post_start`, then by itself after a backoff while the store
    /// fails); the worker takes no work until it has succeeded.
    Recover,
    /// Look for work (`woken`: sent by an enqueue through the handle).
    Poll { woken: bool },
    /// The handler task finished.
    HandlerDone {
        item: ItemId,
        epoch: i64,
        outcome: HandlerOutcome,
    },
    /// The heartbeat renewed the lease.
    Renewed {
        item: ItemId,
        epoch: i64,
        expires_at: Timestamp,
    },
    /// The heartbeat lost the lease (taken over, or too many failed renewals).
    LeaseLost {
        item: ItemId,
        epoch: i64,
        reason: String,
    },
    /// An operator cancelled the item at (item, epoch): the heartbeat's renewal was refused
    /// with `CancelRequested`.
    CancelRequested { item: ItemId, epoch: i64 },
    /// The lease deadline of an item whose heartbeat died.
    LeaseLapsed { item: ItemId, epoch: i64 },
    /// The attempt at (item, epoch) ran past its execution timeout (sent by the worker's own
    /// timer, armed when the item was started).
    TimedOut { item: ItemId, epoch: i64 },
    /// The reaper asks: do you still hold and work on (item, epoch)?
    Ping {
        item: ItemId,
        epoch: i64,
        reply: RpcReplyPort<bool>,
    },
    /// Graceful stop: take nothing new, finish or release what is in hand.
    Drain {
        timeout: Duration,
        reply: RpcReplyPort<DrainOutcome>,
    },
    /// The drain timeout passed.
    DrainTimeout,
    /// Fault injection: panic inside the actor.
    Crash(String),
    /// Fault injection: the current heartbeat child, if any.
    HeartbeatCell(RpcReplyPort<Option<ActorCell>>),
}

/// How a handler task ended.
pub(crate) enum HandlerOutcome {
    /// The output, and the follow-ups the handler asked for (committed with the completion).
    Output(Value, Vec<NewItem>),
    Failed(JobError),
    Panicked(String),
}

/// How a worker's drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainOutcome {
    /// It held nothing.
    Idle,
    /// Its in-flight item finished (completed or failed) within the timeout.
    Finished,
    /// Its in-flight item went back to pending without counting an attempt.
    Released,
    /// The release was refused or failed; the item is left to recovery.
    NotReleased,
}

pub(crate) struct Worker;

pub(crate) struct WorkerArgs {
    pub(crate) ctx: Arc<NodeCtx>,
    pub(crate) index: usize,
}

pub(crate) struct WorkerState {
    ctx: Arc<NodeCtx>,
    index: usize,
    request: AcquireRequest,
    /// The heartbeat child; `None` after it died, until the next poll starts a new one.
    heartbeat: Option<ActorRef<HeartbeatMsg>>,
    current: Option<Current>,
    poll_timer: Option<JoinHandle<Result<(), ractor::MessagingErr<WorkerMsg>>>>,
    idle_backoff: Duration,
    draining: bool,
    drain_reply: Option<RpcReplyPort<DrainOutcome>>,
    /// Whether `recover_mine` has succeeded for this incarnation of the worker (invariant 6:
    /// nothing is acquired before).
    recovered: bool,
    /// The wait before the next `recover_mine` attempt.
    recover_backoff: Duration,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let ctx = args.ctx;
        let owner = ctx.owner_id(args.index);
        let request = AcquireRequest {
            owner,
            node_id: ctx.node_id.clone(),
            incarnation: ctx.incarnation,
            kinds: ctx.kinds.clone(),
            group_id: ctx.cfg.group.clone(),
            limit: 1,
            lease: ctx.cfg.base.lease,
        };
        ctx.set_busy(args.index, None);
        Ok(WorkerState {
            ctx,
            index: args.index,
            request,
            heartbeat: None,
            current: None,
            poll_timer: None,
            idle_backoff: MIN_IDLE_BACKOFF,
            draining: false,
            drain_reply: None,
            recovered: false,
            recover_backoff: MIN_RECOVER_BACKOFF,
        })
    }

    /// recover_mine before anything else (invariant 6): whatever this owner id still holds was
    /// left by a previous incarnation of this worker, which is gone. Sent as a message, so that
    /// while the store is down the worker still answers drains and pings between attempts.
    async fn post_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        _state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        myself.cast(WorkerMsg::Recover)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Recover => state.recover(&myself).await?,
            WorkerMsg::Poll { woken } => state.poll(&myself, woken).await,
            WorkerMsg::HandlerDone {
                item,
                epoch,
                outcome,
            } => {
                let Some(cur) = state.current.take_if(|c| c.is(item, epoch)) else {
                    tracing::debug!(item = %item, epoch, "dropping the result of a lease this worker no longer holds");
                    return Ok(());
                };
                // Only a worker that can keep a lease takes its next item alongside.
                let take_next = !state.draining && state.heartbeat.is_some();
                match state.settle(cur, outcome, take_next).await {
                    Some(next) => state.start(&myself, next).await,
                    None => state.after_item(&myself),
                }
            }
            WorkerMsg::Renewed {
                item,
                epoch,
                expires_at,
            } => {
                if let Some(cur) = state.current.as_mut().filter(|c| c.is(item, epoch)) {
                    cur.expires_at = expires_at;
                }
            }
            WorkerMsg::LeaseLost {
                item,
                epoch,
                reason,
            } => {
                if let Some(cur) = state.current.take_if(|c| c.is(item, epoch)) {
                    tracing::warn!(item = %item, epoch, owner = %state.request.owner, %reason, "lease lost: cancelling the handler and dropping its result");
                    Metrics::bump(&state.ctx.metrics.lease_lost);
                    state.ctx.recorder.kind(&cur.kind, |k| k.lease_lost += 1);
                    state.ctx.emit(NodeEvent::LeaseLost { item, epoch });
                    drop(cur);
                    state.after_item(&myself);
                }
            }
            WorkerMsg::CancelRequested { item, epoch } => {
                if let Some(cur) = state.current.take_if(|c| c.is(item, epoch)) {
                    state.cancel(cur).await;
                    state.after_item(&myself);
                }
            }
            WorkerMsg::TimedOut { item, epoch } => {
                if let Some(cur) = state.current.take_if(|c| c.is(item, epoch)) {
                    state.time_out(cur).await;
                    state.after_item(&myself);
                }
            }
            WorkerMsg::LeaseLapsed { item, epoch } => {
                if let Some(cur) = state.current.take_if(|c| c.is(item, epoch) && !c.kept) {
                    state.give_up_unkept(cur, true).await;
                    state.after_item(&myself);
                }
            }
            WorkerMsg::Ping { item, epoch, reply } => {
                let holds = state.current.as_ref().is_some_and(|c| c.is(item, epoch));
                let kept = holds && state.current.as_ref().is_some_and(|c| c.kept);
                if holds && !kept {
                    // Its heartbeat is gone: concede the lease to the reaper that asked.
                    if let Some(cur) = state.current.take() {
                        state.give_up_unkept(cur, false).await;
                        state.after_item(&myself);
                    }
                }
                let _ = reply.send(kept);
            }
            WorkerMsg::Drain { timeout, reply } => {
                state.draining = true;
                if let Some(t) = state.poll_timer.take() {
                    t.abort();
                }
                state.ctx.set_idle(state.index, false);
                if state.current.is_none() {
                    let _ = reply.send(DrainOutcome::Idle);
                } else {
                    state.drain_reply = Some(reply);
                    myself.send_after(timeout, || WorkerMsg::DrainTimeout);
                }
            }
            WorkerMsg::DrainTimeout => {
                if let Some(cur) = state.current.take() {
                    let outcome = state.release(cur).await;
                    if let Some(reply) = state.drain_reply.take() {
                        let _ = reply.send(outcome);
                    }
                }
            }
            WorkerMsg::Crash(why) => panic!("injected worker fault: {why}"),
            WorkerMsg::HeartbeatCell(reply) => {
                let cell = state
                    .current
                    .as_ref()
                    .and_then(|c| c.heartbeat.as_ref())
                    .map(|h| h.get_cell());
                let _ = reply.send(cell);
            }
        }
        Ok(())
    }

    /// Only heartbeat children report here. Overridden because ractor's default stops the
    /// worker when a child ends.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<WorkerMsg>,
        evt: SupervisionEvent,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        if state.heartbeat.as_ref().map(|h| h.get_id()) != Some(cell.get_id()) {
            return Ok(());
        }
        // A new one starts before the next acquisition (see `poll`).
        state.heartbeat = None;
        let Some(cur) = state.current.as_mut() else {
            return Ok(());
        };
        if cur.heartbeat.as_ref().map(|h| h.get_id()) != Some(cell.get_id()) {
            return Ok(());
        }
        // The lease's keeper died. It is not restarted for this lease: a worker that cannot
        // vouch for its renewals must not keep working past the lease. The lease is left to
        // lapse; at its deadline (or when the reaper asks first) the handler is cancelled.
        cur.heartbeat = None;
        cur.kept = false;
        Metrics::bump(&state.ctx.metrics.heartbeat_deaths);
        tracing::warn!(item = %cur.lease.item, owner = %state.request.owner, reason = %why, "heartbeat child died; its lease will lapse");
        let (item, epoch) = (cur.lease.item, cur.lease.epoch);
        // The deadline is read before the event goes out, so whoever reacts to the event (and
        // moves the clock) cannot shorten the time this lease is given.
        let left = cur.expires_at.since(state.ctx.clock.now());
        myself.send_after(left, move || WorkerMsg::LeaseLapsed { item, epoch });
        state.ctx.emit(NodeEvent::HeartbeatDied {
            worker: state.index,
        });
        if let Some(sup) = myself.get_cell().try_get_supervisor() {
            let _ = sup.send_message(SupervisorMsg::HeartbeatDied {
                worker: state.index,
                reason: why,
            });
        }
        Ok(())
    }
}

impl WorkerState {
    /// One `recover_mine` attempt. A backend failure (the store is down) schedules the next
    /// attempt after a backoff (10 ms doubling to 5 s) and the worker stays without work; any
    /// other error fails the worker, for its supervisor to restart. On success the worker
    /// starts its heartbeat, announces itself and looks for work.
    async fn recover(&mut self, myself: &ActorRef<WorkerMsg>) -> Result<(), ActorProcessingErr> {
        if self.recovered || self.draining {
            return Ok(());
        }
        let ctx = self.ctx.clone();
        let owner = &self.request.owner;
        let recovered = match ctx.store.items_recover_owner(owner, ctx.clock.now()).await {
            Ok(recovered) => recovered.len(),
            Err(e) if e.is_backend_failure() => {
                let wait = self.recover_backoff;
                self.recover_backoff = (wait * 2).min(MAX_RECOVER_BACKOFF);
                tracing::warn!(owner = %owner, error = %e, retry_in = ?wait, "recover_mine failed: the store is failing; retrying before taking any work");
                myself.send_after(wait, || WorkerMsg::Recover);
                return Ok(());
            }
            Err(e) => return Err(format!("recover_mine for {owner} failed: {e}").into()),
        };
        if recovered > 0 {
            tracing::info!(owner = %owner, count = recovered, "recover_mine took back items left by a previous incarnation");
        }
        Metrics::add(&ctx.metrics.recovered_on_start, recovered as u64);
        self.recovered = true;
        // Started now, so an idle worker already has it; a failure here is retried by `poll`.
        self.ensure_heartbeat(myself).await;
        ctx.emit(NodeEvent::WorkerStarted {
            worker: self.index,
            recovered,
        });
        myself.cast(WorkerMsg::Poll { woken: false })?;
        Ok(())
    }

    async fn poll(&mut self, myself: &ActorRef<WorkerMsg>, woken: bool) {
        if !self.recovered {
            // Not yet entitled to work; the wake-up goes to a worker that is.
            if woken {
                self.ctx.wake(1);
            }
            return;
        }
        if self.current.is_some() || self.draining {
            if woken && !self.draining {
                // The wake-up was meant for an idle worker: pass it on.
                self.ctx.wake(1);
            }
            return;
        }
        let ctx = self.ctx.clone();
        if !self.ensure_heartbeat(myself).await {
            ctx.set_idle(self.index, true);
            self.schedule_poll(myself, ctx.cfg.poll_interval);
            return;
        }
        // Listed as idle before the store is asked: an enqueue that lands while the answer is
        // on its way (and finds nothing) then still wakes this worker instead of leaving the
        // item to the next timed poll.
        ctx.set_idle(self.index, true);
        match ctx.store.item_acquire(&self.request, ctx.clock.now()).await {
            Ok(Some(leased)) => {
                ctx.set_idle(self.index, false);
                self.idle_backoff = MIN_IDLE_BACKOFF;
                if let Some(t) = self.poll_timer.take() {
                    t.abort();
                }
                self.start(myself, leased).await;
            }
            Ok(None) => {
                ctx.set_idle(self.index, true);
                let wait = self.idle_backoff;
                self.idle_backoff = (self.idle_backoff * 2).min(ctx.cfg.poll_interval);
                self.schedule_poll(myself, wait);
            }
            Err(e) => {
                tracing::warn!(owner = %self.request.owner, error = %e, "acquire failed; backing off");
                ctx.set_idle(self.index, true);
                self.schedule_poll(myself, ctx.cfg.poll_interval);
            }
        }
    }

    /// Starts the heartbeat child if there is none (first poll, or after it died); returns
    /// whether there is one. A worker without a heartbeat takes no item: it could not keep the
    /// lease.
    async fn ensure_heartbeat(&mut self, myself: &ActorRef<WorkerMsg>) -> bool {
        if self.heartbeat.is_some() {
            return true;
        }
        match Actor::spawn_linked(
            None,
            Heartbeat,
            HeartbeatArgs {
                ctx: self.ctx.clone(),
                worker: myself.clone(),
            },
            myself.get_cell(),
        )
        .await
        {
            Ok((hb, _)) => {
                self.heartbeat = Some(hb);
                true
            }
            Err(e) => {
                tracing::error!(owner = %self.request.owner, error = %e, "could not start a heartbeat; taking no work until one starts");
                false
            }
        }
    }

    /// One pending poll timer at a time, so wake-ups never multiply timers.
    fn schedule_poll(&mut self, myself: &ActorRef<WorkerMsg>, after: Duration) {
        if let Some(t) = self.poll_timer.take() {
            t.abort();
        }
        self.poll_timer = Some(myself.send_after(after, || WorkerMsg::Poll { woken: false }));
    }

    /// After an item is settled or dropped: report idle, answer a pending drain, or look for
    /// the next item at once.
    fn after_item(&mut self, myself: &ActorRef<WorkerMsg>) {
        self.ctx.set_busy(self.index, None);
        if self.draining {
            if let Some(reply) = self.drain_reply.take() {
                let _ = reply.send(DrainOutcome::Finished);
            }
            return;
        }
        let _ = myself.cast(WorkerMsg::Poll { woken: false });
    }
}
