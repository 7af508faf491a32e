//! The heartbeat child: one per worker, for the worker's whole life, renewing the lease the
//! worker holds every heartbeat interval (seed 000's HeartbeatThread with `max_failures` and
//! `on_lease_lost`).
//!
//! It lives as long as its worker rather than one per lease, so taking an item costs a message
//! instead of an actor spawn, and an idle worker's heartbeat waits without a timer. Each lease
//! it keeps gets a new generation: a tick scheduled for an earlier lease finds the generation
//! moved on and does nothing, so a renewal never outlives the lease it was scheduled for.
//! Renewals go through the store's group commit, so the heartbeats of many workers that tick
//! together share one transaction.

use std::sync::Arc;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};

use leasehold_core::{ItemId, LeaseRef};

use crate::node::NodeCtx;
use crate::worker::WorkerMsg;

/// Messages a heartbeat handles.
pub(crate) enum HeartbeatMsg {
    /// Keep this lease alive from now on (the worker just acquired it).
    Keep(LeaseRef),
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
    /// The lease being kept, if any.
    lease: Option<LeaseRef>,
    /// Bumped by every `Keep` and `Forget`; a tick of another generation is stale.
    generation: u64,
    /// The pending tick, aborted when its lease is forgotten: a worker that finishes items
    /// quickly must not leave one sleeping timer task per item behind.
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
            generation: 0,
            timer: None,
            failures: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<HeartbeatMsg>,
        msg: HeartbeatMsg,
        state: &mut HeartbeatState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HeartbeatMsg::Crash(why) => panic!("injected heartbeat fault: {why}"),
            HeartbeatMsg::Keep(lease) => {
                state.generation += 1;
                state.lease = Some(lease);
                state.failures = 0;
                state.schedule(&myself);
            }
            HeartbeatMsg::Forget { item, epoch } => {
                if state
                    .lease
                    .as_ref()
                    .is_some_and(|l| l.item == item && l.epoch == epoch)
                {
                    state.stop_keeping();
                }
            }
            HeartbeatMsg::Tick { generation } => {
                if generation == state.generation {
                    state.renew(&myself).await;
                }
            }
        }
        Ok(())
    }
}

impl HeartbeatState {
    fn schedule(&mut self, myself: &ActorRef<HeartbeatMsg>) {
        let generation = self.generation;
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        self.timer =
            Some(
                myself.send_after(self.ctx.cfg.base.heartbeat, move || HeartbeatMsg::Tick {
                    generation,
                }),
            );
    }

    fn stop_keeping(&mut self) {
        self.generation += 1;
        self.lease = None;
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }

    async fn renew(&mut self, myself: &ActorRef<HeartbeatMsg>) {
        let Some(lease) = self.lease.clone() else {
            return;
        };
        let ctx = &self.ctx;
        let renewed = ctx
            .store
            .lease_renew(&lease, ctx.cfg.base.lease, ctx.clock.now())
            .await;
        match renewed {
            Ok(expires_at) => {
                self.failures = 0;
                let _ = self.worker.cast(WorkerMsg::Renewed {
                    item: lease.item,
                    epoch: lease.epoch,
                    expires_at,
                });
                self.schedule(myself);
            }
            Err(e) if e.is_lease_lost() => {
                self.give_up(&lease, "the lease was taken over".into());
            }
            Err(e) => {
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
