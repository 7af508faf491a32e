//! `lease_renew` and `leases_renew_owner`: the heartbeat's writes.

use std::collections::HashMap;
use std::time::Duration;

use leasehold_core::{LeaseRef, StoreResult, Timestamp};
use tokio_postgres::{Client, Statement};

use crate::db::Db;

/// Fenced per row: an expired lease that nobody has taken back yet is still its holder's to
/// renew; a row whose lease was taken over is not in the result. A row whose item an operator
/// marked for cancellation is in the result, flagged, and left as it was (every column keeps
/// its value), so the caller answers `CancelRequested` without a second read.
pub(crate) const RENEW_MANY: &str = "UPDATE items SET \
         lease_expires_at = CASE WHEN items.cancel_requested_at IS NULL THEN b.expires \
                                 ELSE items.lease_expires_at END, \
         last_heartbeat_at = CASE WHEN items.cancel_requested_at IS NULL THEN b.now \
                                  ELSE items.last_heartbeat_at END, \
         updated_at = CASE WHEN items.cancel_requested_at IS NULL THEN b.now \
                           ELSE items.updated_at END \
     FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) \
         AS b(id, owner, epoch, expires, now) \
     WHERE items.id = b.id AND (items.status = 'in_progress') IS TRUE \
       AND items.owner = b.owner \
       AND items.epoch = b.epoch \
     RETURNING items.id, items.cancel_requested_at IS NOT NULL";

/// Locks the owner's rows in id order first (the order every multi-row write uses), so a
/// renewal and a concurrent recovery of the same rows cannot deadlock.
const RENEW_OWNER: &str =
    "UPDATE items SET lease_expires_at = $2, last_heartbeat_at = $3, updated_at = $3 \
     WHERE id IN (SELECT id FROM items WHERE status = 'in_progress' AND owner = $1 \
                  ORDER BY id FOR UPDATE) \
       AND status = 'in_progress' AND owner = $1 AND cancel_requested_at IS NULL";

/// One batch's renewals, as the columns [`RENEW_MANY`] takes.
#[derive(Default)]
pub(crate) struct Renewals {
    ids: Vec<i64>,
    owners: Vec<String>,
    epochs: Vec<i64>,
    expires: Vec<i64>,
    nows: Vec<i64>,
}

impl Renewals {
    /// Adds a renewal to `now + duration`.
    pub(crate) fn push(&mut self, lease: &LeaseRef, duration: Duration, now: Timestamp) {
        let expires_at = now.plus(duration);
        self.ids.push(lease.item.0);
        self.owners.push(lease.owner.clone());
        self.epochs.push(lease.epoch);
        self.expires.push(expires_at.0);
        self.nows.push(now.0);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Runs the statement; returns the ids whose lease is current, each with whether its item
    /// is marked for cancellation (then not renewed). The others' leases were lost.
    pub(crate) async fn run(
        &self,
        c: &Client,
        stmt: &Statement,
    ) -> Result<HashMap<i64, bool>, tokio_postgres::Error> {
        let rows = c
            .query(
                stmt,
                &[
                    &self.ids,
                    &self.owners,
                    &self.epochs,
                    &self.expires,
                    &self.nows,
                ],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, bool>(1)?)))
            .collect()
    }
}

/// Extends every lease `owner` holds, in one statement.
pub(crate) async fn owner(
    db: &Db,
    owner: &str,
    duration: Duration,
    now: Timestamp,
) -> StoreResult<u64> {
    let expires_at = now.plus(duration);
    db.execute(RENEW_OWNER, &[&owner, &expires_at.0, &now.0])
        .await
}
