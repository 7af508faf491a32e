//! Durable checkpoints: begin, commit (with the tool ledger's record), read, verification
//! records, rollback and retention. Every write is fenced by the caller's lease ([`fence`],
//! read in the write's own transaction).

use leasehold_core::durable::{
    CheckpointRecord, CheckpointState, EvidencePack, NewLedgerEntry, NewStep, Verification,
};
use leasehold_core::{ItemId, LeaseRef, StoreError, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use crate::db::write;
use crate::error::{bad_column, lease_lost, OpResult};
use crate::row::json_text;

/// The columns [`record`] decodes, in order.
pub(super) const COLUMNS: &str = "id, item_id, epoch, step, name, checkpoint_type, state, \
     snapshot, evidence, verification, verified_at, created_at, committed_at";

/// The fence and the insert are one statement: a stale holder's step is never begun.
const BEGIN: &str = "INSERT INTO durable_checkpoints \
         (item_id, epoch, step, name, checkpoint_type, state, snapshot, evidence, created_at) \
     SELECT id, epoch, ?4, ?5, ?6, 'begun', ?7, '{\"evidence\":[]}', ?8 FROM items \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Whether the lease is current, read inside the write transaction that depends on it.
const FENCE: &str =
    "SELECT 1 FROM items WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3";

/// Only the lease that began a step commits it, and only once.
const COMMIT: &str = "UPDATE durable_checkpoints SET state = 'committed', evidence = ?4, \
         committed_at = ?5, snapshot = coalesce(?6, snapshot) \
     WHERE id = ?1 AND item_id = ?2 AND epoch = ?3 AND state = 'begun'";

/// One execution per key: a forced re-execution, or one after expiry, replaces the record.
const RECORD_TOOL: &str = "INSERT INTO tool_ledger \
         (key, item_id, epoch, tool, command, call, result, checkpoint_id, executed_at, \
          expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?10, ?6, ?7, ?8, ?9) \
     ON CONFLICT (key) DO UPDATE SET item_id = excluded.item_id, epoch = excluded.epoch, \
         tool = excluded.tool, command = excluded.command, call = excluded.call, \
         result = excluded.result, \
         checkpoint_id = excluded.checkpoint_id, executed_at = excluded.executed_at, \
         expires_at = excluded.expires_at, replays = 0";

/// Begins a step (fenced); returns the checkpoint's id.
pub(super) fn begin(
    c: &mut Connection,
    lease: &LeaseRef,
    step: &NewStep,
    now: Timestamp,
) -> OpResult<i64> {
    if let Some(pos) = step.step.filter(|p| *p < 0) {
        return Err(StoreError::InvalidInput(format!("step position {pos} is negative")).into());
    }
    if step.name.trim().is_empty() {
        return Err(StoreError::InvalidInput("step name must not be empty".into()).into());
    }
    let snapshot = json_text(&step.snapshot)?;
    write(c, |tx| {
        let changed = tx.prepare_cached(BEGIN)?.execute(params![
            lease.item.0,
            lease.owner,
            lease.epoch,
            step.step,
            step.name,
            step.checkpoint_type.as_str(),
            snapshot,
            now.0
        ])?;
        if changed == 0 {
            return Err(lease_lost(lease));
        }
        Ok(tx.last_insert_rowid())
    })
}

/// [`DurableStore::step_commit`](leasehold_core::durable::DurableStore::step_commit)'s
/// arguments, owned to cross to the connection thread.
pub(super) struct Commit {
    pub(super) lease: LeaseRef,
    pub(super) checkpoint: i64,
    pub(super) evidence: EvidencePack,
    pub(super) snapshot: Option<serde_json::Value>,
    pub(super) tool: Option<NewLedgerEntry>,
}

/// Commits a begun step with its evidence and, in the same transaction, the tool's record.
pub(super) fn commit(
    c: &mut Connection,
    commit: &Commit,
    now: Timestamp,
) -> OpResult<CheckpointRecord> {
    let (lease, id, tool) = (&commit.lease, commit.checkpoint, commit.tool.as_ref());
    commit
        .evidence
        .validate()
        .map_err(StoreError::InvalidInput)?;
    let evidence_text = serde_json::to_string(&commit.evidence)
        .map_err(|e| StoreError::InvalidInput(format!("evidence is not storable: {e}")))?;
    let snapshot_text = commit.snapshot.as_ref().map(json_text).transpose()?;
    let result_text = tool.map(|t| json_text(&t.result)).transpose()?;
    write(c, |tx| {
        fence(tx, lease)?;
        let changed = tx.prepare_cached(COMMIT)?.execute(params![
            id,
            lease.item.0,
            lease.epoch,
            evidence_text,
            now.0,
            snapshot_text
        ])?;
        if changed == 0 {
            return Err(StoreError::InvalidInput(format!(
                "checkpoint {id} is not a begun step of item {} at epoch {}",
                lease.item, lease.epoch
            ))
            .into());
        }
        if let (Some(t), Some(result)) = (tool, &result_text) {
            tx.prepare_cached(RECORD_TOOL)?.execute(params![
                t.key,
                lease.item.0,
                lease.epoch,
                t.tool,
                t.command,
                result,
                id,
                now.0,
                t.expires_at.0,
                t.call
            ])?;
        }
        get_in(tx, id)?
            .ok_or_else(|| StoreError::Corrupt(format!("checkpoint {id} vanished")).into())
    })
}

/// Refuses with `LeaseLost` unless `lease` is current.
pub(super) fn fence(tx: &Transaction<'_>, lease: &LeaseRef) -> OpResult<()> {
    let held = tx
        .prepare_cached(FENCE)?
        .query_row(params![lease.item.0, lease.owner, lease.epoch], |_| Ok(()))
        .optional()?;
    held.ok_or_else(|| lease_lost(lease))
}

/// One checkpoint.
pub(super) fn get(c: &mut Connection, id: i64) -> OpResult<Option<CheckpointRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM durable_checkpoints WHERE id = ?1");
    Ok(c.prepare_cached(&sql)?
        .query_row(params![id], record)
        .optional()?)
}

