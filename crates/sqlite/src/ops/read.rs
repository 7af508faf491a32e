//! The read-only operations: `item_get`, `items_count`, `items_list`, `lease_status`,
//! `leases_of_owner`.

use leasehold_core::{
    Item, ItemFilter, ItemId, ItemStatus, LeaseStatus, StatusCounts, StoreError, Timestamp,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use crate::error::OpResult;
use crate::row::{self, item_columns};

pub(crate) const GET: &str = concat!("SELECT ", item_columns!(), " FROM items WHERE id = ?1");

/// Each status from the partial index that holds it, never from the table: pending items from
/// `items_pending_ready`, leased ones from `items_lease_expiry`, finished ones from
/// `items_finished` (which leads with `status`), parked ones from `items_awaiting`, blocked ones from `items_blocked`. The hot path maintains no index over every
/// item's status.
pub(crate) const COUNT: &str = "SELECT 'pending', count(*) FROM items WHERE status = 'pending' \
     UNION ALL SELECT 'in_progress', count(*) FROM items WHERE status = 'in_progress' \
     UNION ALL SELECT 'awaiting', count(*) FROM items WHERE status = 'awaiting' \
     UNION ALL SELECT 'blocked', count(*) FROM items WHERE status = 'blocked' \
     UNION ALL SELECT status, count(*) FROM items WHERE finished_at IS NOT NULL GROUP BY status";

const LEASE: &str = "SELECT status, owner, epoch, lease_expires_at, last_heartbeat_at \
     FROM items WHERE id = ?1";

/// A scan of `items_lease_expiry`, which holds only leased items (bounded by the workers).
pub(crate) const OF_OWNER: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM items INDEXED BY items_lease_expiry \
     WHERE status = 'in_progress' AND owner = ?1 ORDER BY id"
);

/// One item, if it exists.
pub(crate) fn get(c: &mut Connection, id: ItemId) -> OpResult<Option<Item>> {
    Ok(c.prepare_cached(GET)?
        .query_row(params![id.0], row::item)
        .optional()?)
}

/// Items by status.
pub(crate) fn count(c: &mut Connection) -> OpResult<StatusCounts> {
    let mut stmt = c.prepare_cached(COUNT)?;
    let rows = stmt.query_map([], |r| Ok((row::status(r, 0)?, r.get::<_, i64>(1)?)))?;
    let mut counts = StatusCounts::default();
    for row in rows {
        let (status, n) = row?;
        counts.set(status, u64::try_from(n).unwrap_or(0));
    }
    Ok(counts)
}

/// Items matching `filter`, by id. The statement names only the filters present, so each
/// combination gets its own cached plan (the indexes on status, kind and group apply).
pub(crate) fn list(c: &mut Connection, filter: &ItemFilter) -> OpResult<Vec<Item>> {
    if filter.limit == 0 {
        return Err(StoreError::InvalidInput("list limit must be at least 1".into()).into());
    }
    let mut sql = String::from(concat!(
        "SELECT ",
        item_columns!(),
        " FROM items WHERE 1 = 1"
    ));
    let mut args: Vec<SqlValue> = Vec::new();
    let mut clause = |column: &str, value: SqlValue| {
        args.push(value);
        sql.push_str(&format!(" AND {column} ?{}", args.len()));
    };
    if let Some(status) = filter.status {
        // Pending and completed items are usually most of the table: walk the primary key in
        // id order (`+status` keeps SQLite off the partial indexes, whose order would need a
        // sort of every matching item). Leased, failed and cancelled items each have a
        // partial index of their own.
        let column = match status {
            ItemStatus::Pending | ItemStatus::Completed => "+status =",
            _ => "status =",
        };
        clause(column, SqlValue::Text(status.as_str().into()));
    }
    if let Some(kind) = &filter.kind {
        clause("kind =", SqlValue::Text(kind.clone()));
    }
    if let Some(group) = &filter.group_id {
        clause("group_id =", SqlValue::Text(group.clone()));
    }
    if let Some(owner) = &filter.owner {
        clause("owner =", SqlValue::Text(owner.clone()));
    }
    if let Some(after) = filter.after {
        clause("id >", SqlValue::Integer(after.0));
    }
    args.push(SqlValue::Integer(i64::from(filter.limit)));
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), row::item)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The lease on one item as of `now`.
pub(crate) fn lease_status(
    c: &mut Connection,
    id: ItemId,
    now: Timestamp,
) -> OpResult<LeaseStatus> {
    let found = c
        .prepare_cached(LEASE)?
        .query_row(params![id.0], |r| {
            Ok((
                row::status(r, 0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?.map(Timestamp),
                r.get::<_, Option<i64>>(4)?.map(Timestamp),
            ))
        })
        .optional()?;
    let Some((status, owner, epoch, lease_expires_at, last_heartbeat_at)) = found else {
        return Err(StoreError::NotFound(id).into());
    };
    let leased_until = lease_expires_at.filter(|_| status == ItemStatus::InProgress);
    Ok(LeaseStatus {
        item: id,
        status,
        owner,
        epoch,
        lease_expires_at,
        last_heartbeat_at,
        expired: leased_until.is_some_and(|t| t <= now),
        remaining: leased_until.map(|t| t.since(now)),
    })
}

/// The in-progress items `owner` holds, by id.
pub(crate) fn of_owner(c: &mut Connection, owner: &str) -> OpResult<Vec<Item>> {
    let mut stmt = c.prepare_cached(OF_OWNER)?;
    let rows = stmt.query_map(params![owner], row::item)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
