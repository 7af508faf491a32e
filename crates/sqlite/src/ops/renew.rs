//! `lease_renew` and `leases_renew_owner`: the heartbeat's writes.

use std::time::Duration;

use leasehold_core::{LeaseRef, StoreError, Timestamp};
use rusqlite::{params, Transaction};

use crate::error::{lease_lost, OpResult};

/// Fenced: an expired lease that nobody has taken back yet is still its holder's to renew. An
/// item marked for cancellation is not renewed ([`CANCELLING`] tells why).
pub(crate) const RENEW: &str =
    "UPDATE items SET lease_expires_at = ?4, last_heartbeat_at = ?5, updated_at = ?5 \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3 \
       AND cancel_requested_at IS NULL";

/// Read only when a renewal changed nothing: whether the lease is still current, its item
/// marked for cancellation.
const CANCELLING: &str = "SELECT 1 FROM items \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3 \
       AND cancel_requested_at IS NOT NULL";

/// A scan of `items_lease_expiry`, which holds only leased items.
const RENEW_OWNER: &str = "UPDATE items INDEXED BY items_lease_expiry \
     SET lease_expires_at = ?2, last_heartbeat_at = ?3, updated_at = ?3 \
     WHERE status = 'in_progress' AND owner = ?1 AND cancel_requested_at IS NULL";

/// Extends one lease to `now + duration` inside `tx`; one statement, so many heartbeats'
/// renewals share a group commit.
pub(crate) fn one(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    duration: Duration,
    now: Timestamp,
) -> OpResult<Timestamp> {
    let expires_at = now.plus(duration);
    let changed = tx.prepare_cached(RENEW)?.execute(params![
        lease.item.0,
        lease.owner,
        lease.epoch,
        expires_at.0,
        now.0
    ])?;
    if changed == 0 {
        let cancelling = tx.prepare_cached(CANCELLING)?.exists(params![
            lease.item.0,
            lease.owner,
            lease.epoch
        ])?;
        if cancelling {
            return Err(StoreError::CancelRequested {
                item: lease.item,
                owner: lease.owner.clone(),
                epoch: lease.epoch,
            }
            .into());
        }
        return Err(lease_lost(lease));
    }
    Ok(expires_at)
}

/// Extends every lease `owner` holds, in one statement inside `tx`.
pub(crate) fn owner(
    tx: &Transaction<'_>,
    owner: &str,
    duration: Duration,
    now: Timestamp,
) -> OpResult<u64> {
    let expires_at = now.plus(duration);
    let changed = tx
        .prepare_cached(RENEW_OWNER)?
        .execute(params![owner, expires_at.0, now.0])?;
    Ok(changed as u64)
}
