//! `checkpoint_save` and `checkpoints_list`.

use leasehold_core::{Checkpoint, ItemId, LeaseRef, StoreResult, Timestamp};
use serde_json::Value;

use crate::db::Db;
use crate::error::{lease_lost, no_nul};
use crate::row::{self, checkpoint_columns};

/// The fence and the insert are one statement. `FOR SHARE` holds the item row as read until
/// commit: a concurrent requeue waits for it, and if the requeue committed first the fence is
/// re-checked on the new row and nothing is written.
const SAVE: &str = "INSERT INTO checkpoints (item_id, epoch, name, payload, created_at) \
     SELECT id, epoch, $4, $5, $6 FROM items \
     WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3 FOR SHARE \
     RETURNING id";

const LIST: &str = concat!(
    "SELECT ",
    checkpoint_columns!(),
    " FROM checkpoints WHERE item_id = $1 ORDER BY id"
);

/// Saves a checkpoint (fenced); returns its id.
pub(crate) async fn save(
    db: &Db,
    lease: &LeaseRef,
    name: &str,
    payload: &Value,
    now: Timestamp,
) -> StoreResult<i64> {
    no_nul("checkpoint name", name)?;
    let rows = db
        .query(
            SAVE,
            &[
                &lease.item.0,
                &lease.owner,
                &lease.epoch,
                &name,
                payload,
                &now.0,
            ],
        )
        .await?;
    match rows.first() {
        Some(r) => row::col(r, 0),
        None => Err(lease_lost(lease)),
    }
}

/// The item's checkpoints, oldest first (empty for an unknown item).
pub(crate) async fn list(db: &Db, item: ItemId) -> StoreResult<Vec<Checkpoint>> {
    let rows = db.query(LIST, &[&item.0]).await?;
    rows.iter().map(row::checkpoint).collect()
}
