//! `item_fail`: retry later or dead-letter.

use std::collections::HashMap;

use leasehold_core::{FailDisposition, FailOutcome, LeaseRef, Timestamp};
use tokio_postgres::{Client, Statement};

/// Fenced per row. Each row's budget is judged on the row this statement changes: every `SET`
/// expression reads the row as locked, so `attempts < max_attempts` cannot be stale. A retry
/// goes back to pending without an owner (the failed attempt stays counted); a dead-letter
/// keeps the owner columns as a record of the last holder.
pub(crate) const FAIL_MANY: &str = "\
     UPDATE items SET \
         status = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                       THEN 'pending' ELSE 'failed' END, \
         run_at = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                       THEN b.retry_at ELSE items.run_at END, \
         finished_at = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                       THEN items.finished_at ELSE b.now END, \
         owner = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                       THEN NULL ELSE items.owner END, \
         owner_node = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                       THEN NULL ELSE items.owner_node END, \
         owner_incarnation = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                       THEN NULL ELSE items.owner_incarnation END, \
         last_heartbeat_at = CASE WHEN b.retry AND items.attempts < items.max_attempts \
                       THEN NULL ELSE items.last_heartbeat_at END, \
         error = b.error, updated_at = b.now, lease_expires_at = NULL \
     FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bool[], $6::bigint[], \
                 $7::bigint[]) AS b(id, owner, epoch, error, retry, retry_at, now) \
     WHERE items.id = b.id AND (items.status = 'in_progress') IS TRUE \
       AND items.owner = b.owner \
       AND items.epoch = b.epoch \
     RETURNING items.id, items.status, items.run_at";

/// One batch's failed attempts, as the columns [`FAIL_MANY`] takes.
#[derive(Default)]
pub(crate) struct Failures {
    ids: Vec<i64>,
    owners: Vec<String>,
    epochs: Vec<i64>,
    errors: Vec<String>,
    retry: Vec<bool>,
    retry_at: Vec<i64>,
    nows: Vec<i64>,
}

impl Failures {
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
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get(0)?;
                let status: &str = r.try_get(1)?;
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
