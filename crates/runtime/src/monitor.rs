//! The monitor: every interval it reads the worker registry, takes back the items of node
//! incarnations the registry no longer vouches for (dead, or stopped with work still held) —
//! only those items whose own last heartbeat is older than the same window, so an item whose
//! worker still renews it is never taken whatever the row says — and raises an alert — a tracing event, a [`NodeEvent::NodeDead`] and the builder's
//! [`on_node_dead`](crate::LeaseholdBuilder::on_node_dead) callback — the first time it sees
//! a node dead. It judges liveness only through [`NodeRecord::state`](leasehold_core::NodeRecord::state), the same judgement the
//! reaper's [`RegistryLiveness`](leasehold_core::RegistryLiveness), `leasehold workers` and
//! the dashboard use, and, like the reaper, it stands down when this node's own store access
//! is failing: a sick database must not look like dead nodes.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

use leasehold_core::{DeadNodesRequest, RecoveredItem, Timestamp, WorkerState};

use crate::events::NodeEvent;
use crate::node::{Metrics, NodeCtx};
use crate::reaper::registry_beats;

/// A node incarnation the monitor found dead (or stopped while still holding items), and
/// what it took back from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadNode {
    /// The node's id.
    pub node_id: String,
    /// The dead incarnation.
    pub incarnation: i64,
    /// `dead`, or `stopped` for a graceful stop that left items behind.
    pub state: WorkerState,
    /// Its last heartbeat.
    pub last_heartbeat_at: Timestamp,
    /// How long it had been silent when judged.
    #[serde(with = "millis")]
    pub silent_for: Duration,
    /// The items requeued or dead-lettered this check.
    pub recovered: Vec<RecoveredItem>,
    /// Whether this is the first check of this monitor to find it dead: the alert fires then.
    pub first_seen: bool,
}

/// What one monitor check did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MonitorReport {
    /// Dead incarnations found (alerted or not), and stopped ones whose items were taken back.
    pub dead: Vec<DeadNode>,
    /// Items requeued.
    pub requeued: u64,
    /// Items dead-lettered because their attempts were spent.
    pub dead_lettered: u64,
}

/// The outcome of one monitor check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum MonitorOutcome {
    /// The check ran.
    Checked(MonitorReport),
    /// Nothing was judged: this node cannot trust its view of the store.
    StoodDown(String),
}

/// The user's alert: called once per dead node incarnation per monitor (it must not block).
pub type DeadNodeCallback = Arc<dyn Fn(&DeadNode) + Send + Sync>;

/// Messages the monitor handles.
pub(crate) enum MonitorMsg {
    /// The periodic check.
    Tick,
    /// A check now, for the handle.
    CheckNow(RpcReplyPort<MonitorOutcome>),
}

pub(crate) struct Monitor;

pub(crate) struct MonitorState {
    ctx: Arc<NodeCtx>,
    /// Incarnations already alerted, so a node stays one alert however long its row lingers.
    alerted: HashSet<(String, i64)>,
}

impl Actor for Monitor {
    type Msg = MonitorMsg;
    type State = MonitorState;
    type Arguments = Arc<NodeCtx>;

