//! Rows to core types: the column lists every query selects, and their decoders.
//!
//! The column lists are macros so each operation's SQL stays one `&'static str` built with
//! `concat!` (the key of the prepared-statement cache). A stored value that does not decode
//! (an unknown status, a negative attempt count) is `Corrupt`.

use leasehold_core::{
    Attempt, AttemptOutcome, Checkpoint, Dependency, Item, ItemId, ItemStatus, NodeRecord,
    NodeStatus, ReapCandidate, StoreResult, Timestamp,
};
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::error::corrupt;

/// Every column of `items`, in [`Item`]'s field order; decoded by [`item`].
macro_rules! item_columns {
    () => {
        "id, kind, input, status, attempts, max_attempts, priority, run_at, group_id, owner, \
         owner_node, owner_incarnation, epoch, lease_expires_at, last_heartbeat_at, output, \
         error, progress, created_at, updated_at, finished_at, timeout_ms, releases, unique_key, \
         started_at, cancel_requested_at, decision"
    };
}
pub(crate) use item_columns;

/// What a recovery reads of an in-progress item, followed by a `past_stale_limit` flag
/// expression supplied by the query; decoded by [`candidate`].
macro_rules! candidate_columns {
    () => {
        "id, kind, owner, owner_node, owner_incarnation, epoch, lease_expires_at, \
         last_heartbeat_at, attempts, max_attempts"
    };
}
pub(crate) use candidate_columns;

/// Every column of `item_attempts`; decoded by [`attempt`].
macro_rules! attempt_columns {
    () => {
        "item_id, attempt, epoch, started_at, ended_at, owner, owner_node, owner_incarnation, \
         outcome, error"
    };
}
pub(crate) use attempt_columns;

/// Every column of `checkpoints`; decoded by [`checkpoint`].
macro_rules! checkpoint_columns {
    () => {
        "id, item_id, epoch, name, payload, created_at"
    };
}
pub(crate) use checkpoint_columns;

/// Every column of `workers` but `stopped_at`; decoded by [`node`].
macro_rules! node_columns {
    () => {
        "node_id, incarnation, worker_type, status, current_item, task_text, last_heartbeat_at, \
         heartbeat_interval_ms, started_at, metadata"
    };
}
pub(crate) use node_columns;

/// One column, any decoding failure reported as `Corrupt`.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> StoreResult<T> {
    row.try_get(i)
        .map_err(|e| corrupt(format!("column {i}: {e}")))
}

fn count(row: &Row, i: usize) -> StoreResult<u32> {
    let n: i64 = col(row, i)?;
    u32::try_from(n).map_err(|_| corrupt(format!("column {i}: count {n} out of range")))
}

fn ts(row: &Row, i: usize) -> StoreResult<Timestamp> {
    Ok(Timestamp(col(row, i)?))
}

fn ts_opt(row: &Row, i: usize) -> StoreResult<Option<Timestamp>> {
    Ok(col::<Option<i64>>(row, i)?.map(Timestamp))
}

