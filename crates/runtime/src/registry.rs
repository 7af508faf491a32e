//! The registry actor: this node's row in the worker registry, written every heartbeat interval
//! and marked stopped on graceful shutdown. Reapers on other nodes read it to judge liveness.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::json;

use leasehold_core::{clock::duration_millis, NodeRecord, NodeStatus, StoreError, Timestamp};

use crate::node::NodeCtx;
use crate::supervisor::SupervisorMsg;

/// Messages the registry actor handles.
pub(crate) enum RegistryMsg {
    /// Time to write the row.
    Tick,
    /// Write the row now and answer whether it reached the store (the reaper asks before it
    /// trusts a store that was failing).
    Beat(RpcReplyPort<bool>),
    /// Graceful shutdown: mark this incarnation stopped.
    MarkStopped(RpcReplyPort<bool>),
    /// Fault injection: panic inside the actor.
    Crash(String),
}

pub(crate) struct Registry;

pub(crate) struct RegistryState {
    ctx: Arc<NodeCtx>,
    started_at: Timestamp,
    /// Told when a newer incarnation holds the row.
    supervisor: ActorRef<SupervisorMsg>,
    /// Marked stopped, or superseded: no later tick writes the row.
    stopped: bool,
}

impl Actor for Registry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = (Arc<NodeCtx>, Timestamp, ActorRef<SupervisorMsg>);

    async fn pre_start(
        &self,
        _myself: ActorRef<RegistryMsg>,
        (ctx, started_at, supervisor): (Arc<NodeCtx>, Timestamp, ActorRef<SupervisorMsg>),
    ) -> Result<RegistryState, ActorProcessingErr> {
        Ok(RegistryState {
            ctx,
            started_at,
            supervisor,
            stopped: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RegistryMsg>,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        state.write(NodeStatus::Active).await;
        myself.send_after(state.ctx.cfg.base.heartbeat, || RegistryMsg::Tick);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RegistryMsg>,
        msg: RegistryMsg,
        state: &mut RegistryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegistryMsg::Tick if state.stopped => {}
            RegistryMsg::Tick => {
                let status = if state.ctx.busy_items().is_empty() {
                    NodeStatus::Idle
                } else {
                    NodeStatus::Processing
                };
                state.write(status).await;
                myself.send_after(state.ctx.cfg.base.heartbeat, || RegistryMsg::Tick);
            }
            RegistryMsg::Beat(reply) if state.stopped => {
                let _ = reply.send(false);
            }
            RegistryMsg::Beat(reply) => {
                let status = if state.ctx.busy_items().is_empty() {
                    NodeStatus::Idle
                } else {
                    NodeStatus::Processing
                };
                state.write(status).await;
                // A superseded incarnation vouches for nothing, whatever the store answered.
                let vouched = !state.stopped && state.ctx.store_reachable.load(Ordering::Relaxed);
                let _ = reply.send(vouched);
            }
            RegistryMsg::MarkStopped(reply) => {
                // The last counts first: a stopped node's row keeps its final totals (the
                // drain's completions and releases included) for the dashboard to read.
                state.write(NodeStatus::Idle).await;
                state.stopped = true;
                let ctx = &state.ctx;
                let ok = ctx
                    .store
                    .node_stop(&ctx.node_id, ctx.incarnation, ctx.clock.now())
                    .await
                    .map_err(|e| tracing::warn!(error = %e, "could not mark this node stopped"))
                    .is_ok();
                let _ = reply.send(ok);
            }
            RegistryMsg::Crash(why) => panic!("injected registry fault: {why}"),
        }
        Ok(())
    }
}

/// The counters a registry row reports (`metadata.stats`): what `leasehold dashboard` and its
/// `/metrics` sum over nodes.
fn node_totals(m: &crate::node::Metrics) -> serde_json::Value {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    json!({
        "completed": get(&m.completed),
        "retried": get(&m.retried),
        "dead_lettered": get(&m.dead_lettered),
        "recovered_on_start": get(&m.recovered_on_start),
        "reaper_recovered": get(&m.reaper_recovered),
        "reaper_dead_lettered": get(&m.reaper_failed),
        "monitor_recovered": get(&m.monitor_recovered),
        "monitor_dead_nodes": get(&m.monitor_dead_nodes),
        "lease_lost": get(&m.lease_lost),
        "restarts": get(&m.restarts),
    })
}

impl RegistryState {
    /// Writes the row. A newer incarnation in it means another process runs under this node
    /// id: this one writes no more and tells the supervisor, which stops the tree.
    async fn write(&mut self, status: NodeStatus) {
        let ctx = &self.ctx;
        let busy = ctx.busy_items();
        let workers = ctx.worker_tasks();
        tracing::debug!(node = %ctx.node_id, incarnation = ctx.incarnation, status = %status, busy = busy.len(), workers = %serde_json::Value::Array(workers.clone()), "registry heartbeat");
        let record = NodeRecord {
            node_id: ctx.node_id.clone(),
            incarnation: ctx.incarnation,
            worker_type: if ctx.kinds.is_empty() {
                "*".to_string()
            } else {
                ctx.kinds.join(",")
            },
            status,
            current_item: busy.first().copied(),
            task_text: (!busy.is_empty())
                .then(|| format!("{} of {} workers busy", busy.len(), ctx.cfg.workers)),
            last_heartbeat_at: ctx.clock.now(),
            heartbeat_interval_ms: duration_millis(ctx.cfg.base.heartbeat),
            started_at: self.started_at,
            metadata: json!({
                // Which process this is: what a start refused under the same node id names.
                leasehold_core::METADATA_HOST: crate::identity::host(),
                leasehold_core::METADATA_PID: std::process::id(),
                "workers": ctx.cfg.workers,
                "busy_items": busy.iter().map(|i| i.0).collect::<Vec<_>>(),
                // Every worker: its item, since when, and the text its handler set.
                "worker_tasks": workers,
                // This incarnation's running totals: the dashboard, another process, reads
                // recovery statistics only from here.
                "stats": node_totals(&ctx.metrics),
                // Counts by kind and histograms, for the cluster's `/metrics` (see
                // crate::metrics); fixed bucket bounds keep it a few short lists per kind.
                leasehold_core::metrics::METADATA_METRICS: ctx.recorder.snapshot(&ctx.metrics),
            }),
        };
        match ctx.store.node_heartbeat(&record).await {
            Ok(()) => ctx.store_reachable.store(true, Ordering::Relaxed),
            Err(e @ StoreError::Superseded { .. }) => {
                // The store answered: it is this incarnation that is gone.
                ctx.store_reachable.store(true, Ordering::Relaxed);
                if let (false, StoreError::Superseded { current, .. }) = (self.stopped, &e) {
                    let _ = self.supervisor.cast(SupervisorMsg::Superseded {
                        by: *current,
                        reason: e.to_string(),
                    });
                }
                self.stopped = true;
            }
            Err(e) => {
                ctx.store_reachable.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "registry heartbeat failed; the reaper stands down until it succeeds");
            }
        }
    }
}
