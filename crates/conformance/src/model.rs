//! A model of the lease protocol, random operation sequences, and the runner that drives a real
//! store beside the model, checking after every step that they agree and that invariants 1–4
//! hold.
//!
//! The model keeps, per item, only what the protocol decides: status, attempts, budget,
//! priority, `run_at`, epoch, holder, lease expiry and heartbeat, and how many checkpoints were
//! saved. [`run`] applies each [`Op`] to both; a write with a current lease must do what the
//! model says, a write with a stale lease (an epoch taken over, or another owner presenting the
//! current epoch) must return `LeaseLost` and leave the item and its checkpoints byte for byte
//! as they were. After each step [`run`] compares every item and checks:
//!
//! 1. *Nothing lost*: the store holds exactly the model's ids, and the counts by status add up
//!    to them, each item in one status.
//! 2. *One live lease*: an acquisition only takes items the model has pending and ready, never
//!    one twice, with an epoch above every epoch the item had; each in-progress item has one
//!    holder, and each owner's leases are exactly the model's.
//! 3. *Fenced writes*: as above.
//! 4. *Bounded retries*: `attempts <= max_attempts` always, and a failed item carries an error.
//!
//! Times are whole seconds from [`T0`] and the stale limits are not whole seconds, so no
//! heartbeat age ever ties with a limit (the contract's `<` vs `<=` there is not under test);
//! lease expiry does tie with `now`, and the contract is explicit: `lease_expires_at <= now` is
//! expired.
//!
//! Layout: this file holds the constants, [`Coverage`] and [`run`]; `model/ops.rs` the
//! operations and their strategies, `model/state.rs` the model itself, `model/runner.rs` one
//! step on the store and the model, `model/check.rs` the checks after each step.
//!
//! A backend's property test:
//! ```ignore
//! proptest::proptest! {
//!     #![proptest_config(leasehold_conformance::model::config())]
//!     #[test]
//!     fn store_agrees_with_the_model(ops in leasehold_conformance::model::ops()) {
//!         let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//!         let result = rt.block_on(async { /* open a fresh store */ run(store, &ops).await });
//!         proptest::prop_assert!(result.is_ok(), "{}", result.unwrap_err());
//!     }
//! }
//! ```

use std::sync::Arc;

use leasehold_core::Store;

use crate::support::T0;

/// The owners that acquire; an owner's node is the part before `/`.
pub const OWNERS: [&str; 3] = ["node-a/w0", "node-a/w1", "node-b/w0"];

/// The stale limits a sweep may use, in milliseconds: never a whole number of seconds.
pub const STALE_LIMITS_MS: [u64; 3] = [2_500, 7_500, 1_000_500];

/// How much of the protocol a history exercised: a property test sums these over its cases
/// and asserts that every kind of step happened, so a strategy gone vacuous fails loudly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Items acquired.
    pub acquired: u64,
    /// Holder writes made with a current lease (all applied).
    pub applied: u64,
    /// Holder writes made with a stale or wrong-owner lease (all refused).
    pub fenced: u64,
    /// Items requeued by a sweep or `recover_mine`.
    pub requeued: u64,
    /// Items dead-lettered by a failure, a sweep or `recover_mine`.
    pub dead_lettered: u64,
    /// Expired items left alone because their owner was alive.
    pub skipped_alive: u64,
    /// Items completed.
    pub completed: u64,
}

impl Coverage {
    /// Adds `other` to this.
    pub fn add(&mut self, other: &Coverage) {
        self.acquired += other.acquired;
        self.applied += other.applied;
        self.fenced += other.fenced;
        self.requeued += other.requeued;
        self.dead_lettered += other.dead_lettered;
        self.skipped_alive += other.skipped_alive;
        self.completed += other.completed;
    }