    async fn pre_start(
        &self,
        myself: ActorRef<MonitorMsg>,
        ctx: Arc<NodeCtx>,
    ) -> Result<MonitorState, ActorProcessingErr> {
        myself.send_after(ctx.cfg.monitor_every(), || MonitorMsg::Tick);
        Ok(MonitorState {
            ctx,
            alerted: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<MonitorMsg>,
        msg: MonitorMsg,
        state: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MonitorMsg::Tick => {
                check_once(&state.ctx, &mut state.alerted).await;
                myself.send_after(state.ctx.cfg.monitor_every(), || MonitorMsg::Tick);
            }
            MonitorMsg::CheckNow(reply) => {
                let _ = reply.send(check_once(&state.ctx, &mut state.alerted).await);
            }
        }
        Ok(())
    }
}

/// One check: stand down on a failing store; otherwise judge every other node's row and take
/// back what dead or stopped incarnations still hold.
pub(crate) async fn check_once(
    ctx: &Arc<NodeCtx>,
    alerted: &mut HashSet<(String, i64)>,
) -> MonitorOutcome {
    if !ctx.store_reachable.load(Ordering::Relaxed) && !registry_beats(ctx).await {
        return stand_down(ctx, "this node's registry heartbeat is failing".into());
    }
    if let Err(e) = ctx.store.ping().await {
        return stand_down(ctx, format!("the store does not answer: {e}"));
    }
    let now = ctx.clock.now();
    // The one take-back every caller shares (`leasehold reap --dead-nodes`, the stand-alone
    // monitor, PostgreSQL's SQL function): this incarnation is alive by definition.
    let req = DeadNodesRequest {
        missed_intervals: ctx.cfg.dead_after_missed,
        dry_run: false,
        exclude: Some((ctx.node_id.clone(), ctx.incarnation)),
    };
    let released = match ctx.store.items_release_dead_nodes(&req, now).await {
        Ok(r) => r,
        Err(e) if e.is_backend_failure() => {
            return stand_down(ctx, format!("taking back items failed: {e}"));
        }
        Err(e) => {
            tracing::error!(error = %e, "monitor could not take back dead nodes' items");
            return stand_down(ctx, format!("taking back items was refused: {e}"));
        }
    };
    let mut report = MonitorReport::default();
    for node in released {
        let first_seen = node.state == WorkerState::Dead
            && alerted.insert((node.node_id.clone(), node.incarnation));
        if !first_seen && node.items.is_empty() {
            continue;
        }
        let dead = DeadNode {
            silent_for: now.since(node.last_heartbeat_at),
            node_id: node.node_id,
            incarnation: node.incarnation,
            state: node.state,
            last_heartbeat_at: node.last_heartbeat_at,
            recovered: node.items,
            first_seen,
        };
        let dead_lettered = dead.recovered.iter().filter(|r| r.dead_lettered).count() as u64;
        report.dead_lettered += dead_lettered;
        report.requeued += dead.recovered.len() as u64 - dead_lettered;
        if first_seen {
            alert(ctx, &dead);
        } else {
            tracing::info!(node = %dead.node_id, incarnation = dead.incarnation, state = %dead.state, items = dead.recovered.len(), "monitor took back items of a node that is not alive");
        }
        report.dead.push(dead);
    }
    let m = &ctx.metrics;
    Metrics::add(&m.monitor_recovered, report.requeued);
    Metrics::add(&m.monitor_dead_lettered, report.dead_lettered);
    if report.requeued > 0 {
        // Requeued items are ready now: wake idle workers rather than wait for their timers.
        ctx.wake(usize::try_from(report.requeued).unwrap_or(usize::MAX));
    }
    MonitorOutcome::Checked(report)
}

/// The three alerts, once per dead incarnation.
fn alert(ctx: &NodeCtx, dead: &DeadNode) {
    Metrics::bump(&ctx.metrics.monitor_dead_nodes);
    tracing::warn!(
        node = %dead.node_id,
        incarnation = dead.incarnation,
        silent_ms = dead.silent_for.as_millis() as u64,
        items_taken_back = dead.recovered.len(),
        "worker node is dead: no heartbeat for {} intervals",
        ctx.cfg.dead_after_missed
    );
    ctx.emit(NodeEvent::NodeDead {
        node_id: dead.node_id.clone(),
        incarnation: dead.incarnation,
        recovered: dead.recovered.len(),
    });
    if let Some(callback) = &ctx.on_node_dead {
        // A panicking callback must not take the monitor (and its restarts) down with it.
        let call = std::panic::AssertUnwindSafe(|| callback(dead));
        if std::panic::catch_unwind(call).is_err() {
            tracing::error!(node = %dead.node_id, "the on_node_dead callback panicked");
        }
    }
}

fn stand_down(ctx: &NodeCtx, why: String) -> MonitorOutcome {
    Metrics::bump(&ctx.metrics.monitor_stand_downs);
    ctx.emit(NodeEvent::MonitorStoodDown {
        reason: why.clone(),
    });
    tracing::warn!(reason = %why, "monitor stands down: judging no node this check");
    MonitorOutcome::StoodDown(why)
}

mod millis {
    use serde::Serializer;
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}
