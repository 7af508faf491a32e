//! How the reaper judges an owner: a local owner by an actor ping with a timeout, a remote one
//! by the worker registry's heartbeat (invariant 5).

use std::sync::Arc;

use async_trait::async_trait;
use ractor::rpc::CallResult;

use leasehold_core::{Liveness, LivenessCheck, ReapCandidate, RegistryLiveness, Timestamp};

use crate::node::NodeCtx;
use crate::worker::WorkerMsg;

/// The liveness check of a running node's reaper.
///
/// - An owner of this node and this incarnation is pinged: alive only if its worker answers
///   within the ping timeout that it still holds that item at that epoch and its heartbeat is
///   running.
/// - An owner of this node's id but another incarnation is a dead predecessor (or, for a newer
///   one, not ours to vouch for): judged by the registry, which names only the live incarnation.
/// - Any other owner is judged by the worker registry: alive while its node's row has the same
///   incarnation, is not stopped, and heartbeated within the configured missed intervals.
pub struct NodeLiveness {
    ctx: Arc<NodeCtx>,
    registry: RegistryLiveness,
}

impl std::fmt::Debug for NodeLiveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLiveness")
            .field("node", &self.ctx.node_id)
            .field("incarnation", &self.ctx.incarnation)
            .finish()
    }
}

impl NodeLiveness {
    pub(crate) fn new(ctx: Arc<NodeCtx>, now: Timestamp) -> Self {
        let registry = RegistryLiveness::new(ctx.store.clone(), ctx.cfg.dead_after_missed, now);
        NodeLiveness { ctx, registry }
    }
}

#[async_trait]
impl LivenessCheck for NodeLiveness {
    async fn check(&self, c: &ReapCandidate) -> Liveness {
        let local = c.owner_node.as_deref() == Some(self.ctx.node_id.as_str())
            && c.owner_incarnation == Some(self.ctx.incarnation);
        if !local {
            return self.registry.check(c).await;
        }
        let Some(worker) = self
            .ctx
            .worker_index(&c.owner)
            .and_then(|i| self.ctx.worker(i))
        else {
            return Liveness::Dead;
        };
        let (item, epoch) = (c.item, c.epoch);
        let answer = worker
            .call(
                |reply| WorkerMsg::Ping { item, epoch, reply },
                Some(self.ctx.cfg.ping_timeout),
            )
            .await;
        match answer {
            Ok(CallResult::Success(true)) => Liveness::Alive,
            _ => Liveness::Dead,
        }
    }
}