    /// Whether every counter is at least `n`.
    pub fn all_at_least(&self, n: u64) -> bool {
        [
            self.acquired,
            self.applied,
            self.fenced,
            self.requeued,
            self.dead_lettered,
            self.skipped_alive,
            self.completed,
        ]
        .iter()
        .all(|c| *c >= n)
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

macro_rules! ensure_eq {
    ($store:expr, $model:expr, $($fmt:tt)+) => {{
        let (store, model) = (&$store, &$model);
        if store != model {
            return Err(format!(
                "{}: store has {:?}, model expects {:?}",
                format!($($fmt)+),
                store,
                model
            ));
        }
    }};
}

mod check;
mod ops;
mod runner;
mod state;

pub use ops::{config, op, ops, LeaseChoice, Op, Pick};
use runner::Runner;
use state::Model;

/// Drives `store` (fresh and empty) and the model through `ops`, checking after every step,
/// and reports what the history exercised. `Err` describes the first disagreement: the step,
/// the operation and what differed.
pub async fn run(store: Arc<dyn Store>, ops: &[Op]) -> Result<Coverage, String> {
    let mut runner = Runner {
        store,
        model: Model::default(),
        now: T0,
        issued: Vec::new(),
        inputs: 0,
        coverage: Coverage::default(),
    };
    runner
        .check()
        .await
        .map_err(|e| format!("before any step: {e}"))?;
    for (i, op) in ops.iter().enumerate() {
        let now = runner.now;
        runner
            .step(op)
            .await
            .map_err(|e| format!("step {i} {op:?} at {now}: {e}"))?;
        runner
            .check()
            .await
            .map_err(|e| format!("after step {i} {op:?} at {now}: {e}"))?;
    }
    Ok(runner.coverage)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use leasehold_core::{ItemId, ItemStatus, Timestamp};
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    use super::state::{Model, Modelled};
    use super::*;

    fn pending(priority: i32, run_at: i64) -> Modelled {
        Modelled {
            status: ItemStatus::Pending,
            attempts: 0,
            max_attempts: 3,
            priority,
            run_at: Timestamp(run_at),
            epoch: 0,
            owner: None,
            expires: None,
            heartbeat: None,
            checkpoints: 0,
        }
    }

    fn held(owner: &str, attempts: u32, expires: i64, heartbeat: i64) -> Modelled {
        Modelled {
            status: ItemStatus::InProgress,
            attempts,
            epoch: 1,
            owner: Some(owner.into()),
            expires: Some(Timestamp(expires)),
            heartbeat: Some(Timestamp(heartbeat)),
            ..pending(0, 0)
        }
    }

    #[test]
    fn model_acquires_by_priority_then_run_at_then_id_and_skips_unready() {
        let mut m = Model::default();
        m.items.insert(ItemId(1), pending(0, 20));
        m.items.insert(ItemId(2), pending(1, 30));
        m.items.insert(ItemId(3), pending(0, 10));
        m.items.insert(ItemId(4), pending(0, 10));
        m.items.insert(ItemId(5), pending(9, 99));
        assert_eq!(
            m.acquisition_order(Timestamp(50), 10),
            vec![ItemId(2), ItemId(3), ItemId(4), ItemId(1)]
        );
        assert_eq!(
            m.acquisition_order(Timestamp(50), 2),
            vec![ItemId(2), ItemId(3)]
        );
    }

    #[test]
    fn model_reap_plan_asks_only_expired_items_within_the_stale_limit() {
        let mut m = Model::default();
        m.items.insert(ItemId(1), held("a", 1, 100, 50)); // expired at 100, asked
        m.items.insert(ItemId(2), held("b", 1, 100, 50)); // expired, asked, dead
        m.items.insert(ItemId(3), held("a", 1, 500, 0)); // past the stale limit
        m.items.insert(ItemId(4), held("b", 3, 90, 80)); // expired, dead, spent
        m.items.insert(ItemId(5), held("b", 1, 101, 99)); // not expired
        let plan = m.reap_plan(
            Timestamp(100),
            Duration::from_millis(75),
            &|o| o == "a",
            None,
        );
        assert_eq!(plan.found, 4);
        assert_eq!(plan.skipped_alive, 1);
        assert_eq!(
            plan.asked,
            BTreeSet::from([ItemId(1), ItemId(2), ItemId(4)])
        );
        assert_eq!(
            plan.taken,
            BTreeMap::from([(ItemId(2), false), (ItemId(3), false), (ItemId(4), true)])
        );
        let capped = m.reap_plan(
            Timestamp(100),
            Duration::from_millis(75),
            &|_| false,
            Some(1),
        );
        assert!(
            capped.taken.values().all(|d| *d),
            "attempts 1 reach a limit of 1"
        );
    }

    proptest! {
        #![proptest_config(Config { cases: 64, failure_persistence: None, ..Config::default() })]
        #[test]
        fn generated_histories_stay_within_bounds(ops in ops()) {
            prop_assert!(ops.len() >= 10 && ops.len() <= 60);
            for op in &ops {
                if let Op::Reap { stale, .. } = op {
                    prop_assert!(!STALE_LIMITS_MS[*stale].is_multiple_of(1000));
                }
            }
        }
    }
}
