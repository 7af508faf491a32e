//! `item_fail`: retry later or dead-letter.

use leasehold_core::{AttemptOutcome, FailDisposition, FailOutcome, LeaseRef, Timestamp};
use rusqlite::{params, OptionalExtension, Transaction};

use crate::error::{lease_lost, OpResult};
use crate::ops::history;

pub(crate) const ATTEMPTS: &str = "SELECT attempts, max_attempts, \
         cancel_requested_at IS NOT NULL FROM items \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Back to pending without an owner; the failed attempt stays counted.
pub(crate) const RETRY: &str =
    "UPDATE items SET status = 'pending', run_at = ?4, error = ?5, updated_at = ?6, \
         owner = NULL, owner_node = NULL, owner_incarnation = NULL, \
         lease_expires_at = NULL, last_heartbeat_at = NULL \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Dead-letter (`?6` = 'failed'), or, for an item an operator marked for cancellation, cancel
/// (`?6` = 'cancelled'): either way not retried. The owner columns stay as a record of the
/// last holder.
pub(crate) const DEAD_LETTER: &str = "UPDATE items SET status = ?6, error = ?4, finished_at = ?5, \
         updated_at = ?5, lease_expires_at = NULL \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Records a failed attempt inside `tx`. The read and the writes share the transaction, so the
/// budget is judged on the row the write changes; the writes (the attempt's record, then the
/// item) come after the read (or not at all when the lease is lost), so it may share a group
/// commit. An item marked for cancellation is cancelled, not retried (reported as
/// `DeadLettered`: it will not run again).
pub(crate) fn run(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    error: &str,
    disposition: FailDisposition,
    keep: u32,
    now: Timestamp,
) -> OpResult<FailOutcome> {
    {
        let budget: Option<(u32, u32, bool)> = tx
            .prepare_cached(ATTEMPTS)?
            .query_row(params![lease.item.0, lease.owner, lease.epoch], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((attempts, max_attempts, cancelling)) = budget else {
            return Err(lease_lost(lease));
        };
        let outcome = AttemptOutcome::of_failure(error);
        history::record(tx, lease, outcome, Some(error), keep, now)?;
        match disposition {
            FailDisposition::Retry { delay } if attempts < max_attempts && !cancelling => {
                let run_at = now.plus(delay);
                tx.prepare_cached(RETRY)?.execute(params![
                    lease.item.0,
                    lease.owner,
                    lease.epoch,
                    run_at.0,
                    error,
                    now.0
                ])?;
                Ok(FailOutcome::Retrying { run_at })
            }
            _ => {
                let status = if cancelling { "cancelled" } else { "failed" };
                tx.prepare_cached(DEAD_LETTER)?.execute(params![
                    lease.item.0,
                    lease.owner,
                    lease.epoch,
                    error,
                    now.0,
                    status
                ])?;
                Ok(FailOutcome::DeadLettered)
            }
        }
    }
}
