//! The worker actor: recover_mine on (re)start, acquire without busy polling, run the handler as
//! a task beside its heartbeat child, settle the result with fencing, answer the reaper's pings,
//! drain on graceful stop.
//!
//! The heartbeat child lives as long as the worker (it is told which lease to keep), so taking
//! an item costs messages, not an actor spawn. Acquisitions, completions and failures go
//! through the store as single calls; the SQLite store group-commits the ones that arrive
//! together from many workers, and answers each only after its transaction commits.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use leasehold_core::{
    AcquireRequest, Backoff, DecisionRequest, FailDisposition, FailOutcome, ItemId, LeaseRef,
    Leased, NewItem, ReleaseOutcome, Store, StoreError, StoreResult, Timestamp,
};

use crate::events::NodeEvent;
use crate::handler::{JobContext, JobError};
use crate::heartbeat::{Heartbeat, HeartbeatArgs, HeartbeatMsg};
use crate::metrics::JobMetrics;
use crate::node::{Metrics, NodeCtx};
use crate::supervisor::SupervisorMsg;

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

/// The follow-ups a successful handler asked for ([`JobContext::follow_up`]), taken once.
fn take_follow_ups(follow_ups: &std::sync::Mutex<Vec<NewItem>>) -> Vec<NewItem> {
    std::mem::take(&mut *follow_ups.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Completes an item: with follow-ups, in the one store call that enqueues them in the
/// completion's commit; without, on the plain (batched) completion path.
async fn complete(
    store: &Arc<dyn Store>,
    lease: &LeaseRef,
    output: Value,
    follow_ups: &[NewItem],
    now: Timestamp,
) -> StoreResult<()> {
    if follow_ups.is_empty() {
        store.item_complete(lease, output, now).await
    } else {
        store
            .item_complete_with_follow_ups(lease, output, follow_ups.to_vec(), now)
            .await
            .map(|_| ())
    }
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

/// The item in hand (the item itself went to the handler).
struct Current {
    lease: LeaseRef,
    /// The item's kind, which its metrics are counted under.
    kind: Arc<str>,
    /// When the attempt started (the node's clock): its run time is observed when this is
    /// dropped, however the attempt ends.
    started_at: Timestamp,
    /// For the run time, at drop.
    ctx: Arc<NodeCtx>,
    /// The item's attempt count with this acquisition included.
    attempts: u32,
    /// The item's kind's retry schedule (the item itself went to the handler).
    backoff: Backoff,
    /// The heartbeat keeping this lease (`None` once it died).
    heartbeat: Option<ActorRef<HeartbeatMsg>>,
    /// Whether a heartbeat is still keeping the lease.
    kept: bool,
    expires_at: Timestamp,
    /// The attempt's execution timeout, if it has one.
    timeout: Option<Duration>,
    /// The timer that sends [`WorkerMsg::TimedOut`]; aborted when the item is settled, so a
    /// long timeout leaves no sleeping task behind each quick item.
    timeout_timer: Option<JoinHandle<Result<(), ractor::MessagingErr<WorkerMsg>>>>,
    /// Held for its `Drop`, which cancels (and later aborts) the handler.
    #[allow(dead_code)]
    task: HandlerTask,
}

impl Current {
    fn is(&self, item: ItemId, epoch: i64) -> bool {
        self.lease.item == item && self.lease.epoch == epoch
    }
}

/// The handler's task. Dropping it (the worker finished, lost the lease, or was killed) cancels
/// the handler, and aborts it if it ignores cancellation for longer than the grace period.
struct HandlerTask {
    cancel: CancellationToken,
    join: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
}

impl Drop for HandlerTask {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(join) = self.join.take() {
            if join.is_finished() {
                return;
            }
            let abort = join.abort_handle();
            let grace = self.grace;
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    tokio::time::sleep(grace).await;
                    abort.abort();
                });
            } else {
                abort.abort();
            }
        }
    }
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

    async fn start(&mut self, myself: &ActorRef<WorkerMsg>, leased: Leased) {
        let ctx = self.ctx.clone();
        self.idle_backoff = MIN_IDLE_BACKOFF;
        let Leased {
            lease,
            item,
            expires_at,
        } = leased;
        let (id, epoch) = (lease.item, lease.epoch);
        Metrics::bump(&ctx.metrics.acquired);
        let started_at = ctx.clock.now();
        let kind: Arc<str> = Arc::from(item.kind.as_str());
        ctx.recorder.started(&kind, started_at.since(item.run_at));
        ctx.emit(NodeEvent::Acquired {
            worker: self.index,
            item: id,
            epoch,
        });
        ctx.set_busy(self.index, Some(id));
        let timeout = ctx.cfg.timeout_for(&item);
        // The heartbeat gets the deadline too: it renews nothing past it, even if this
        // worker's own timer is late (a worker blocked on a slow store write).
        let until = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        // A heartbeat that cannot take the lease (it died since the poll) leaves it to lapse.
        let heartbeat = self.heartbeat.clone().filter(|hb| {
            hb.cast(HeartbeatMsg::Keep {
                lease: lease.clone(),
                until,
            })
            .is_ok()
        });
        let handler = ctx
            .handlers
            .get(&item.kind)
            .or(ctx.fallback.as_ref())
            .cloned();
        let attempts = item.attempts;
        let backoff = *ctx.cfg.backoff_for(&item.kind);
        let cancel = CancellationToken::new();
        // The item moves to the handler; the worker keeps only what settling needs.
        let job = JobContext {
            item: Arc::new(item),
            lease: lease.clone(),
            cancel: cancel.clone(),
            store: ctx.store.clone(),
            clock: ctx.clock.clone(),
            faults: ctx.faults.clone(),
            timeout,
            follow_ups: Arc::default(),
            metrics: JobMetrics {
                recorder: ctx.recorder.clone(),
                kind: kind.clone(),
            },
            task: ctx.tasks.get(self.index).cloned().unwrap_or_default(),
        };
        let follow_ups = job.follow_ups.clone();
        let me = myself.clone();
        let join = tokio::spawn(async move {
            let run = async move {
                match handler {
                    Some(h) => h(job).await,
                    // Workers acquire only kinds with a handler; this is a guard, not a path.
                    None => Err(JobError::retryable("no handler for this kind on this node")),
                }
            };
            let outcome = match AssertUnwindSafe(run).catch_unwind().await {
                Ok(Ok(v)) => HandlerOutcome::Output(v, take_follow_ups(&follow_ups)),
                Ok(Err(e)) => HandlerOutcome::Failed(e),
                Err(panic) => HandlerOutcome::Panicked(panic_message(panic.as_ref())),
            };
            let _ = me.cast(WorkerMsg::HandlerDone {
                item: id,
                epoch,
                outcome,
            });
        });
        let kept = heartbeat.is_some();
        let timeout_timer =
            timeout.map(|t| myself.send_after(t, move || WorkerMsg::TimedOut { item: id, epoch }));
        self.current = Some(Current {
            lease,
            kind,
            started_at,
            ctx: ctx.clone(),
            attempts,
            backoff,
            heartbeat,
            kept,
            expires_at,
            timeout,
            timeout_timer,
            task: HandlerTask {
                cancel,
                join: Some(join),
                grace: ctx.cfg.cancel_grace,
            },
        });
        if !kept {
            myself.send_after(expires_at.since(ctx.clock.now()), move || {
                WorkerMsg::LeaseLapsed { item: id, epoch }
            });
        }
    }

    /// Writes the handler's result, fenced. The heartbeat keeps the lease alive until the write
    /// has committed (or is refused), so a slow commit never lets the lease lapse under it.
    ///
    /// With `take_next`, an output's completion and this worker's next acquisition go to the
    /// store together, so the SQLite store commits both in one group: one round trip per item
    /// instead of two. The acquisition is ordered after the completion, and returned only if the
    /// completion did not fail on the store (a refused completion still moves on).
    async fn settle(
        &mut self,
        cur: Current,
        outcome: HandlerOutcome,
        take_next: bool,
    ) -> Option<Leased> {
        let ctx = self.ctx.clone();
        let lease = cur.lease.clone();
        let attempt = cur.attempts;
        let backoff = cur.backoff;
        let deadline = tokio::time::Instant::now() + ctx.cfg.base.lease;
        let mut next = None;
        let result = match outcome {
            HandlerOutcome::Output(output, follow_ups) => {
                let first = if take_next {
                    let now = ctx.clock.now();
                    let (done, acquired) = tokio::join!(
                        complete(&ctx.store, &lease, output.clone(), &follow_ups, now),
                        ctx.store.item_acquire(&self.request, now),
                    );
                    match acquired {
                        Ok(leased) => next = leased,
                        Err(e) => {
                            tracing::debug!(owner = %self.request.owner, error = %e, "acquiring alongside a completion failed; polling instead");
                        }
                    }
                    done
                } else {
                    complete(
                        &ctx.store,
                        &lease,
                        output.clone(),
                        &follow_ups,
                        ctx.clock.now(),
                    )
                    .await
                };
                let r = match first {
                    Err(e) if e.is_backend_failure() => {
                        tracing::warn!(item = %lease.item, error = %e, "completion failed; retrying");
                        // Nothing may wait unkept while the completion is retried.
                        if let Some(unstarted) = next.take() {
                            self.give_back(unstarted).await;
                        }
                        retry_store(deadline, || {
                            complete(
                                &ctx.store,
                                &lease,
                                output.clone(),
                                &follow_ups,
                                ctx.clock.now(),
                            )
                        })
                        .await
                    }
                    other => other,
                };
                if r.is_ok() {
                    // Recorded before the event goes out, so whoever reacts to the event
                    // finds the completion counted.
                    Metrics::bump(&ctx.metrics.completed);
                    ctx.recorder.kind(&cur.kind, |k| k.completed += 1);
                    if let Some(log) = &ctx.metrics.completions {
                        log.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((lease.item, lease.epoch));
                    }
                    ctx.emit(NodeEvent::Completed {
                        item: lease.item,
                        epoch: lease.epoch,
                    });
                }
                r.map(|_| ())
            }
            HandlerOutcome::Failed(e) if e.decision_request().is_some() => {
                self.park(
                    &lease,
                    &cur.kind,
                    e.decision_request().cloned(),
                    attempt,
                    deadline,
                )
                .await
            }
            HandlerOutcome::Failed(e) => {
                let disposition = if e.is_permanent() {
                    FailDisposition::Permanent
                } else {
                    self.retry_later(&lease, attempt, &backoff, e.requested_delay())
                };
                self.fail(
                    &lease,
                    &cur.kind,
                    attempt,
                    &e.to_string(),
                    disposition,
                    deadline,
                )
                .await
            }
            HandlerOutcome::Panicked(msg) => {
                Metrics::bump(&ctx.metrics.handler_panics);
                tracing::error!(item = %lease.item, panic = %msg, "handler panicked; counted as a failed attempt");
                self.fail(
                    &lease,
                    &cur.kind,
                    attempt,
                    &format!("handler panicked: {msg}"),
                    self.retry_later(&lease, attempt, &backoff, None),
                    deadline,
                )
                .await
            }
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_lease_lost() => {
                Metrics::bump(&ctx.metrics.lease_lost);
                ctx.recorder.kind(&cur.kind, |k| k.lease_lost += 1);
                ctx.emit(NodeEvent::LeaseLost {
                    item: lease.item,
                    epoch: lease.epoch,
                });
                tracing::warn!(item = %lease.item, epoch = lease.epoch, "result dropped: the lease was taken over before it could be written");
            }
            Err(e) => {
                tracing::error!(item = %lease.item, error = %e, "could not write the result; the item is left to recovery");
            }
        }
        drop(cur);
        next
    }

    /// Releases an item acquired alongside a completion that then had to be retried: back to
    /// pending, its attempt not counted. If even that fails, recovery takes it back.
    async fn give_back(&self, leased: Leased) {
        let ctx = &self.ctx;
        // Not counted against the release limit: its handler never started.
        if let Err(e) = ctx
            .store
            .item_release(&leased.lease, None, ctx.clock.now())
            .await
        {
            tracing::warn!(item = %leased.lease.item, error = %e, "could not give back an unstarted item; recovery will requeue it");
        }
    }

    /// A retry after failed `attempt`, delayed by what the handler asked for, else by the
    /// item's kind's `backoff` (the node's when the kind has none of its own), jittered from
    /// the node's seed when it has one. The store dead-letters instead if the budget is spent.
    fn retry_later(
        &self,
        lease: &LeaseRef,
        attempt: u32,
        backoff: &Backoff,
        requested: Option<Duration>,
    ) -> FailDisposition {
        let delay = requested.unwrap_or_else(|| {
            let sample = match self.ctx.cfg.jitter_seed {
                // `as u64` keeps every bit of the id: only the sample's spread matters.
                Some(seed) => Backoff::seeded_sample(seed, lease.item.0 as u64, attempt),
                None => rand::random::<f64>(),
            };
            backoff.delay(attempt, sample)
        });
        FailDisposition::Retry { delay }
    }

    async fn fail(
        &self,
        lease: &leasehold_core::LeaseRef,
        kind: &str,
        attempt: u32,
        error: &str,
        disposition: FailDisposition,
        deadline: tokio::time::Instant,
    ) -> Result<(), StoreError> {
        let ctx = &self.ctx;
        let r = retry_store(deadline, || {
            ctx.store
                .item_fail(lease, error, disposition, ctx.clock.now())
        })
        .await?;
        match r {
            FailOutcome::Retrying { .. } => {
                Metrics::bump(&ctx.metrics.retried);
                ctx.recorder.kind(kind, |k| k.retried += 1);
            }
            FailOutcome::DeadLettered => {
                Metrics::bump(&ctx.metrics.dead_lettered);
                ctx.recorder.kind(kind, |k| k.failed += 1);
            }
        }
        ctx.emit(NodeEvent::AttemptFailed {
            item: lease.item,
            dead_lettered: r == FailOutcome::DeadLettered,
        });
        tracing::info!(item = %lease.item, attempt, error, outcome = ?r, "attempt failed");
        Ok(())
    }

    /// Parks the item until someone decides (fenced). A question that does not validate fails
    /// the attempt permanently instead: no one could ever answer it.
    async fn park(
        &self,
        lease: &LeaseRef,
        kind: &str,
        request: Option<DecisionRequest>,
        attempt: u32,
        deadline: tokio::time::Instant,
    ) -> Result<(), StoreError> {
        let ctx = &self.ctx;
        let Some(request) = request else {
            return Ok(());
        };
        if let Err(why) = request.validate() {
            let error = format!("could not park for a decision: {why}");
            return self
                .fail(
                    lease,
                    kind,
                    attempt,
                    &error,
                    FailDisposition::Permanent,
                    deadline,
                )
                .await;
        }
        retry_store(deadline, || {
            ctx.store.item_park(lease, &request, ctx.clock.now())
        })
        .await?;
        ctx.emit(NodeEvent::Parked {
            item: lease.item,
            question: request.question.clone(),
        });
        tracing::info!(item = %lease.item, question = %request.question, answers = ?request.answers, "item parked awaiting a decision");
        Ok(())
    }

    /// Gives up an item whose heartbeat died. At the lease deadline the worker records the lapse
    /// as a failed attempt itself; when the reaper asked first, the reaper requeues it.
    async fn give_up_unkept(&mut self, cur: Current, write: bool) {
        Metrics::bump(&self.ctx.metrics.lease_lost);
        self.ctx.recorder.kind(&cur.kind, |k| k.lease_lost += 1);
        self.ctx.emit(NodeEvent::LeaseLost {
            item: cur.lease.item,
            epoch: cur.lease.epoch,
        });
        tracing::warn!(item = %cur.lease.item, owner = %self.request.owner, "lease lapsed without a heartbeat: cancelling the handler");
        let lease = cur.lease.clone();
        let kind = cur.kind.clone();
        let attempt = cur.attempts;
        let backoff = cur.backoff;
        drop(cur);
        if write {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            if let Err(e) = self
                .fail(
                    &lease,
                    &kind,
                    attempt,
                    "lease lapsed: its heartbeat stopped",
                    self.retry_later(&lease, attempt, &backoff, None),
                    deadline,
                )
                .await
            {
                tracing::debug!(item = %lease.item, error = %e, "lapse not recorded; recovery will handle the item");
            }
        }
    }

    /// Ends an attempt that ran past its execution timeout. In this order: the heartbeat stops
    /// renewing the lease, the attempt is failed (fenced; retryable, so the retry budget decides
    /// between a retry and the dead-letter state), and only then is the handler cancelled, so
    /// whatever it writes once it sees the cancellation is refused (`LeaseLost`). A handler
    /// that ignores the cancellation is aborted after the grace period ([`HandlerTask`]).
    ///
    /// The failure is retried only briefly: with no renewals the lease lapses anyway, and if
    /// the write cannot land by then, the reaper (whose ping this worker no longer answers for
    /// the item) or the monitor takes the item back, counting the attempt.
    async fn time_out(&mut self, mut cur: Current) {
        let ctx = self.ctx.clone();
        let lease = cur.lease.clone();
        let timeout = cur.timeout.unwrap_or_default();
        if let Some(hb) = cur.heartbeat.take() {
            let _ = hb.cast(HeartbeatMsg::Forget {
                item: lease.item,
                epoch: lease.epoch,
            });
        }
        cur.kept = false;
        Metrics::bump(&ctx.metrics.timed_out);
        ctx.recorder.kind(&cur.kind, |k| k.timed_out += 1);
        ctx.emit(NodeEvent::TimedOut {
            item: lease.item,
            epoch: lease.epoch,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        });
        let error = timed_out_error(timeout);
        tracing::warn!(item = %lease.item, epoch = lease.epoch, owner = %self.request.owner, %error, "attempt timed out: failing it, then cancelling the handler");
        let left = cur.expires_at.since(ctx.clock.now());
        let deadline = tokio::time::Instant::now() + left.min(Duration::from_secs(1));
        let disposition = self.retry_later(&lease, cur.attempts, &cur.backoff, None);
        if let Err(e) = self
            .fail(
                &lease,
                &cur.kind,
                cur.attempts,
                &error,
                disposition,
                deadline,
            )
            .await
        {
            tracing::warn!(item = %lease.item, error = %e, "timed-out attempt not recorded; its lease lapses and recovery takes the item");
        }
        drop(cur);
    }

    /// Ends an attempt an operator cancelled. As for a timeout: the attempt is ended first
    /// (`item_cancel_confirm`, fenced: the item becomes `cancelled`, neither failed nor
    /// retried), and only then is the handler cancelled, so whatever it writes once it sees the
    /// cancellation is refused. The confirm is retried only until the lease runs out (the
    /// heartbeat no longer renews it); past that, whoever takes the item back cancels it.
    async fn cancel(&mut self, mut cur: Current) {
        let ctx = self.ctx.clone();
        let lease = cur.lease.clone();
        cur.kept = false;
        let left = cur.expires_at.since(ctx.clock.now());
        let deadline = tokio::time::Instant::now() + left;
        let confirmed = match retry_store(deadline, || {
            ctx.store.item_cancel_confirm(&lease, ctx.clock.now())
        })
        .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(item = %lease.item, error = %e, "cancel not confirmed; whoever takes the item back cancels it");
                false
            }
        };
        Metrics::bump(&ctx.metrics.cancelled);
        tracing::info!(item = %lease.item, epoch = lease.epoch, owner = %self.request.owner, confirmed, "cancelled by an operator: handler cancelled");
        ctx.emit(NodeEvent::Cancelled {
            item: lease.item,
            epoch: lease.epoch,
            confirmed,
        });
        drop(cur);
    }

    /// Graceful-stop release: back to pending (invariant 7), its attempt given back unless the
    /// item has been released more than `max_releases` times (invariant 4's bound: an item
    /// that always outlasts the drain timeout still spends its budget, and is dead-lettered
    /// when it is spent).
    async fn release(&mut self, cur: Current) -> DrainOutcome {
        let ctx = self.ctx.clone();
        let lease = cur.lease.clone();
        let kind = cur.kind.clone();
        drop(cur);
        ctx.set_busy(self.index, None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let limit = Some(ctx.cfg.base.max_releases);
        match retry_store(deadline, || {
            ctx.store.item_release(&lease, limit, ctx.clock.now())
        })
        .await
        {
            Ok(outcome) => {
                Metrics::bump(&ctx.metrics.released);
                match outcome {
                    ReleaseOutcome::Released => {}
                    ReleaseOutcome::AttemptCounted => {
                        tracing::warn!(item = %lease.item, limit = ctx.cfg.base.max_releases, "released more often than the limit: this release counted as an attempt");
                    }
                    ReleaseOutcome::DeadLettered => {
                        Metrics::bump(&ctx.metrics.dead_lettered);
                        ctx.recorder.kind(&kind, |k| k.failed += 1);
                        tracing::warn!(item = %lease.item, limit = ctx.cfg.base.max_releases, "released more often than the limit with its attempts spent: dead-lettered");
                    }
                }
                ctx.emit(NodeEvent::Released { item: lease.item });
                DrainOutcome::Released
            }
            Err(e) => {
                tracing::warn!(item = %lease.item, error = %e, "release on shutdown failed; recovery will requeue the item");
                DrainOutcome::NotReleased
            }
        }
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

impl Drop for Current {
    /// The heartbeat stops renewing this lease (it stays alive for the worker's next one), the
    /// timeout timer, if any, is disarmed, and the attempt's run time is observed.
    fn drop(&mut self) {
        let ran = self.ctx.clock.now().since(self.started_at);
        self.ctx.recorder.ran(&self.kind, ran);
        if let Some(t) = self.timeout_timer.take() {
            t.abort();
        }
        if let Some(hb) = self.heartbeat.take() {
            let LeaseRef { item, epoch, .. } = self.lease;
            let _ = hb.cast(HeartbeatMsg::Forget { item, epoch });
        }
    }
}

/// Retries a store write through backend failures until `deadline`; a refusal (LeaseLost,
/// InvalidState, …) is returned at once.
pub(crate) async fn retry_store<T, F, Fut>(
    deadline: tokio::time::Instant,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(10);
    loop {
        match op().await {
            Err(e) if e.is_backend_failure() && tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, "store write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// The error a timed-out attempt is failed with, e.g. "timed out after 2.5 s".
pub(crate) fn timed_out_error(timeout: Duration) -> String {
    format!(
        "{}{} s: the handler was cancelled",
        leasehold_core::TIMED_OUT_PREFIX,
        timeout.as_secs_f64()
    )
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
