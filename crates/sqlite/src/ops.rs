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

/// Every statement an item passes through on the hot path (enqueue, single-item acquisition,
/// renewal, completion, failure, release): none may open an ephemeral table (schema tests).
#[cfg(test)]
pub(crate) const HOT_PATH: [&str; 10] = [
    enqueue::INSERT,
    acquire::HEAD,
    acquire::HEAD_OF_KIND,
    acquire::LEASE_ONE,
    renew::RENEW,
    complete::COMPLETE,
    fail::ATTEMPTS,
    fail::RETRY,
    fail::DEAD_LETTER,
    release::RELEASE,
];
