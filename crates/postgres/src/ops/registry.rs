//! The worker registry: `node_register`, `node_heartbeat`, `node_stop`, `node_get`,
//! `nodes_list`.

use deadpool_postgres::Transaction;
use leasehold_core::{
    next_incarnation, NodeClaim, NodeRecord, StoreError, StoreResult, Timestamp, WorkerState,
};
use tokio_postgres::types::ToSql;

use crate::db::{prepared, Db};
use crate::error::{corrupt, from_pg, no_nul};
use crate::row::{self, node_columns};

/// The registry row's insert-or-replace: a write for an older incarnation, or for one
/// already stopped, changes nothing.
macro_rules! upsert {
    () => {
        concat!(
            "INSERT INTO workers (",
            node_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (node_id) DO UPDATE SET incarnation = excluded.incarnation, \
                 worker_type = excluded.worker_type, status = excluded.status, \
                 current_item = excluded.current_item, task_text = excluded.task_text, \
                 last_heartbeat_at = excluded.last_heartbeat_at, \
                 heartbeat_interval_ms = excluded.heartbeat_interval_ms, \
                 started_at = excluded.started_at, metadata = excluded.metadata, \
                 stopped_at = NULL \
             WHERE excluded.incarnation > workers.incarnation \
                OR (excluded.incarnation = workers.incarnation AND workers.status <> 'stopped')"
        )
    };
}

const UPSERT: &str = upsert!();

/// Only the named incarnation: a restarted node's row is not stopped by its predecessor's
/// late shutdown.
const STOP: &str = "UPDATE workers SET status = 'stopped', stopped_at = $3 \
     WHERE node_id = $1 AND incarnation = $2";

const GET: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM workers WHERE node_id = $1"
);

/// A first registration: writes nothing when the id has a row (or a concurrent first
/// registration holds the unique index's entry: this then waits for it and writes nothing).
const INSERT_NEW: &str = concat!(
    "INSERT INTO workers (",
    node_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (node_id) DO NOTHING"
);

/// The row, locked until the registration's transaction ends: a concurrent registration of the
/// same id waits here and then reads this one's outcome.
const GET_LOCKED: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM workers WHERE node_id = $1 FOR UPDATE"
);

/// Byte order (`COLLATE "C"`), as SQLite sorts, whatever the database's collation.
const LIST: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM workers ORDER BY node_id COLLATE \"C\""
);

/// [`UPSERT`], answering in the same round trip whether it wrote the row and which
/// incarnation held it before (the outer query reads the snapshot from before the write).
const HEARTBEAT: &str = concat!(
    "WITH written AS (",
    upsert!(),
    " RETURNING 1) \
     SELECT EXISTS (SELECT 1 FROM written), \
            (SELECT incarnation FROM workers WHERE node_id = $1)"
);

/// Inserts or replaces the node's row, unless it belongs to a newer incarnation (then
/// `Superseded`) or this incarnation was marked stopped (then nothing, silently).
pub(crate) async fn heartbeat(db: &Db, node: &NodeRecord) -> StoreResult<()> {
    no_nul("node id", &node.node_id)?;
    no_nul("worker type", &node.worker_type)?;
    let args = RowArgs::of(node);
    let rows = db.query(HEARTBEAT, &args.params()).await?;
    let row = rows
        .first()
        .ok_or_else(|| corrupt("the heartbeat returned no row"))?;
    let written: bool = row::col(row, 0)?;
    let before: Option<i64> = row::col(row, 1)?;
    match before {
        Some(current) if !written && current > node.incarnation => Err(StoreError::Superseded {
            node_id: node.node_id.clone(),
            incarnation: node.incarnation,
            current,
        }),
        _ => Ok(()),
    }
}

/// Claims the row for a new incarnation unless a live one holds it, in one transaction: the
/// insert of a first registration, or the locked read, the judgement and the replacing write.
pub(crate) async fn register(
    db: &Db,
    node: &NodeRecord,
    missed_intervals: u32,
    now: Timestamp,
) -> StoreResult<NodeClaim> {
    no_nul("node id", &node.node_id)?;
    no_nul("worker type", &node.worker_type)?;
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    if write_row(&tx, INSERT_NEW, node).await? == 1 {
        tx.commit().await.map_err(from_pg)?;
        return Ok(NodeClaim::Registered(node.clone()));
    }
    let stmt = prepared(&tx, GET_LOCKED).await?;
    let rows = tx.query(&stmt, &[&node.node_id]).await.map_err(from_pg)?;
    let current = rows.first().map(row::node).transpose()?;
    if let Some(live) = current
        .as_ref()
        .filter(|r| r.state(now, missed_intervals) == WorkerState::Alive)
    {
        // Nothing written: dropping the transaction rolls it back and releases the lock.
        return Ok(NodeClaim::InUse(live.clone()));
    }
    let claimed = NodeRecord {
        incarnation: next_incarnation(current.map(|r| r.incarnation), node.incarnation),
        ..node.clone()
    };
    write_row(&tx, UPSERT, &claimed).await?;
    tx.commit().await.map_err(from_pg)?;
    Ok(NodeClaim::Registered(claimed))
}

/// Runs `sql` (an insert of [`node_columns!`]) with `node`'s values; returns the rows written.
async fn write_row(tx: &Transaction<'_>, sql: &str, node: &NodeRecord) -> StoreResult<u64> {
    let stmt = prepared(tx, sql).await?;
    tx.execute(&stmt, &RowArgs::of(node).params())
        .await
        .map_err(from_pg)
}

/// A registry row's values as the statements' `$1`–`$10` ([`node_columns!`] order).
struct RowArgs<'a> {
    node: &'a NodeRecord,
    status: &'static str,
    current_item: Option<i64>,
    /// PostgreSQL stores no NUL in text: the free-form task text has it replaced.
    task_text: Option<String>,
}

impl<'a> RowArgs<'a> {
    fn of(node: &'a NodeRecord) -> Self {
        RowArgs {
            node,
            status: node.status.as_str(),
            current_item: node.current_item.map(|i| i.0),
            task_text: node.task_text.as_ref().map(|t| t.replace('\0', "\u{FFFD}")),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 10] {
        let n = self.node;
        [
            &n.node_id,
            &n.incarnation,
            &n.worker_type,
            &self.status,
            &self.current_item,
            &self.task_text,
            &n.last_heartbeat_at.0,
            &n.heartbeat_interval_ms,
            &n.started_at.0,
            &n.metadata,
        ]
    }
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
