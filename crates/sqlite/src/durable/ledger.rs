//! The tool ledger's reads: replay lookups, history and expiry. Entries are written only by
//! `step_commit`, in the step's transaction (see `checkpoint`).

use leasehold_core::durable::LedgerEntry;
use leasehold_core::{ItemId, LeaseRef, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::checkpoint::fence;
use crate::db::write;
use crate::error::{bad_column, OpResult};

const COLUMNS: &str = "id, key, item_id, epoch, tool, command, result, checkpoint_id, \
     executed_at, expires_at, replays, call";

/// The live entry for `key`; with a lease, a replay on behalf of its item, counted (fenced).
pub(super) fn get(
    c: &mut Connection,
    key: &str,
    replay: Option<&LeaseRef>,
    now: Timestamp,
) -> OpResult<Option<LedgerEntry>> {
    if let Some(lease) = replay {
        return write(c, |tx| {
            fence(tx, lease)?;
            // One statement: the count and the read cannot drift apart.
            let sql = format!(
                "UPDATE tool_ledger SET replays = replays + 1 \
                 WHERE key = ?1 AND expires_at > ?2 AND item_id = ?3 RETURNING {COLUMNS}"
            );
            Ok(tx
                .prepare_cached(&sql)?
                .query_row(params![key, now.0, lease.item.0], entry)
                .optional()?)
        });
    }
    let sql = format!("SELECT {COLUMNS} FROM tool_ledger WHERE key = ?1 AND expires_at > ?2");
    Ok(c.prepare_cached(&sql)?
        .query_row(params![key, now.0], entry)
        .optional()?)
}

/// An item's entries, newest first.
pub(super) fn history(c: &mut Connection, item: ItemId, limit: u32) -> OpResult<Vec<LedgerEntry>> {
    let sql =
        format!("SELECT {COLUMNS} FROM tool_ledger WHERE item_id = ?1 ORDER BY id DESC LIMIT ?2");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![item.0, limit], entry)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Deletes expired entries.
pub(super) fn purge(c: &mut Connection, now: Timestamp) -> OpResult<u64> {
    let n = c
        .prepare_cached("DELETE FROM tool_ledger WHERE expires_at <= ?1")?
        .execute(params![now.0])?;
    Ok(n as u64)
}

fn entry(row: &Row<'_>) -> rusqlite::Result<LedgerEntry> {
    let result: String = row.get(6)?;
    Ok(LedgerEntry {
        id: row.get(0)?,
        key: row.get(1)?,
        item: ItemId(row.get(2)?),
        epoch: row.get(3)?,
        tool: row.get(4)?,
        command: row.get(5)?,
        result: serde_json::from_str(&result)
            .map_err(|e| bad_column(6, format!("stored JSON: {e}")))?,
        checkpoint_id: row.get(7)?,
        executed_at: Timestamp(row.get(8)?),
        expires_at: Timestamp(row.get(9)?),
        replays: row.get::<_, i64>(10)?.max(0) as u64,
        call: row.get(11)?,
    })
}
