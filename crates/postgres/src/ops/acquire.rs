//! `items_acquire`: lease up to `limit` ready items in one statement.

use leasehold_core::{AcquireRequest, LeaseRef, Leased, StoreError, StoreResult, Timestamp};

use crate::db::Db;
use crate::error::no_nul;
use crate::row::{self, item_columns};

/// Picks the first `$6` ready pending items in acquisition order (the partial index
/// `items_pending_ready` is in exactly that order) and leases them. `FOR UPDATE SKIP LOCKED`
/// lets concurrent acquirers on any number of hosts pass over each other's rows instead of
/// queueing on them; the row lock sits under the `LIMIT`, so a row another acquirer took
/// between our snapshot and our lock is re-checked, dropped, and replaced by the next one.
pub(crate) const ACQUIRE: &str = concat!(
    "WITH picked AS ( \
         SELECT id AS picked_id FROM items \
         WHERE status = 'pending' AND run_at <= $5 \
           AND ($7::text[] IS NULL OR kind = ANY($7::text[])) \
           AND ($8::text IS NULL OR group_id = $8::text) \
         ORDER BY priority DESC, run_at, id \
         LIMIT $6 \
         FOR UPDATE SKIP LOCKED) \
     UPDATE items SET status = 'in_progress', owner = $1, owner_node = $2, \
         owner_incarnation = $3, epoch = epoch + 1, attempts = attempts + 1, \
         lease_expires_at = $4, last_heartbeat_at = $5, updated_at = $5 \
     FROM picked WHERE items.id = picked.picked_id \
     RETURNING ",
    item_columns!()
);

/// Leases up to `req.limit` items; returns them in acquisition order.
pub(crate) async fn run(db: &Db, req: &AcquireRequest, now: Timestamp) -> StoreResult<Vec<Leased>> {
    req.validate().map_err(StoreError::InvalidInput)?;
    no_nul("owner", &req.owner)?;
    no_nul("node id", &req.node_id)?;
    let kinds: Option<Vec<&str>> = if req.kinds.is_empty() {
        None
    } else {
        Some(req.kinds.iter().map(String::as_str).collect())
    };
    let expires_at = now.plus(req.lease);
    let rows = db
        .query(
            ACQUIRE,
            &[
                &req.owner,
                &req.node_id,
                &req.incarnation,
                &expires_at.0,
                &now.0,
                &i64::from(req.limit),
                &kinds,
                &req.group_id,
            ],
        )
        .await?;
    let mut items = row::items(&rows)?;
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
