//! `items_reap_expired`: the reaper's store side.
//!
//! Three steps, because the liveness question may take up to its timeout: a read-only scan,
//! the liveness checks (concurrently, with no transaction open and no connection held), then
//! one transaction whose every change is conditional on the row being as scanned. Reapers on
//! several nodes may sweep at once: the second one's conditional write finds the row changed
//! and counts it as `skipped_changed`.

use std::time::Instant;

use futures::future::join_all;
use leasehold_core::{
    AttemptOutcome, Liveness, LivenessCheck, ReapCandidate, ReapCursor, ReapRequest, RecoveryStats,
    StoreError, StoreResult, Timestamp,
};

use crate::db::Db;
use crate::error::from_pg;
use crate::ops::take_back::{self, Verdict};
use crate::row::{self, candidate_columns};

/// In-progress items whose lease ran out or whose holder has been silent past the stale limit,
/// oldest expiry first, through the partial index `items_lease_expiry`.
pub(crate) const SCAN: &str = concat!(
    "SELECT ",
    candidate_columns!(),
    ", coalesce(last_heartbeat_at <= $2, false) FROM items \
     WHERE status = 'in_progress' AND (lease_expires_at <= $1 OR last_heartbeat_at <= $2) \
       AND (lease_expires_at, id) > ($4, $5) \
     ORDER BY lease_expires_at, id LIMIT $3"
);

/// One sweep of at most `req.batch` candidates.
pub(crate) async fn run(
    db: &Db,
    channel: &str,
    req: &ReapRequest,
    liveness: &dyn LivenessCheck,
    keep: u32,
    now: Timestamp,
) -> StoreResult<RecoveryStats> {
    req.validate().map_err(StoreError::InvalidInput)?;
    let started = Instant::now();
    let stale_cutoff = now.minus(req.stale_after);
    let (after_expiry, after_id) = req
        .after
        .map_or((i64::MIN, i64::MIN), |c| (c.lease_expires_at.0, c.item.0));
    let rows = db
        .query(
            SCAN,
            &[
                &now.0,
                &stale_cutoff.0,
                &i64::from(req.batch),
                &after_expiry,
                &after_id,
            ],
        )
        .await?;
    let candidates: Vec<ReapCandidate> = rows
        .iter()
        .map(row::candidate)
        .collect::<StoreResult<_>>()?;

    let full = candidates.len() as u64 >= u64::from(req.batch);
    let mut stats = RecoveryStats {
        expired_found: candidates.len() as u64,
        dry_run: req.dry_run,
        next: candidates.last().filter(|_| full).and_then(|c| {
            c.lease_expires_at.map(|t| ReapCursor {
                lease_expires_at: t,
                item: c.item,
            })
        }),
        ..RecoveryStats::default()
    };
    // All owners are asked at once (a dead owner's ping costs its whole timeout); past the
    // hard stale limit the owner is not asked at all.
    let verdicts_of_owners = join_all(candidates.iter().map(|c| async move {
        if c.past_stale_limit {
            Liveness::Dead
        } else {
            liveness.check(c).await
        }
    }))
    .await;
    let mut verdicts = Vec::with_capacity(candidates.len());
    for (candidate, owner) in candidates.into_iter().zip(verdicts_of_owners) {
        if owner == Liveness::Alive {
            stats.skipped_alive += 1;
            continue;
        }
        verdicts.push(judge(candidate, req));
    }

    let applied = if req.dry_run || verdicts.is_empty() {
        verdicts.into_iter().map(|v| (v, true)).collect()
    } else {
        apply(db, channel, verdicts, keep, now).await?
    };
    for (verdict, applied) in applied {
        if !applied {
            stats.skipped_changed += 1;
            continue;
        }
        if verdict.dead_letter {
            stats.failed += 1;
        } else {
            stats.recovered += 1;
        }
        stats.items.push(verdict.report());
    }
    stats.scan_duration = started.elapsed();
    Ok(stats)
}

/// Requeue, or dead-letter when the attempts are spent (against the item's budget, or the
/// request's lower limit).
fn judge(candidate: ReapCandidate, req: &ReapRequest) -> Verdict {
    let limit = req
        .max_attempts
        .map_or(candidate.max_attempts, |m| m.min(candidate.max_attempts));
    let dead_letter = candidate.attempts >= limit;
    let why = if candidate.past_stale_limit {
        format!(
            "no heartbeat from owner {} for over {}s (hard stale limit)",
            candidate.owner,
            req.stale_after.as_secs_f64()
        )
    } else {
        format!("lease expired; owner {} presumed dead", candidate.owner)
    };
    let spent = if limit < candidate.max_attempts {
        format!(
            "after {} attempts (reaper limit {limit}, budget {})",
            candidate.attempts, candidate.max_attempts
        )
    } else {
        format!(
            "after {} of {} attempts",
            candidate.attempts, candidate.max_attempts
        )
    };
    Verdict {
        reason: format!("{why} {spent}"),
        candidate,
        dead_letter,
        outcome: AttemptOutcome::Reaped,
    }
}

/// Applies every verdict in one transaction, in id order (the lock order of every multi-row
/// write); pairs each with whether it applied, in the scan's order.
async fn apply(
    db: &Db,
    channel: &str,
    verdicts: Vec<Verdict>,
    keep: u32,
    now: Timestamp,
) -> StoreResult<Vec<(Verdict, bool)>> {
    let mut order: Vec<usize> = (0..verdicts.len()).collect();
    order.sort_by_key(|&i| verdicts[i].candidate.item);
    let mut applied = vec![false; verdicts.len()];
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    for i in order {
        applied[i] = take_back::apply(&tx, &verdicts[i], keep, now).await?;
    }
    let requeued = verdicts
        .iter()
        .zip(&applied)
        .filter(|(v, a)| **a && !v.dead_letter)
        .count();
    take_back::notify(&tx, channel, requeued).await?;
    tx.commit().await.map_err(from_pg)?;
    Ok(verdicts.into_iter().zip(applied).collect())
}
