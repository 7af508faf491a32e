//! `items_recover_owner` (`recover_mine`, run by a worker on every (re)start) and
//! `items_recover_node` (everything a dead node incarnation held).

use leasehold_core::{AttemptOutcome, RecoveredItem, Timestamp};
use rusqlite::{params, Connection};

use crate::db::write;
use crate::error::OpResult;
use crate::ops::take_back::{self, Verdict};
use crate::row::{self, candidate_columns};

/// Everything `owner` holds, whatever its lease says (the flag column is unused here).
pub(crate) const HELD_BY_OWNER: &str = concat!(
    "SELECT ",
    candidate_columns!(),
    ", 0 FROM items INDEXED BY items_lease_expiry \
     WHERE status = 'in_progress' AND owner = ?1 ORDER BY id"
);

/// What one incarnation of a node holds, through any of its workers, and has not heartbeated
/// since `?3`: an item whose worker still renews it is not taken, whatever the registry row
/// says (the row can lag the leases' own heartbeats).
pub(crate) const HELD_BY_NODE: &str = concat!(
    "SELECT ",
    candidate_columns!(),
    ", 0 FROM items INDEXED BY items_lease_expiry \
     WHERE status = 'in_progress' AND owner_node = ?1 \
     AND owner_incarnation = ?2 \
     AND (last_heartbeat_at IS NULL OR last_heartbeat_at < ?3) ORDER BY id"
);

/// Whose items to take back.
pub(crate) enum Holder {
    /// One owner id (`recover_mine`).
    Owner(String),
    /// Every owner of one node incarnation, for items not heartbeated since
    /// `heartbeat_before`.
    Node {
        node_id: String,
        incarnation: i64,
        heartbeat_before: Timestamp,
    },
}

/// Requeues (bumping epoch) or dead-letters every in-progress item of `holder`, in one
/// transaction, so a concurrent acquisition by a restarted owner cannot interleave.
pub(crate) fn run(
    c: &mut Connection,
    holder: &Holder,
    keep: u32,
    now: Timestamp,
) -> OpResult<Vec<RecoveredItem>> {
    write(c, |tx| {
        let held = match holder {
            Holder::Owner(owner) => {
                let mut stmt = tx.prepare_cached(HELD_BY_OWNER)?;
                let rows = stmt.query_map(params![owner], row::candidate)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            }
            Holder::Node {
                node_id,
                incarnation,
                heartbeat_before,
            } => {
                let mut stmt = tx.prepare_cached(HELD_BY_NODE)?;
                let rows = stmt.query_map(
                    params![node_id, incarnation, heartbeat_before.0],
                    row::candidate,
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            }
        };
        let (why, outcome) = match holder {
            Holder::Owner(_) => (
                "restarted while holding the item (recover_mine)",
                AttemptOutcome::RecoveredByOwner,
            ),
            Holder::Node { .. } => (
                "belongs to a node incarnation declared dead",
                AttemptOutcome::TakenBackByMonitor,
            ),
        };
        let mut done = Vec::with_capacity(held.len());
        for candidate in held {
            let dead_letter = candidate.attempts >= candidate.max_attempts;
            let verdict = Verdict {
                reason: if dead_letter {
                    format!(
                        "owner {} {why}; dead-lettered after {} of {} attempts",
                        candidate.owner, candidate.attempts, candidate.max_attempts
                    )
                } else {
                    format!("owner {} {why}", candidate.owner)
                },
                candidate,
                dead_letter,
                outcome,
            };
            // In this transaction nothing can have changed since the read.
            if take_back::apply(tx, &verdict, keep, now)? {
                done.push(verdict.report());
            }
        }
        Ok(done)
    })
}
