//! `item_release`: a graceful give-back, bounded.

use leasehold_core::{LeaseRef, ReleaseOutcome, StoreResult, Timestamp};

use crate::db::Db;
use crate::error::lease_lost;
use crate::ops::history::{attempt_insert, trim_done};

/// One fenced statement with three outcomes, as in the SQLite backend. `$5` is the release
/// limit (NULL: not counted). Within the limit: back to pending, ready now, the attempt given
/// back (a graceful stop is not a failure of the item, invariant 4). Past it: back to pending
/// with the attempt kept, or, when the attempts are spent, dead-lettered with the reason first
/// and the holder's own last error after it (the owner columns stay as a record of the last
/// holder). The epoch stays; the next acquisition bumps it.
///
/// Every right-hand side reads the row as it was before the update, so `releases + 1` is this
/// release's number throughout.
///
/// The same statement records the released attempt in `item_attempts` from the statement's
/// snapshot (`old`: the update clears the owner columns; wherever the fence holds they are as
/// the snapshot has them) and trims the history past `$6`.
const RELEASE: &str = concat!(
    "WITH old AS ( \
         SELECT id AS old_id, epoch AS old_epoch, attempts AS old_attempts, \
             started_at AS old_started_at, owner AS old_owner, owner_node AS old_node, \
             owner_incarnation AS old_incarnation \
         FROM items WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3), \
     done AS (UPDATE items SET \
         releases = releases + CASE WHEN $5::bigint IS NULL THEN 0 ELSE 1 END, \
         attempts = CASE WHEN releases + 1 > $5::bigint THEN attempts \
                         ELSE greatest(attempts - 1, 0) END, \
         status = CASE WHEN releases + 1 > $5::bigint AND attempts >= max_attempts \
                       THEN 'failed' ELSE 'pending' END, \
         error = CASE WHEN releases + 1 > $5::bigint AND attempts >= max_attempts \
                      THEN 'released ' || (releases + 1) || ' times by graceful stops, past the \
limit of ' || $5::bigint || ' releases that give their attempt back, with its ' || max_attempts \
                           || ' attempts spent (does it always outlast the drain timeout?)' \
                           || coalesce('; last error: ' || error, '') \
                      ELSE error END, \
         finished_at = CASE WHEN releases + 1 > $5::bigint AND attempts >= max_attempts \
                            THEN $4::bigint ELSE NULL END, \
         owner = CASE WHEN releases + 1 > $5::bigint AND attempts >= max_attempts \
                      THEN owner ELSE NULL END, \
         owner_node = CASE WHEN releases + 1 > $5::bigint AND attempts >= max_attempts \
                           THEN owner_node ELSE NULL END, \
         owner_incarnation = CASE WHEN releases + 1 > $5::bigint AND attempts >= max_attempts \
                                  THEN owner_incarnation ELSE NULL END, \
         last_heartbeat_at = CASE WHEN releases + 1 > $5::bigint AND attempts >= max_attempts \
                                  THEN last_heartbeat_at ELSE NULL END, \
         run_at = CASE WHEN releases + 1 > $5::bigint AND attempts >= max_attempts \
                       THEN run_at ELSE $4::bigint END, \
         updated_at = $4::bigint, lease_expires_at = NULL \
     WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3 \
     RETURNING id, epoch, status, releases), \
     rec AS (",
    attempt_insert!(),
    "SELECT old_id, old_epoch, old_attempts, old_started_at, $4::bigint, old_owner, old_node, \
             old_incarnation, 'released', NULL FROM old JOIN done ON done.id = old_id), ",
    trim_done!("$6"),
    "SELECT status, releases FROM done"
);

/// Releases the item.
pub(crate) async fn run(
    db: &Db,
    lease: &LeaseRef,
    max_releases: Option<u32>,
    keep: u32,
    now: Timestamp,
) -> StoreResult<ReleaseOutcome> {
    let limit: Option<i64> = max_releases.map(i64::from);
    let rows = db
        .query(
            RELEASE,
            &[
                &lease.item.0,
                &lease.owner,
                &lease.epoch,
                &now.0,
                &limit,
                &i64::from(keep),
            ],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Err(lease_lost(lease));
    };
    let status: String = row
        .try_get(0)
        .map_err(leasehold_core::StoreError::backend)?;
    let releases: i64 = row
        .try_get(1)
        .map_err(leasehold_core::StoreError::backend)?;
    Ok(match max_releases {
        _ if status == "failed" => ReleaseOutcome::DeadLettered,
        Some(limit) if releases > i64::from(limit) => ReleaseOutcome::AttemptCounted,
        _ => ReleaseOutcome::Released,
    })
}
