//! `item_decide`: an answer resumes a parked item.

use leasehold_core::{Item, ItemId, ItemStatus, StoreError, StoreResult, Timestamp};

use crate::db::{finish, prepared, Db};
use crate::error::from_pg;
use crate::ops::park::to_json;
use crate::row::{self, item_columns};

/// The item, locked for the decision: two people answering at once are served one after the
/// other, and the second finds it no longer awaiting.
const LOCK: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM items WHERE id = $1 FOR UPDATE"
);

/// Back to pending, ready at `$4`, with the answered decision and the input that carries it.
const RESUME: &str = concat!(
    "UPDATE items SET status = 'pending', run_at = $4, input = $2, decision = $3, \
         updated_at = $4 \
     WHERE id = $1 AND status = 'awaiting' RETURNING ",
    item_columns!()
);

/// Answers the item's question, or says why not (not found, not awaiting, answer not allowed)
/// without writing.
pub(crate) async fn run(db: &Db, id: ItemId, answer: &str, now: Timestamp) -> StoreResult<Item> {
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = async {
        let stmt = prepared(&tx, LOCK).await?;
        let found = tx.query_opt(&stmt, &[&id.0]).await.map_err(from_pg)?;
        let item = row::item(&found.ok_or(StoreError::NotFound(id))?)?;
        let open = match (&item.status, &item.decision) {
            (ItemStatus::Awaiting, Some(d)) => d,
            (ItemStatus::Awaiting, None) => {
                return Err(StoreError::Corrupt(format!(
                    "item {id} is awaiting without a question"
                )))
            }
            (status, _) => {
                return Err(StoreError::InvalidState {
                    item: id,
                    status: *status,
                    operation: "decide",
                    expected: "awaiting a decision",
                })
            }
        };
        let decided = open.decide(answer, now).map_err(StoreError::InvalidInput)?;
        let input = decided.merge_into(&item.input);
        let stmt = prepared(&tx, RESUME).await?;
        let resumed = tx
            .query_one(&stmt, &[&id.0, &input, &to_json(&decided)?, &now.0])
            .await
            .map_err(from_pg)?;
        row::item(&resumed)
    }
    .await;
    finish(tx, outcome).await
}
