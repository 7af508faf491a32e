//! `checkpoint_save` and `checkpoints_list`.

use leasehold_core::{Checkpoint, ItemId, LeaseRef, Timestamp};
use rusqlite::{params, Connection};
use serde_json::Value;

use crate::db::write;
use crate::error::{lease_lost, OpResult};
use crate::row::{self, checkpoint_columns, json_text};

/// The fence and the insert are one statement: a stale holder's checkpoint is never written.
const SAVE: &str = "INSERT INTO checkpoints (item_id, epoch, name, payload, created_at) \
     SELECT id, epoch, ?4, ?5, ?6 FROM items \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

const LIST: &str = concat!(
    "SELECT ",
    checkpoint_columns!(),
    " FROM checkpoints WHERE item_id = ?1 ORDER BY id"
);

/// Saves a checkpoint (fenced); returns its id.
pub(crate) fn save(
    c: &mut Connection,
    lease: &LeaseRef,
    name: &str,
    payload: &Value,
    now: Timestamp,
) -> OpResult<i64> {
    let payload = json_text(payload)?;
    write(c, |tx| {
        let changed = tx.prepare_cached(SAVE)?.execute(params![
            lease.item.0,
            lease.owner,
            lease.epoch,
            name,
            payload,
            now.0
        ])?;
        if changed == 0 {
            return Err(lease_lost(lease));
        }
        Ok(tx.last_insert_rowid())
    })
}

/// The item's checkpoints, oldest first (empty for an unknown item).
pub(crate) fn list(c: &mut Connection, item: ItemId) -> OpResult<Vec<Checkpoint>> {
    let mut stmt = c.prepare_cached(LIST)?;
    let rows = stmt.query_map(params![item.0], row::checkpoint)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
