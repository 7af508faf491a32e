//! The read-only operations: `item_get`, `items_count`, `items_list`, `lease_status`,
//! `leases_of_owner`.

use leasehold_core::{
    Item, ItemFilter, ItemId, ItemStatus, LeaseStatus, StatusCounts, StoreError, StoreResult,
    Timestamp,
};
use tokio_postgres::types::ToSql;

use crate::db::Db;
use crate::row::{self, item_columns};

const GET: &str = concat!("SELECT ", item_columns!(), " FROM items WHERE id = $1");

const COUNT: &str = "SELECT status, count(*) FROM items GROUP BY status";

const LEASE: &str = "SELECT status, owner, epoch, lease_expires_at, last_heartbeat_at \
     FROM items WHERE id = $1";

/// Served by the partial index `items_lease_expiry`, which holds only leased items.
const OF_OWNER: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM items WHERE status = 'in_progress' AND owner = $1 ORDER BY id"
);

/// One item, if it exists.
pub(crate) async fn get(db: &Db, id: ItemId) -> StoreResult<Option<Item>> {
    let rows = db.query(GET, &[&id.0]).await?;
    rows.first().map(row::item).transpose()
}

/// Items by status.
pub(crate) async fn count(db: &Db) -> StoreResult<StatusCounts> {
    let mut counts = StatusCounts::default();
    for r in db.query(COUNT, &[]).await? {
        counts.set(row::status(&r, 0)?, row::total(&r, 1)?);
    }
    Ok(counts)
}

/// Items matching `filter`, by id. The statement names only the filters present, so each
/// combination gets its own cached plan.
pub(crate) async fn list(db: &Db, filter: &ItemFilter) -> StoreResult<Vec<Item>> {
    if filter.limit == 0 {
        return Err(StoreError::InvalidInput(
            "list limit must be at least 1".into(),
        ));
    }
    let after = filter.after.map(|a| a.0);
    let limit = i64::from(filter.limit);
    let mut sql = String::from(concat!(
        "SELECT ",
        item_columns!(),
        " FROM items WHERE TRUE"
    ));
    let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
    // The status is written into the statement, not bound: each status has its own partial
    // index (or none, for completed items), and only a planner that sees the value can pick it.
    if let Some(status) = filter.status {
        sql.push_str(&format!(" AND status = '{}'", status.as_str()));
    }
    // Each filter present appends its clause and its argument together.
    let filters: [(&str, Option<&(dyn ToSql + Sync)>); 4] = [
        (
            "kind =",
            filter.kind.as_ref().map(|k| k as &(dyn ToSql + Sync)),
        ),
        (
            "group_id =",
            filter.group_id.as_ref().map(|g| g as &(dyn ToSql + Sync)),
        ),
        (
            "owner =",
            filter.owner.as_ref().map(|o| o as &(dyn ToSql + Sync)),
        ),
        ("id >", after.as_ref().map(|a| a as &(dyn ToSql + Sync))),
    ];
    for (column, value) in filters {
        if let Some(value) = value {
            args.push(value);
            sql.push_str(&format!(" AND {column} ${}", args.len()));
        }
    }
    sql.push_str(&format!(" ORDER BY id LIMIT ${}", args.len() + 1));
    args.push(&limit);
    let rows = db.query(&sql, &args).await?;
    row::items(&rows)
}

/// The lease on one item as of `now`.
pub(crate) async fn lease_status(db: &Db, id: ItemId, now: Timestamp) -> StoreResult<LeaseStatus> {
    let rows = db.query(LEASE, &[&id.0]).await?;
    let Some(r) = rows.first() else {
        return Err(StoreError::NotFound(id));
    };
    let status = row::status(r, 0)?;
    let lease_expires_at = row::col::<Option<i64>>(r, 3)?.map(Timestamp);
    let leased_until = lease_expires_at.filter(|_| status == ItemStatus::InProgress);
    Ok(LeaseStatus {
        item: id,
        status,
        owner: row::col(r, 1)?,
        epoch: row::col(r, 2)?,
        lease_expires_at,
        last_heartbeat_at: row::col::<Option<i64>>(r, 4)?.map(Timestamp),
        expired: leased_until.is_some_and(|t| t <= now),
        remaining: leased_until.map(|t| t.since(now)),
    })
}

/// The in-progress items `owner` holds, by id.
pub(crate) async fn of_owner(db: &Db, owner: &str) -> StoreResult<Vec<Item>> {
    let rows = db.query(OF_OWNER, &[&owner]).await?;
    row::items(&rows)
}
