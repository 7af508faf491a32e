//! The durable crate's error type.

use leasehold_core::StoreError;
use leasehold_runtime::JobError;

/// A boxed error from user code (a step, a tool, a generator).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything durable execution can refuse or fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// The store refused or failed (`LeaseLost` for a stale holder: see [`Self::is_lease_lost`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An argument was refused before anything was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// User code (a step, tool or generator) failed; `permanent` when retrying cannot help.
    #[error("{context}: {source}")]
    Failed {
        /// What failed (`tool web_fetch`, `step research`, …).
        context: String,
        /// Whether retrying cannot help.
        permanent: bool,
        /// The user's error.
        #[source]
        source: BoxError,
    },
    /// The task was cancelled (its lease was lost or its node is stopping).
    #[error("cancelled: the lease was lost or the node is stopping")]
    Cancelled,
}

impl DurableError {
    /// A failure worth retrying (a timeout, a rate limit).
    pub fn transient(e: impl Into<BoxError>) -> Self {
        DurableError::Failed {
            context: "transient failure".into(),
            permanent: false,
            source: e.into(),
        }
    }

    /// A failure retrying cannot fix (bad input, a refused request).
    pub fn permanent(e: impl Into<BoxError>) -> Self {
        DurableError::Failed {
            context: "permanent failure".into(),
            permanent: true,
            source: e.into(),
        }
    }

    /// Whether the caller's lease is gone: stop work on the item.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, DurableError::Store(e) if e.is_lease_lost())
    }

    /// Whether retrying the same call can help: transient user failures and failing backends.
    pub fn is_transient(&self) -> bool {
        match self {
            DurableError::Failed { permanent, .. } => !permanent,
            DurableError::Store(e) => e.is_backend_failure(),
            DurableError::InvalidInput(_) | DurableError::Cancelled => false,
        }
    }

    /// Whether the item should be dead-lettered: a permanent failure or refused input. A lost
    /// lease or a cancellation is not permanent (the item belongs to someone else now, or will
    /// run again after the stop).
    pub fn is_permanent(&self) -> bool {
        match self {
            DurableError::Failed { permanent, .. } => *permanent,
            DurableError::InvalidInput(_) => true,
            DurableError::Store(e) => matches!(
                e,
                StoreError::InvalidInput(_) | StoreError::Corrupt(_) | StoreError::NotFound(_)
            ),
            DurableError::Cancelled => false,
        }
    }

    /// The same error with `context` naming what failed.
    pub fn context(self, what: impl Into<String>) -> Self {
        match self {
            DurableError::Failed {
                permanent, source, ..
            } => DurableError::Failed {
                context: what.into(),
                permanent,
                source,
            },
            other => other,
        }
    }

    /// The handler error the queue acts on: permanent ones dead-letter the item, the others
    /// return it to pending after the queue's backoff (the item kind's, else the node's).
    /// [`into_job_error_with`](DurableError::into_job_error_with) asks for a retry policy's
    /// delay instead.
    pub fn into_job_error(self) -> JobError {
        if self.is_permanent() {
            JobError::permanent(self)
        } else {
            JobError::retryable(self)
        }
    }
}
