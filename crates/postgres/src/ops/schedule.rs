//! `schedule_upsert`, `schedule_claim`, `schedules_list`: periodic work, one row per schedule.

use leasehold_core::{
    CatchUp, ItemId, ScheduleClaim, ScheduleRecord, ScheduleSpec, StoreError, StoreResult,
    Timestamp,
};
use tokio_postgres::Row;

use crate::db::{finish, prepared, Db};
use crate::error::{corrupt, from_pg, no_nul};
use crate::ops::enqueue;
use crate::row;

/// An existing row keeps its `next_run_at` while its expression is unchanged: the ticks it
/// missed while no node ran stay due, for the catch-up policy to judge.
const UPSERT: &str = "INSERT INTO schedules AS s \
     (name, cron, kind, input, catch_up, catch_up_max, next_run_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
     ON CONFLICT (name) DO UPDATE SET \
         next_run_at = CASE WHEN s.cron = excluded.cron \
                            THEN s.next_run_at ELSE excluded.next_run_at END, \
         cron = excluded.cron, kind = excluded.kind, input = excluded.input, \
         catch_up = excluded.catch_up, catch_up_max = excluded.catch_up_max, \
         updated_at = excluded.updated_at \
     RETURNING name, cron, kind, input, catch_up, catch_up_max, next_run_at, last_run_at, \
               updated_at";

/// The claim. Of two claimers racing for one tick, the second's update waits on the first's
/// row lock, then re-reads the committed row, finds `next_run_at` moved on and changes nothing.
const CLAIM: &str = "UPDATE schedules SET next_run_at = $3, last_run_at = $4 \
     WHERE name = $1 AND next_run_at = $2";

const LIST: &str = "SELECT name, cron, kind, input, catch_up, catch_up_max, next_run_at, \
     last_run_at, updated_at FROM schedules ORDER BY name";

/// Registers a schedule; the row as stored.
pub(crate) async fn upsert(
    db: &Db,
    spec: &ScheduleSpec,
    now: Timestamp,
) -> StoreResult<ScheduleRecord> {
    spec.validate().map_err(StoreError::InvalidInput)?;
    no_nul("schedule name", &spec.name)?;
    no_nul("cron expression", &spec.cron)?;
    no_nul("kind", &spec.kind)?;
    let rows = db
        .query(
            UPSERT,
            &[
                &spec.name,
                &spec.cron,
                &spec.kind,
                &spec.input,
                &spec.catch_up.as_str(),
                &spec.catch_up.max(),
                &spec.first_run_at.0,
                &now.0,
            ],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| corrupt("schedule upsert returned no row"))?;
    record(row)
}

/// Claims the due tick and enqueues its items in one transaction; `None` when the row has
/// moved on (or is gone), and then nothing is written.
pub(crate) async fn claim(
    db: &Db,
    channel: &str,
    claim: &ScheduleClaim,
    now: Timestamp,
) -> StoreResult<Option<Vec<ItemId>>> {
    claim.validate().map_err(StoreError::InvalidInput)?;
    no_nul("schedule name", &claim.name)?;
    enqueue::check(&claim.items, "scheduled item")?;
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = async {
        let update = prepared(&tx, CLAIM).await?;
        let moved = tx
            .execute(
                &update,
                &[&claim.name, &claim.due.0, &claim.next.0, &claim.last_tick.0],
            )
            .await
            .map_err(from_pg)?;
        if moved == 0 {
            return Ok(None);
        }
        enqueue::insert(&tx, channel, &claim.items, now)
            .await
            .map(Some)
    }
    .await;
    finish(tx, outcome).await
}

/// Every schedule, by name.
pub(crate) async fn list(db: &Db) -> StoreResult<Vec<ScheduleRecord>> {
    db.query(LIST, &[]).await?.iter().map(record).collect()
}

fn record(r: &Row) -> StoreResult<ScheduleRecord> {
    let policy: String = row::col(r, 4)?;
    let max: Option<i64> = row::col(r, 5)?;
    Ok(ScheduleRecord {
        name: row::col(r, 0)?,
        cron: row::col(r, 1)?,
        kind: row::col(r, 2)?,
        input: row::col(r, 3)?,
        catch_up: CatchUp::from_parts(&policy, max)
            .ok_or_else(|| corrupt(format!("catch-up policy {policy:?} ({max:?})")))?,
        next_run_at: Timestamp(row::col(r, 6)?),
        last_run_at: row::col::<Option<i64>>(r, 7)?.map(Timestamp),
        updated_at: Timestamp(row::col(r, 8)?),
    })
}
