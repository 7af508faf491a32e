//! `items_reap_by_registry` and `items_release_dead_nodes`: calls of the SQL functions that
//! schema version 8 creates (`leasehold_reap_expired`, `leasehold_release_dead_nodes`), so the
//! CLI and an operator with only `psql` run one implementation.

use std::time::Instant;

use leasehold_core::{
    DeadNodesRequest, ItemId, ReapCursor, ReapRequest, RecoveredItem, RecoveryStats, ReleasedNode,
    StoreError, StoreResult, Timestamp, WorkerState,
};
use tokio_postgres::Row;

use crate::db::Db;
use crate::row::col;

const REAP: &str = "SELECT item_id, kind, owner, epoch, attempts, max_attempts, \
     lease_expires_at, outcome \
     FROM leasehold_reap_expired($1, $2, $3, $4, $5, $6, $7, $8, $9)";

const RELEASE: &str = "SELECT node_id, incarnation, state, last_heartbeat_at, item_id, kind, \
     previous_owner, previous_epoch, attempts, max_attempts, dead_lettered \
     FROM leasehold_release_dead_nodes($1, $2, $3, $4, $5, $6)";

/// One sweep judged by the registry, in the database.
pub(crate) async fn reap(
    db: &Db,
    req: &ReapRequest,
    missed_intervals: u32,
    keep: u32,
    now: Timestamp,
) -> StoreResult<RecoveryStats> {
    req.validate().map_err(StoreError::InvalidInput)?;
    if missed_intervals == 0 {
        return Err(StoreError::InvalidInput(
            "missed heartbeat intervals must be at least 1".into(),
        ));
    }
    let started = Instant::now();
    let stale_ms = i64::try_from(req.stale_after.as_millis()).unwrap_or(i64::MAX);
    let batch = i32::try_from(req.batch).unwrap_or(i32::MAX);
    let missed = i32::try_from(missed_intervals).unwrap_or(i32::MAX);
    let max_attempts = req
        .max_attempts
        .map(|m| i32::try_from(m).unwrap_or(i32::MAX));
    let (after_expiry, after_id) = req.after.map_or((None, None), |c| {
        (Some(c.lease_expires_at.0), Some(c.item.0))
    });
    let rows = db
        .query(
            REAP,
            &[
                &now.0,
                &stale_ms,
                &batch,
                &missed,
                &max_attempts,
                &req.dry_run,
                &after_expiry,
                &after_id,
                &i64::from(keep),
            ],
        )
        .await?;
    let mut stats = RecoveryStats {
        expired_found: rows.len() as u64,
        dry_run: req.dry_run,
        ..RecoveryStats::default()
    };
    for r in &rows {
        let outcome: String = col(r, 7)?;
        match outcome.as_str() {
            "alive" => stats.skipped_alive += 1,
            "changed" => stats.skipped_changed += 1,
            "requeued" | "dead_lettered" => {
                let dead = outcome == "dead_lettered";
                if dead {
                    stats.failed += 1;
                } else {
                    stats.recovered += 1;
                }
                stats.items.push(recovered(r, 0, dead)?);
            }
            other => {
                return Err(StoreError::Corrupt(format!(
                    "leasehold_reap_expired returned outcome {other:?}"
                )))
            }
        }
    }
    if rows.len() as u64 >= u64::from(req.batch) {
        if let Some(last) = rows.last() {
            let expiry: Option<i64> = col(last, 6)?;
            stats.next = expiry.map(|t| ReapCursor {
                lease_expires_at: Timestamp(t),
                item: ItemId(col(last, 0).unwrap_or_default()),
            });
        }
    }
    stats.scan_duration = started.elapsed();
    Ok(stats)
}

/// Takes back what dead (or stopped) incarnations hold, in the database.
pub(crate) async fn release_dead_nodes(
    db: &Db,
    req: &DeadNodesRequest,
    keep: u32,
    now: Timestamp,
) -> StoreResult<Vec<ReleasedNode>> {
    req.validate().map_err(StoreError::InvalidInput)?;
    let missed = i32::try_from(req.missed_intervals).unwrap_or(i32::MAX);
    let (ex_node, ex_inc) = req
        .exclude
        .as_ref()
        .map_or((None, None), |(n, i)| (Some(n.as_str()), Some(*i)));
    let rows = db
        .query(
            RELEASE,
            &[
                &now.0,
                &missed,
                &req.dry_run,
                &ex_node,
                &ex_inc,
                &i64::from(keep),
            ],
        )
        .await?;
    let mut out: Vec<ReleasedNode> = Vec::new();
    for r in &rows {
        let node_id: String = col(r, 0)?;
        let incarnation: i64 = col(r, 1)?;
        let same = out
            .last()
            .is_some_and(|n| n.node_id == node_id && n.incarnation == incarnation);
        if !same {
            let state: String = col(r, 2)?;
            out.push(ReleasedNode {
                node_id,
                incarnation,
                state: if state == "stopped" {
                    WorkerState::Stopped
                } else {
                    WorkerState::Dead
                },
                last_heartbeat_at: Timestamp(col(r, 3)?),
                items: Vec::new(),
            });
        }
        let item: Option<i64> = col(r, 4)?;
        if item.is_some() {
            let dead: bool = col(r, 10)?;
            let node = out.last_mut().expect("pushed above");
            node.items.push(recovered(r, 4, dead)?);
        }
    }
    Ok(out)
}

/// A returned row's item from column `at`: id, kind, owner, epoch, attempts, max_attempts.
fn recovered(r: &Row, at: usize, dead_lettered: bool) -> StoreResult<RecoveredItem> {
    let count = |i: usize| -> StoreResult<u32> {
        let n: i64 = col(r, i)?;
        u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("column {i}: {n} out of range")))
    };
    Ok(RecoveredItem {
        id: ItemId(col(r, at)?),
        kind: col(r, at + 1)?,
        previous_owner: col(r, at + 2)?,
        previous_epoch: col(r, at + 3)?,
        attempts: count(at + 4)?,
        max_attempts: count(at + 5)?,
        dead_lettered,
    })
}
