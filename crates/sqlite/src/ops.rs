//! The store's operations, one module each, each holding its own SQL. Every function here is
//! synchronous and runs on the connection thread (see [`crate::db`]); the [`Store`] impl in
//! `lib.rs` only moves arguments into it.
//!
//! Every write by a lease holder is conditional on `(id, status = 'in_progress', owner, epoch)`
//! and turns "no row changed" into `LeaseLost` inside the same transaction, so a refused write
//! changes nothing.
//!
//! [`Store`]: leasehold_core::Store

pub(crate) mod acquire;
pub(crate) mod activity;
pub(crate) mod cancel;
pub(crate) mod checkpoint;
pub(crate) mod cleanup;
pub(crate) mod complete;
pub(crate) mod enqueue;
pub(crate) mod fail;
pub(crate) mod progress;
pub(crate) mod read;
pub(crate) mod reap;
pub(crate) mod recover;
pub(crate) mod registry;
pub(crate) mod release;
pub(crate) mod renew;
pub(crate) mod take_back;
