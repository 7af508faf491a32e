//! `item_complete`: the one place output is committed.

use leasehold_core::{LeaseRef, StoreResult, Timestamp};
use serde_json::Value;

use crate::db::Db;
use crate::error::lease_lost;

/// Fenced, so output is committed once, by the current holder only. The owner columns stay as
/// a record of who finished the item; the lease expiry goes.
const COMPLETE: &str = "UPDATE items SET status = 'completed', output = $4, finished_at = $5, \
         updated_at = $5, lease_expires_at = NULL \
     WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3";

/// Completes the item with `output`.
pub(crate) async fn run(
    db: &Db,
    lease: &LeaseRef,
    output: &Value,
    now: Timestamp,
) -> StoreResult<()> {
    let changed = db
        .execute(
            COMPLETE,
            &[&lease.item.0, &lease.owner, &lease.epoch, output, &now.0],
        )
        .await?;
    if changed == 0 {
        return Err(lease_lost(lease));
    }
    Ok(())
}
