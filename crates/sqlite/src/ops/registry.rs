//! The worker registry: `node_register`, `node_heartbeat`, `node_stop`, `node_get`,
//! `nodes_list`.

use leasehold_core::{next_incarnation, NodeClaim, NodeRecord, Timestamp, WorkerState};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::db::write;
use crate::error::{superseded, OpResult};
use crate::row::{self, json_text, node_columns};

const UPSERT: &str = concat!(
    "INSERT INTO workers (",
    node_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
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
/// late shutdown. The rest of the row stays as the node last reported it.
const STOP: &str = "UPDATE workers SET status = 'stopped', stopped_at = ?3 \
     WHERE node_id = ?1 AND incarnation = ?2";

const GET: &str = concat!(
    "SELECT ",
    node_columns!(),
    " FROM workers WHERE node_id = ?1"
);

const INCARNATION: &str = "SELECT incarnation FROM workers WHERE node_id = ?1";

const LIST: &str = concat!("SELECT ", node_columns!(), " FROM workers ORDER BY node_id");

/// Inserts or replaces the node's row, unless the row belongs to a newer incarnation (then
/// `Superseded`) or this incarnation was marked stopped (then nothing, silently).
pub(crate) fn heartbeat(c: &mut Connection, node: &NodeRecord) -> OpResult<()> {
    write(c, |tx| {
        if upsert(tx, node)? == 0 {
            let current: i64 = tx
                .prepare_cached(INCARNATION)?
                .query_row(params![node.node_id], |r| r.get(0))?;
            if current > node.incarnation {
                return Err(superseded(node, current));
            }
        }
        Ok(())
    })
}

/// Claims the row for a new incarnation unless a live one holds it. The read, the judgement
/// and the write share one `BEGIN IMMEDIATE` transaction: it holds the write lock from the
/// start, so a second node registering the same id (through any connection or process) waits
/// and then reads the first one's fresh row.
pub(crate) fn register(
    c: &mut Connection,
    node: &NodeRecord,
    missed_intervals: u32,
    now: Timestamp,
) -> OpResult<NodeClaim> {
    write(c, |tx| {
        let current = tx
            .prepare_cached(GET)?
            .query_row(params![node.node_id], row::node)
            .optional()?;
        if let Some(live) = current
            .as_ref()
            .filter(|r| r.state(now, missed_intervals) == WorkerState::Alive)
        {
            return Ok(NodeClaim::InUse(live.clone()));
        }
        let claimed = NodeRecord {
            incarnation: next_incarnation(current.map(|r| r.incarnation), node.incarnation),
            ..node.clone()
        };
        upsert(tx, &claimed)?;
        Ok(NodeClaim::Registered(claimed))
    })
}

/// Writes the row (see [`UPSERT`]); returns the rows written: 0 when a newer or stopped
/// incarnation holds it.
fn upsert(tx: &Transaction<'_>, node: &NodeRecord) -> OpResult<usize> {
    let metadata = json_text(&node.metadata)?;
    let written = tx.prepare_cached(UPSERT)?.execute(params![
        node.node_id,
        node.incarnation,
        node.worker_type,
        node.status.as_str(),
        node.current_item.map(|i| i.0),
        node.task_text,
        node.last_heartbeat_at.0,
        node.heartbeat_interval_ms,
        node.started_at.0,
        metadata,
    ])?;
    Ok(written)
}

/// Marks `incarnation` of `node_id` stopped; any other row is left alone.
pub(crate) fn stop(
    c: &mut Connection,
    node_id: &str,
    incarnation: i64,
    now: Timestamp,
) -> OpResult<()> {
    write(c, |tx| {
        tx.prepare_cached(STOP)?
            .execute(params![node_id, incarnation, now.0])?;
        Ok(())
    })
}

/// One row.
pub(crate) fn get(c: &mut Connection, node_id: &str) -> OpResult<Option<NodeRecord>> {
    Ok(c.prepare_cached(GET)?
        .query_row(params![node_id], row::node)
        .optional()?)
}

/// Every row, by node id.
pub(crate) fn list(c: &mut Connection) -> OpResult<Vec<NodeRecord>> {
    let mut stmt = c.prepare_cached(LIST)?;
    let rows = stmt.query_map([], row::node)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
