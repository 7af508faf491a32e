//! `item_complete`: the one place output is committed.

use leasehold_core::{AttemptOutcome, LeaseRef, Timestamp};
use rusqlite::{params, Transaction};

use crate::error::{lease_lost, OpResult};
use crate::ops::history;

/// Fenced, so output is committed once, by the current holder only. The owner columns stay as
/// a record of who finished the item; the lease expiry goes.
pub(crate) const COMPLETE: &str =
    "UPDATE items SET status = 'completed', output = ?4, finished_at = ?5, \
         updated_at = ?5, lease_expires_at = NULL \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Completes the item with `output` (already JSON text: it is serialised before the write is
/// queued, off the connection thread) inside `tx`, recording the attempt first: the fenced
/// record inserts nothing (and the call is `LeaseLost`) exactly when the completion would
/// change nothing, so a refused completion writes nothing and may share a group commit.
pub(crate) fn run(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    output: &str,
    keep: u32,
    now: Timestamp,
) -> OpResult<()> {
    history::record(tx, lease, AttemptOutcome::Completed, None, keep, now)?;
    let changed = tx.prepare_cached(COMPLETE)?.execute(params![
        lease.item.0,
        lease.owner,
        lease.epoch,
        output,
        now.0
    ])?;
    if changed == 0 {
        return Err(lease_lost(lease));
    }
    Ok(())
}
