//! `items_recover_owner` (`recover_mine`, run by a worker on every (re)start) and
//! `items_recover_node` (everything a dead node incarnation held).

use leasehold_core::{AttemptOutcome, RecoveredItem, StoreResult, Timestamp};

use crate::db::{prepared, Db};
use crate::error::from_pg;
use crate::ops::take_back::{self, Verdict};
use crate::row::{self, candidate_columns};

/// Everything `owner` holds, whatever its lease says, locked in id order.
const HELD_BY_OWNER: &str = concat!(
    "SELECT ",
    candidate_columns!(),
    ", false FROM items WHERE status = 'in_progress' AND owner = $1 ORDER BY id FOR UPDATE"
);

/// What one incarnation of a node holds, through any of its workers, and has not heartbeated
/// since `$3`: an item whose worker still renews it is not taken, whatever the registry row
/// says (the row can lag the leases' own heartbeats).
const HELD_BY_NODE: &str = concat!(
    "SELECT ",
    candidate_columns!(),
    ", false FROM items WHERE status = 'in_progress' AND owner_node = $1 \
     AND owner_incarnation = $2 \
     AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $3) ORDER BY id FOR UPDATE"
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
/// transaction holding the rows' locks, so nothing can change them in between.
pub(crate) async fn run(
    db: &Db,
    channel: &str,
    holder: &Holder,
    keep: u32,
    now: Timestamp,
) -> StoreResult<Vec<RecoveredItem>> {
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let rows = match holder {
        Holder::Owner(owner) => {
            let stmt = prepared(&tx, HELD_BY_OWNER).await?;
            tx.query(&stmt, &[owner]).await
        }
        Holder::Node {
            node_id,
            incarnation,
            heartbeat_before,
        } => {
            let stmt = prepared(&tx, HELD_BY_NODE).await?;
            tx.query(&stmt, &[node_id, incarnation, &heartbeat_before.0])
                .await
        }
    }
    .map_err(from_pg)?;
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
    let mut done = Vec::with_capacity(rows.len());
    for r in &rows {
        let candidate = row::candidate(r)?;
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
        if take_back::apply(&tx, &verdict, keep, now).await? {
            done.push(verdict.report());
        }
    }
    let requeued = done.iter().filter(|r| !r.dead_lettered).count();
    take_back::notify(&tx, channel, requeued).await?;
    tx.commit().await.map_err(from_pg)?;
    Ok(done)
}
