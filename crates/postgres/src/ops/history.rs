//! Attempt history: how each ended attempt is recorded (inside the statement or transaction
//! that ends it), its trimming, and `item_attempts`.

use leasehold_core::{Attempt, AttemptOutcome, ItemId, ReapCandidate, StoreResult, Timestamp};

use crate::db::{prepared, Db};
use crate::error::from_pg;
use crate::row::{self, attempt_columns};

/// The columns of a record, in the order every `INSERT INTO item_attempts` lists them.
macro_rules! attempt_insert {
    () => {
        "INSERT INTO item_attempts (item_id, epoch, attempt, started_at, ended_at, owner, \
         owner_node, owner_incarnation, outcome, error) "
    };
}
pub(crate) use attempt_insert;

/// A `trim` CTE for a statement whose `done` CTE returns the ended attempts' `id` and `epoch`:
/// drops, per item, all but the `$k - 1` newest records the statement's snapshot holds (the one
/// the statement inserts makes `$k`). An item holds at most one record per acquisition and
/// every acquisition raises the epoch, so while the epoch is at most `$k` there is nothing to
/// trim: the `done.epoch > $k` condition keeps the common item from paying more than the check.
macro_rules! trim_done {
    ($k:literal) => {
        concat!(
            "trim AS (DELETE FROM item_attempts t USING done \
             WHERE done.epoch > ",
            $k,
            "::bigint AND t.item_id = done.id AND t.epoch <= \
               (SELECT h.epoch FROM item_attempts h WHERE h.item_id = done.id \
                ORDER BY h.epoch DESC OFFSET ",
            $k,
            "::bigint - 1 LIMIT 1)) "
        )
    };
}
pub(crate) use trim_done;

/// The record of an attempt taken back (reaper, `recover_mine`, monitor), from the values the
/// scan read; written after the take-back applied, in its transaction. `started_at` is never
/// cleared by a take-back, so it is read from the item.
const RECORD_TAKEN: &str = concat!(
    attempt_insert!(),
    "SELECT $1, $2, $3, started_at, $4, $5, $6, $7, $8, $9 FROM items WHERE id = $1"
);

/// Drops all but the `$3` newest records of item `$1` (whose newest has epoch `$2`).
const TRIM: &str = "DELETE FROM item_attempts WHERE item_id = $1 AND $2 > $3::bigint \
       AND epoch <= (SELECT epoch FROM item_attempts WHERE item_id = $1 \
                     ORDER BY epoch DESC OFFSET $3::bigint LIMIT 1)";

/// The stored records and, for a completed item, its completed attempt, read from the item's
/// row (see [`list`]), oldest first.
const LIST: &str = concat!(
    "SELECT ",
    attempt_columns!(),
    " FROM item_attempts WHERE item_id = $1 \
     UNION ALL \
     SELECT id, attempts, epoch, started_at, finished_at, owner, owner_node, owner_incarnation, \
         'completed', NULL FROM items \
     WHERE id = $1 AND status = 'completed' AND owner IS NOT NULL AND finished_at IS NOT NULL \
       AND NOT EXISTS (SELECT 1 FROM item_attempts a WHERE a.item_id = $1 AND a.epoch = items.epoch) \
     ORDER BY epoch"
);

/// Records the end of an attempt taken back from `c`'s holder, and trims.
pub(crate) async fn record_taken(
    tx: &deadpool_postgres::Transaction<'_>,
    c: &ReapCandidate,
    outcome: AttemptOutcome,
    error: &str,
    keep: u32,
    now: Timestamp,
) -> StoreResult<()> {
    let attempt = i64::from(c.attempts);
    let stmt = prepared(tx, RECORD_TAKEN).await?;
    tx.execute(
        &stmt,
        &[
            &c.item.0,
            &c.epoch,
            &attempt,
            &now.0,
            &c.owner,
            &c.owner_node,
            &c.owner_incarnation,
            &outcome.as_str(),
            &error,
        ],
    )
    .await
    .map_err(from_pg)?;
    if c.epoch > i64::from(keep) {
        let stmt = prepared(tx, TRIM).await?;
        tx.execute(&stmt, &[&c.item.0, &c.epoch, &i64::from(keep)])
            .await
            .map_err(from_pg)?;
    }
    Ok(())
}

/// The item's ended attempts, oldest first, the `keep` newest.
///
/// A completed attempt has no stored record: completion is final (no retry, no requeue), and
/// the item's row keeps everything the record would hold (epoch, attempt count, start, end,
/// holder), so it is read from there, and the batched completion writes nothing but the
/// item's row. A record stored for a completion by an earlier version is used as it is. The
/// stored records are trimmed to `keep`, so with the completed one there may be one more.
pub(crate) async fn list(db: &Db, id: ItemId, keep: u32) -> StoreResult<Vec<Attempt>> {
    let rows = db.query(LIST, &[&id.0]).await?;
    let mut attempts = rows
        .iter()
        .map(row::attempt)
        .collect::<StoreResult<Vec<_>>>()?;
    leasehold_core::history::keep_newest(&mut attempts, keep);
    Ok(attempts)
}
