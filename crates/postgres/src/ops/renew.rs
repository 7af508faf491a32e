//! `lease_renew` and `leases_renew_owner`: the heartbeat's writes.

use std::time::Duration;

use leasehold_core::{LeaseRef, StoreResult, Timestamp};

use crate::db::Db;
use crate::error::lease_lost;

/// Fenced: an expired lease that nobody has taken back yet is still its holder's to renew.
const RENEW: &str =
    "UPDATE items SET lease_expires_at = $4, last_heartbeat_at = $5, updated_at = $5 \
     WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3";

/// Locks the owner's rows in id order first (the order every multi-row write uses), so a
/// renewal and a concurrent recovery of the same rows cannot deadlock.
const RENEW_OWNER: &str =
    "UPDATE items SET lease_expires_at = $2, last_heartbeat_at = $3, updated_at = $3 \
     WHERE id IN (SELECT id FROM items WHERE status = 'in_progress' AND owner = $1 \
                  ORDER BY id FOR UPDATE) \
       AND status = 'in_progress' AND owner = $1";

/// Extends one lease to `now + duration`.
pub(crate) async fn one(
    db: &Db,
    lease: &LeaseRef,
    duration: Duration,
    now: Timestamp,
) -> StoreResult<Timestamp> {
    let expires_at = now.plus(duration);
    let changed = db
        .execute(
            RENEW,
            &[
                &lease.item.0,
                &lease.owner,
                &lease.epoch,
                &expires_at.0,
                &now.0,
            ],
        )
        .await?;
    if changed == 0 {
        return Err(lease_lost(lease));
    }
    Ok(expires_at)
}

/// Extends every lease `owner` holds, in one statement.
pub(crate) async fn owner(
    db: &Db,
    owner: &str,
    duration: Duration,
    now: Timestamp,
) -> StoreResult<u64> {
    let expires_at = now.plus(duration);
    db.execute(RENEW_OWNER, &[&owner, &expires_at.0, &now.0])
        .await
}
