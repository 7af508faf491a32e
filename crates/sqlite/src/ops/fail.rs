//! `item_fail`: retry later or dead-letter.

use leasehold_core::{FailDisposition, FailOutcome, LeaseRef, Timestamp};
use rusqlite::{params, OptionalExtension, Transaction};

use crate::error::{lease_lost, OpResult};

pub(crate) const ATTEMPTS: &str = "SELECT attempts, max_attempts FROM items \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Back to pending without an owner; the failed attempt stays counted.
pub(crate) const RETRY: &str =
    "UPDATE items SET status = 'pending', run_at = ?4, error = ?5, updated_at = ?6, \
         owner = NULL, owner_node = NULL, owner_incarnation = NULL, \
         lease_expires_at = NULL, last_heartbeat_at = NULL \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Dead-letter: the owner columns stay as a record of the last holder.
pub(crate) const DEAD_LETTER: &str =
    "UPDATE items SET status = 'failed', error = ?4, finished_at = ?5, \
         updated_at = ?5, lease_expires_at = NULL \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Records a failed attempt inside `tx`. The read and the write share the transaction, so the
/// budget is judged on the row the write changes; the one write comes after the read (or not at
/// all when the lease is lost), so it may share a group commit.
pub(crate) fn run(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    error: &str,
    disposition: FailDisposition,
    now: Timestamp,
) -> OpResult<FailOutcome> {
    {
        let budget: Option<(u32, u32)> = tx
            .prepare_cached(ATTEMPTS)?
            .query_row(params![lease.item.0, lease.owner, lease.epoch], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((attempts, max_attempts)) = budget else {
            return Err(lease_lost(lease));
        };
        match disposition {
            FailDisposition::Retry { delay } if attempts < max_attempts => {
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
                tx.prepare_cached(DEAD_LETTER)?.execute(params![
                    lease.item.0,
                    lease.owner,
                    lease.epoch,
                    error,
                    now.0
                ])?;
                Ok(FailOutcome::DeadLettered)
            }
        }
    }
}
