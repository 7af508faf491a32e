//! `items_recover_owner`: `recover_mine`, run by a worker on every (re)start.

use leasehold_core::{RecoveredItem, Timestamp};
use rusqlite::{params, Connection};

use crate::db::write;
use crate::error::OpResult;
use crate::ops::take_back::{self, Verdict};
use crate::row::{self, candidate_columns};

/// Everything `owner` holds, whatever its lease says (the flag column is unused here).
const HELD: &str = concat!(
    "SELECT ",
    candidate_columns!(),
    ", 0 FROM items WHERE status = 'in_progress' AND owner = ?1 ORDER BY id"
);

/// Requeues (bumping epoch) or dead-letters every in-progress item held by `owner`, in one
/// transaction, so a concurrent acquisition by the restarted owner cannot interleave.
pub(crate) fn run(c: &mut Connection, owner: &str, now: Timestamp) -> OpResult<Vec<RecoveredItem>> {
    write(c, |tx| {
        let held = {
            let mut stmt = tx.prepare_cached(HELD)?;
            let rows = stmt.query_map(params![owner], row::candidate)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut done = Vec::with_capacity(held.len());
        for candidate in held {
            let dead_letter = candidate.attempts >= candidate.max_attempts;
            let verdict = Verdict {
                reason: format!(
                    "owner {} restarted while holding the item (recover_mine); dead-lettered after {} of {} attempts",
                    candidate.owner, candidate.attempts, candidate.max_attempts
                ),
                candidate,
                dead_letter,
            };
            // In this transaction nothing can have changed since the read.
            if take_back::apply(tx, &verdict, now)? {
                done.push(verdict.report());
            }
        }
        Ok(done)
    })
}
