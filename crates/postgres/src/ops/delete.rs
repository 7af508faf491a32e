//! `items_delete`: an operator removes finished items.

use leasehold_core::{ActionItem, ActionReport, ItemAction, ItemSelector, StoreResult};

use crate::db::{finish, prepared, Db};
use crate::error::from_pg;
use crate::ops::select;

/// Explicit, as `cleanup` does it.
const CHECKPOINTS: &str = "DELETE FROM checkpoints WHERE item_id = ANY($1)";

/// The history goes with the item (`ON DELETE CASCADE`).
const DELETE: &str = "DELETE FROM items WHERE id = ANY($1) \
       AND status IN ('completed', 'failed', 'cancelled')";

/// Deletes every selected item in one transaction (a dry run writes nothing).
pub(crate) async fn run(
    db: &Db,
    target: &ItemSelector,
    dry_run: bool,
) -> StoreResult<ActionReport> {
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = async {
        let selected = select::run(&tx, ItemAction::Delete, target).await?;
        if !dry_run && !selected.is_empty() {
            let ids: Vec<i64> = selected.iter().map(|(id, _, _)| id.0).collect();
            for sql in [CHECKPOINTS, DELETE] {
                let stmt = prepared(&tx, sql).await?;
                tx.execute(&stmt, &[&ids]).await.map_err(from_pg)?;
            }
        }
        let items = selected
            .into_iter()
            .map(|(id, kind, from)| ActionItem {
                id,
                kind,
                from,
                to: from,
            })
            .collect();
        Ok(ActionReport::new(ItemAction::Delete, dry_run, items))
    }
    .await;
    finish(tx, outcome).await
}
