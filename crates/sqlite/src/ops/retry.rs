//! `items_retry`: an operator sends failed or cancelled items back to pending.

use leasehold_core::{
    ActionItem, ActionReport, ItemAction, ItemStatus, RetryRequest, StoreError, Timestamp,
};
use rusqlite::{params, Connection};

use crate::db::write;
use crate::error::OpResult;
use crate::ops::select;

/// Ready at `?2`, with a fresh budget (`?3`, or its own) and no holder or cancel mark. The
/// error, output and epoch stay (the next acquisition moves the epoch on); the history is
/// another table and is untouched.
const RETRY: &str = "UPDATE items SET status = 'pending', attempts = 0, releases = 0, \
         max_attempts = coalesce(?3, max_attempts), run_at = ?2, updated_at = ?2, \
         finished_at = NULL, owner = NULL, owner_node = NULL, owner_incarnation = NULL, \
         lease_expires_at = NULL, last_heartbeat_at = NULL, cancel_requested_at = NULL \
     WHERE id = ?1 AND (status = 'failed' OR status = 'cancelled')";

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
            if !req.dry_run {
                tx.prepare_cached(RETRY)?
                    .execute(params![id.0, now.0, req.max_attempts])?;
            }
            items.push(ActionItem {
                id,
                kind,
                from,
                to: ItemStatus::Pending,
            });
        }
        Ok(ActionReport::new(ItemAction::Retry, req.dry_run, items))
    })
}
