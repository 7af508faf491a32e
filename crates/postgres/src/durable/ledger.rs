//! The tool ledger's reads: replay lookups, history and expiry. Entries are written only by
//! `step_commit`, in the step's transaction (see `checkpoint`).

use leasehold_core::durable::LedgerEntry;
use leasehold_core::{ItemId, LeaseRef, StoreResult, Timestamp};
use tokio_postgres::Row;

use super::checkpoint::fence;
use crate::db::{finish, prepared, Db};
use crate::error::from_pg;
use crate::row::col;

macro_rules! ledger_columns {
    () => {
        "id, key, item_id, epoch, tool, command, result, checkpoint_id, executed_at, \
         expires_at, replays, call"
    };
}

/// One statement: the count and the read cannot drift apart. Only an entry of the replaying
/// lease's item is replayed.
const REPLAY: &str = concat!(
    "UPDATE tool_ledger SET replays = replays + 1 \
     WHERE key = $1 AND expires_at > $2 AND item_id = $3 RETURNING ",
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

/// The live entry for `key`; with a lease, a replay on behalf of its item, counted (fenced:
/// the fence's share lock on the item and the count commit together).
pub(super) async fn get(
    db: &Db,
    key: &str,
    replay: Option<&LeaseRef>,
    now: Timestamp,
) -> StoreResult<Option<LedgerEntry>> {
    let Some(lease) = replay else {
        let rows = db.query(GET, &[&key, &now.0]).await?;
        return rows.first().map(entry).transpose();
    };
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = async {
        fence(&tx, lease).await?;
        let stmt = prepared(&tx, REPLAY).await?;
        let row = tx
            .query_opt(&stmt, &[&key, &now.0, &lease.item.0])
            .await
            .map_err(from_pg)?;
        row.as_ref().map(entry).transpose()
    }
    .await;
    finish(tx, outcome).await
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
        call: col(row, 11)?,
    })
}
