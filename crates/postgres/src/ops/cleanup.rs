//! `cleanup`: old registry rows, and finished items with their checkpoints.

use leasehold_core::{CleanupReport, CleanupRequest, StoreResult};

use crate::db::{prepared, Db};
use crate::error::from_pg;

/// Only the row as it was read, and only while that incarnation holds nothing: the monitor
/// needs a dead node's row to take its items back.
const REMOVE_NODE: &str = "DELETE FROM workers \
     WHERE node_id = $1 AND incarnation = $2 AND last_heartbeat_at = $3 \
       AND NOT EXISTS (SELECT 1 FROM items WHERE status = 'in_progress' \
                       AND owner_node = $1 AND owner_incarnation = $2)";

/// Explicit rather than left to `ON DELETE CASCADE`, so the report can count them.
const REMOVE_CHECKPOINTS: &str = "DELETE FROM checkpoints WHERE item_id IN \
     (SELECT id FROM items WHERE finished_at <= $1 \
        AND status IN ('completed', 'failed', 'cancelled'))";

const REMOVE_ITEMS: &str = "DELETE FROM items WHERE finished_at <= $1 \
       AND status IN ('completed', 'failed', 'cancelled')";

/// Runs the deletes in one transaction; a dry run rolls it back, so its report is exactly
/// what the real run would do at this moment.
pub(crate) async fn run(db: &Db, req: &CleanupRequest) -> StoreResult<CleanupReport> {
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let mut report = CleanupReport {
        dry_run: req.dry_run,
        ..CleanupReport::default()
    };
    let remove = prepared(&tx, REMOVE_NODE).await?;
    for key in &req.nodes {
        let n = tx
            .execute(
                &remove,
                &[&key.node_id, &key.incarnation, &key.last_heartbeat_at.0],
            )
            .await
            .map_err(from_pg)?;
        if n == 1 {
            report.nodes_removed.push(key.node_id.clone());
        }
    }
    report.nodes_removed.sort();
    report.nodes_removed.dedup();
    if let Some(before) = req.finished_before {
        let checkpoints = prepared(&tx, REMOVE_CHECKPOINTS).await?;
        report.checkpoints_removed = tx
            .execute(&checkpoints, &[&before.0])
            .await
            .map_err(from_pg)?;
        let items = prepared(&tx, REMOVE_ITEMS).await?;
        report.items_removed = tx.execute(&items, &[&before.0]).await.map_err(from_pg)?;
    }
    if req.dry_run {
        tx.rollback().await.map_err(from_pg)?;
    } else {
        tx.commit().await.map_err(from_pg)?;
    }
    Ok(report)
}
