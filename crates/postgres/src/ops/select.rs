//! The items an operator's action applies to: by id (all or nothing) or by filter. Shared by
//! `retry`, `cancel` and `delete`, which read it in their own transaction with the rows locked
//! (in id order, as every multi-row write locks), so what they change is exactly what was read.

use deadpool_postgres::Transaction;
use leasehold_core::{ItemAction, ItemId, ItemSelector, ItemStatus, StoreError, StoreResult};

use crate::db::prepared;
use crate::error::{from_pg, no_nul};
use crate::row;

const BY_ID: &str = "SELECT id, kind, status FROM items WHERE id = ANY($1) ORDER BY id FOR UPDATE";

const MATCHING: &str = "SELECT id, kind, status FROM items \
     WHERE status = ANY($1) AND ($2::text IS NULL OR kind = $2::text) \
       AND ($3::bigint IS NULL OR created_at < $3::bigint) ORDER BY id FOR UPDATE";

/// One selected item: id, kind, status.
pub(crate) type Selected = (ItemId, String, ItemStatus);

/// The items `target` names for `action`, by id. Refuses (before anything is written) a bad
/// selector or filter status (`InvalidInput`), an unknown id (`NotFound`) and an item in a
/// status the action does not apply to (`InvalidState`, naming it).
pub(crate) async fn run(
    tx: &Transaction<'_>,
    action: ItemAction,
    target: &ItemSelector,
) -> StoreResult<Vec<Selected>> {
    target.validate().map_err(StoreError::InvalidInput)?;
    let statuses = action.statuses(target).map_err(StoreError::InvalidInput)?;
    match target {
        ItemSelector::Ids(ids) => {
            let mut ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
            ids.sort_unstable();
            ids.dedup();
            let stmt = prepared(tx, BY_ID).await?;
            let rows = tx.query(&stmt, &[&ids]).await.map_err(from_pg)?;
            let mut found = Vec::with_capacity(rows.len());
            for r in &rows {
                let id: i64 = row::col(r, 0)?;
                found.push((ItemId(id), row::col::<String>(r, 1)?, row::status(r, 2)?));
            }
            if let Some(missing) = ids
                .iter()
                .find(|id| !found.iter().any(|(f, _, _)| f.0 == **id))
            {
                return Err(StoreError::NotFound(ItemId(*missing)));
            }
            if let Some((id, _, status)) = found.iter().find(|(_, _, s)| !statuses.contains(s)) {
                return Err(StoreError::InvalidState {
                    item: *id,
                    status: *status,
                    operation: action.as_str(),
                    expected: action.expected(),
                });
            }
            Ok(found)
        }
        ItemSelector::Filter(filter) => {
            if let Some(kind) = &filter.kind {
                no_nul("kind", kind)?;
            }
            let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            let stmt = prepared(tx, MATCHING).await?;
            let rows = tx
                .query(&stmt, &[&names, &filter.kind, &filter.before.map(|t| t.0)])
                .await
                .map_err(from_pg)?;
            rows.iter()
                .map(|r| Ok((ItemId(row::col(r, 0)?), row::col(r, 1)?, row::status(r, 2)?)))
                .collect()
        }
    }
}

/// The ids of `selected` in status `status`.
pub(crate) fn ids_in(selected: &[Selected], status: ItemStatus) -> Vec<i64> {
    selected
        .iter()
        .filter(|(_, _, s)| *s == status)
        .map(|(id, _, _)| id.0)
        .collect()
}
