//! `item_progress`: the holder's progress report.

use leasehold_core::{LeaseRef, Timestamp};
use rusqlite::{params, Connection};
use serde_json::Value;

use crate::db::write;
use crate::error::{lease_lost, OpResult};
use crate::row::json_text;

const PROGRESS: &str = "UPDATE items SET progress = ?4, updated_at = ?5 \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Records `progress` (fenced).
pub(crate) fn run(
    c: &mut Connection,
    lease: &LeaseRef,
    progress: &Value,
    now: Timestamp,
) -> OpResult<()> {
    let progress = json_text(progress)?;
    write(c, |tx| {
        let changed = tx.prepare_cached(PROGRESS)?.execute(params![
            lease.item.0,
            lease.owner,
            lease.epoch,
            progress,
            now.0
        ])?;
        if changed == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    })
}
