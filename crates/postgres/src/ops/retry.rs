//! `items_retry`: an operator sends failed or cancelled items back to pending (or to
//! `blocked`, while some of their dependencies have not completed).

use std::collections::HashMap;

use leasehold_core::{
    ActionItem, ActionReport, ItemAction, ItemStatus, RetryRequest, StoreError, StoreResult,
    Timestamp,
};

use crate::db::{finish, prepared, Db};
use crate::error::from_pg;
use crate::ops::select;
use crate::row;

/// A fresh budget (`$3`, or its own), no holder or cancel mark; ready at `$2`, or `blocked`
/// again if some of its dependencies have not completed (a dependant cancelled because one
/// failed waits for it once more, and runs only once it completes). The error, output and
/// epoch stay (the next acquisition moves the epoch on); the history is another table and is
/// untouched.
const RETRY: &str = "UPDATE items SET \
         deps_left = w.waiting, \
         status = CASE WHEN w.waiting > 0 THEN 'blocked' ELSE 'pending' END, \
         attempts = 0, releases = 0, \
         max_attempts = coalesce($3::bigint, max_attempts), run_at = $2, updated_at = $2, \
         finished_at = NULL, owner = NULL, owner_node = NULL, owner_incarnation = NULL, \
         lease_expires_at = NULL, last_heartbeat_at = NULL, cancel_requested_at = NULL \
     FROM (SELECT i.id AS item, \
                  (SELECT count(*) FROM item_deps d WHERE d.item_id = i.id AND NOT d.done) \
                      AS waiting \
           FROM unnest($1::bigint[]) AS i (id)) AS w \
     WHERE items.id = w.item AND items.status IN ('failed', 'cancelled') \
     RETURNING items.id, items.status";

/// The dependencies the selected items still wait for, locked in id order (as an enqueue with
/// dependencies locks them): a concurrent completion of one waits for this retry's commit and
/// then finds the dependant blocked, or this retry waits for that completion and finds the
/// edge done.
const LOCK_NEEDED: &str = "SELECT id FROM items WHERE id IN \
     (SELECT needs_id FROM item_deps WHERE item_id = ANY($1) AND NOT done) \
     ORDER BY id FOR NO KEY UPDATE";

/// How many dependencies each selected item still waits for (a dry run's report).
const WAITING: &str = "SELECT item_id, count(*) FROM item_deps \
     WHERE item_id = ANY($1) AND NOT done GROUP BY item_id";

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
        let ids: Vec<i64> = selected.iter().map(|(id, _, _)| id.0).collect();
        let mut to: HashMap<i64, ItemStatus> = HashMap::new();
        if !req.dry_run && !ids.is_empty() {
            let budget = req.max_attempts.map(i64::from);
            let lock = prepared(&tx, LOCK_NEEDED).await?;
            tx.query(&lock, &[&ids]).await.map_err(from_pg)?;
            let stmt = prepared(&tx, RETRY).await?;
            for row in tx
                .query(&stmt, &[&ids, &now.0, &budget])
                .await
                .map_err(from_pg)?
            {
                to.insert(row::col(&row, 0)?, row::status(&row, 1)?);
            }
            let ready = to.values().filter(|s| **s == ItemStatus::Pending).count();
            crate::ops::take_back::notify(&tx, channel, ready).await?;
        } else if !ids.is_empty() {
            let stmt = prepared(&tx, WAITING).await?;
            for row in tx.query(&stmt, &[&ids]).await.map_err(from_pg)? {
                let waiting: i64 = row::col(&row, 1)?;
                if waiting > 0 {
                    to.insert(row::col(&row, 0)?, ItemStatus::Blocked);
                }
            }
        }
        let items = selected
            .into_iter()
            .map(|(id, kind, from)| ActionItem {
                id,
                kind,
                from,
                to: to.get(&id.0).copied().unwrap_or(ItemStatus::Pending),
            })
            .collect();
        Ok(ActionReport::new(ItemAction::Retry, req.dry_run, items))
    }
    .await;
    finish(tx, outcome).await
}
