//! `items_cancel` (an operator's cancel: a pending item at once, an in-progress one marked for
//! its holder) and `item_cancel_confirm` (the holder's end of a marked attempt).

use leasehold_core::{
    ActionItem, ActionReport, AttemptOutcome, ItemAction, ItemSelector, ItemStatus, LeaseRef,
    StoreError, Timestamp,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::db::write;
use crate::error::{lease_lost, OpResult};
use crate::ops::{history, select};

const CANCEL_PENDING: &str = "UPDATE items SET status = 'cancelled', finished_at = ?2, \
         updated_at = ?2 \
     WHERE id = ?1 AND (status = 'pending' OR status = 'blocked' OR status = 'awaiting')";

/// The mark keeps its first time: cancelling twice changes nothing more.
const MARK: &str = "UPDATE items SET cancel_requested_at = coalesce(cancel_requested_at, ?2), \
         updated_at = ?2 \
     WHERE id = ?1 AND status = 'in_progress'";

/// Whether the holder's lease is current (a row) and its item marked (the value).
const MARKED: &str = "SELECT cancel_requested_at IS NOT NULL FROM items \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Fenced like every holder write; the owner columns stay as a record of the last holder.
const CONFIRM: &str = "UPDATE items SET status = 'cancelled', finished_at = ?4, \
         updated_at = ?4, lease_expires_at = NULL \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3 \
       AND cancel_requested_at IS NOT NULL";

/// Cancels or marks every selected item in one transaction (a dry run writes nothing).
pub(crate) fn run(
    c: &mut Connection,
    target: &ItemSelector,
    dry_run: bool,
    now: Timestamp,
) -> OpResult<ActionReport> {
    write(c, |tx| {
        let selected = select::run(tx, ItemAction::Cancel, target)?;
        let mut items = Vec::with_capacity(selected.len());
        for (id, kind, from) in selected {
            let (sql, to) = match from {
                ItemStatus::Pending | ItemStatus::Blocked | ItemStatus::Awaiting => {
                    (CANCEL_PENDING, ItemStatus::Cancelled)
                }
                _ => (MARK, ItemStatus::InProgress),
            };
            if !dry_run {
                tx.prepare_cached(sql)?.execute(params![id.0, now.0])?;
            }
            items.push(ActionItem { id, kind, from, to });
        }
        Ok(ActionReport::new(ItemAction::Cancel, dry_run, items))
    })
}

/// Ends the holder's marked attempt as cancelled, recording it.
pub(crate) fn confirm(
    c: &mut Connection,
    lease: &LeaseRef,
    keep: u32,
    now: Timestamp,
) -> OpResult<()> {
    write(c, |tx| {
        let marked: Option<bool> = tx
            .prepare_cached(MARKED)?
            .query_row(params![lease.item.0, lease.owner, lease.epoch], |r| {
                r.get(0)
            })
            .optional()?;
        match marked {
            None => return Err(lease_lost(lease)),
            Some(false) => {
                return Err(StoreError::InvalidState {
                    item: lease.item,
                    status: ItemStatus::InProgress,
                    operation: "cancel confirm",
                    expected: "marked for cancellation",
                }
                .into())
            }
            Some(true) => {}
        }
        history::record(tx, lease, AttemptOutcome::Cancelled, None, keep, now)?;
        tx.prepare_cached(CONFIRM)?.execute(params![
            lease.item.0,
            lease.owner,
            lease.epoch,
            now.0
        ])?;
        Ok(())
    })
}
