//! The `error_boundary` checkpoint recovery writes when it takes an item back (seed 000's
//! `create_checkpoints`): a record, in the same transaction as the requeue or dead-letter, of
//! where and why the holder's run was cut off. It carries no step, so a resumed task never
//! resumes from it.

use deadpool_postgres::Transaction;
use leasehold_core::{ReapCandidate, StoreResult, Timestamp};
use serde_json::json;

use crate::db::prepared;
use crate::error::from_pg;

const INSERT: &str = "INSERT INTO durable_checkpoints \
         (item_id, epoch, step, name, checkpoint_type, state, snapshot, evidence, created_at, \
          committed_at) \
     VALUES ($1, $2, NULL, 'recovered', 'error_boundary', 'committed', $3, '{\"evidence\":[]}', \
             $4, $4)";

/// Records that `candidate` was taken from its holder.
pub(crate) async fn record(
    tx: &Transaction<'_>,
    candidate: &ReapCandidate,
    dead_lettered: bool,
    reason: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let snapshot = json!({
        "previous_owner": candidate.owner,
        "previous_epoch": candidate.epoch,
        "attempts": candidate.attempts,
        "max_attempts": candidate.max_attempts,
        "dead_lettered": dead_lettered,
        "reason": reason,
    });
    let stmt = prepared(tx, INSERT).await?;
    tx.execute(
        &stmt,
        &[&candidate.item.0, &candidate.epoch, &snapshot, &now.0],
    )
    .await
    .map_err(from_pg)?;
    Ok(())
}
