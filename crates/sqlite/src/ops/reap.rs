//! `items_reap_expired`: the reaper's store side.
//!
//! Three steps, because the liveness question is an async actor ping that may take up to its
//! timeout: a read-only scan, the liveness checks (concurrently, with no transaction open), then one write
//! transaction whose every change is conditional on the row being as scanned.

use std::time::Instant;

use futures::future::join_all;

use leasehold_core::{
    AttemptOutcome, Liveness, LivenessCheck, ReapCandidate, ReapCursor, ReapRequest, RecoveryStats,
    StoreError, StoreResult, Timestamp,
};
use rusqlite::{params, Connection};

use crate::db::{write, Db};
use crate::error::OpResult;
use crate::ops::take_back::{self, Verdict};
use crate::row::{self, candidate_columns};

/// In-progress items whose lease ran out or whose holder has been silent past the stale limit,
/// oldest expiry first, through the partial index `items_lease_expiry` (which holds only leased
/// items, so the scan is bounded by the number of leases, not the queue). `INDEXED BY` pins it,
/// as in acquire: SQLite would otherwise pick `items_status` and sort.
pub(crate) const SCAN: &str = concat!(
    "SELECT ",
    candidate_columns!(),
    ", coalesce(last_heartbeat_at <= ?2, 0) FROM items INDEXED BY items_lease_expiry \
     WHERE status = 'in_progress' AND (lease_expires_at <= ?1 OR last_heartbeat_at <= ?2) \
       AND (lease_expires_at, id) > (?4, ?5) \
     ORDER BY lease_expires_at, id LIMIT ?3"
);

/// One sweep of at most `req.batch` candidates.
pub(crate) async fn run(
    db: &Db,
    req: &ReapRequest,
    liveness: &dyn LivenessCheck,
    keep: u32,
    now: Timestamp,
) -> StoreResult<RecoveryStats> {
    req.validate().map_err(StoreError::InvalidInput)?;
    let started = Instant::now();
    let stale_cutoff = now.minus(req.stale_after);
    let batch = req.batch;
    let after = req.after;
    let candidates = db
        .call(move |c| scan(c, now, stale_cutoff, batch, after))
        .await?;

    let full = candidates.len() as u64 >= u64::from(batch);
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
    // All owners are asked at once: a dead owner's ping costs its whole timeout, and a batch
    // of them in turn would hold the sweep for batch × timeout. Past the hard stale limit the
    // owner is not asked: a wedged owner may still answer pings while making no progress.
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
        db.call(move |c| apply(c, verdicts, keep, now)).await?
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

fn scan(
    c: &mut Connection,
    now: Timestamp,
    stale_cutoff: Timestamp,
    batch: u32,
    after: Option<ReapCursor>,
) -> OpResult<Vec<ReapCandidate>> {
    let (after_expiry, after_id) =
        after.map_or((i64::MIN, i64::MIN), |c| (c.lease_expires_at.0, c.item.0));
    let mut stmt = c.prepare_cached(SCAN)?;
    let rows = stmt.query_map(
        params![now.0, stale_cutoff.0, batch, after_expiry, after_id],
        row::candidate,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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

/// Applies every verdict in one transaction; pairs each with whether it applied.
fn apply(
    c: &mut Connection,
    verdicts: Vec<Verdict>,
    keep: u32,
    now: Timestamp,
) -> OpResult<Vec<(Verdict, bool)>> {
    write(c, |tx| {
        let mut out = Vec::with_capacity(verdicts.len());
        for verdict in verdicts {
            let applied = take_back::apply(tx, &verdict, keep, now)?;
            out.push((verdict, applied));
        }
        Ok(out)
    })
}
