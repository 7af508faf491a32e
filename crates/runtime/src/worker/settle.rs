//! Ending an attempt: the handler's result written, fenced ([`WorkerState::settle`]), and
//! the other ways an attempt ends (failure, a park for a decision, a lapsed or lost lease, a
//! timeout, an operator's cancel, a release on shutdown).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use leasehold_core::{
    Backoff, DecisionRequest, FailDisposition, FailOutcome, LeaseRef, Leased, NewItem,
    ReleaseOutcome, Store, StoreError, StoreResult, Timestamp,
};

use super::task::Current;
use super::{DrainOutcome, HandlerOutcome, WorkerState};
use crate::events::NodeEvent;
use crate::heartbeat::HeartbeatMsg;
use crate::node::{retry_store, Metrics};

/// Completes an item: with follow-ups, in the one store call that enqueues them in the
/// completion's commit; without, on the plain (batched) completion path.
pub(super) async fn complete(
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

/// The error a timed-out attempt is failed with, e.g. "timed out after 2.5 s".
fn timed_out_error(timeout: Duration) -> String {
    format!(
        "{}{} s: the handler was cancelled",
        leasehold_core::TIMED_OUT_PREFIX,
        timeout.as_secs_f64()
    )
}

impl WorkerState {
    /// Writes the handler's result, fenced. The heartbeat keeps the lease alive until the write
    /// has committed (or is refused), so a slow commit never lets the lease lapse under it.
    ///
    /// With `take_next`, an output's completion and this worker's next acquisition go to the
    /// store together, so the SQLite store commits both in one group: one round trip per item
    /// instead of two. The acquisition is ordered after the completion, and returned only if the
    /// completion did not fail on the store (a refused completion still moves on).
    pub(super) async fn settle(
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
                let write = |now| complete(&ctx.store, &lease, output.clone(), &follow_ups, now);
                let first = if take_next {
                    let now = ctx.clock.now();
                    let (done, acquired) =
                        tokio::join!(write(now), ctx.store.item_acquire(&self.request, now),);
                    match acquired {
                        Ok(leased) => next = leased,
                        Err(e) => {
                            tracing::debug!(owner = %self.request.owner, error = %e, "acquiring alongside a completion failed; polling instead");
                        }
                    }
                    done
                } else {
                    write(ctx.clock.now()).await
                };
                let r = match first {
                    Err(e) if e.is_backend_failure() => {
                        tracing::warn!(item = %lease.item, error = %e, "completion failed; retrying");
                        // Nothing may wait unkept while the completion is retried.
                        if let Some(unstarted) = next.take() {
                            self.give_back(unstarted).await;
                        }
                        retry_store(deadline, || write(ctx.clock.now())).await
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
    pub(super) async fn give_back(&self, leased: Leased) {
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
    pub(super) fn retry_later(
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

    pub(super) async fn fail(
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
    pub(super) async fn park(
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
    pub(super) async fn give_up_unkept(&mut self, cur: Current, write: bool) {
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
    /// that ignores the cancellation is aborted after the grace period
    /// ([`HandlerTask`](super::task::HandlerTask)).
    ///
    /// The failure is retried only briefly: with no renewals the lease lapses anyway, and if
    /// the write cannot land by then, the reaper (whose ping this worker no longer answers for
    /// the item) or the monitor takes the item back, counting the attempt.
    pub(super) async fn time_out(&mut self, mut cur: Current) {
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
    pub(super) async fn cancel(&mut self, mut cur: Current) {
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
        ctx.recorder.kind(&cur.kind, |k| k.cancelled += 1);
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
    pub(super) async fn release(&mut self, cur: Current) -> DrainOutcome {
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
}
