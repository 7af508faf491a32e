//! `item_cancel`: only a pending item can be cancelled.

use leasehold_core::{ItemId, StoreError, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};

use crate::db::write;
use crate::error::OpResult;
use crate::row;

const CANCEL: &str = "UPDATE items SET status = 'cancelled', finished_at = ?2, updated_at = ?2 \
     WHERE id = ?1 AND status = 'pending'";

const STATUS: &str = "SELECT status FROM items WHERE id = ?1";

/// Cancels a pending item; says why when it cannot.
pub(crate) fn run(c: &mut Connection, id: ItemId, now: Timestamp) -> OpResult<()> {
    write(c, |tx| {
        if tx.prepare_cached(CANCEL)?.execute(params![id.0, now.0])? == 1 {
            return Ok(());
        }
        let status = tx
            .prepare_cached(STATUS)?
            .query_row(params![id.0], |r| row::status(r, 0))
            .optional()?;
        Err(match status {
            None => StoreError::NotFound(id),
            Some(status) => StoreError::InvalidState {
                item: id,
                status,
                operation: "cancel",
                expected: "pending",
            },
        }
        .into())
    })
}
