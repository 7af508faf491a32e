//! `items_delete`: an operator removes finished items.

use leasehold_core::{ActionItem, ActionReport, ItemAction, ItemSelector};
use rusqlite::{params, Connection};

use crate::db::write;
use crate::error::OpResult;
use crate::ops::select;

/// Explicit, as `cleanup` does it.
const CHECKPOINTS: &str = "DELETE FROM checkpoints WHERE item_id = ?1";

/// The history goes with the item (`ON DELETE CASCADE`).
const DELETE: &str = "DELETE FROM items WHERE id = ?1 \
       AND (status = 'completed' OR status = 'failed' OR status = 'cancelled')";

/// Deletes every selected item in one transaction (a dry run writes nothing).
pub(crate) fn run(
    c: &mut Connection,
    target: &ItemSelector,
    dry_run: bool,
) -> OpResult<ActionReport> {
    write(c, |tx| {
        let selected = select::run(tx, ItemAction::Delete, target)?;
        let mut items = Vec::with_capacity(selected.len());
        for (id, kind, from) in selected {
            if !dry_run {
                tx.prepare_cached(CHECKPOINTS)?.execute(params![id.0])?;
                tx.prepare_cached(DELETE)?.execute(params![id.0])?;
            }
            items.push(ActionItem {
                id,
                kind,
                from,
                to: from,
            });
        }
        Ok(ActionReport::new(ItemAction::Delete, dry_run, items))
    })
}
