//! `item_fail`: retry later or dead-letter.

use std::collections::HashMap;

use leasehold_core::{AttemptOutcome, FailDisposition, FailOutcome, LeaseRef, Timestamp};
use tokio_postgres::{Client, Statement};

use crate::ops::history::{attempt_insert, trim_done};

/// Fenced per row. Each row's budget is judged on the row this statement changes: every `SET`
/// expression reads the row as locked, so `attempts < max_attempts` cannot be stale. A retry
/// goes back to pending without an owner (the failed attempt stays counted); a dead-letter
/// keeps the owner columns as a record of the last holder; an item an operator marked for
/// cancellation is cancelled instead of either (`cancel_requested_at`).
///
/// The same statement records each failed attempt in `item_attempts` (outcome `$8`, computed
/// by the caller) and trims the history past `$9`. A retry clears the owner columns the record
/// needs, so they are read by `old` from the statement's snapshot: wherever the fence holds,
/// those columns are as the snapshot has them (only an acquisition changes them, and it moves
/// the epoch on).
pub(crate) const FAIL_MANY: &str = concat!(
    "WITH b AS ( \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bool[], \
                              $6::bigint[], $7::bigint[], $8::text[]) \
             AS b(id, owner, epoch, error, retry, retry_at, now, outcome)), \
     old AS ( \
         SELECT items.id AS old_id, items.attempts AS old_attempts, \
             items.started_at AS old_started_at, items.owner_node AS old_node, \
             items.owner_incarnation AS old_incarnation \
         FROM items JOIN b ON items.id = b.id AND (items.status = 'in_progress') IS TRUE \
             AND items.owner = b.owner AND items.epoch = b.epoch), \
     done AS ( \
     UPDATE items SET \
         status = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                            AND items.cancel_requested_at IS NULL THEN 'pending' \
                       WHEN items.cancel_requested_at IS NOT NULL THEN 'cancelled' \
                       ELSE 'failed' END, \
         run_at = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                            AND items.cancel_requested_at IS NULL \
                       THEN b.retry_at ELSE items.run_at END, \
         finished_at = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                            AND items.cancel_requested_at IS NULL \
                       THEN items.finished_at ELSE b.now END, \
         owner = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                            AND items.cancel_requested_at IS NULL \
                       THEN NULL ELSE items.owner END, \
         owner_node = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                            AND items.cancel_requested_at IS NULL \
                       THEN NULL ELSE items.owner_node END, \
         owner_incarnation = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                            AND items.cancel_requested_at IS NULL \
                       THEN NULL ELSE items.owner_incarnation END, \
         last_heartbeat_at = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                            AND items.cancel_requested_at IS NULL \
                       THEN NULL ELSE items.last_heartbeat_at END, \
         error = b.error, updated_at = b.now, lease_expires_at = NULL \
     FROM b \
     WHERE items.id = b.id AND (items.status = 'in_progress') IS TRUE \
       AND items.owner = b.owner \
       AND items.epoch = b.epoch \
     RETURNING items.id, items.status, items.run_at, b.epoch, b.owner AS b_owner, \
         b.error AS b_error, b.now AS b_now, b.outcome AS b_outcome), \
     rec AS (",
    attempt_insert!(),
    "SELECT done.id, done.epoch, old_attempts, old_started_at, b_now, b_owner, old_node, \
             old_incarnation, b_outcome, b_error \
         FROM done JOIN old ON old_id = done.id), ",
    trim_done!("$9"),
    "SELECT id, status, run_at FROM done"
);

/// One batch's failed attempts, as the columns [`FAIL_MANY`] takes.
#[derive(Default)]
pub(crate) struct Failures {
    /// Ended attempts kept per item.
    keep: i64,
    ids: Vec<i64>,
    owners: Vec<String>,
    epochs: Vec<i64>,
    errors: Vec<String>,
    retry: Vec<bool>,
    retry_at: Vec<i64>,
    nows: Vec<i64>,
    outcomes: Vec<&'static str>,
}

impl Failures {
    /// No failures yet; the history keeps `keep` attempts per item.
    pub(crate) fn new(keep: u32) -> Failures {
        Failures {
            keep: i64::from(keep),
            ..Failures::default()
        }
    }

    /// Adds a failed attempt. A NUL in the error text (which PostgreSQL cannot store) becomes
    /// U+FFFD rather than losing the failure.
    pub(crate) fn push(
        &mut self,
        lease: &LeaseRef,
        error: &str,
        disposition: FailDisposition,
        now: Timestamp,
    ) {
        let (retry, retry_at) = match disposition {
            FailDisposition::Retry { delay } => (true, now.plus(delay)),
            _ => (false, now),
        };
        self.ids.push(lease.item.0);
        self.owners.push(lease.owner.clone());
        self.epochs.push(lease.epoch);
        self.errors.push(error.replace('\0', "\u{FFFD}"));
        self.retry.push(retry);
        self.retry_at.push(retry_at.0);
        self.nows.push(now.0);
        self.outcomes
            .push(AttemptOutcome::of_failure(error).as_str());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Runs the statement; returns each failed item it changed with its outcome (the others'
    /// leases were lost).
    pub(crate) async fn run(
        &self,
        c: &Client,
        stmt: &Statement,
    ) -> Result<HashMap<i64, FailOutcome>, tokio_postgres::Error> {
        let rows = c
            .query(
                stmt,
                &[
                    &self.ids,
                    &self.owners,
                    &self.epochs,
                    &self.errors,
                    &self.retry,
                    &self.retry_at,
                    &self.nows,
                    &self.outcomes,
                    &self.keep,
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get(0)?;
                let status: &str = r.try_get(1)?;
                // `cancelled` (a marked item) is reported as dead-lettered: it will not run again.
                let outcome = if status == "pending" {
                    FailOutcome::Retrying {
                        run_at: Timestamp(r.try_get(2)?),
                    }
                } else {
                    FailOutcome::DeadLettered
                };
                Ok((id, outcome))
            })
            .collect()
    }
}
