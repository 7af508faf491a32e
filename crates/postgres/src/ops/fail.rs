//! `item_fail`: retry later or dead-letter.

use leasehold_core::{FailDisposition, FailOutcome, LeaseRef, StoreResult, Timestamp};

use crate::db::{prepared, Db};
use crate::error::{from_pg, lease_lost};

/// Locks the row so the budget is judged on the row the write then changes.
const ATTEMPTS: &str = "SELECT attempts, max_attempts FROM items \
     WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3 FOR UPDATE";

/// Back to pending without an owner; the failed attempt stays counted.
const RETRY: &str =
    "UPDATE items SET status = 'pending', run_at = $4, error = $5, updated_at = $6, \
         owner = NULL, owner_node = NULL, owner_incarnation = NULL, \
         lease_expires_at = NULL, last_heartbeat_at = NULL \
     WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3";

/// Dead-letter: the owner columns stay as a record of the last holder.
const DEAD_LETTER: &str = "UPDATE items SET status = 'failed', error = $4, finished_at = $5, \
         updated_at = $5, lease_expires_at = NULL \
     WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3";

/// Records a failed attempt. A NUL in the error text (which PostgreSQL cannot store) becomes
/// U+FFFD rather than losing the failure.
pub(crate) async fn run(
    db: &Db,
    lease: &LeaseRef,
    error: &str,
    disposition: FailDisposition,
    now: Timestamp,
) -> StoreResult<FailOutcome> {
    let error = error.replace('\0', "\u{FFFD}");
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let attempts = prepared(&tx, ATTEMPTS).await?;
    let budget = tx
        .query_opt(&attempts, &[&lease.item.0, &lease.owner, &lease.epoch])
        .await
        .map_err(from_pg)?;
    let Some(budget) = budget else {
        return Err(lease_lost(lease));
    };
    let (used, max): (i64, i64) = (budget.get(0), budget.get(1));
    let outcome = match disposition {
        FailDisposition::Retry { delay } if used < max => {
            let run_at = now.plus(delay);
            let retry = prepared(&tx, RETRY).await?;
            tx.execute(
                &retry,
                &[
                    &lease.item.0,
                    &lease.owner,
                    &lease.epoch,
                    &run_at.0,
                    &error,
                    &now.0,
                ],
            )
            .await
            .map_err(from_pg)?;
            FailOutcome::Retrying { run_at }
        }
        _ => {
            let dead = prepared(&tx, DEAD_LETTER).await?;
            tx.execute(
                &dead,
                &[&lease.item.0, &lease.owner, &lease.epoch, &error, &now.0],
            )
            .await
            .map_err(from_pg)?;
            FailOutcome::DeadLettered
        }
    };
    tx.commit().await.map_err(from_pg)?;
    Ok(outcome)
}
