//! `item_release`: a graceful give-back.

use leasehold_core::{LeaseRef, Timestamp};
use rusqlite::{params, Connection};

use crate::db::write;
use crate::error::{lease_lost, OpResult};

/// Back to pending, ready now, and the attempt is given back: a graceful stop is not a failure
/// of the item (invariant 4). The epoch stays; the next acquisition bumps it.
pub(crate) const RELEASE: &str =
    "UPDATE items SET status = 'pending', attempts = max(attempts - 1, 0), \
         run_at = ?4, updated_at = ?4, owner = NULL, owner_node = NULL, owner_incarnation = NULL, \
         lease_expires_at = NULL, last_heartbeat_at = NULL \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Releases the item.
pub(crate) fn run(c: &mut Connection, lease: &LeaseRef, now: Timestamp) -> OpResult<()> {
    write(c, |tx| {
        let changed = tx.prepare_cached(RELEASE)?.execute(params![
            lease.item.0,
            lease.owner,
            lease.epoch,
            now.0
        ])?;
        if changed == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    })
}
