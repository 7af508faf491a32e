//! `items_retry`: an operator sends failed or cancelled items back to pending.

use leasehold_core::{
    ActionItem, ActionReport, ItemAction, ItemStatus, RetryRequest, StoreError, StoreResult,
    Timestamp,
};

use crate::db::{finish, prepared, Db};
use crate::error::from_pg;
use crate::ops::select;

/// Ready at `$2`, with a fresh budget (`$3`, or its own) and no holder or cancel mark. The
/// error, output and epoch stay (the next acquisition moves the epoch on); the history is
/// another table and is untouched.
const RETRY: &str = "UPDATE items SET status = 'pending', attempts = 0, releases = 0, \
         max_attempts = coalesce($3::bigint, max_attempts), run_at = $2, updated_at = $2, \
         finished_at = NULL, owner = NULL, owner_node = NULL, owner_incarnation = NULL, \
         lease_expires_at = NULL, last_heartbeat_at = NULL, cancel_requested_at = NULL \
     WHERE id = ANY($1) AND status IN ('failed', 'cancelled')";

/// Retries every selected item in one transaction (a dry run writes nothing), and tells
/// listening nodes the items are ready (delivered at commit).
pub(crate) async fn run(
    db: &Db,
    channel: &str,
    req: &RetryRequest,
    now: Timestamp,
) -> StoreResult<ActionReport> {
    if req.max_attempts == Some(0) {
        return Err(StoreError::InvalidInput(
            "max attempts must be at least 1".into(),
        ));
    }
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = async {
        let selected = select::run(&tx, ItemAction::Retry, &req.target).await?;
        if !req.dry_run && !selected.is_empty() {
            let ids: Vec<i64> = selected.iter().map(|(id, _, _)| id.0).collect();
            let budget = req.max_attempts.map(i64::from);
            let stmt = prepared(&tx, RETRY).await?;
            tx.execute(&stmt, &[&ids, &now.0, &budget])
                .await
                .map_err(from_pg)?;
            crate::ops::take_back::notify(&tx, channel, ids.len()).await?;
        }
        let items = selected
            .into_iter()
            .map(|(id, kind, from)| ActionItem {
                id,
                kind,
                from,
                to: ItemStatus::Pending,
            })
            .collect();
        Ok(ActionReport::new(ItemAction::Retry, req.dry_run, items))
    }
    .await;
    finish(tx, outcome).await
}
