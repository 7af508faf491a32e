//! The `error_boundary` checkpoint recovery writes when it takes an item back (seed 000's
//! `create_checkpoints`): a record, in the same transaction as the requeue or dead-letter, of
//! where and why the holder's run was cut off. It carries no step, so a resumed task never
//! resumes from it.

use leasehold_core::{ReapCandidate, Timestamp};
use rusqlite::{params, Transaction};
use serde_json::json;

use crate::error::OpResult;

const INSERT: &str = "INSERT INTO durable_checkpoints \
         (item_id, epoch, step, name, checkpoint_type, state, snapshot, evidence, created_at, \
          committed_at) \
     VALUES (?1, ?2, NULL, 'recovered', 'error_boundary', 'committed', ?3, '{\"evidence\":[]}', \
             ?4, ?4)";

/// Records that `candidate` was taken from its holder.
pub(crate) fn record(
    tx: &Transaction<'_>,
    candidate: &ReapCandidate,
    dead_lettered: bool,
    reason: &str,
    now: Timestamp,
) -> OpResult<()> {
    let snapshot = json!({
        "previous_owner": candidate.owner,
        "previous_epoch": candidate.epoch,
        "attempts": candidate.attempts,
        "max_attempts": candidate.max_attempts,
        "dead_lettered": dead_lettered,
        "reason": reason,
    });
    tx.prepare_cached(INSERT)?.execute(params![
        candidate.item.0,
        candidate.epoch,
        snapshot.to_string(),
        now.0
    ])?;
    Ok(())
}
