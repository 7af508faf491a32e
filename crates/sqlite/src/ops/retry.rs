//! `items_retry`: an operator sends failed or cancelled items back to pending (or to
//! `blocked`, while some of their dependencies have not completed).

use leasehold_core::{
    ActionItem, ActionReport, ItemAction, ItemStatus, RetryRequest, StoreError, Timestamp,
};
use rusqlite::{params, Connection};

use crate::db::write;
use crate::error::OpResult;
use crate::ops::select;

/// A fresh budget (`?3`, or its own), no holder or cancel mark; ready at `?2`, or `blocked`
/// again with `?4` dependencies left when some have not completed (a dependant cancelled
/// because one failed waits for it once more, and runs only once it completes). The error,
/// output and epoch stay (the next acquisition moves the epoch on); the history is another
/// table and is untouched.
const RETRY: &str = "UPDATE items SET deps_left = ?4, \
         status = CASE WHEN ?4 > 0 THEN 'blocked' ELSE 'pending' END, \
         attempts = 0, releases = 0, \
         max_attempts = coalesce(?3, max_attempts), run_at = ?2, updated_at = ?2, \
         finished_at = NULL, owner = NULL, owner_node = NULL, owner_incarnation = NULL, \
         lease_expires_at = NULL, last_heartbeat_at = NULL, cancel_requested_at = NULL \
     WHERE id = ?1 AND (status = 'failed' OR status = 'cancelled')";

/// How many dependencies item `?1` still waits for. Read in the retry's write transaction, so
/// no completion can slip in between.
const WAITING: &str = "SELECT count(*) FROM item_deps WHERE item_id = ?1 AND done = 0";

/// Retries every selected item in one transaction (a dry run writes nothing).
pub(crate) fn run(
    c: &mut Connection,
    req: &RetryRequest,
    now: Timestamp,
) -> OpResult<ActionReport> {
    if req.max_attempts == Some(0) {
        return Err(StoreError::InvalidInput("max attempts must be at least 1".into()).into());
    }
    write(c, |tx| {
        let selected = select::run(tx, ItemAction::Retry, &req.target)?;
        let mut items = Vec::with_capacity(selected.len());
        for (id, kind, from) in selected {
            let waiting: i64 = tx
                .prepare_cached(WAITING)?
                .query_row(params![id.0], |r| r.get(0))?;
            if !req.dry_run {
                tx.prepare_cached(RETRY)?.execute(params![
                    id.0,
                    now.0,
                    req.max_attempts,
                    waiting
                ])?;
            }
            items.push(ActionItem {
                id,
                kind,
                from,
                to: if waiting > 0 {
                    ItemStatus::Blocked
                } else {
                    ItemStatus::Pending
                },
            });
        }
        Ok(ActionReport::new(ItemAction::Retry, req.dry_run, items))
    })
}
