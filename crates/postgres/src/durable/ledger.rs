//! The tool ledger's reads: replay lookups, history and expiry. Entries are written only by
//! `step_commit`, in the step's transaction (see `checkpoint`).

use leasehold_core::durable::LedgerEntry;
use leasehold_core::{ItemId, StoreResult, Timestamp};
use tokio_postgres::Row;

use crate::db::Db;
use crate::row::col;

macro_rules! ledger_columns {
    () => {
        "id, key, item_id, epoch, tool, command, result, checkpoint_id, executed_at, \
         expires_at, replays"
    };
}

/// One statement: the count and the read cannot drift apart.
const GET_COUNTING: &str = concat!(
    "UPDATE tool_ledger SET replays = replays + 1 WHERE key = $1 AND expires_at > $2 RETURNING ",
    ledger_columns!()
);

const GET: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM tool_ledger WHERE key = $1 AND expires_at > $2"
);

const HISTORY: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM tool_ledger WHERE item_id = $1 ORDER BY id DESC LIMIT $2"
);

const PURGE: &str = "DELETE FROM tool_ledger WHERE expires_at <= $1";

/// The live entry for `key`, counting a replay when asked.
pub(super) async fn get(
    db: &Db,
    key: &str,
    count_replay: bool,
    now: Timestamp,
) -> StoreResult<Option<LedgerEntry>> {
    let sql = if count_replay { GET_COUNTING } else { GET };
    let rows = db.query(sql, &[&key, &now.0]).await?;
    rows.first().map(entry).transpose()
}

/// An item's entries, newest first.
pub(super) async fn history(db: &Db, item: ItemId, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
    let rows = db.query(HISTORY, &[&item.0, &i64::from(limit)]).await?;
    rows.iter().map(entry).collect()
}

/// Deletes expired entries.
pub(super) async fn purge(db: &Db, now: Timestamp) -> StoreResult<u64> {
    db.execute(PURGE, &[&now.0]).await
}

fn entry(row: &Row) -> StoreResult<LedgerEntry> {
    Ok(LedgerEntry {
        id: col(row, 0)?,
        key: col(row, 1)?,
        item: ItemId(col(row, 2)?),
        epoch: col(row, 3)?,
        tool: col(row, 4)?,
        command: col(row, 5)?,
        result: col(row, 6)?,
        checkpoint_id: col(row, 7)?,
        executed_at: Timestamp(col(row, 8)?),
        expires_at: Timestamp(col(row, 9)?),
        replays: col::<i64>(row, 10)?.max(0) as u64,
    })
}
