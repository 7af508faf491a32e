//! The heartbeat child: one per worker, for the worker's whole life, renewing the lease the
//! worker holds every heartbeat interval (seed 000's HeartbeatThread with `max_failures` and
//! `on_lease_lost`).
//!
//! It lives as long as its worker rather than one per lease, so taking an item costs a message
//! instead of an actor spawn, and an idle worker's heartbeat waits without a timer. Its one
//! timer is not re-armed per lease: a lease is due for renewal one interval after it was taken
//! (or last renewed), and a tick that comes early for the lease it finds re-arms for the rest of
//! the wait. A worker that finishes many items within an interval therefore costs the timer
//! nothing per item, and a renewal never outlives the lease it was scheduled for: a tick finds
//! the lease kept *now*, or none.
//! Renewals go through the store's group commit, so the heartbeats of many workers that tick
//! together share one transaction.
//!
//! A lease whose attempt has an execution timeout comes with its deadline: past it the heartbeat
//! renews nothing more, whether or not the worker has told it to forget the lease yet, so a hung
//! handler's lease is never kept alive beyond its timeout.

use std::sync::Arc;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};
use tokio::time::Instant;

use leasehold_core::{ItemId, LeaseRef};

use crate::node::{Metrics, NodeCtx};
use crate::worker::WorkerMsg;

/// Messages a heartbeat handles.
pub(crate) enum HeartbeatMsg {
    /// Keep this lease alive from now on (the worker just acquired it), but renew it no more
    /// once `until` (the attempt's execution deadline, if it has one) has passed.
    Keep {
        lease: LeaseRef,
        until: Option<Instant>,
    },
    /// Stop renewing this lease (settled, lost or released).
    Forget { item: ItemId, epoch: i64 },
    /// Time to renew the lease of this generation.
    Tick { generation: u64 },
    /// Fault injection: panic inside the actor.
    Crash(String),
}

pub(crate) struct Heartbeat;

pub(crate) struct HeartbeatArgs {
    pub(crate) ctx: Arc<NodeCtx>,
    pub(crate) worker: ActorRef<WorkerMsg>,
}

pub(crate) struct HeartbeatState {
    ctx: Arc<NodeCtx>,
    worker: ActorRef<WorkerMsg>,
    /// The lease being kept, if any, and when it is due for renewal.
    lease: Option<(LeaseRef, Instant)>,
    /// The kept lease's execution deadline: no renewal is sent past it.
    until: Option<Instant>,
    /// Bumped by every timer armed; a tick of an older timer is stale.
    generation: u64,
    /// The one pending tick, if armed. Left running when a lease is settled (the next lease
    /// reuses it), aborted only when the actor stops.
    timer: Option<JoinHandle<Result<(), MessagingErr<HeartbeatMsg>>>>,
    failures: u32,
}

impl Actor for Heartbeat {
    type Msg = HeartbeatMsg;
    type State = HeartbeatState;
    type Arguments = HeartbeatArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<HeartbeatMsg>,
        args: HeartbeatArgs,
    ) -> Result<HeartbeatState, ActorProcessingErr> {
        Ok(HeartbeatState {
            ctx: args.ctx,
            worker: args.worker,
            lease: None,
            until: None,
            generation: 0,
            timer: None,
            failures: 0,
        })
    }

    /// A stopped heartbeat leaves no sleeping timer behind. (A panic skips `post_stop`; its
    /// timer then finds the actor gone and ends.)
    async fn post_stop(
        &self,
        _myself: ActorRef<HeartbeatMsg>,
        state: &mut HeartbeatState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.timer.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<HeartbeatMsg>,
        msg: HeartbeatMsg,
        state: &mut HeartbeatState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HeartbeatMsg::Crash(why) => panic!("injected heartbeat fault: {why}"),
            HeartbeatMsg::Keep { lease, until } => {
                let due = Instant::now() + state.ctx.cfg.base.heartbeat;
                state.lease = Some((lease, due));
                state.until = until;
                state.failures = 0;
                if state.timer.is_none() {
                    state.arm(&myself, due);
                }
            }
            HeartbeatMsg::Forget { item, epoch } => {
                if state
                    .lease
                    .as_ref()
                    .is_some_and(|(l, _)| l.item == item && l.epoch == epoch)
                {
                    state.stop_keeping();
                }
            }
            HeartbeatMsg::Tick { generation } => {
                if generation == state.generation {
                    state.timer = None;
                    match state.lease.as_ref().map(|(_, due)| *due) {
                        None => {}
                        Some(due) if due > Instant::now() => state.arm(&myself, due),
                        Some(_) => state.renew(&myself).await,
                    }
                }
            }
        }
        Ok(())
    }
}

