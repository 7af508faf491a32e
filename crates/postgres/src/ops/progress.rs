//! `item_progress`: the holder's progress report.

use leasehold_core::{LeaseRef, StoreResult, Timestamp};
use serde_json::Value;

use crate::db::Db;
use crate::error::lease_lost;

const PROGRESS: &str = "UPDATE items SET progress = $4, updated_at = $5 \
     WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3";

/// Records `progress` (fenced).
pub(crate) async fn run(
    db: &Db,
    lease: &LeaseRef,
    progress: &Value,
    now: Timestamp,
) -> StoreResult<()> {
    let changed = db
        .execute(
            PROGRESS,
            &[&lease.item.0, &lease.owner, &lease.epoch, progress, &now.0],
        )
        .await?;
    if changed == 0 {
        return Err(lease_lost(lease));
    }
    Ok(())
}
