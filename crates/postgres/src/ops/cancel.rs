//! `items_cancel` (an operator's cancel: a pending item at once, an in-progress one marked for
//! its holder) and `item_cancel_confirm` (the holder's end of a marked attempt).

use leasehold_core::{
    ActionItem, ActionReport, ItemAction, ItemSelector, ItemStatus, LeaseRef, StoreError,
    StoreResult, Timestamp,
};

use crate::db::{finish, prepared, Db};
use crate::error::{from_pg, lease_lost};
use crate::ops::history::{attempt_insert, trim_done};
use crate::ops::select;

const CANCEL_PENDING: &str = "UPDATE items SET status = 'cancelled', finished_at = $2, \
         updated_at = $2 \
     WHERE id = ANY($1) AND status IN ('pending', 'blocked', 'awaiting')";

/// The mark keeps its first time: cancelling twice changes nothing more.
const MARK: &str = "UPDATE items SET cancel_requested_at = coalesce(cancel_requested_at, $2), \
         updated_at = $2 \
     WHERE id = ANY($1) AND status = 'in_progress'";

/// Whether the holder's lease is current (a row) and its item marked (the value).
const MARKED: &str = "SELECT cancel_requested_at IS NOT NULL FROM items \
     WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3";

/// Fenced like every holder write, and recorded in the same statement; the owner columns stay
/// as a record of the last holder.
const CONFIRM: &str = concat!(
    "WITH done AS ( \
         UPDATE items SET status = 'cancelled', finished_at = $4, updated_at = $4, \
             lease_expires_at = NULL \
         WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3 \
           AND cancel_requested_at IS NOT NULL \
         RETURNING id, epoch, attempts, started_at, owner, owner_node, owner_incarnation), \
     rec AS (",
    attempt_insert!(),
    "SELECT id, epoch, attempts, started_at, $4, owner, owner_node, owner_incarnation, \
             'cancelled', NULL FROM done), ",
    trim_done!("$5"),
    "SELECT id FROM done"
);

/// Cancels or marks every selected item in one transaction (a dry run writes nothing).
pub(crate) async fn run(
    db: &Db,
    target: &ItemSelector,
    dry_run: bool,
    now: Timestamp,
) -> StoreResult<ActionReport> {
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = async {
        let selected = select::run(&tx, ItemAction::Cancel, target).await?;
        if !dry_run {
            for (sql, status) in [
                (CANCEL_PENDING, ItemStatus::Pending),
                (CANCEL_PENDING, ItemStatus::Blocked),
                (CANCEL_PENDING, ItemStatus::Awaiting),
                (MARK, ItemStatus::InProgress),
            ] {
                let ids = select::ids_in(&selected, status);
                if !ids.is_empty() {
                    let stmt = prepared(&tx, sql).await?;
                    tx.execute(&stmt, &[&ids, &now.0]).await.map_err(from_pg)?;
                }
            }
        }
        let items = selected
            .into_iter()
            .map(|(id, kind, from)| ActionItem {
                id,
                kind,
                from,
                to: match from {
                    ItemStatus::Pending | ItemStatus::Blocked | ItemStatus::Awaiting => {
                        ItemStatus::Cancelled
                    }
                    other => other,
                },
            })
            .collect();
        Ok(ActionReport::new(ItemAction::Cancel, dry_run, items))
    }
    .await;
    finish(tx, outcome).await
}

/// Ends the holder's marked attempt as cancelled, recording it.
pub(crate) async fn confirm(
    db: &Db,
    lease: &LeaseRef,
    keep: u32,
    now: Timestamp,
) -> StoreResult<()> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
        &lease.item.0,
        &lease.owner,
        &lease.epoch,
        &now.0,
        &i64::from(keep),
    ];
    if !db.query(CONFIRM, &params).await?.is_empty() {
        return Ok(());
    }
    // Nothing changed: say why.
    let rows = db
        .query(MARKED, &[&lease.item.0, &lease.owner, &lease.epoch])
        .await?;
    match rows.first() {
        None => Err(lease_lost(lease)),
        Some(_) => Err(StoreError::InvalidState {
            item: lease.item,
            status: ItemStatus::InProgress,
            operation: "cancel confirm",
            expected: "marked for cancellation",
        }),
    }
}