impl HeartbeatState {
    /// Arms the one timer for `due`, replacing any pending tick.
    fn arm(&mut self, myself: &ActorRef<HeartbeatMsg>, due: Instant) {
        self.generation += 1;
        let generation = self.generation;
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        let wait = due.saturating_duration_since(Instant::now());
        self.timer = Some(myself.send_after(wait, move || HeartbeatMsg::Tick { generation }));
    }

    /// Renews again one interval from now.
    fn schedule(&mut self, myself: &ActorRef<HeartbeatMsg>) {
        let due = Instant::now() + self.ctx.cfg.base.heartbeat;
        if let Some((_, at)) = self.lease.as_mut() {
            *at = due;
        }
        self.arm(myself, due);
    }

    fn stop_keeping(&mut self) {
        self.lease = None;
        self.until = None;
    }

    async fn renew(&mut self, myself: &ActorRef<HeartbeatMsg>) {
        let Some(lease) = self.lease.as_ref().map(|(l, _)| l.clone()) else {
            return;
        };
        // Past the attempt's deadline the heartbeat stops vouching for it: the worker fails
        // the attempt, and if it cannot, the lease lapses and recovery takes the item.
        if self.until.is_some_and(|until| Instant::now() >= until) {
            tracing::debug!(item = %lease.item, epoch = lease.epoch, "not renewing a lease past its execution deadline");
            self.stop_keeping();
            return;
        }
        let ctx = &self.ctx;
        let renewed = ctx
            .store
            .lease_renew(&lease, ctx.cfg.base.lease, ctx.clock.now())
            .await;
        match renewed {
            Ok(expires_at) => {
                Metrics::bump(&ctx.metrics.renewals_succeeded);
                self.failures = 0;
                let _ = self.worker.cast(WorkerMsg::Renewed {
                    item: lease.item,
                    epoch: lease.epoch,
                    expires_at,
                });
                self.schedule(myself);
            }
            Err(e) if e.is_lease_lost() => {
                Metrics::bump(&ctx.metrics.renewals_failed);
                self.give_up(&lease, "the lease was taken over".into());
            }
            Err(e) if e.is_cancel_requested() => {
                // The renewal was refused, so the lease runs out on its own if the worker's
                // confirm cannot land; whoever takes the item back then cancels it.
                self.stop_keeping();
                let _ = self.worker.cast(WorkerMsg::CancelRequested {
                    item: lease.item,
                    epoch: lease.epoch,
                });
            }
            Err(e) => {
                Metrics::bump(&ctx.metrics.renewals_failed);
                self.failures += 1;
                tracing::warn!(item = %lease.item, failures = self.failures, error = %e, "lease renewal failed");
                if self.failures >= ctx.cfg.max_heartbeat_failures {
                    let why = format!("{} consecutive renewals failed (last: {e})", self.failures);
                    self.give_up(&lease, why);
                } else {
                    self.schedule(myself);
                }
            }
        }
    }

    /// Stops keeping `lease` and tells the worker it is lost.
    fn give_up(&mut self, lease: &LeaseRef, reason: String) {
        self.stop_keeping();
        let _ = self.worker.cast(WorkerMsg::LeaseLost {
            item: lease.item,
            epoch: lease.epoch,
            reason,
        });
    }
}
