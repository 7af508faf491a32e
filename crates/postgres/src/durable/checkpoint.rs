//! Durable checkpoints: begin, commit (with the tool ledger's record), read, verification
//! records, rollback and retention.

use deadpool_postgres::Transaction;
use leasehold_core::durable::{
    CheckpointRecord, CheckpointState, EvidencePack, NewStep, StepCommit, Verification,
};
use leasehold_core::{ItemId, LeaseRef, StoreError, StoreResult, Timestamp};
use serde_json::Value;
use tokio_postgres::Row;

use crate::db::{finish, prepared, Db};
use crate::error::{corrupt, from_pg, lease_lost, no_nul};
use crate::row::col;

/// The columns [`record`] decodes, in order.
macro_rules! durable_checkpoint_columns {
    () => {
        "id, item_id, epoch, step, name, checkpoint_type, state, snapshot, evidence, \
         verification, verified_at, created_at, committed_at"
    };
}

/// The fence and the insert are one statement. `FOR SHARE` holds the item row as read until
/// commit: a concurrent requeue waits for it, and if the requeue committed first the fence is
/// re-checked on the new row and nothing is written.
const BEGIN: &str = "INSERT INTO durable_checkpoints \
         (item_id, epoch, step, name, checkpoint_type, state, snapshot, evidence, created_at) \
     SELECT id, epoch, $4, $5, $6, 'begun', $7, '{\"evidence\":[]}', $8 FROM items \
     WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3 FOR SHARE \
     RETURNING id";

/// Whether the lease is current, read inside the write transaction that depends on it; the
/// share lock keeps a takeover from committing between this read and the transaction's end.
const FENCE: &str = "SELECT 1 FROM items \
     WHERE id = $1 AND status = 'in_progress' AND owner = $2 AND epoch = $3 FOR SHARE";

/// Only the lease that began a step commits it, and only once.
const COMMIT: &str = "UPDATE durable_checkpoints SET state = 'committed', evidence = $4, \
         committed_at = $5, snapshot = coalesce($6, snapshot) \
     WHERE id = $1 AND item_id = $2 AND epoch = $3 AND state = 'begun'";

/// One execution per key: a forced re-execution, or one after expiry, replaces the record.
const RECORD_TOOL: &str = "INSERT INTO tool_ledger \
         (key, item_id, epoch, tool, command, call, result, checkpoint_id, executed_at, \
          expires_at) \
     VALUES ($1, $2, $3, $4, $5, $10, $6, $7, $8, $9) \
     ON CONFLICT (key) DO UPDATE SET item_id = excluded.item_id, epoch = excluded.epoch, \
         tool = excluded.tool, command = excluded.command, call = excluded.call, \
         result = excluded.result, \
         checkpoint_id = excluded.checkpoint_id, executed_at = excluded.executed_at, \
         expires_at = excluded.expires_at, replays = 0";

const GET: &str = concat!(
    "SELECT ",
    durable_checkpoint_columns!(),
    " FROM durable_checkpoints WHERE id = $1"
);

const OF_ITEM: &str = concat!(
    "SELECT ",
    durable_checkpoint_columns!(),
    " FROM durable_checkpoints WHERE item_id = $1 ORDER BY id DESC LIMIT $2"
);

const RECORD_VERIFICATION: &str = "UPDATE durable_checkpoints SET verification = $3, \
     verified_at = $4 WHERE id = $1 AND item_id = $2";

const TARGET_STATE: &str = "SELECT state FROM durable_checkpoints WHERE id = $1 AND item_id = $2";

const ROLLBACK: &str = "UPDATE durable_checkpoints SET state = 'rolled_back', verified_at = $3 \
     WHERE item_id = $1 AND id > $2 AND state <> 'rolled_back'";

const PRUNE: &str = "DELETE FROM durable_checkpoints WHERE item_id = $1 AND id NOT IN \
     (SELECT id FROM durable_checkpoints WHERE item_id = $1 ORDER BY id DESC LIMIT $2)";

