//! The store's error type.

use crate::item::{ItemId, ItemStatus};

/// A result whose error is a [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;

/// Everything a [`Store`](crate::Store) operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The caller's lease is gone: the item was requeued, taken over (its epoch moved on),
    /// finished, or released. The write changed nothing. A holder that sees this must drop its
    /// work on the item.
    #[error("lease lost on item {item}: owner {owner:?} at epoch {epoch} no longer holds it")]
    LeaseLost {
        /// The item.
        item: ItemId,
        /// The owner that tried to write.
        owner: String,
        /// The epoch it wrote with.
        epoch: i64,
    },
    /// A cache write by a current lease that does not hold the key's claim: another lease
    /// holds it, its output is already stored, or the key was never claimed by this lease.
    /// The write changed nothing. (A stale lease gets [`StoreError::LeaseLost`] instead.)
    #[error(
        "cache key {key}: item {item}, owner {owner:?} at epoch {epoch} does not hold its claim"
    )]
    ClaimNotHeld {
        /// The cache key.
        key: String,
        /// The item of the lease that tried to write.
        item: ItemId,
        /// Its owner.
        owner: String,
        /// Its epoch.
        epoch: i64,
    },
    /// The holder's item was marked for cancellation by an operator: the renewal was refused
    /// and changed nothing. The holder cancels its handler and ends the attempt with
    /// [`Store::item_cancel_confirm`](crate::Store::item_cancel_confirm).
    #[error(
        "item {item} was cancelled by an operator: owner {owner:?} at epoch {epoch} must stop"
    )]
    CancelRequested {
        /// The item.
        item: ItemId,
        /// The holder.
        owner: String,
        /// Its epoch.
        epoch: i64,
    },
    /// A node's registry write for an incarnation that a newer one of the same node id has
    /// replaced: the row went stale (the process stalled, or lost the database, for longer than
    /// the dead-after window) and another process registered the id. The write changed
    /// nothing. The older incarnation's leases are fenced (the newer one's recovery takes them
    /// back), so it must stop: whatever it still runs ends in [`StoreError::LeaseLost`].
    #[error(
        "node {node_id:?}: incarnation {incarnation} was superseded by incarnation {current}; \
         another process now runs under this node id"
    )]
    Superseded {
        /// The node id.
        node_id: String,
        /// The incarnation that tried to write.
        incarnation: i64,
        /// The incarnation that holds the row.
        current: i64,
    },
    /// No item has this id.
    #[error("item {0} not found")]
    NotFound(ItemId),
    /// The item is not in a status this operation applies to (e.g. cancelling a running item).
    #[error("item {item} is {status}; {operation} needs it {expected}")]
    InvalidState {
        /// The item.
        item: ItemId,
        /// Its current status.
        status: ItemStatus,
        /// The refused operation.
        operation: &'static str,
        /// The status(es) the operation needs, in words.
        expected: &'static str,
    },
    /// An argument was refused before anything was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The database's schema was written by a newer leasehold; it was left untouched.
    #[error("database schema version {found} is newer than this leasehold supports ({supported}); upgrade leasehold")]
    SchemaTooNew {
        /// The version found in the database.
        found: i64,
        /// The newest version this binary knows.
        supported: i64,
    },
    /// The file or URL does not hold a leasehold database (or any database this backend reads).
    #[error("not a leasehold database: {0}")]
    NotADatabase(String),
    /// The backend's connection is gone (its thread died or the server went away); reopen.
    #[error("store connection closed")]
    Closed,
    /// A stored value could not be decoded (corrupt row, unknown status).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Any other backend failure (I/O, busy database, SQL error).
    #[error("backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl StoreError {
    /// Whether this is [`StoreError::LeaseLost`]: the caller no longer holds the item.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, StoreError::LeaseLost { .. })
    }

    /// Whether this is [`StoreError::CancelRequested`]: the holder must cancel its attempt.
    pub fn is_cancel_requested(&self) -> bool {
        matches!(self, StoreError::CancelRequested { .. })
    }

    /// Whether this is [`StoreError::ClaimNotHeld`]: another lease holds the cache key.
    pub fn is_claim_not_held(&self) -> bool {
        matches!(self, StoreError::ClaimNotHeld { .. })
    }

    /// Whether this is [`StoreError::Superseded`]: a newer incarnation of the node id holds
    /// its registry row, and this one must stop.
    pub fn is_superseded(&self) -> bool {
        matches!(self, StoreError::Superseded { .. })
    }

    /// Whether the store itself is failing (as opposed to refusing a request): the reaper stands
    /// down on these rather than judge owners dead.
    pub fn is_backend_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Backend(_) | StoreError::Closed | StoreError::Corrupt(_)
        )
    }

    /// Wraps any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

pub use crate::config::ConfigError;
