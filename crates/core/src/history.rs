//! Attempt history: one record per ended attempt of an item, kept by the store beside the item
//! (the last [`DEFAULT_HISTORY_KEEP`] per item unless the store is configured otherwise).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::item::ItemId;

/// How many ended attempts a store keeps per item unless configured otherwise: older ones are
/// trimmed when a newer one is recorded.
pub const DEFAULT_HISTORY_KEEP: u32 = 25;

/// Keeps the `keep` newest of `attempts` (oldest first). A store's stored records are trimmed
/// to `keep` when written; the completed attempt, which the item's own row holds, may make one
/// more when they are read.
///
/// ```
/// # use leasehold_core::history::keep_newest;
/// let mut epochs = vec![1, 2, 3, 4];
/// keep_newest(&mut epochs, 3);
/// assert_eq!(epochs, [2, 3, 4]);
/// ```
pub fn keep_newest<T>(attempts: &mut Vec<T>, keep: u32) {
    let excess = attempts.len().saturating_sub(keep as usize);
    attempts.drain(..excess);
}

/// How an attempt ended.
///
/// The last three are the ways a holder *loses* its lease: the record is written by whoever
/// took the item back, in the same transaction, never by the holder (whose late write changes
/// nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The handler's output was committed.
    Completed,
    /// The handler failed (retried or dead-lettered, as the item's status says); the error is
    /// kept on the record.
    Failed,
    /// The attempt ran past its execution timeout and was failed by its worker (recorded for a
    /// failure whose error starts with [`TIMED_OUT_PREFIX`]).
    TimedOut,
    /// Given back by a graceful stop (`item_release`).
    Released,
    /// Ended as cancelled: by its holder after an operator's cancel reached it, or by whoever
    /// took a cancel-marked item back.
    Cancelled,
    /// Its owner restarted and took it back (`recover_mine`, `items_recover_owner`).
    RecoveredByOwner,
    /// The reaper took it back: the lease expired and the owner was judged dead, or the item
    /// was past the hard stale limit.
    Reaped,
    /// The monitor took it back: the holder's node incarnation was declared dead
    /// (`items_recover_node`).
    TakenBackByMonitor,
}

/// The error text with which a worker fails a timed-out attempt begins; a failure recorded with
/// such an error is [`AttemptOutcome::TimedOut`].
pub const TIMED_OUT_PREFIX: &str = "timed out after ";

impl AttemptOutcome {
    /// Every outcome.
    pub const ALL: [AttemptOutcome; 8] = [
        AttemptOutcome::Completed,
        AttemptOutcome::Failed,
        AttemptOutcome::TimedOut,
        AttemptOutcome::Released,
        AttemptOutcome::Cancelled,
        AttemptOutcome::RecoveredByOwner,
        AttemptOutcome::Reaped,
        AttemptOutcome::TakenBackByMonitor,
    ];

    /// The name as stored and printed (`recovered_by_owner`).
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Released => "released",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::RecoveredByOwner => "recovered_by_owner",
            AttemptOutcome::Reaped => "reaped",
            AttemptOutcome::TakenBackByMonitor => "taken_back_by_monitor",
        }
    }

    /// The outcome of a failure recorded with `error`: [`TimedOut`](Self::TimedOut) when the
    /// error starts with [`TIMED_OUT_PREFIX`] (a worker's timeout), else
    /// [`Failed`](Self::Failed).
    pub fn of_failure(error: &str) -> AttemptOutcome {
        if error.starts_with(TIMED_OUT_PREFIX) {
            AttemptOutcome::TimedOut
        } else {
            AttemptOutcome::Failed
        }
    }

    /// Whether the holder lost its lease: the item was taken back from it.
    pub fn is_lease_lost(self) -> bool {
        matches!(
            self,
            AttemptOutcome::RecoveredByOwner
                | AttemptOutcome::Reaped
                | AttemptOutcome::TakenBackByMonitor
        )
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttemptOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttemptOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown attempt outcome {s:?}"))
    }
}

/// One ended attempt of an item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The item.
    pub item: ItemId,
    /// The item's attempt count when this attempt ended (1 for the first; an attempt given
    /// back by a release and the one after it share a number, and an operator's retry starts
    /// the count again).
    pub attempt: u32,
    /// The epoch of the acquisition: unique per attempt of an item, and increasing.
    pub epoch: i64,
    /// When it was acquired (`None` for an attempt acquired before the store kept history).
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub ended_at: Timestamp,
    /// The holder.
    pub owner: String,
    /// The holder's node.
    pub owner_node: Option<String>,
    /// That node's incarnation at acquisition.
    pub owner_incarnation: Option<i64>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The error of a failed, timed-out or taken-back attempt.
    pub error: Option<String>,
}
