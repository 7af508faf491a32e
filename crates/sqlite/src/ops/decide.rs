//! `item_decide`: an answer resumes a parked item.

use leasehold_core::{Item, ItemId, ItemStatus, StoreError, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};

use crate::db::write;
use crate::error::OpResult;
use crate::ops::read;
use crate::row::json_text;

/// Back to pending, ready at `?4`, with the answered decision and the input that carries it.
/// Conditional on `awaiting`, though the transaction already read it so: the statement says
/// what it may change on its own.
const RESUME: &str = "UPDATE items SET status = 'pending', run_at = ?4, input = ?2, \
         decision = ?3, updated_at = ?4 \
     WHERE id = ?1 AND status = 'awaiting'";

/// Answers the item's question, or says why not (not found, not awaiting, answer not allowed)
/// without writing.
pub(crate) fn run(c: &mut Connection, id: ItemId, answer: &str, now: Timestamp) -> OpResult<Item> {
    write(c, |tx| {
        let item = tx
            .prepare_cached(read::GET)?
            .query_row(params![id.0], crate::row::item)
            .optional()?
            .ok_or(StoreError::NotFound(id))?;
        let open = match (&item.status, &item.decision) {
            (ItemStatus::Awaiting, Some(d)) => d,
            (ItemStatus::Awaiting, None) => {
                return Err(StoreError::Corrupt(format!(
                    "item {id} is awaiting without a question"
                ))
                .into())
            }
            (status, _) => {
                return Err(StoreError::InvalidState {
                    item: id,
                    status: *status,
                    operation: "decide",
                    expected: "awaiting a decision",
                }
                .into())
            }
        };
        let decided = open.decide(answer, now).map_err(StoreError::InvalidInput)?;
        let input = json_text(&decided.merge_into(&item.input))?;
        let decision = serde_json::to_string(&decided)
            .map_err(|e| StoreError::InvalidInput(format!("decision not storable as JSON: {e}")))?;
        tx.prepare_cached(RESUME)?
            .execute(params![id.0, input, decision, now.0])?;
        Ok(tx
            .prepare_cached(read::GET)?
            .query_row(params![id.0], crate::row::item)?)
    })
}
