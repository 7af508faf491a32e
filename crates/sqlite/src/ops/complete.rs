//! `item_complete`: the one place output is committed.

use leasehold_core::{LeaseRef, Timestamp};
use rusqlite::{params, Transaction};

use crate::error::{lease_lost, OpResult};

/// Fenced, so output is committed once, by the current holder only. The owner columns stay as
/// a record of who finished the item; the lease expiry goes.
pub(crate) const COMPLETE: &str =
    "UPDATE items SET status = 'completed', output = ?4, finished_at = ?5, \
         updated_at = ?5, lease_expires_at = NULL \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Completes the item with `output` (already JSON text: it is serialised before the write is
/// queued, off the connection thread) inside `tx`. A refused completion writes nothing and may
/// share a group commit. The attempt's history is the completed row itself (see
/// `history::list`): nothing else is written.
pub(crate) fn run(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    output: &str,
    now: Timestamp,
) -> OpResult<()> {
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
