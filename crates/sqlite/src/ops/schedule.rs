//! `schedule_upsert`, `schedule_claim`, `schedules_list`: periodic work, one row per schedule.

use leasehold_core::{
    CatchUp, ItemId, ScheduleClaim, ScheduleRecord, ScheduleSpec, StoreError, Timestamp,
};
use rusqlite::{params, Connection, Row};

use crate::db::write;
use crate::error::{bad_column, OpResult};
use crate::ops::enqueue::{self, Checked};
use crate::row::json_text;

/// An existing row keeps its `next_run_at` while its expression is unchanged: the ticks it
/// missed while no node ran stay due, for the catch-up policy to judge.
const UPSERT: &str = "INSERT INTO schedules \
     (name, cron, kind, input, catch_up, catch_up_max, next_run_at, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) \
     ON CONFLICT (name) DO UPDATE SET \
         next_run_at = CASE WHEN schedules.cron = excluded.cron \
                            THEN schedules.next_run_at ELSE excluded.next_run_at END, \
         cron = excluded.cron, kind = excluded.kind, input = excluded.input, \
         catch_up = excluded.catch_up, catch_up_max = excluded.catch_up_max, \
         updated_at = excluded.updated_at";

/// The claim: only the claimer that read `due` moves the row on (one writer at a time holds
/// the database, so the second of two racing claimers finds `next` and changes nothing).
const CLAIM: &str = "UPDATE schedules SET next_run_at = ?3, last_run_at = ?4 \
     WHERE name = ?1 AND next_run_at = ?2";

const COLUMNS: &str =
    "name, cron, kind, input, catch_up, catch_up_max, next_run_at, last_run_at, updated_at";

/// Registers a schedule; the row as stored.
pub(crate) fn upsert(
    c: &mut Connection,
    spec: &ScheduleSpec,
    now: Timestamp,
) -> OpResult<ScheduleRecord> {
    spec.validate().map_err(StoreError::InvalidInput)?;
    let input = json_text(&spec.input)?;
    write(c, |tx| {
        tx.prepare_cached(UPSERT)?.execute(params![
            spec.name,
            spec.cron,
            spec.kind,
            input,
            spec.catch_up.as_str(),
            spec.catch_up.max(),
            spec.first_run_at.0,
            now.0,
        ])?;
        let sql = format!("SELECT {COLUMNS} FROM schedules WHERE name = ?1");
        Ok(tx
            .prepare_cached(&sql)?
            .query_row(params![spec.name], record)?)
    })
}

/// Claims the due tick and enqueues its items in one transaction; `None` when the row has
/// moved on (or is gone), and then nothing is written.
pub(crate) fn claim(
    c: &mut Connection,
    claim: &ScheduleClaim,
    now: Timestamp,
) -> OpResult<Option<Vec<ItemId>>> {
    claim.validate().map_err(StoreError::InvalidInput)?;
    let checked = Checked::new(claim.items.clone(), "scheduled item")?;
    write(c, |tx| {
        let moved = tx.prepare_cached(CLAIM)?.execute(params![
            claim.name,
            claim.due.0,
            claim.next.0,
            claim.last_tick.0
        ])?;
        if moved == 0 {
            return Ok(None);
        }
        enqueue::insert(tx, &checked, now).map(Some)
    })
}

/// Every schedule, by name.
pub(crate) fn list(c: &mut Connection) -> OpResult<Vec<ScheduleRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM schedules ORDER BY name");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map([], record)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn record(r: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    let input: String = r.get(3)?;
    let policy: String = r.get(4)?;
    let max: Option<i64> = r.get(5)?;
    Ok(ScheduleRecord {
        name: r.get(0)?,
        cron: r.get(1)?,
        kind: r.get(2)?,
        input: serde_json::from_str(&input)
            .map_err(|e| bad_column(3, format!("stored JSON: {e}")))?,
        catch_up: CatchUp::from_parts(&policy, max)
            .ok_or_else(|| bad_column(4, format!("catch-up policy {policy:?} ({max:?})")))?,
        next_run_at: Timestamp(r.get(6)?),
        last_run_at: r.get::<_, Option<i64>>(7)?.map(Timestamp),
        updated_at: Timestamp(r.get(8)?),
    })
}