/// Begins a step (fenced); returns the checkpoint's id.
pub(super) async fn begin(
    db: &Db,
    lease: &LeaseRef,
    step: &NewStep,
    now: Timestamp,
) -> StoreResult<i64> {
    if let Some(pos) = step.step.filter(|p| *p < 0) {
        return Err(StoreError::InvalidInput(format!(
            "step position {pos} is negative"
        )));
    }
    if step.name.trim().is_empty() {
        return Err(StoreError::InvalidInput(
            "step name must not be empty".into(),
        ));
    }
    no_nul("step name", &step.name)?;
    let rows = db
        .query(
            BEGIN,
            &[
                &lease.item.0,
                &lease.owner,
                &lease.epoch,
                &step.step,
                &step.name,
                &step.checkpoint_type.as_str(),
                &step.snapshot,
                &now.0,
            ],
        )
        .await?;
    match rows.first() {
        Some(r) => col(r, 0),
        None => Err(lease_lost(lease)),
    }
}

/// Commits a begun step with its evidence and, in the same transaction, the tool's record.
pub(super) async fn commit(
    db: &Db,
    commit: &StepCommit<'_>,
    now: Timestamp,
) -> StoreResult<CheckpointRecord> {
    commit
        .evidence
        .validate()
        .map_err(StoreError::InvalidInput)?;
    let evidence = serde_json::to_value(commit.evidence)
        .map_err(|e| StoreError::InvalidInput(format!("evidence is not storable: {e}")))?;
    if let Some(t) = commit.tool {
        no_nul("ledger key", &t.key)?;
        no_nul("tool", &t.tool)?;
        no_nul("command", &t.command)?;
        no_nul("tool call", &t.call)?;
    }
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = commit_in(&tx, commit, &evidence, now).await;
    finish(tx, outcome).await
}

async fn commit_in(
    tx: &Transaction<'_>,
    commit: &StepCommit<'_>,
    evidence: &Value,
    now: Timestamp,
) -> StoreResult<CheckpointRecord> {
    let (lease, id, tool) = (commit.lease, commit.checkpoint, commit.tool);
    fence(tx, lease).await?;
    let stmt = prepared(tx, COMMIT).await?;
    let changed = tx
        .execute(
            &stmt,
            &[
                &id,
                &lease.item.0,
                &lease.epoch,
                evidence,
                &now.0,
                &commit.snapshot,
            ],
        )
        .await
        .map_err(from_pg)?;
    if changed == 0 {
        return Err(StoreError::InvalidInput(format!(
            "checkpoint {id} is not a begun step of item {} at epoch {}",
            lease.item, lease.epoch
        )));
    }
    if let Some(t) = tool {
        let stmt = prepared(tx, RECORD_TOOL).await?;
        tx.execute(
            &stmt,
            &[
                &t.key,
                &lease.item.0,
                &lease.epoch,
                &t.tool,
                &t.command,
                &t.result,
                &id,
                &now.0,
                &t.expires_at.0,
                &t.call,
            ],
        )
        .await
        .map_err(from_pg)?;
    }
    let stmt = prepared(tx, GET).await?;
    let row = tx
        .query_opt(&stmt, &[&id])
        .await
        .map_err(from_pg)?
        .ok_or_else(|| corrupt(format!("checkpoint {id} vanished")))?;
    record(&row)
}

/// Refuses with `LeaseLost` unless `lease` is current, and holds the item row (shared) until
/// the transaction ends, so no takeover commits while the fenced write is under way.
pub(super) async fn fence(tx: &Transaction<'_>, lease: &LeaseRef) -> StoreResult<()> {
    let stmt = prepared(tx, FENCE).await?;
    let held = tx
        .query_opt(&stmt, &[&lease.item.0, &lease.owner, &lease.epoch])
        .await
        .map_err(from_pg)?;
    held.map(|_| ()).ok_or_else(|| lease_lost(lease))
}

/// One checkpoint.
pub(super) async fn get(db: &Db, id: i64) -> StoreResult<Option<CheckpointRecord>> {
    let rows = db.query(GET, &[&id]).await?;
    rows.first().map(record).transpose()
}

/// An item's checkpoints, newest first.
pub(super) async fn of_item(
    db: &Db,
    item: ItemId,
    limit: u32,
) -> StoreResult<Vec<CheckpointRecord>> {
    let rows = db.query(OF_ITEM, &[&item.0, &i64::from(limit)]).await?;
    rows.iter().map(record).collect()
}

