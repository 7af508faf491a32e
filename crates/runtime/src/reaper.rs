//! The reaper: sweeps once at start, then every sweep interval and on demand, in batches; judges owners before it
//! requeues (invariant 5); stands down when this node cannot reach the store.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use leasehold_core::{ReapRequest, RecoveryStats};

use crate::events::NodeEvent;
use crate::handle::SweepOutcome;
use crate::liveness::NodeLiveness;
use crate::node::{Metrics, NodeCtx};
use crate::registry::RegistryMsg;

/// At most this many batches per sweep, so one sweep never runs unbounded.
const MAX_BATCHES_PER_SWEEP: u32 = 16;

/// Messages the reaper handles.
pub(crate) enum ReaperMsg {
    /// The sweep at start, then the periodic sweeps.
    Tick,
    /// A sweep now, for the handle.
    SweepNow(RpcReplyPort<SweepOutcome>),
    /// Fault injection: panic inside the actor.
    Crash(String),
}

pub(crate) struct Reaper;

pub(crate) struct ReaperState {
    ctx: Arc<NodeCtx>,
}

impl Actor for Reaper {
    type Msg = ReaperMsg;
    type State = ReaperState;
    type Arguments = Arc<NodeCtx>;

    async fn pre_start(
        &self,
        myself: ActorRef<ReaperMsg>,
        ctx: Arc<NodeCtx>,
    ) -> Result<ReaperState, ActorProcessingErr> {
        // The first sweep runs at once, not one interval in: a cluster restarted after an
        // outage holds leases that expired while it was down, and with a long sweep interval
        // they would otherwise sit until the first tick. The Tick schedules the next one.
        myself.send_message(ReaperMsg::Tick)?;
        Ok(ReaperState { ctx })
    }

    async fn handle(
        &self,
        myself: ActorRef<ReaperMsg>,
        msg: ReaperMsg,
        state: &mut ReaperState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ReaperMsg::Tick => {
                sweep_once(&state.ctx).await;
                myself.send_after(state.ctx.cfg.base.sweep, || ReaperMsg::Tick);
            }
            ReaperMsg::SweepNow(reply) => {
                let _ = reply.send(sweep_once(&state.ctx).await);
            }
            ReaperMsg::Crash(why) => panic!("injected reaper fault: {why}"),
        }
        Ok(())
    }
}

/// Whether a fresh registry write reaches the store: the last one failed, but the store may
/// have healed since, and a sweep asked for now should not wait for the next tick to know.
pub(crate) async fn registry_beats(ctx: &Arc<NodeCtx>) -> bool {
    let Some(registry) = ractor::registry::where_is(ctx.actor_name("registry")) else {
        return false;
    };
    let registry: ActorRef<RegistryMsg> = registry.into();
    matches!(
        registry
            .call(RegistryMsg::Beat, Some(ctx.cfg.ping_timeout))
            .await,
        Ok(ractor::rpc::CallResult::Success(true))
    )
}

/// One sweep: up to [`MAX_BATCHES_PER_SWEEP`] batches, each continuing where the last one
/// stopped, while batches come back full.
pub(crate) async fn sweep_once(ctx: &Arc<NodeCtx>) -> SweepOutcome {
    let m = &ctx.metrics;
    // A sick database must not look like dead owners (River PR #1321): when this node's own
    // registry writes or a trivial read fail, requeue nothing.
    if !ctx.store_reachable.load(Ordering::Relaxed) && !registry_beats(ctx).await {
        return stand_down(ctx, "this node's registry heartbeat is failing".into());
    }
    if let Err(e) = ctx.store.ping().await {
        return stand_down(ctx, format!("the store does not answer: {e}"));
    }
    let started = std::time::Instant::now();
    let mut req = ReapRequest::new(ctx.cfg.base.reap_batch, ctx.cfg.base.stale);
    let mut total = RecoveryStats::default();
    for _ in 0..MAX_BATCHES_PER_SWEEP {
        let now = ctx.clock.now();
        let liveness = NodeLiveness::new(ctx.clone(), now);
        let stats = match ctx.store.items_reap_expired(&req, &liveness, now).await {
            Ok(s) => s,
            Err(e) if e.is_backend_failure() => {
                return stand_down(ctx, format!("the sweep failed: {e}"));
            }
            Err(e) => {
                tracing::error!(error = %e, "reaper sweep refused");
                return SweepOutcome::StoodDown(e.to_string());
            }
        };
        // Continue after this batch, not from the start: items of live owners at the head of
        // the scan would otherwise hide every expired item behind them.
        let next = stats.next;
        total.expired_found += stats.expired_found;
        total.recovered += stats.recovered;
        total.failed += stats.failed;
        total.skipped_alive += stats.skipped_alive;
        total.skipped_changed += stats.skipped_changed;
        total.items.extend(stats.items);
        match next {
            Some(cursor) => req = req.after(Some(cursor)),
            None => break,
        }
    }
    total.scan_duration = started.elapsed();
    Metrics::bump(&m.reaper_scans);
    Metrics::add(&m.reaper_recovered, total.recovered);
    Metrics::add(&m.reaper_failed, total.failed);
    Metrics::add(&m.reaper_skipped_alive, total.skipped_alive);
    m.reaper_last_scan_us.store(
        u64::try_from(total.scan_duration.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    ctx.emit(NodeEvent::Swept {
        recovered: total.recovered,
        failed: total.failed,
        skipped_alive: total.skipped_alive,
    });
    if total.recovered + total.failed > 0 {
        tracing::info!(
            expired = total.expired_found,
            requeued = total.recovered,
            dead_lettered = total.failed,
            skipped_alive = total.skipped_alive,
            "reaper recovered expired leases"
        );
        // Requeued items are ready now: wake idle workers rather than wait for their timers.
        ctx.wake(usize::try_from(total.recovered).unwrap_or(usize::MAX));
    }
    SweepOutcome::Swept(total)
}

fn stand_down(ctx: &NodeCtx, why: String) -> SweepOutcome {
    Metrics::bump(&ctx.metrics.reaper_stand_downs);
    ctx.emit(NodeEvent::ReaperStoodDown {
        reason: why.clone(),
    });
    tracing::warn!(reason = %why, "reaper stands down: requeueing nothing this sweep");
    SweepOutcome::StoodDown(why)
}