/// A `timeout_ms` column: whole positive milliseconds, or NULL for none.
fn timeout_opt(row: &Row, i: usize) -> StoreResult<Option<std::time::Duration>> {
    match col::<Option<i64>>(row, i)? {
        None => Ok(None),
        Some(ms) => u64::try_from(ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(|ms| Some(std::time::Duration::from_millis(ms)))
            .ok_or_else(|| corrupt(format!("column {i}: timeout of {ms} ms is not positive"))),
    }
}

/// An item status column.
pub(crate) fn status(row: &Row, i: usize) -> StoreResult<ItemStatus> {
    let s: String = col(row, i)?;
    s.parse::<ItemStatus>().map_err(corrupt)
}

/// Decodes `id, kind, status, output` of a dependency.
pub(crate) fn dependency(row: &Row) -> StoreResult<Dependency> {
    Ok(Dependency {
        id: ItemId(col(row, 0)?),
        kind: col(row, 1)?,
        status: status(row, 2)?,
        output: col(row, 3)?,
    })
}

/// Decodes a row selected with [`item_columns!`].
pub(crate) fn item(row: &Row) -> StoreResult<Item> {
    Ok(Item {
        id: ItemId(col(row, 0)?),
        kind: col(row, 1)?,
        input: col(row, 2)?,
        status: status(row, 3)?,
        attempts: count(row, 4)?,
        max_attempts: count(row, 5)?,
        priority: col(row, 6)?,
        run_at: ts(row, 7)?,
        group_id: col(row, 8)?,
        owner: col(row, 9)?,
        owner_node: col(row, 10)?,
        owner_incarnation: col(row, 11)?,
        epoch: col(row, 12)?,
        lease_expires_at: ts_opt(row, 13)?,
        last_heartbeat_at: ts_opt(row, 14)?,
        output: col(row, 15)?,
        error: col(row, 16)?,
        progress: col(row, 17)?,
        created_at: ts(row, 18)?,
        updated_at: ts(row, 19)?,
        finished_at: ts_opt(row, 20)?,
        timeout: timeout_opt(row, 21)?,
        releases: count(row, 22)?,
        unique_key: col(row, 23)?,
        started_at: ts_opt(row, 24)?,
        cancel_requested_at: ts_opt(row, 25)?,
        decision: decision_opt(row, 26)?,
    })
}

/// A parked item's decision, stored as JSON.
fn decision_opt(row: &Row, i: usize) -> StoreResult<Option<leasehold_core::Decision>> {
    let stored: Option<serde_json::Value> = col(row, i)?;
    stored
        .map(|v| {
            serde_json::from_value(v)
                .map_err(|e| corrupt(format!("column {i}: stored decision: {e}")))
        })
        .transpose()
}

/// Decodes rows selected with [`item_columns!`].
pub(crate) fn items(rows: &[Row]) -> StoreResult<Vec<Item>> {
    rows.iter().map(item).collect()
}

/// Decodes a row selected with [`candidate_columns!`] plus the `past_stale_limit` flag.
pub(crate) fn candidate(row: &Row) -> StoreResult<ReapCandidate> {
    let owner: Option<String> = col(row, 2)?;
    let owner = owner.ok_or_else(|| corrupt("an in-progress item has no owner"))?;
    Ok(ReapCandidate {
        item: ItemId(col(row, 0)?),
        kind: col(row, 1)?,
        owner,
        owner_node: col(row, 3)?,
        owner_incarnation: col(row, 4)?,
        epoch: col(row, 5)?,
        lease_expires_at: ts_opt(row, 6)?,
        last_heartbeat_at: ts_opt(row, 7)?,
        attempts: count(row, 8)?,
        max_attempts: count(row, 9)?,
        past_stale_limit: col(row, 10)?,
    })
}

/// Decodes a row selected with [`attempt_columns!`].
pub(crate) fn attempt(row: &Row) -> StoreResult<Attempt> {
    let outcome: String = col(row, 8)?;
    Ok(Attempt {
        item: ItemId(col(row, 0)?),
        attempt: count(row, 1)?,
        epoch: col(row, 2)?,
        started_at: ts_opt(row, 3)?,
        ended_at: ts(row, 4)?,
        owner: col(row, 5)?,
        owner_node: col(row, 6)?,
        owner_incarnation: col(row, 7)?,
        outcome: outcome.parse::<AttemptOutcome>().map_err(corrupt)?,
        error: col(row, 9)?,
    })
}

/// Decodes a row selected with [`checkpoint_columns!`].
pub(crate) fn checkpoint(row: &Row) -> StoreResult<Checkpoint> {
    Ok(Checkpoint {
        id: col(row, 0)?,
        item: ItemId(col(row, 1)?),
        epoch: col(row, 2)?,
        name: col(row, 3)?,
        payload: col(row, 4)?,
        created_at: ts(row, 5)?,
    })
}

/// Decodes a row selected with [`node_columns!`].
pub(crate) fn node(row: &Row) -> StoreResult<NodeRecord> {
    let status: String = col(row, 3)?;
    Ok(NodeRecord {
        node_id: col(row, 0)?,
        incarnation: col(row, 1)?,
        worker_type: col(row, 2)?,
        status: status.parse::<NodeStatus>().map_err(corrupt)?,
        current_item: col::<Option<i64>>(row, 4)?.map(ItemId),
        task_text: col(row, 5)?,
        last_heartbeat_at: ts(row, 6)?,
        heartbeat_interval_ms: col(row, 7)?,
        started_at: ts(row, 8)?,
        metadata: col(row, 9)?,
    })
}

/// A `u64` count from a `BIGINT` aggregate.
pub(crate) fn total(row: &Row, i: usize) -> StoreResult<u64> {
    let n: i64 = col(row, i)?;
    Ok(u64::try_from(n).unwrap_or(0))
}
