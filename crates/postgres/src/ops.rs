//! The store's operations, one module each, each holding its own SQL. The [`Store`] impl in
//! `lib.rs` only moves arguments into them.
//!
//! Every write by a lease holder is one statement conditional on
//! `(id, status = 'in_progress', owner, epoch)`; "no row changed" is `LeaseLost`. Under
//! PostgreSQL's READ COMMITTED an `UPDATE` that waits for a concurrent writer re-checks its
//! `WHERE` on the row as committed, so a fence decided on a stale snapshot cannot apply.
//! Writes that change several rows lock them in id order, so two of them never deadlock.
//!
//! [`Store`]: leasehold_core::Store

pub(crate) mod acquire;
pub(crate) mod activity;
pub(crate) mod cancel;
pub(crate) mod checkpoint;
pub(crate) mod cleanup;
pub(crate) mod complete;
pub(crate) mod decide;
pub(crate) mod delete;
pub(crate) mod dependencies;
pub(crate) mod emergency;
pub(crate) mod enqueue;
pub(crate) mod fail;
pub(crate) mod follow_up;
pub(crate) mod history;
pub(crate) mod park;
pub(crate) mod pause;
pub(crate) mod progress;
pub(crate) mod read;
pub(crate) mod reap;
pub(crate) mod recover;
pub(crate) mod registry;
pub(crate) mod release;
pub(crate) mod renew;
pub(crate) mod retry;
pub(crate) mod schedule;
pub(crate) mod select;
pub(crate) mod take_back;
