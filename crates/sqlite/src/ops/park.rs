//! `item_park`: the holder parks its item until someone decides.

use leasehold_core::{Decision, DecisionRequest, LeaseRef, StoreError, Timestamp};
use rusqlite::{params, Connection};

use crate::db::write;
use crate::error::{lease_lost, OpResult};

/// One fenced statement: `in_progress` under this lease → `awaiting`. The lease and owner
/// columns are cleared (a parked item holds no lease, so neither the reaper nor `recover_mine`
/// sees it) and the attempt is given back, as a release gives it back: waiting for a person is
/// not the item's failure. The epoch stays; the acquisition after the decision bumps it.
const PARK: &str = "UPDATE items SET status = 'awaiting', decision = ?4, \
         attempts = max(attempts - 1, 0), owner = NULL, owner_node = NULL, \
         owner_incarnation = NULL, lease_expires_at = NULL, last_heartbeat_at = NULL, \
         updated_at = ?5 \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Parks the item with `request` as its open decision (fenced).
pub(crate) fn run(
    c: &mut Connection,
    lease: &LeaseRef,
    request: &DecisionRequest,
    now: Timestamp,
) -> OpResult<()> {
    request.validate().map_err(StoreError::InvalidInput)?;
    let decision = serde_json::to_string(&Decision::ask(request, now))
        .map_err(|e| StoreError::InvalidInput(format!("decision not storable as JSON: {e}")))?;
    write(c, |tx| {
        let changed = tx.prepare_cached(PARK)?.execute(params![
            lease.item.0,
            lease.owner,
            lease.epoch,
            decision,
            now.0
        ])?;
        if changed == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    })
}
