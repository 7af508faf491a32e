//! The conformance cases. Each takes a fresh, empty store, moves time by hand from
//! [`T0`](crate::support::T0), and panics with what it expected when the store disagrees.
//! The rustdoc of [`Store`](leasehold_core::Store) and the invariants of docs/architecture.md are the contract
//! they check; each case's doc says which behaviour it proves.
//!
//! # Layout
//! - [`lease`]: the lease lifecycle (enqueue → acquire → renew → complete) and owner-wide
//!   renewal.
//! - [`fencing`]: invariant 3: a holder whose lease was taken over, finished or released
//!   cannot write.
//! - [`attempts`]: invariant 4 (bounded retries), backoff, permanent failure, release, cancel.
//! - [`acquire`]: ordering, delays, kind and group filters, batches.
//! - [`recover`]: a restarting owner taking back its items (`recover_mine`).
//! - [`reap`]: the reaper's store side (invariant 5).
//! - [`read`]: lease status, an owner's leases, counts, listing, checkpoints, progress.
//! - [`registry`]: the worker registry and [`RegistryLiveness`](leasehold_core::RegistryLiveness).
//! - [`pipeline`]: follow-ups enqueued in the completion's commit, unique keys.
//! - [`dependencies`]: items that wait for others (fan-in, failure and cancel cascades).
//! - [`schedule`]: schedules: registration and the one-winner claim of a due tick.
//! - [`decision`]: the decision step (park, decide).
//! - [`emergency`]: the operator's registry-judged reap and dead-node release.
//! - [`input`]: invalid arguments are refused before anything is written.
//! - [`operator`]: attempt history, and operators' actions (retry, cancel, delete, pause).

pub mod acquire;
pub mod attempts;
pub mod decision;
pub mod dependencies;
pub mod emergency;
pub mod fencing;
pub mod input;
pub mod lease;
pub mod operator;
pub mod pipeline;
pub mod read;
pub mod reap;
pub mod recover;
pub mod registry;
pub mod schedule;

pub use acquire::*;
pub use attempts::*;
pub use decision::*;
pub use dependencies::*;
pub use emergency::*;
pub use fencing::*;
pub use input::*;
pub use lease::*;
pub use operator::*;
pub use pipeline::*;
pub use read::*;
pub use reap::*;
pub use recover::*;
pub use registry::*;
pub use schedule::*;
