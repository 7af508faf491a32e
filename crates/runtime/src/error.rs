//! The runtime's error type.

use leasehold_core::{ConfigError, StoreError};

/// What starting, driving or stopping a node can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A setting was refused; nothing was started.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The builder was given something unusable (no handlers, zero workers, …).
    #[error("invalid node setup: {0}")]
    Setup(String),
    /// The store refused or failed an operation.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An actor could not be spawned.
    #[error("could not spawn the {what}: {reason}")]
    Spawn {
        /// Which actor.
        what: String,
        /// Why.
        reason: String,
    },
    /// The tree is not running (it was shut down, or it escalated).
    #[error("the node's tree is not running: {0}")]
    NotRunning(String),
    /// The tree stopped itself because its restart intensity was exceeded.
    #[error("the node's tree escalated and stopped: {0}")]
    Escalated(String),
}
