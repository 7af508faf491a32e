//! The operators' reads: `items_depth_by_kind`, `items_finished_since`,
//! `items_recently_finished`.

use leasehold_core::{
    FinishedBucket, Item, ItemStatus, KindDepth, StoreError, StoreResult, Timestamp,
};

use crate::db::Db;
use crate::row::{self, item_columns};

/// Only open items, each status through its own partial index (`items_pending_ready`,
/// `items_lease_expiry`), kinds in byte order as SQLite sorts them.
const DEPTH_BY_KIND: &str = "SELECT kind, sum(pending)::bigint, sum(in_progress)::bigint \
     FROM (SELECT kind, 1 AS pending, 0 AS in_progress FROM items WHERE status = 'pending' \
           UNION ALL \
           SELECT kind, 0, 1 FROM items WHERE status = 'in_progress') AS open \
     GROUP BY kind ORDER BY kind COLLATE \"C\"";

/// Served by the partial index `items_finished (status, finished_at)`.
const FINISHED_SINCE: &str = "SELECT (finished_at - $1) / $2 AS bucket, \
         count(*) FILTER (WHERE status = 'completed'), \
         count(*) FILTER (WHERE status = 'failed'), \
         count(*) FILTER (WHERE status = 'cancelled') \
     FROM items WHERE finished_at >= $1 \
       AND status IN ('completed', 'failed', 'cancelled') \
     GROUP BY bucket ORDER BY bucket";

const RECENTLY_FINISHED: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM items WHERE finished_at IS NOT NULL AND status = $1 \
     ORDER BY finished_at DESC, id DESC LIMIT $2"
);

/// Open items by kind.
pub(crate) async fn depth_by_kind(db: &Db) -> StoreResult<Vec<KindDepth>> {
    db.query(DEPTH_BY_KIND, &[])
        .await?
        .iter()
        .map(|r| {
            Ok(KindDepth {
                kind: row::col(r, 0)?,
                pending: row::total(r, 1)?,
                in_progress: row::total(r, 2)?,
            })
        })
        .collect()
}

/// Finished items per bucket of `bucket_ms` from `since`.
pub(crate) async fn finished_since(
    db: &Db,
    since: Timestamp,
    bucket_ms: i64,
) -> StoreResult<Vec<FinishedBucket>> {
    if bucket_ms < 1 {
        return Err(StoreError::InvalidInput(
            "bucket width must be at least 1 ms".into(),
        ));
    }
    db.query(FINISHED_SINCE, &[&since.0, &bucket_ms])
        .await?
        .iter()
        .map(|r| {
            let bucket: i64 = row::col(r, 0)?;
            Ok(FinishedBucket {
                start: Timestamp(since.0.saturating_add(bucket.saturating_mul(bucket_ms))),
                completed: row::total(r, 1)?,
                failed: row::total(r, 2)?,
                cancelled: row::total(r, 3)?,
            })
        })
        .collect()
}

/// The last `limit` items to finish in `status`, newest first.
pub(crate) async fn recently_finished(
    db: &Db,
    status: ItemStatus,
    limit: u32,
) -> StoreResult<Vec<Item>> {
    if !status.is_terminal() {
        return Err(StoreError::InvalidInput(format!(
            "{status} is not a finished status; expected completed, failed or cancelled"
        )));
    }
    if limit == 0 {
        return Err(StoreError::InvalidInput("limit must be at least 1".into()));
    }
    let rows = db
        .query(RECENTLY_FINISHED, &[&status.as_str(), &i64::from(limit)])
        .await?;
    row::items(&rows)
}
