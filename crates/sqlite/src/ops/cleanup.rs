//! `cleanup`: old registry rows, and finished items with their checkpoints.

use leasehold_core::{CleanupReport, CleanupRequest};
use rusqlite::{params, Connection, TransactionBehavior};

use crate::error::OpResult;

/// Only the row as it was read (same incarnation and last heartbeat), and only while that
/// incarnation holds nothing: the monitor needs a dead node's row to take its items back.
pub(crate) const REMOVE_NODE: &str = "DELETE FROM workers \
     WHERE node_id = ?1 AND incarnation = ?2 AND last_heartbeat_at = ?3 \
       AND NOT EXISTS (SELECT 1 FROM items INDEXED BY items_lease_expiry \
                       WHERE status = 'in_progress' \
                       AND owner_node = ?1 AND owner_incarnation = ?2)";

/// Explicit rather than left to `ON DELETE CASCADE`, so the report can count them.
pub(crate) const REMOVE_CHECKPOINTS: &str = "DELETE FROM checkpoints WHERE item_id IN \
     (SELECT id FROM items WHERE finished_at <= ?1 \
        AND status IN ('completed', 'failed', 'cancelled'))";

pub(crate) const REMOVE_ITEMS: &str = "DELETE FROM items WHERE finished_at <= ?1 \
       AND status IN ('completed', 'failed', 'cancelled')";

/// Runs the deletes in one write transaction; a dry run rolls it back, so its report is
/// exactly what the real run would do at this moment.
pub(crate) fn run(c: &mut Connection, req: &CleanupRequest) -> OpResult<CleanupReport> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut report = CleanupReport {
        dry_run: req.dry_run,
        ..CleanupReport::default()
    };
    {
        let mut remove = tx.prepare_cached(REMOVE_NODE)?;
        for key in &req.nodes {
            if remove.execute(params![
                key.node_id,
                key.incarnation,
                key.last_heartbeat_at.0
            ])? == 1
            {
                report.nodes_removed.push(key.node_id.clone());
            }
        }
    }
    report.nodes_removed.sort();
    report.nodes_removed.dedup();
    if let Some(before) = req.finished_before {
        report.checkpoints_removed = tx
            .prepare_cached(REMOVE_CHECKPOINTS)?
            .execute(params![before.0])? as u64;
        report.items_removed = tx
            .prepare_cached(REMOVE_ITEMS)?
            .execute(params![before.0])? as u64;
    }
    if req.dry_run {
        tx.rollback()?;
    } else {
        tx.commit()?;
    }
    Ok(report)
}