fn get_in(tx: &Transaction<'_>, id: i64) -> OpResult<Option<CheckpointRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM durable_checkpoints WHERE id = ?1");
    Ok(tx
        .prepare_cached(&sql)?
        .query_row(params![id], record)
        .optional()?)
}

/// An item's checkpoints, newest first.
pub(super) fn of_item(
    c: &mut Connection,
    item: ItemId,
    limit: u32,
) -> OpResult<Vec<CheckpointRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM durable_checkpoints WHERE item_id = ?1 ORDER BY id DESC LIMIT ?2"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![item.0, limit], record)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Records a verification result on a checkpoint of the lease's item (fenced: a stale
/// holder's verdict must not overwrite the current holder's).
pub(super) fn record_verification(
    c: &mut Connection,
    lease: &LeaseRef,
    id: i64,
    verification: &Verification,
    now: Timestamp,
) -> OpResult<()> {
    let text = serde_json::to_string(verification)
        .map_err(|e| StoreError::InvalidInput(format!("verification is not storable: {e}")))?;
    write(c, |tx| {
        fence(tx, lease)?;
        let changed = tx
            .prepare_cached(
                "UPDATE durable_checkpoints SET verification = ?3, verified_at = ?4 \
                 WHERE id = ?1 AND item_id = ?2",
            )?
            .execute(params![id, lease.item.0, text, now.0])?;
        if changed == 0 {
            return Err(StoreError::InvalidInput(format!(
                "checkpoint {id} is not a checkpoint of item {}",
                lease.item
            ))
            .into());
        }
        Ok(())
    })
}

/// Sets aside every checkpoint of the lease's item newer than `to` (fenced).
pub(super) fn rollback(
    c: &mut Connection,
    lease: &LeaseRef,
    to: i64,
    now: Timestamp,
) -> OpResult<u64> {
    write(c, |tx| {
        fence(tx, lease)?;
        let target: Option<String> = tx
            .prepare_cached("SELECT state FROM durable_checkpoints WHERE id = ?1 AND item_id = ?2")?
            .query_row(params![to, lease.item.0], |r| r.get(0))
            .optional()?;
        match target.as_deref() {
            Some("committed") => {}
            Some(state) => {
                return Err(StoreError::InvalidInput(format!(
                    "checkpoint {to} is {state}; only a committed checkpoint can be rolled back to"
                ))
                .into())
            }
            None => {
                return Err(StoreError::InvalidInput(format!(
                    "checkpoint {to} is not a checkpoint of item {}",
                    lease.item
                ))
                .into())
            }
        }
        let n = tx
            .prepare_cached(
                "UPDATE durable_checkpoints SET state = 'rolled_back', verified_at = ?3 \
                 WHERE item_id = ?1 AND id > ?2 AND state <> 'rolled_back'",
            )?
            .execute(params![lease.item.0, to, now.0])?;
        Ok(n as u64)
    })
}

/// Deletes the lease's item's checkpoints beyond the newest `keep` (fenced: a stale holder
/// must not delete what the current holder resumes from).
pub(super) fn prune(c: &mut Connection, lease: &LeaseRef, keep: u32) -> OpResult<u64> {
    write(c, |tx| {
        fence(tx, lease)?;
        if keep == 0 {
            return Err(StoreError::InvalidInput(
                "checkpoint retention must keep at least 1".into(),
            )
            .into());
        }
        let n = tx
            .prepare_cached(
                "DELETE FROM durable_checkpoints WHERE item_id = ?1 AND id NOT IN \
                 (SELECT id FROM durable_checkpoints WHERE item_id = ?1 ORDER BY id DESC LIMIT ?2)",
            )?
            .execute(params![lease.item.0, keep])?;
        Ok(n as u64)
    })
}

/// Decodes a row of [`COLUMNS`].
pub(super) fn record(row: &Row<'_>) -> rusqlite::Result<CheckpointRecord> {
    let json = |i: usize| -> rusqlite::Result<serde_json::Value> {
        let text: String = row.get(i)?;
        serde_json::from_str(&text).map_err(|e| bad_column(i, format!("stored JSON: {e}")))
    };
    let ty: String = row.get(5)?;
    let state: String = row.get(6)?;
    let evidence: EvidencePack = serde_json::from_value(json(8)?)
        .map_err(|e| bad_column(8, format!("stored evidence: {e}")))?;
    let verification = match row.get::<_, Option<String>>(9)? {
        None => None,
        Some(t) => Some(
            serde_json::from_str::<Verification>(&t)
                .map_err(|e| bad_column(9, format!("stored verification: {e}")))?,
        ),
    };
    Ok(CheckpointRecord {
        id: row.get(0)?,
        item: ItemId(row.get(1)?),
        epoch: row.get(2)?,
        step: row.get(3)?,
        name: row.get(4)?,
        checkpoint_type: ty.parse().map_err(|e: String| bad_column(5, e))?,
        state: state
            .parse::<CheckpointState>()
            .map_err(|e| bad_column(6, e))?,
        snapshot: json(7)?,
        evidence,
        verification,
        verified_at: row.get::<_, Option<i64>>(10)?.map(Timestamp),
        created_at: Timestamp(row.get(11)?),
        committed_at: row.get::<_, Option<i64>>(12)?.map(Timestamp),
    })
}
