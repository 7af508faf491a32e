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
pub(crate) mod decide;
pub(crate) mod delete;
pub(crate) mod dependencies;
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

/// Every statement an item passes through on the hot path (enqueue, single-item acquisition,
/// renewal, completion, failure, release): none may open an ephemeral table (schema tests).
#[cfg(test)]
pub(crate) const HOT_PATH: [&str; 12] = [
    enqueue::INSERT,
    acquire::PAUSED,
    acquire::HEAD,
    acquire::HEAD_OF_KIND,
    acquire::LEASE_ONE,
    renew::RENEW,
    complete::COMPLETE,
    fail::ATTEMPTS,
    fail::RETRY,
    fail::DEAD_LETTER,
    release::RELEASE,
    history::RECORD,
];

/// The hot path's statements alone, without the store's connection thread, group queue and
/// callers: a measurement, not a check of speed (run it on a quiet machine and read what it
/// prints). `cargo test --release -p leasehold-sqlite -- --ignored --nocapture
/// hot_path_statements_alone`. docs/performance.md compares its figures with the floor's.
#[cfg(test)]
mod ceiling {
    use std::time::{Duration, Instant};

    use leasehold_core::{AcquireRequest, LeaseRef, NewItem, Timestamp};
    use rusqlite::{Connection, TransactionBehavior};

    use super::{acquire, complete, enqueue};
    use crate::schema::{configure, migrate};

    const ITEMS: usize = 40_000;

    /// Processes every item as `group` workers would if each group commit carried every
    /// worker's completion and next acquisition: one transaction per round, completions first.
    /// Returns items per second.
    fn rounds(group: usize) -> f64 {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("ceiling.db");
        let mut c = Connection::open(&path).expect("open");
        configure(&mut c, &path, crate::Synchronous::Normal).expect("configure");
        migrate(&mut c).expect("migrate");
        for start in (0..ITEMS).step_by(1000) {
            let batch = (start..start + 1000)
                .map(|i| NewItem::new("noop", serde_json::json!({ "n": i })))
                .collect();
            enqueue::run(&mut c, batch, Timestamp(1_000)).expect("enqueue");
        }
        let requests: Vec<AcquireRequest> = (0..group)
            .map(|w| {
                let mut req =
                    AcquireRequest::new(format!("ceiling/worker-{w}"), Duration::from_secs(30))
                        .node("ceiling", 1);
                req.kinds = vec!["noop".into()];
                req
            })
            .collect();
        let started = Instant::now();
        let mut held: Vec<LeaseRef> = Vec::new();
        let mut now = 2_000;
        loop {
            now += 1;
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .expect("begin");
            for lease in held.drain(..) {
                complete::run(&tx, &lease, "null", Timestamp(now)).expect("complete");
            }
            for req in &requests {
                let got = acquire::run(&tx, req, Timestamp(now)).expect("acquire");
                held.extend(got.into_iter().map(|l| l.lease));
            }
            tx.commit().expect("commit");
            if held.is_empty() {
                break;
            }
        }
        let per_s = ITEMS as f64 / started.elapsed().as_secs_f64();
        let completed: i64 = c
            .query_row(
                "SELECT count(*) FROM items WHERE status = 'completed'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(completed, ITEMS as i64, "every item completed once");
        per_s
    }

    #[test]
    #[ignore = "a measurement: run with --release --ignored --nocapture"]
    fn hot_path_statements_alone() {
        for group in [1, 8, 16, 64] {
            let per_s = rounds(group);
            println!(
                "{ITEMS} items, {group} per commit: {per_s:.0} items/s ({:.2} µs per item)",
                1e6 / per_s
            );
        }
    }
}
