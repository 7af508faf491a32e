//! `item_release`: a graceful give-back, bounded.

use leasehold_core::{AttemptOutcome, LeaseRef, ReleaseOutcome, Timestamp};
use rusqlite::{params, Connection};

use crate::db::write;
use crate::error::{lease_lost, OpResult};
use crate::ops::history;

/// One fenced statement with three outcomes. `?5` is the release limit (NULL: not counted).
/// Within the limit: back to pending, ready now, the attempt given back (a graceful stop is not
/// a failure of the item, invariant 4). Past it: back to pending with the attempt kept, or,
/// when the attempts are spent, dead-lettered with the reason first and the holder's own last
/// error after it (the owner columns stay as a record of the last holder, as the reaper's
/// dead-letter keeps them). The epoch stays; the next acquisition bumps it.
///
/// Every right-hand side reads the row as it was before the update, so `releases + 1` is this
/// release's number throughout.
pub(crate) const RELEASE: &str = "UPDATE items SET \
         releases = releases + (?5 IS NOT NULL), \
         attempts = CASE WHEN ?5 IS NOT NULL AND releases + 1 > ?5 THEN attempts \
                         ELSE max(attempts - 1, 0) END, \
         status = CASE WHEN ?5 IS NOT NULL AND releases + 1 > ?5 AND attempts >= max_attempts \
                       THEN 'failed' ELSE 'pending' END, \
         error = CASE WHEN ?5 IS NOT NULL AND releases + 1 > ?5 AND attempts >= max_attempts \
                      THEN 'released ' || (releases + 1) || ' times by graceful stops, past the \
limit of ' || ?5 || ' releases that give their attempt back, with its ' || max_attempts || \
                           ' attempts spent (does it always outlast the drain timeout?)' \
                           || coalesce('; last error: ' || error, '') \
                      ELSE error END, \
         finished_at = CASE WHEN ?5 IS NOT NULL AND releases + 1 > ?5 \
                             AND attempts >= max_attempts THEN ?4 ELSE NULL END, \
         owner = CASE WHEN ?5 IS NOT NULL AND releases + 1 > ?5 AND attempts >= max_attempts \
                      THEN owner ELSE NULL END, \
         owner_node = CASE WHEN ?5 IS NOT NULL AND releases + 1 > ?5 \
                           AND attempts >= max_attempts THEN owner_node ELSE NULL END, \
         owner_incarnation = CASE WHEN ?5 IS NOT NULL AND releases + 1 > ?5 \
                           AND attempts >= max_attempts THEN owner_incarnation ELSE NULL END, \
         last_heartbeat_at = CASE WHEN ?5 IS NOT NULL AND releases + 1 > ?5 \
                           AND attempts >= max_attempts THEN last_heartbeat_at ELSE NULL END, \
         run_at = CASE WHEN ?5 IS NOT NULL AND releases + 1 > ?5 AND attempts >= max_attempts \
                       THEN run_at ELSE ?4 END, \
         updated_at = ?4, lease_expires_at = NULL \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// What the release did, read in its transaction. (Not `RETURNING`: SQLite buffers returned
/// rows in an ephemeral table per statement, which the schema tests keep off the hot path.)
const AFTER: &str = "SELECT status, releases FROM items WHERE id = ?1";

/// Releases the item.
pub(crate) fn run(
    c: &mut Connection,
    lease: &LeaseRef,
    max_releases: Option<u32>,
    keep: u32,
    now: Timestamp,
) -> OpResult<ReleaseOutcome> {
    write(c, |tx| {
        history::record(tx, lease, AttemptOutcome::Released, None, keep, now)?;
        let changed = tx.prepare_cached(RELEASE)?.execute(params![
            lease.item.0,
            lease.owner,
            lease.epoch,
            now.0,
            max_releases
        ])?;
        if changed == 0 {
            return Err(lease_lost(lease));
        }
        let (status, releases): (String, i64) = tx
            .prepare_cached(AFTER)?
            .query_row(params![lease.item.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(outcome(&status, releases, max_releases))
    })
}

/// Which of the three outcomes the row shows after the release.
fn outcome(status: &str, releases: i64, max_releases: Option<u32>) -> ReleaseOutcome {
    match max_releases {
        _ if status == "failed" => ReleaseOutcome::DeadLettered,
        Some(limit) if releases > i64::from(limit) => ReleaseOutcome::AttemptCounted,
        _ => ReleaseOutcome::Released,
    }
}
