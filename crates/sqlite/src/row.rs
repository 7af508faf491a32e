//! Rows to core types: the column lists every query selects, and their decoders.
//!
//! The column lists are macros so that each operation's SQL stays one `&'static str` (built with
//! `concat!`), which is what `prepare_cached` keys its cache on. A stored value that does not
//! decode (an unknown status, text that is not JSON, a negative attempt count) becomes a
//! rusqlite conversion error, which [`crate::error::from_sqlite`] reports as `Corrupt`.

use leasehold_core::{
    Attempt, AttemptOutcome, Checkpoint, Dependency, Item, ItemId, ItemStatus, NodeRecord,
    NodeStatus, ReapCandidate, Timestamp,
};
use rusqlite::Row;
use serde_json::Value;

use crate::error::bad_column;

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

/// What a recovery (the reaper or `recover_mine`) reads of an in-progress item, followed by a
/// `past_stale_limit` flag expression supplied by the query; decoded by [`candidate`].
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

/// Every column of `workers`; decoded by [`node`].
macro_rules! node_columns {
    () => {
        "node_id, incarnation, worker_type, status, current_item, task_text, last_heartbeat_at, \
         heartbeat_interval_ms, started_at, metadata"
    };
}
pub(crate) use node_columns;

/// Decodes a row selected with [`item_columns!`].
pub(crate) fn item(row: &Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        id: ItemId(row.get(0)?),
        kind: row.get(1)?,
        input: json(row, 2)?,
        status: status(row, 3)?,
        attempts: row.get(4)?,
        max_attempts: row.get(5)?,
        priority: row.get(6)?,
        run_at: Timestamp(row.get(7)?),
        group_id: row.get(8)?,
        owner: row.get(9)?,
        owner_node: row.get(10)?,
        owner_incarnation: row.get(11)?,
        epoch: row.get(12)?,
        lease_expires_at: timestamp_opt(row, 13)?,
        last_heartbeat_at: timestamp_opt(row, 14)?,
        output: json_opt(row, 15)?,
        error: row.get(16)?,
        progress: json_opt(row, 17)?,
        created_at: Timestamp(row.get(18)?),
        updated_at: Timestamp(row.get(19)?),
        finished_at: timestamp_opt(row, 20)?,
        timeout: timeout_opt(row, 21)?,
        releases: row.get(22)?,
        unique_key: row.get(23)?,
        started_at: timestamp_opt(row, 24)?,
        cancel_requested_at: timestamp_opt(row, 25)?,
        decision: decision_opt(row, 26)?,
    })
}

/// Decodes a row selected with [`candidate_columns!`] plus the `past_stale_limit` flag.
pub(crate) fn candidate(row: &Row<'_>) -> rusqlite::Result<ReapCandidate> {
    let owner: Option<String> = row.get(2)?;
    let owner = owner.ok_or_else(|| bad_column(2, "an in-progress item has no owner".into()))?;
    Ok(ReapCandidate {
        item: ItemId(row.get(0)?),
        kind: row.get(1)?,
        owner,
        owner_node: row.get(3)?,
        owner_incarnation: row.get(4)?,
        epoch: row.get(5)?,
        lease_expires_at: timestamp_opt(row, 6)?,
        last_heartbeat_at: timestamp_opt(row, 7)?,
        attempts: row.get(8)?,
        max_attempts: row.get(9)?,
        past_stale_limit: row.get(10)?,
    })
}

/// Decodes a row selected with [`attempt_columns!`].
pub(crate) fn attempt(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    let outcome: String = row.get(8)?;
    Ok(Attempt {
        item: ItemId(row.get(0)?),
        attempt: row.get(1)?,
        epoch: row.get(2)?,
        started_at: timestamp_opt(row, 3)?,
        ended_at: Timestamp(row.get(4)?),
        owner: row.get(5)?,
        owner_node: row.get(6)?,
        owner_incarnation: row.get(7)?,
        outcome: outcome
            .parse::<AttemptOutcome>()
            .map_err(|e| bad_column(8, e))?,
        error: row.get(9)?,
    })
}

/// Decodes a row selected with [`checkpoint_columns!`].
pub(crate) fn checkpoint(row: &Row<'_>) -> rusqlite::Result<Checkpoint> {
    Ok(Checkpoint {
        id: row.get(0)?,
        item: ItemId(row.get(1)?),
        epoch: row.get(2)?,
        name: row.get(3)?,
        payload: json(row, 4)?,
        created_at: Timestamp(row.get(5)?),
    })
}

/// Decodes a row selected with [`node_columns!`].
pub(crate) fn node(row: &Row<'_>) -> rusqlite::Result<NodeRecord> {
    let status: String = row.get(3)?;
    Ok(NodeRecord {
        node_id: row.get(0)?,
        incarnation: row.get(1)?,
        worker_type: row.get(2)?,
        status: status.parse::<NodeStatus>().map_err(|e| bad_column(3, e))?,
        current_item: row.get::<_, Option<i64>>(4)?.map(ItemId),
        task_text: row.get(5)?,
        last_heartbeat_at: Timestamp(row.get(6)?),
        heartbeat_interval_ms: row.get(7)?,
        started_at: Timestamp(row.get(8)?),
        metadata: json(row, 9)?,
    })
}

/// An item status column.
pub(crate) fn status(row: &Row<'_>, index: usize) -> rusqlite::Result<ItemStatus> {
    let s: String = row.get(index)?;
    s.parse::<ItemStatus>().map_err(|e| bad_column(index, e))
}

/// A `timeout_ms` column: whole positive milliseconds, or NULL for none.
fn timeout_opt(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<std::time::Duration>> {
    match row.get::<_, Option<i64>>(index)? {
        None => Ok(None),
        Some(ms) => u64::try_from(ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(|ms| Some(std::time::Duration::from_millis(ms)))
            .ok_or_else(|| bad_column(index, format!("timeout of {ms} ms is not positive"))),
    }
}

/// Decodes `id, kind, status, output` of a dependency.
pub(crate) fn dependency(row: &Row<'_>) -> rusqlite::Result<Dependency> {
    Ok(Dependency {
        id: ItemId(row.get(0)?),
        kind: row.get(1)?,
        status: status(row, 2)?,
        output: json_opt(row, 3)?,
    })
}

fn timestamp_opt(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row.get::<_, Option<i64>>(index)?.map(Timestamp))
}

fn json(row: &Row<'_>, index: usize) -> rusqlite::Result<Value> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|e| bad_column(index, format!("stored JSON: {e}")))
}

fn json_opt(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Value>> {
    match row.get::<_, Option<String>>(index)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| bad_column(index, format!("stored JSON: {e}"))),
    }
}

/// A parked item's decision, stored as JSON text.
fn decision_opt(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<leasehold_core::Decision>> {
    match row.get::<_, Option<String>>(index)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| bad_column(index, format!("stored decision: {e}"))),
    }
}

/// A JSON value as the text stored in a column.
pub(crate) fn json_text(value: &Value) -> Result<String, leasehold_core::StoreError> {
    serde_json::to_string(value)
        .map_err(|e| leasehold_core::StoreError::InvalidInput(format!("not storable as JSON: {e}")))
}
