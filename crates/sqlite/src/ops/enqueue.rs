//! `items_enqueue`: all or nothing.

use leasehold_core::{ItemId, NewItem, StoreError, Timestamp};
use rusqlite::{params, Connection};

use crate::db::write;
use crate::error::OpResult;
use crate::row::json_text;

pub(crate) const INSERT: &str = "INSERT INTO items \
     (kind, input, status, attempts, max_attempts, priority, run_at, group_id, epoch, \
      created_at, updated_at, timeout_ms) \
     VALUES (?1, ?2, 'pending', 0, ?3, ?4, ?5, ?6, 0, ?7, ?7, ?8)";

/// Validates every item before writing any, then inserts them in one transaction.
pub(crate) fn run(
    c: &mut Connection,
    items: Vec<NewItem>,
    now: Timestamp,
) -> OpResult<Vec<ItemId>> {
    let mut rows = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        item.validate()
            .map_err(|e| StoreError::InvalidInput(format!("item {i} of the batch: {e}")))?;
        rows.push(json_text(&item.input)?);
    }
    if items.is_empty() {
        return Ok(Vec::new());
    }
    write(c, |tx| {
        let mut stmt = tx.prepare_cached(INSERT)?;
        let mut ids = Vec::with_capacity(items.len());
        for (item, input) in items.iter().zip(&rows) {
            stmt.execute(params![
                item.kind,
                input,
                item.max_attempts,
                item.priority,
                now.plus(item.delay).0,
                item.group_id,
                now.0,
                item.timeout_ms(),
            ])?;
            ids.push(ItemId(tx.last_insert_rowid()));
        }
        Ok(ids)
    })
}
