//! The attempt in hand: what a worker keeps of a leased item ([`Current`]), the handler's
//! task ([`HandlerTask`]), and starting both ([`WorkerState::start`]).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use ractor::concurrency::JoinHandle;
use ractor::ActorRef;
use tokio_util::sync::CancellationToken;

use leasehold_core::{Backoff, ItemId, LeaseRef, Leased, NewItem, Timestamp};

use super::{HandlerOutcome, WorkerMsg, WorkerState, MIN_IDLE_BACKOFF};
use crate::events::NodeEvent;
use crate::handler::{JobContext, JobError};
use crate::heartbeat::HeartbeatMsg;
use crate::metrics::JobMetrics;
use crate::node::{Metrics, NodeCtx};

/// The follow-ups a successful handler asked for ([`JobContext::follow_up`]), taken once.
pub(super) fn take_follow_ups(follow_ups: &std::sync::Mutex<Vec<NewItem>>) -> Vec<NewItem> {
    std::mem::take(&mut *follow_ups.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The item in hand (the item itself went to the handler).
pub(super) struct Current {
    pub(super) lease: LeaseRef,
    /// The item's kind, which its metrics are counted under.
    pub(super) kind: Arc<str>,
    /// When the attempt started (the node's clock): its run time is observed when this is
    /// dropped, however the attempt ends.
    pub(super) started_at: Timestamp,
    /// For the run time, at drop.
    pub(super) ctx: Arc<NodeCtx>,
    /// The item's attempt count with this acquisition included.
    pub(super) attempts: u32,
    /// The item's kind's retry schedule (the item itself went to the handler).
    pub(super) backoff: Backoff,
    /// The heartbeat keeping this lease (`None` once it died).
    pub(super) heartbeat: Option<ActorRef<HeartbeatMsg>>,
    /// Whether a heartbeat is still keeping the lease.
    pub(super) kept: bool,
    pub(super) expires_at: Timestamp,
    /// The attempt's execution timeout, if it has one.
    pub(super) timeout: Option<Duration>,
    /// The timer that sends [`WorkerMsg::TimedOut`]; aborted when the item is settled, so a
    /// long timeout leaves no sleeping task behind each quick item.
    pub(super) timeout_timer: Option<JoinHandle<Result<(), ractor::MessagingErr<WorkerMsg>>>>,
    /// Held for its `Drop`, which cancels (and later aborts) the handler.
    #[allow(dead_code)]
    pub(super) task: HandlerTask,
}

impl Current {
    pub(super) fn is(&self, item: ItemId, epoch: i64) -> bool {
        self.lease.item == item && self.lease.epoch == epoch
    }
}

/// The handler's task. Dropping it (the worker finished, lost the lease, or was killed) cancels
/// the handler, and aborts it if it ignores cancellation for longer than the grace period.
pub(super) struct HandlerTask {
    pub(super) cancel: CancellationToken,
    pub(super) join: Option<tokio::task::JoinHandle<()>>,
    pub(super) grace: Duration,
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

pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

impl WorkerState {
    pub(super) async fn start(&mut self, myself: &ActorRef<WorkerMsg>, leased: Leased) {
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
}
