//! What operators read about the queue as a whole: depth by kind and finished items over
//! time (the dashboard's and the metrics' reads).

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

/// The open work of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindDepth {
    /// The kind.
    pub kind: String,
    /// Items waiting (including delayed ones).
    pub pending: u64,
    /// Items leased now.
    pub in_progress: u64,
}

/// Items that reached a terminal status within one time bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedBucket {
    /// The bucket's start (inclusive); it ends one bucket width later.
    pub start: Timestamp,
    /// Completed in the bucket.
    pub completed: u64,
    /// Dead-lettered in the bucket.
    pub failed: u64,
    /// Cancelled in the bucket.
    pub cancelled: u64,
}
