//! The operations a history is made of, and the proptest strategies that generate them.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};

use super::OWNERS;

/// Which lease a holder's write is made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseChoice {
    /// A lease the model says is held: the write must apply.
    Current,
    /// A lease once handed out and since taken back, finished or released: `LeaseLost`.
    Stale,
    /// A held lease's epoch presented by another owner: `LeaseLost`.
    WrongOwner,
}

/// A lease chosen among those of its kind (the index is taken modulo how many there are; with
/// none, the step does nothing).
#[derive(Clone, Debug)]
pub struct Pick {
    /// Which kind of lease.
    pub choice: LeaseChoice,
    /// Which one of them.
    pub index: Index,
}

/// One step of a random history.
#[derive(Clone, Debug)]
pub enum Op {
    /// Enqueue one item.
    Enqueue {
        /// Its priority.
        priority: i32,
        /// Its delay in seconds.
        delay_s: u8,
        /// Its budget.
        max_attempts: u32,
    },
    /// `OWNERS[owner]` acquires up to `limit` items.
    Acquire {
        /// Index into [`OWNERS`].
        owner: usize,
        /// The batch size.
        limit: u32,
        /// The lease in seconds.
        lease_s: u8,
    },
    /// Renew a lease for `lease_s` seconds.
    Renew {
        /// The lease written with.
        pick: Pick,
        /// The new duration in seconds.
        lease_s: u8,
    },
    /// Complete.
    Complete {
        /// The lease written with.
        pick: Pick,
    },
    /// A retryable failure with a backoff.
    FailRetry {
        /// The lease written with.
        pick: Pick,
        /// The backoff in seconds.
        delay_s: u8,
    },
    /// A permanent failure.
    FailPermanent {
        /// The lease written with.
        pick: Pick,
    },
    /// A graceful release.
    Release {
        /// The lease written with.
        pick: Pick,
    },
    /// Save a checkpoint.
    Checkpoint {
        /// The lease written with.
        pick: Pick,
    },
    /// A reaper sweep.
    Reap {
        /// The liveness answer for each of [`OWNERS`].
        alive: [bool; 3],
        /// Index into [`STALE_LIMITS_MS`](super::STALE_LIMITS_MS).
        stale: usize,
        /// Report only.
        dry_run: bool,
        /// The sweep's attempt limit.
        max_attempts: Option<u32>,
    },
    /// `recover_mine` for `OWNERS[owner]`.
    RecoverMine {
        /// Index into [`OWNERS`].
        owner: usize,
    },
    /// Move the clock forward.
    Advance {
        /// Seconds.
        secs: u8,
    },
}

/// The property-test configuration: 48 cases (or `PROPTEST_CASES`), a fixed seed (or
/// `PROPTEST_RNG_SEED`), no regression files, and shrinking bounded in time.
pub fn config() -> Config {
    let base = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            base.cases
        } else {
            48
        },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            base.rng_seed
        } else {
            RngSeed::Fixed(0x1ea5_e401)
        },
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..base
    }
}

fn pick() -> impl Strategy<Value = Pick> {
    (
        prop_oneof![
            3 => Just(LeaseChoice::Current),
            1 => Just(LeaseChoice::Stale),
            1 => Just(LeaseChoice::WrongOwner),
        ],
        any::<Index>(),
    )
        .prop_map(|(choice, index)| Pick { choice, index })
}

/// One random operation.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-1i32..=1, 0u8..=3, 1u32..=3).prop_map(|(priority, delay_s, max_attempts)| {
            Op::Enqueue { priority, delay_s, max_attempts }
        }),
        4 => (0..OWNERS.len(), 1u32..=3, 1u8..=6)
            .prop_map(|(owner, limit, lease_s)| Op::Acquire { owner, limit, lease_s }),
        2 => (pick(), 1u8..=6).prop_map(|(pick, lease_s)| Op::Renew { pick, lease_s }),
        2 => pick().prop_map(|pick| Op::Complete { pick }),
        2 => (pick(), 0u8..=3).prop_map(|(pick, delay_s)| Op::FailRetry { pick, delay_s }),
        1 => pick().prop_map(|pick| Op::FailPermanent { pick }),
        1 => pick().prop_map(|pick| Op::Release { pick }),
        1 => pick().prop_map(|pick| Op::Checkpoint { pick }),
        3 => (
            any::<[bool; 3]>(),
            // Mostly the far limit, so that liveness decides.
            prop_oneof![1 => Just(0usize), 1 => Just(1usize), 3 => Just(2usize)],
            prop::bool::weighted(0.25),
            prop::option::weighted(0.2, 1u32..=3),
        )
            .prop_map(|(alive, stale, dry_run, max_attempts)| Op::Reap {
                alive,
                stale,
                dry_run,
                max_attempts,
            }),
        1 => (0..OWNERS.len()).prop_map(|owner| Op::RecoverMine { owner }),
        3 => (1u8..=5).prop_map(|secs| Op::Advance { secs }),
    ]
}

/// A random history of 10 to 60 operations (shorter ones rarely get past the first lease).
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 10..=60)
}
