//! The operators' reads: `items_depth_by_kind`, `items_finished_since`,
//! `items_recently_finished`.

use leasehold_core::{FinishedBucket, Item, ItemStatus, KindDepth, StoreError, Timestamp};
use rusqlite::{params, Connection};

use crate::error::OpResult;
use crate::row::{self, item_columns};

/// Only open items, each status from its partial index (`items_pending_ready`,
/// `items_lease_expiry`), so the cost follows the queue's depth, not the table's history.
pub(crate) const DEPTH_BY_KIND: &str = "SELECT kind, sum(pending), sum(leased) FROM ( \
         SELECT kind, 1 AS pending, 0 AS leased FROM items WHERE status = 'pending' \
         UNION ALL SELECT kind, 0, 1 FROM items WHERE status = 'in_progress') \
     GROUP BY kind ORDER BY kind";

/// Served by the partial index `items_finished (status, finished_at)`.
pub(crate) const FINISHED_SINCE: &str = "SELECT (finished_at - ?1) / ?2 AS bucket, \
         sum(status = 'completed'), sum(status = 'failed'), sum(status = 'cancelled') \
     FROM items WHERE finished_at >= ?1 \
       AND status IN ('completed', 'failed', 'cancelled') \
     GROUP BY bucket ORDER BY bucket";

pub(crate) const RECENTLY_FINISHED: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM items WHERE finished_at IS NOT NULL AND status = ?1 \
     ORDER BY finished_at DESC, id DESC LIMIT ?2"
);

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Open items by kind.
pub(crate) fn depth_by_kind(c: &mut Connection) -> OpResult<Vec<KindDepth>> {
    let mut stmt = c.prepare_cached(DEPTH_BY_KIND)?;
    let rows = stmt.query_map([], |r| {
        Ok(KindDepth {
            kind: r.get(0)?,
            pending: count(r.get(1)?),
            in_progress: count(r.get(2)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Finished items per bucket of `bucket_ms` from `since`.
pub(crate) fn finished_since(
    c: &mut Connection,
    since: Timestamp,
    bucket_ms: i64,
) -> OpResult<Vec<FinishedBucket>> {
    if bucket_ms < 1 {
        return Err(StoreError::InvalidInput("bucket width must be at least 1 ms".into()).into());
    }
    let mut stmt = c.prepare_cached(FINISHED_SINCE)?;
    let rows = stmt.query_map(params![since.0, bucket_ms], |r| {
        let bucket: i64 = r.get(0)?;
        Ok(FinishedBucket {
            start: Timestamp(since.0.saturating_add(bucket.saturating_mul(bucket_ms))),
            completed: count(r.get(1)?),
            failed: count(r.get(2)?),
            cancelled: count(r.get(3)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The last `limit` items to finish in `status`, newest first.
pub(crate) fn recently_finished(
    c: &mut Connection,
    status: ItemStatus,
    limit: u32,
) -> OpResult<Vec<Item>> {
    if !status.is_terminal() {
        return Err(StoreError::InvalidInput(format!(
            "{status} is not a finished status; expected completed, failed or cancelled"
        ))
        .into());
    }
    if limit == 0 {
        return Err(StoreError::InvalidInput("limit must be at least 1".into()).into());
    }
    let mut stmt = c.prepare_cached(RECENTLY_FINISHED)?;
    let rows = stmt.query_map(params![status.as_str(), limit], row::item)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
