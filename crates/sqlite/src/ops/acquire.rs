//! `items_acquire`: lease up to `limit` ready items in one statement.

use leasehold_core::{AcquireRequest, LeaseRef, Leased, StoreError, Timestamp};
use rusqlite::{params, Connection};

use crate::db::write;
use crate::error::OpResult;
use crate::row::{self, item_columns};

/// Picks the first `?6` ready pending items in acquisition order and leases them. The partial
/// index `items_pending_ready` holds pending items in exactly that order, so the subquery reads
/// the first ready entries and stops, whatever the queue depth. `INDEXED BY` pins that plan:
/// without table statistics SQLite prefers the equality on `items_status` plus a sort of every
/// pending item (and if the index were ever missing, the statement fails loudly).
/// The kind filter is a JSON array (`?7`, NULL for any kind) so that one cached statement
/// serves every request.
pub(crate) const ACQUIRE: &str = concat!(
    "UPDATE items SET status = 'in_progress', owner = ?1, owner_node = ?2, \
         owner_incarnation = ?3, epoch = epoch + 1, attempts = attempts + 1, \
         lease_expires_at = ?4, last_heartbeat_at = ?5, updated_at = ?5 \
     WHERE id IN ( \
         SELECT id FROM items INDEXED BY items_pending_ready \
         WHERE status = 'pending' AND run_at <= ?5 \
           AND (?7 IS NULL OR kind IN (SELECT value FROM json_each(?7))) \
           AND (?8 IS NULL OR group_id = ?8) \
         ORDER BY priority DESC, run_at, id \
         LIMIT ?6) \
     RETURNING ",
    item_columns!()
);

/// Leases up to `req.limit` items; returns them in acquisition order.
pub(crate) fn run(
    c: &mut Connection,
    req: &AcquireRequest,
    now: Timestamp,
) -> OpResult<Vec<Leased>> {
    req.validate().map_err(StoreError::InvalidInput)?;
    let kinds = if req.kinds.is_empty() {
        None
    } else {
        Some(serde_json::Value::from(req.kinds.clone()).to_string())
    };
    let expires_at = now.plus(req.lease);
    let mut items = write(c, |tx| {
        let mut stmt = tx.prepare_cached(ACQUIRE)?;
        let rows = stmt.query_map(
            params![
                req.owner,
                req.node_id,
                req.incarnation,
                expires_at.0,
                now.0,
                req.limit,
                kinds,
                req.group_id,
            ],
            row::item,
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })?;
    // RETURNING yields rows in no promised order.
    items.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    });
    Ok(items
        .into_iter()
        .map(|item| Leased {
            lease: LeaseRef {
                item: item.id,
                owner: req.owner.clone(),
                epoch: item.epoch,
            },
            expires_at: item.lease_expires_at.unwrap_or(expires_at),
            item,
        })
        .collect())
}
