//! `items_acquire`: lease up to `limit` ready items in one statement.

use leasehold_core::{AcquireRequest, LeaseRef, Leased, StoreError, Timestamp};
use rusqlite::{params, Transaction};

use crate::error::OpResult;
use crate::row::{self, item_columns};

/// Picks the first `?6` ready pending items in acquisition order and leases them. The partial
/// index `items_pending_ready` holds pending items in exactly that order, so the subquery reads
/// the first ready entries and stops, whatever the queue depth. `INDEXED BY` pins that plan:
/// without table statistics SQLite prefers the equality on `items_status` plus a sort of every
/// pending item (and if the index were ever missing, the statement fails loudly).
/// The kind filter is a JSON array (`?7`, NULL for any kind) so that one cached statement
/// serves every request. The limit is `CAST(?6 AS INTEGER)`, not a bare `?6`: SQLite plans a
/// bare parameter in `LIMIT` with its bound value and marks the statement to be recompiled
/// whenever that parameter is bound again, which made every acquisition re-parse and re-plan
/// this statement.
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
         LIMIT CAST(?6 AS INTEGER)) \
     RETURNING ",
    item_columns!()
);

/// Checks the request before it is queued for a group commit, so bad input is refused without
/// waiting for (or touching) the database.
pub(crate) fn validate(req: &AcquireRequest) -> Result<(), StoreError> {
    req.validate().map_err(StoreError::InvalidInput)
}

/// Leases up to `req.limit` items inside `tx` (one statement, so it may share a group commit);
/// returns them in acquisition order.
pub(crate) fn run(
    tx: &Transaction<'_>,
    req: &AcquireRequest,
    now: Timestamp,
) -> OpResult<Vec<Leased>> {
    validate(req)?;
    let kinds = if req.kinds.is_empty() {
        None
    } else {
        Some(serde_json::Value::from(req.kinds.clone()).to_string())
    };
    let expires_at = now.plus(req.lease);
    let mut items = {
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
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use leasehold_core::{AcquireRequest, NewItem, Timestamp};
    use rusqlite::{Connection, StatementStatus};

    use super::{run, ACQUIRE};
    use crate::ops::enqueue;
    use crate::schema::migrate;

    #[test]
    fn acquiring_again_reuses_the_compiled_statement() {
        let mut c = Connection::open_in_memory().expect("in-memory database");
        migrate(&mut c).expect("migrate");
        let items = (0..40)
            .map(|i| NewItem::new(if i % 2 == 0 { "a" } else { "b" }, serde_json::json!(i)))
            .collect();
        enqueue::run(&mut c, items, Timestamp(1_000)).expect("enqueue");
        let mut taken = 0;
        for i in 0..12u32 {
            let mut req = AcquireRequest::new(format!("w{i}"), Duration::from_secs(30));
            req.limit = 1 + i % 3;
            if i % 4 == 0 {
                req.kinds = vec!["a".into()];
            }
            let tx = c.transaction().expect("transaction");
            taken += run(&tx, &req, Timestamp(2_000 + i64::from(i)))
                .expect("acquire")
                .len();
            tx.commit().expect("commit");
        }
        assert!(taken >= 12, "the acquisitions took items ({taken})");
        let stmt = c.prepare_cached(ACQUIRE).expect("cached statement");
        assert_eq!(stmt.get_status(StatementStatus::Run), 12);
        assert_eq!(
            stmt.get_status(StatementStatus::RePrepare),
            0,
            "binding new values must not make SQLite recompile the statement"
        );
    }
}
