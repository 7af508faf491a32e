//! The items an operator's action applies to: by id (all or nothing) or by filter. Shared by
//! `retry`, `cancel` and `delete`, which read it in their own write transaction, so what they
//! change is exactly what was read.

use leasehold_core::{ItemAction, ItemId, ItemSelector, ItemStatus, StoreError};
use rusqlite::{params, OptionalExtension, Transaction};

use crate::error::OpResult;
use crate::row;

const ONE: &str = "SELECT kind, status FROM items WHERE id = ?1";

/// `?1` the statuses (a JSON array), `?2` a kind or NULL, `?3` an enqueue-time bound or NULL.
const MATCHING: &str = "SELECT id, kind, status FROM items \
     WHERE status IN (SELECT value FROM json_each(?1)) \
       AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR created_at < ?3) ORDER BY id";

/// One selected item: id, kind, status.
pub(crate) type Selected = (ItemId, String, ItemStatus);

/// The items `target` names for `action`, by id. Refuses (before anything is written) a bad
/// selector or filter status (`InvalidInput`), an unknown id (`NotFound`) and an item in a
/// status the action does not apply to (`InvalidState`, naming it).
pub(crate) fn run(
    tx: &Transaction<'_>,
    action: ItemAction,
    target: &ItemSelector,
) -> OpResult<Vec<Selected>> {
    target.validate().map_err(StoreError::InvalidInput)?;
    let statuses = action.statuses(target).map_err(StoreError::InvalidInput)?;
    match target {
        ItemSelector::Ids(ids) => {
            let mut ids = ids.clone();
            ids.sort();
            ids.dedup();
            let mut stmt = tx.prepare_cached(ONE)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let found = stmt
                    .query_row(params![id.0], |r| {
                        Ok((r.get::<_, String>(0)?, row::status(r, 1)?))
                    })
                    .optional()?;
                let Some((kind, status)) = found else {
                    return Err(StoreError::NotFound(id).into());
                };
                if !statuses.contains(&status) {
                    return Err(StoreError::InvalidState {
                        item: id,
                        status,
                        operation: action.as_str(),
                        expected: action.expected(),
                    }
                    .into());
                }
                out.push((id, kind, status));
            }
            Ok(out)
        }
        ItemSelector::Filter(filter) => {
            let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            let names = serde_json::Value::from(names).to_string();
            let mut stmt = tx.prepare_cached(MATCHING)?;
            let rows = stmt.query_map(
                params![names, filter.kind, filter.before.map(|t| t.0)],
                |r| Ok((ItemId(r.get(0)?), r.get(1)?, row::status(r, 2)?)),
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        }
    }
}
