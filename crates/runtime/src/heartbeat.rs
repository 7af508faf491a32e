//! The heartbeat child: one per lease, renewing it every heartbeat interval (seed 000's
//! HeartbeatThread with `max_failures` and `on_lease_lost`).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use leasehold_core::LeaseRef;

use crate::node::NodeCtx;
use crate::worker::WorkerMsg;

/// Messages a heartbeat handles.
pub(crate) enum HeartbeatMsg {
    /// Time to renew.
    Tick,
    /// Fault injection: panic inside the actor.
    Crash(String),
}

pub(crate) struct Heartbeat;

pub(crate) struct HeartbeatArgs {
    pub(crate) ctx: Arc<NodeCtx>,
    pub(crate) lease: LeaseRef,
    pub(crate) worker: ActorRef<WorkerMsg>,
}

pub(crate) struct HeartbeatState {
    args: HeartbeatArgs,
    failures: u32,
}

impl Actor for Heartbeat {
    type Msg = HeartbeatMsg;
    type State = HeartbeatState;
    type Arguments = HeartbeatArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HeartbeatMsg>,
        args: HeartbeatArgs,
    ) -> Result<HeartbeatState, ActorProcessingErr> {
        myself.send_after(args.ctx.cfg.base.heartbeat, || HeartbeatMsg::Tick);
        Ok(HeartbeatState { args, failures: 0 })
    }

    async fn handle(
        &self,
        myself: ActorRef<HeartbeatMsg>,
        msg: HeartbeatMsg,
        state: &mut HeartbeatState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HeartbeatMsg::Crash(why) => panic!("injected heartbeat fault: {why}"),
            HeartbeatMsg::Tick => {
                let HeartbeatArgs { ctx, lease, worker } = &state.args;
                let renewed = ctx
                    .store
                    .lease_renew(lease, ctx.cfg.base.lease, ctx.clock.now())
                    .await;
                match renewed {
                    Ok(expires_at) => {
                        state.failures = 0;
                        let _ = worker.cast(WorkerMsg::Renewed {
                            item: lease.item,
                            epoch: lease.epoch,
                            expires_at,
                        });
                        myself.send_after(ctx.cfg.base.heartbeat, || HeartbeatMsg::Tick);
                    }
                    Err(e) if e.is_lease_lost() => {
                        let _ = worker.cast(WorkerMsg::LeaseLost {
                            item: lease.item,
                            epoch: lease.epoch,
                            reason: "the lease was taken over".into(),
                        });
                        myself.stop(None);
                    }
                    Err(e) => {
                        state.failures += 1;
                        tracing::warn!(item = %lease.item, failures = state.failures, error = %e, "lease renewal failed");
                        if state.failures >= ctx.cfg.max_heartbeat_failures {
                            let _ = worker.cast(WorkerMsg::LeaseLost {
                                item: lease.item,
                                epoch: lease.epoch,
                                reason: format!(
                                    "{} consecutive renewals failed (last: {e})",
                                    state.failures
                                ),
                            });
                            myself.stop(None);
                        } else {
                            myself.send_after(ctx.cfg.base.heartbeat, || HeartbeatMsg::Tick);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
