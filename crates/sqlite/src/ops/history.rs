//! Attempt history: the record of an ended attempt, written inside the transaction that ends
//! it, its trimming, and `item_attempts`.

use leasehold_core::{Attempt, AttemptOutcome, ItemId, LeaseRef, ReapCandidate, Timestamp};
use rusqlite::{params, Connection, Transaction};

use crate::error::{lease_lost, OpResult};
use crate::row::{self, attempt_columns};

/// The record of the holder's attempt, read from the item as the holder's write is about to
/// change it: fenced exactly like that write, so it inserts one row exactly when the write will
/// apply. Run first, because the write may clear the owner columns it copies. `?4` ended at,
/// `?5` outcome, `?6` error.
pub(crate) const RECORD: &str = "INSERT INTO item_attempts (item_id, epoch, attempt, started_at, \
         ended_at, owner, owner_node, owner_incarnation, outcome, error) \
     SELECT id, epoch, attempts, started_at, ?4, owner, owner_node, owner_incarnation, ?5, ?6 \
     FROM items WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// The record of an attempt taken back (reaper, `recover_mine`, monitor), from the values the
/// scan read; written after the take-back applied. `started_at` is never cleared by a
/// take-back, so it is read from the item.
const RECORD_TAKEN: &str = "INSERT INTO item_attempts (item_id, epoch, attempt, started_at, \
         ended_at, owner, owner_node, owner_incarnation, outcome, error) \
     SELECT ?1, ?2, ?3, started_at, ?4, ?5, ?6, ?7, ?8, ?9 FROM items WHERE id = ?1";

/// Drops all but the `?2` newest records of item `?1` (the PRIMARY KEY walked backwards).
const TRIM: &str = "DELETE FROM item_attempts WHERE item_id = ?1 AND epoch <= \
     (SELECT epoch FROM item_attempts WHERE item_id = ?1 ORDER BY epoch DESC \
      LIMIT 1 OFFSET ?2)";

/// The stored records and, for a completed item, its completed attempt, read from the item's
/// row (see [`list`]), oldest first.
const LIST: &str = concat!(
    "SELECT ",
    attempt_columns!(),
    " FROM item_attempts WHERE item_id = ?1 \
     UNION ALL \
     SELECT id, attempts, epoch, started_at, finished_at, owner, owner_node, owner_incarnation, \
         'completed', NULL FROM items \
     WHERE id = ?1 AND status = 'completed' AND owner IS NOT NULL AND finished_at IS NOT NULL \
       AND NOT EXISTS (SELECT 1 FROM item_attempts a WHERE a.item_id = ?1 AND a.epoch = items.epoch) \
     ORDER BY epoch"
);

/// Records the end of `lease`'s attempt; `LeaseLost` (nothing written) when the lease is not
/// current. The caller's own fenced write follows in the same transaction and applies.
pub(crate) fn record(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    outcome: AttemptOutcome,
    error: Option<&str>,
    keep: u32,
    now: Timestamp,
) -> OpResult<()> {
    let inserted = tx.prepare_cached(RECORD)?.execute(params![
        lease.item.0,
        lease.owner,
        lease.epoch,
        now.0,
        outcome.as_str(),
        error
    ])?;
    if inserted == 0 {
        return Err(lease_lost(lease));
    }
    trim(tx, lease.item, lease.epoch, keep)
}

/// Records the end of an attempt taken back from `c`'s holder.
pub(crate) fn record_taken(
    tx: &Transaction<'_>,
    c: &ReapCandidate,
    outcome: AttemptOutcome,
    error: &str,
    keep: u32,
    now: Timestamp,
) -> OpResult<()> {
    tx.prepare_cached(RECORD_TAKEN)?.execute(params![
        c.item.0,
        c.epoch,
        c.attempts,
        now.0,
        c.owner,
        c.owner_node,
        c.owner_incarnation,
        outcome.as_str(),
        error
    ])?;
    trim(tx, c.item, c.epoch, keep)
}

/// Keeps the `keep` newest records. An item holds at most one record per acquisition, and
/// every acquisition raises the epoch, so while the epoch is at most `keep` there is nothing to
/// trim and the statement is not run: the common item pays nothing.
fn trim(tx: &Transaction<'_>, item: ItemId, epoch: i64, keep: u32) -> OpResult<()> {
    if epoch > i64::from(keep) {
        tx.prepare_cached(TRIM)?.execute(params![item.0, keep])?;
    }
    Ok(())
}

/// The item's ended attempts, oldest first, the `keep` newest.
///
/// A completed attempt has no stored record: completion is final (no retry, no requeue), and
/// the item's row keeps everything the record would hold (epoch, attempt count, start, end,
/// holder), so it is read from there. That spares every completion, the hot path's commonest
/// write, an insert (4–6.5 µs of an item's 20–25 in the statements alone). A record stored for
/// a completion by an earlier version is used as it is.
pub(crate) fn list(c: &mut Connection, id: ItemId, keep: u32) -> OpResult<Vec<Attempt>> {
    let mut stmt = c.prepare_cached(LIST)?;
    let rows = stmt.query_map(params![id.0], row::attempt)?;
    let mut attempts = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    leasehold_core::history::keep_newest(&mut attempts, keep);
    Ok(attempts)
}
