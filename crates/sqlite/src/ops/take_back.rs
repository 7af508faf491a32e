//! Taking an in-progress item back from its holder: the write shared by the reaper
//! ([`super::reap`]) and `recover_mine` ([`super::recover`]).

use leasehold_core::{AttemptOutcome, ReapCandidate, RecoveredItem, Timestamp};
use rusqlite::{params, Transaction};

use crate::error::OpResult;
use crate::ops::history;

/// Requeue: no owner, and a new epoch so that the old holder's writes are refused even if the
/// item is acquired again by the same owner id. The lost attempt stays counted. `run_at` keeps
/// its value (already past: the item was acquired), so a recovered item keeps its place at the
/// head of the queue instead of waiting behind everything enqueued since.
///
/// Both statements apply only if the row is exactly as the scan saw it — same holder, epoch,
/// lease expiry and heartbeat — so a renewal between the scan and this write wins.
///
/// An item an operator marked for cancellation is cancelled instead of requeued (and instead of
/// dead-lettered, below): its holder is gone, so whoever takes it back finishes the cancel.
const REQUEUE: &str = "UPDATE items SET \
         status = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END, \
         finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE ?6 END, \
         epoch = epoch + 1, \
         updated_at = ?6, owner = NULL, owner_node = NULL, owner_incarnation = NULL, \
         lease_expires_at = NULL, last_heartbeat_at = NULL \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3 \
       AND lease_expires_at IS ?4 AND last_heartbeat_at IS ?5";

/// Dead-letter: the reason goes first, the holder's own last error (if any) after it. The
/// owner columns stay as a record of the last holder.
const DEAD_LETTER: &str = "UPDATE items SET \
         status = CASE WHEN cancel_requested_at IS NULL THEN 'failed' ELSE 'cancelled' END, \
         error = ?7 || coalesce('; last error: ' || error, ''), \
         finished_at = ?6, updated_at = ?6, lease_expires_at = NULL \
     WHERE id = ?1 AND status = 'in_progress' AND owner = ?2 AND epoch = ?3 \
       AND lease_expires_at IS ?4 AND last_heartbeat_at IS ?5";

/// What to do with one candidate.
#[derive(Debug)]
pub(crate) struct Verdict {
    /// The item as the scan saw it.
    pub(crate) candidate: ReapCandidate,
    /// Dead-letter (`true`) or requeue.
    pub(crate) dead_letter: bool,
    /// The error text stored when dead-lettered (and on the attempt's record).
    pub(crate) reason: String,
    /// Who takes the item back, as the attempt's record says.
    pub(crate) outcome: AttemptOutcome,
}

impl Verdict {
    /// The report of this verdict.
    pub(crate) fn report(&self) -> RecoveredItem {
        let c = &self.candidate;
        RecoveredItem {
            id: c.item,
            kind: c.kind.clone(),
            previous_owner: c.owner.clone(),
            previous_epoch: c.epoch,
            attempts: c.attempts,
            max_attempts: c.max_attempts,
            dead_lettered: self.dead_letter,
        }
    }
}

/// Applies `verdict`; `false` when the item changed since the scan (nothing written). An
/// applied verdict also writes the item's `error_boundary` checkpoint in the same transaction,
/// so the record of an interrupted run exists exactly when the interruption was acted on, and
/// the attempt's history record (the "lease lost" record: the holder itself writes none).
pub(crate) fn apply(
    tx: &Transaction<'_>,
    verdict: &Verdict,
    keep: u32,
    now: Timestamp,
) -> OpResult<bool> {
    let c = &verdict.candidate;
    let expiry = c.lease_expires_at.map(|t| t.0);
    let heartbeat = c.last_heartbeat_at.map(|t| t.0);
    let changed = if verdict.dead_letter {
        tx.prepare_cached(DEAD_LETTER)?.execute(params![
            c.item.0,
            c.owner,
            c.epoch,
            expiry,
            heartbeat,
            now.0,
            verdict.reason
        ])?
    } else {
        tx.prepare_cached(REQUEUE)?.execute(params![
            c.item.0, c.owner, c.epoch, expiry, heartbeat, now.0
        ])?
    };
    if changed == 1 {
        crate::durable::boundary::record(tx, c, verdict.dead_letter, &verdict.reason, now)?;
        history::record_taken(tx, c, verdict.outcome, &verdict.reason, keep, now)?;
    }
    Ok(changed == 1)
}
