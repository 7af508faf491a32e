//! `item_cancel`: only a pending item can be cancelled.

use leasehold_core::{ItemId, StoreError, StoreResult, Timestamp};

use crate::db::Db;
use crate::row;

const CANCEL: &str = "UPDATE items SET status = 'cancelled', finished_at = $2, updated_at = $2 \
     WHERE id = $1 AND status = 'pending'";

const STATUS: &str = "SELECT status FROM items WHERE id = $1";

/// Cancels a pending item; says why when it cannot.
pub(crate) async fn run(db: &Db, id: ItemId, now: Timestamp) -> StoreResult<()> {
    if db.execute(CANCEL, &[&id.0, &now.0]).await? == 1 {
        return Ok(());
    }
    let rows = db.query(STATUS, &[&id.0]).await?;
    Err(match rows.first() {
        None => StoreError::NotFound(id),
        Some(r) => StoreError::InvalidState {
            item: id,
            status: row::status(r, 0)?,
            operation: "cancel",
            expected: "pending",
        },
    })
}
