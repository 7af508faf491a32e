//! The worker registry: `node_heartbeat`, `node_stop`, `node_get`, `nodes_list`.

use leasehold_core::{NodeRecord, StoreResult, Timestamp};

use crate::db::Db;
use crate::error::no_nul;
use crate::row::{self, node_columns};

/// A write for an older incarnation, or for one already stopped, changes nothing.
const UPSERT: &str = concat!(
    "INSERT INTO workers (",
    node_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (node_id) DO UPDATE SET incarnation = excluded.incarnation, \
         worker_type = excluded.worker_type, status = excluded.status, \
         current_item = excluded.current_item, task_text = excluded.task_text, \
         last_heartbeat_at = excluded.last_heartbeat_at, \
         heartbeat_interval_ms = excluded.heartbeat_interval_ms, \
         started_at = excluded.started_at, metadata = excluded.metadata, stopped_at = NULL \
     WHERE excluded.incarnation > workers.incarnation \
        OR (excluded.incarnation = workers.incarnation AND workers.status <> 'stopped')"
);

/// Only the named incarnation: a restarted node's row is not stopped by its predecessor's
/// late shutdown.
const STOP: &str = "UPDATE workers SET status = 'stopped', stopped_at = $3 \
     WHERE node_id = $1 AND incarnation = $2";

const GET: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM workers WHERE node_id = $1"
);

/// Byte order (`COLLATE "C"`), as SQLite sorts, whatever the database's collation.
const LIST: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM workers ORDER BY node_id COLLATE \"C\""
);

/// Inserts or replaces the node's row, unless it belongs to a newer or stopped incarnation.
pub(crate) async fn heartbeat(db: &Db, node: &NodeRecord) -> StoreResult<()> {
    no_nul("node id", &node.node_id)?;
    no_nul("worker type", &node.worker_type)?;
    let task_text = node.task_text.as_ref().map(|t| t.replace('\0', "\u{FFFD}"));
    db.execute(
        UPSERT,
        &[
            &node.node_id,
            &node.incarnation,
            &node.worker_type,
            &node.status.as_str(),
            &node.current_item.map(|i| i.0),
            &task_text,
            &node.last_heartbeat_at.0,
            &node.heartbeat_interval_ms,
            &node.started_at.0,
            &node.metadata,
        ],
    )
    .await?;
    Ok(())
}

/// Marks `incarnation` of `node_id` stopped; any other row is left alone.
pub(crate) async fn stop(
    db: &Db,
    node_id: &str,
    incarnation: i64,
    now: Timestamp,
) -> StoreResult<()> {
    db.execute(STOP, &[&node_id, &incarnation, &now.0]).await?;
    Ok(())
}

/// One row.
pub(crate) async fn get(db: &Db, node_id: &str) -> StoreResult<Option<NodeRecord>> {
    let rows = db.query(GET, &[&node_id]).await?;
    rows.first().map(row::node).transpose()
}

/// Every row, by node id.
pub(crate) async fn list(db: &Db) -> StoreResult<Vec<NodeRecord>> {
    db.query(LIST, &[]).await?.iter().map(row::node).collect()
}