/// Records a verification result on a checkpoint of the lease's item (fenced: a stale
/// holder's verdict must not overwrite the current holder's).
pub(super) async fn record_verification(
    db: &Db,
    lease: &LeaseRef,
    id: i64,
    verification: &Verification,
    now: Timestamp,
) -> StoreResult<()> {
    let value = serde_json::to_value(verification)
        .map_err(|e| StoreError::InvalidInput(format!("verification is not storable: {e}")))?;
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = async {
        fence(&tx, lease).await?;
        let stmt = prepared(&tx, RECORD_VERIFICATION).await?;
        let changed = tx
            .execute(&stmt, &[&id, &lease.item.0, &value, &now.0])
            .await
            .map_err(from_pg)?;
        if changed == 0 {
            return Err(StoreError::InvalidInput(format!(
                "checkpoint {id} is not a checkpoint of item {}",
                lease.item
            )));
        }
        Ok(())
    }
    .await;
    finish(tx, outcome).await
}

/// Sets aside every checkpoint of the lease's item newer than `to` (fenced).
pub(super) async fn rollback(
    db: &Db,
    lease: &LeaseRef,
    to: i64,
    now: Timestamp,
) -> StoreResult<u64> {
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = rollback_in(&tx, lease, to, now).await;
    finish(tx, outcome).await
}

async fn rollback_in(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    to: i64,
    now: Timestamp,
) -> StoreResult<u64> {
    fence(tx, lease).await?;
    let stmt = prepared(tx, TARGET_STATE).await?;
    let target: Option<String> = tx
        .query_opt(&stmt, &[&to, &lease.item.0])
        .await
        .map_err(from_pg)?
        .map(|r| col(&r, 0))
        .transpose()?;
    match target.as_deref() {
        Some("committed") => {}
        Some(state) => {
            return Err(StoreError::InvalidInput(format!(
                "checkpoint {to} is {state}; only a committed checkpoint can be rolled back to"
            )))
        }
        None => {
            return Err(StoreError::InvalidInput(format!(
                "checkpoint {to} is not a checkpoint of item {}",
                lease.item
            )))
        }
    }
    let stmt = prepared(tx, ROLLBACK).await?;
    let n = tx
        .execute(&stmt, &[&lease.item.0, &to, &now.0])
        .await
        .map_err(from_pg)?;
    Ok(n)
}

/// Deletes the lease's item's checkpoints beyond the newest `keep` (fenced: a stale holder
/// must not delete what the current holder resumes from).
pub(super) async fn prune(db: &Db, lease: &LeaseRef, keep: u32) -> StoreResult<u64> {
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = async {
        fence(&tx, lease).await?;
        if keep == 0 {
            return Err(StoreError::InvalidInput(
                "checkpoint retention must keep at least 1".into(),
            ));
        }
        let stmt = prepared(&tx, PRUNE).await?;
        tx.execute(&stmt, &[&lease.item.0, &i64::from(keep)])
            .await
            .map_err(from_pg)
    }
    .await;
    finish(tx, outcome).await
}

/// Decodes a row of [`durable_checkpoint_columns!`].
fn record(row: &Row) -> StoreResult<CheckpointRecord> {
    let ty: String = col(row, 5)?;
    let state: String = col(row, 6)?;
    let evidence: Value = col(row, 8)?;
    let evidence: EvidencePack =
        serde_json::from_value(evidence).map_err(|e| corrupt(format!("stored evidence: {e}")))?;
    let verification = col::<Option<Value>>(row, 9)?
        .map(serde_json::from_value::<Verification>)
        .transpose()
        .map_err(|e| corrupt(format!("stored verification: {e}")))?;
    Ok(CheckpointRecord {
        id: col(row, 0)?,
        item: ItemId(col(row, 1)?),
        epoch: col(row, 2)?,
        step: col(row, 3)?,
        name: col(row, 4)?,
        checkpoint_type: ty.parse().map_err(corrupt)?,
        state: state.parse::<CheckpointState>().map_err(corrupt)?,
        snapshot: col(row, 7)?,
        evidence,
        verification,
        verified_at: col::<Option<i64>>(row, 10)?.map(Timestamp),
        created_at: Timestamp(col(row, 11)?),
        committed_at: col::<Option<i64>>(row, 12)?.map(Timestamp),
    })
}
