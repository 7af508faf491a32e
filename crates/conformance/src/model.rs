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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use leasehold_core::{
    AcquireRequest, FailDisposition, FailOutcome, Item, ItemFilter, ItemId, ItemStatus, LeaseRef,
    Liveness, LivenessCheck, NewItem, ReapCandidate, ReapRequest, StatusCounts, Store, StoreResult,
    Timestamp,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};
use serde_json::json;

use crate::support::T0;

/// The owners that acquire; an owner's node is the part before `/`.
pub const OWNERS: [&str; 3] = ["node-a/w0", "node-a/w1", "node-b/w0"];

/// The stale limits a sweep may use, in milliseconds: never a whole number of seconds.
pub const STALE_LIMITS_MS: [u64; 3] = [2_500, 7_500, 1_000_500];

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
        /// Index into [`STALE_LIMITS_MS`].
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

/// What the model knows of one item.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Modelled {
    status: ItemStatus,
    attempts: u32,
    max_attempts: u32,
    priority: i32,
    run_at: Timestamp,
    epoch: i64,
    owner: Option<String>,
    expires: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    checkpoints: usize,
}

/// What a sweep should find and do.
#[derive(Debug, Default, PartialEq, Eq)]
struct ReapPlan {
    found: u64,
    skipped_alive: u64,
    /// Item → dead-lettered.
    taken: BTreeMap<ItemId, bool>,
    /// Expired items within the stale limit: the ones whose owner is asked.
    asked: BTreeSet<ItemId>,
}

/// The protocol in memory.
#[derive(Debug, Default)]
struct Model {
    items: BTreeMap<ItemId, Modelled>,
}

impl Model {
    /// The leases the model says are held, by item.
    fn live_leases(&self) -> Vec<LeaseRef> {
        self.items
            .iter()
            .filter(|(_, m)| m.status == ItemStatus::InProgress)
            .map(|(id, m)| LeaseRef {
                item: *id,
                owner: m.owner.clone().expect("an in-progress item has an owner"),
                epoch: m.epoch,
            })
            .collect()
    }

    /// The ready items `limit` acquisitions take, in acquisition order.
    fn acquisition_order(&self, now: Timestamp, limit: u32) -> Vec<ItemId> {
        let mut ready: Vec<_> = self
            .items
            .iter()
            .filter(|(_, m)| m.status == ItemStatus::Pending && m.run_at <= now)
            .collect();
        ready.sort_by_key(|(id, m)| (Reverse(m.priority), m.run_at, **id));
        ready
            .into_iter()
            .take(limit as usize)
            .map(|(id, _)| *id)
            .collect()
    }

    /// What a sweep at `now` should do.
    fn reap_plan(
        &self,
        now: Timestamp,
        stale_after: Duration,
        alive: &dyn Fn(&str) -> bool,
        limit: Option<u32>,
    ) -> ReapPlan {
        let mut plan = ReapPlan::default();
        for (id, m) in &self.items {
            if m.status != ItemStatus::InProgress {
                continue;
            }
            let expired = m.expires.is_some_and(|e| e <= now);
            let past_stale = m.heartbeat.is_some_and(|h| now.since(h) > stale_after);
            if !expired && !past_stale {
                continue;
            }
            plan.found += 1;
            let owner = m.owner.as_deref().unwrap_or_default();
            if !past_stale {
                plan.asked.insert(*id);
                if alive(owner) {
                    plan.skipped_alive += 1;
                    continue;
                }
            }
            let budget = limit.map_or(m.max_attempts, |l| l.min(m.max_attempts));
            plan.taken.insert(*id, m.attempts >= budget);
        }
        plan
    }

    /// The counts by status.
    fn counts(&self) -> StatusCounts {
        let mut c = StatusCounts::default();
        for m in self.items.values() {
            c.set(m.status, c.get(m.status) + 1);
        }
        c
    }
}

/// The liveness answer of a sweep: per owner, and a log of who was asked.
struct OwnerLiveness {
    alive: [bool; 3],
    asked: Mutex<Vec<ItemId>>,
}

impl OwnerLiveness {
    fn is_alive(&self, owner: &str) -> bool {
        OWNERS
            .iter()
            .position(|o| *o == owner)
            .is_some_and(|i| self.alive[i])
    }
}

#[async_trait]
impl LivenessCheck for OwnerLiveness {
    async fn check(&self, candidate: &ReapCandidate) -> Liveness {
        self.asked.lock().expect("asked log").push(candidate.item);
        if self.is_alive(&candidate.owner) {
            Liveness::Alive
        } else {
            Liveness::Dead
        }
    }
}

/// A holder's write, as the runner performs it.
#[derive(Clone, Copy, Debug)]
enum Write {
    Renew(Duration),
    Complete,
    FailRetry(Duration),
    FailPermanent,
    Release,
    Checkpoint,
}

/// What a holder's write returned.
#[derive(Debug, PartialEq)]
enum Written {
    Renewed(Timestamp),
    Done,
    Failed(FailOutcome),
    Checkpointed,
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

fn ok<T>(result: StoreResult<T>, what: &str) -> Result<T, String> {
    result.map_err(|e| format!("{what} failed: {e} ({e:?})"))
}

/// The store, the model, the clock and every lease ever handed out.
struct Runner {
    store: Arc<dyn Store>,
    model: Model,
    now: Timestamp,
    issued: Vec<LeaseRef>,
    inputs: i64,
    coverage: Coverage,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("now", &self.now)
            .field("model", &self.model)
            .finish()
    }
}

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

impl Runner {
    async fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Enqueue {
                priority,
                delay_s,
                max_attempts,
            } => self.enqueue(priority, delay_s, max_attempts).await,
            Op::Acquire {
                owner,
                limit,
                lease_s,
            } => self.acquire(owner, limit, lease_s).await,
            Op::Renew { ref pick, lease_s } => self.write(pick, Write::Renew(secs(lease_s))).await,
            Op::Complete { ref pick } => self.write(pick, Write::Complete).await,
            Op::FailRetry { ref pick, delay_s } => {
                self.write(pick, Write::FailRetry(secs(delay_s))).await
            }
            Op::FailPermanent { ref pick } => self.write(pick, Write::FailPermanent).await,
            Op::Release { ref pick } => self.write(pick, Write::Release).await,
            Op::Checkpoint { ref pick } => self.write(pick, Write::Checkpoint).await,
            Op::Reap {
                alive,
                stale,
                dry_run,
                max_attempts,
            } => self.reap(alive, stale, dry_run, max_attempts).await,
            Op::RecoverMine { owner } => self.recover(owner).await,
            Op::Advance { secs: s } => {
                self.now = self.now.plus(secs(s));
                Ok(())
            }
        }
    }

    async fn enqueue(
        &mut self,
        priority: i32,
        delay_s: u8,
        max_attempts: u32,
    ) -> Result<(), String> {
        self.inputs += 1;
        let item = NewItem::new("job", json!({ "n": self.inputs }))
            .priority(priority)
            .delay(secs(delay_s))
            .max_attempts(max_attempts);
        let id = ok(
            self.store.item_enqueue(item, self.now).await,
            "item_enqueue",
        )?;
        ensure!(
            !self.model.items.contains_key(&id),
            "item_enqueue returned id {id}, which an earlier item has"
        );
        self.model.items.insert(
            id,
            Modelled {
                status: ItemStatus::Pending,
                attempts: 0,
                max_attempts,
                priority,
                run_at: self.now.plus(secs(delay_s)),
                epoch: 0,
                owner: None,
                expires: None,
                heartbeat: None,
                checkpoints: 0,
            },
        );
        Ok(())
    }

    async fn acquire(&mut self, owner: usize, limit: u32, lease_s: u8) -> Result<(), String> {
        let owner_id = OWNERS[owner];
        let node = owner_id.split('/').next().unwrap_or(owner_id);
        let lease = secs(lease_s);
        let request = AcquireRequest::new(owner_id, lease)
            .node(node, 1)
            .limit(limit);
        let expected = self.model.acquisition_order(self.now, limit);
        let got = ok(
            self.store.items_acquire(&request, self.now).await,
            "items_acquire",
        )?;
        let got_ids: Vec<ItemId> = got.iter().map(|l| l.item.id).collect();
        let distinct: BTreeSet<ItemId> = got_ids.iter().copied().collect();
        ensure!(
            distinct.len() == got_ids.len(),
            "one batch leased an item twice: {got_ids:?}"
        );
        ensure_eq!(
            distinct,
            expected.iter().copied().collect::<BTreeSet<_>>(),
            "the items acquired (ready pending ones by priority, run_at, id; up to {limit})"
        );
        for leased in got {
            let id = leased.item.id;
            let m = self
                .model
                .items
                .get_mut(&id)
                .ok_or_else(|| format!("acquired unknown item {id}"))?;
            ensure!(
                m.status == ItemStatus::Pending,
                "item {id} was acquired while the model has it {}",
                m.status
            );
            ensure!(
                leased.lease.epoch > m.epoch,
                "the epoch must increase at every acquisition: item {id} had {}, got {}",
                m.epoch,
                leased.lease.epoch
            );
            ensure_eq!(leased.lease.epoch, m.epoch + 1, "item {id}'s new epoch");
            ensure_eq!(
                leased.lease.owner.as_str(),
                owner_id,
                "item {id}'s lease owner"
            );
            ensure_eq!(
                leased.item.status,
                ItemStatus::InProgress,
                "item {id}'s status"
            );
            ensure_eq!(leased.item.attempts, m.attempts + 1, "item {id}'s attempts");
            ensure_eq!(
                leased.expires_at,
                self.now.plus(lease),
                "item {id}'s expiry"
            );
            m.status = ItemStatus::InProgress;
            m.epoch = leased.lease.epoch;
            m.attempts += 1;
            m.owner = Some(owner_id.to_owned());
            m.expires = Some(self.now.plus(lease));
            m.heartbeat = Some(self.now);
            self.issued.push(leased.lease);
            self.coverage.acquired += 1;
        }
        Ok(())
    }

    /// The lease a pick names, and whether the write must apply.
    fn choose(&self, pick: &Pick) -> Option<(LeaseRef, bool)> {
        let live = self.model.live_leases();
        match pick.choice {
            LeaseChoice::Current => {
                (!live.is_empty()).then(|| (live[pick.index.index(live.len())].clone(), true))
            }
            LeaseChoice::Stale => {
                let stale: Vec<&LeaseRef> =
                    self.issued.iter().filter(|l| !live.contains(l)).collect();
                (!stale.is_empty()).then(|| (stale[pick.index.index(stale.len())].clone(), false))
            }
            LeaseChoice::WrongOwner => (!live.is_empty()).then(|| {
                let mut lease = live[pick.index.index(live.len())].clone();
                let at = OWNERS.iter().position(|o| *o == lease.owner).unwrap_or(0);
                lease.owner = OWNERS[(at + 1) % OWNERS.len()].to_owned();
                (lease, false)
            }),
        }
    }

    async fn call(&self, write: Write, lease: &LeaseRef) -> StoreResult<Written> {
        let (s, now) = (&self.store, self.now);
        match write {
            Write::Renew(d) => s.lease_renew(lease, d, now).await.map(Written::Renewed),
            Write::Complete => s
                .item_complete(
                    lease,
                    json!({ "by": lease.owner, "epoch": lease.epoch }),
                    now,
                )
                .await
                .map(|()| Written::Done),
            Write::FailRetry(delay) => s
                .item_fail(lease, "transient", FailDisposition::Retry { delay }, now)
                .await
                .map(Written::Failed),
            Write::FailPermanent => s
                .item_fail(lease, "permanent", FailDisposition::Permanent, now)
                .await
                .map(Written::Failed),
            Write::Release => s
                .item_release(lease, None, now)
                .await
                .map(|_| Written::Done),
            Write::Checkpoint => s
                .checkpoint_save(lease, "step", json!({ "epoch": lease.epoch }), now)
                .await
                .map(|_| Written::Checkpointed),
        }
    }

    async fn write(&mut self, pick: &Pick, write: Write) -> Result<(), String> {
        let Some((lease, valid)) = self.choose(pick) else {
            return Ok(());
        };
        let id = lease.item;
        if !valid {
            return self.fenced(write, &lease).await;
        }
        let result = ok(
            self.call(write, &lease).await,
            &format!("{write:?} with {lease:?}"),
        )?;
        self.coverage.applied += 1;
        let now = self.now;
        let m = self.model.items.get_mut(&id).expect("a live lease's item");
        match write {
            Write::Renew(d) => {
                ensure_eq!(result, Written::Renewed(now.plus(d)), "the renewal");
                m.expires = Some(now.plus(d));
                m.heartbeat = Some(now);
            }
            Write::Complete => {
                m.status = ItemStatus::Completed;
            }
            Write::FailRetry(delay) => {
                if m.attempts >= m.max_attempts {
                    ensure_eq!(
                        result,
                        Written::Failed(FailOutcome::DeadLettered),
                        "a retryable failure with the budget spent"
                    );
                    m.status = ItemStatus::Failed;
                } else {
                    ensure_eq!(
                        result,
                        Written::Failed(FailOutcome::Retrying {
                            run_at: now.plus(delay)
                        }),
                        "a retryable failure"
                    );
                    m.status = ItemStatus::Pending;
                    m.run_at = now.plus(delay);
                }
            }
            Write::FailPermanent => {
                ensure_eq!(
                    result,
                    Written::Failed(FailOutcome::DeadLettered),
                    "a permanent failure"
                );
                m.status = ItemStatus::Failed;
            }
            Write::Release => {
                m.status = ItemStatus::Pending;
                m.attempts -= 1;
            }
            Write::Checkpoint => {
                m.checkpoints += 1;
                let saved = ok(self.store.checkpoints_list(id).await, "checkpoints_list")?;
                ensure_eq!(saved.len(), m.checkpoints, "item {id}'s checkpoints");
            }
        }
        match m.status {
            ItemStatus::Completed => self.coverage.completed += 1,
            ItemStatus::Failed => self.coverage.dead_lettered += 1,
            _ => {}
        }
        if m.status != ItemStatus::InProgress {
            m.owner = None;
            m.expires = None;
            m.heartbeat = None;
        }
        if matches!(write, Write::Release) {
            self.take_run_at(id).await?;
        }
        Ok(())
    }

    /// A write with a lease that is not held: `LeaseLost`, and nothing changed.
    async fn fenced(&mut self, write: Write, lease: &LeaseRef) -> Result<(), String> {
        let id = lease.item;
        let before = ok(self.store.item_get(id).await, "item_get")?;
        let checkpoints = ok(self.store.checkpoints_list(id).await, "checkpoints_list")?;
        match self.call(write, lease).await {
            Err(e) if e.is_lease_lost() => {}
            other => {
                return Err(format!(
                    "{write:?} with the stale lease {lease:?} must be refused with LeaseLost, got {other:?}"
                ))
            }
        }
        ensure_eq!(
            ok(self.store.item_get(id).await, "item_get")?,
            before,
            "item {id} after a refused {write:?}"
        );
        ensure_eq!(
            ok(self.store.checkpoints_list(id).await, "checkpoints_list")?,
            checkpoints,
            "item {id}'s checkpoints after a refused {write:?}"
        );
        self.coverage.fenced += 1;
        Ok(())
    }

    /// A requeue (release, reap, `recover_mine`) makes the item ready now; the exact `run_at`
    /// is the store's to choose, so the model adopts it once checked.
    async fn take_run_at(&mut self, id: ItemId) -> Result<(), String> {
        let item = self.stored(id).await?;
        ensure!(
            item.run_at <= self.now,
            "requeued item {id} must be ready at once: run_at {} > now {}",
            item.run_at,
            self.now
        );
        if let Some(m) = self.model.items.get_mut(&id) {
            m.run_at = item.run_at;
        }
        Ok(())
    }

    async fn stored(&self, id: ItemId) -> Result<Item, String> {
        ok(self.store.item_get(id).await, "item_get")?.ok_or_else(|| format!("item {id} is gone"))
    }

    async fn all_items(&self) -> Result<Vec<Item>, String> {
        ok(
            self.store
                .items_list(&ItemFilter {
                    limit: 100_000,
                    ..ItemFilter::default()
                })
                .await,
            "items_list",
        )
    }

    /// Applies a requeue or dead-letter by a sweep or `recover_mine`.
    async fn take_back(&mut self, id: ItemId, dead_lettered: bool) -> Result<(), String> {
        let m = self.model.items.get_mut(&id).expect("a taken item");
        m.owner = None;
        m.expires = None;
        m.heartbeat = None;
        if dead_lettered {
            m.status = ItemStatus::Failed;
            self.coverage.dead_lettered += 1;
        } else {
            m.status = ItemStatus::Pending;
            m.epoch += 1;
            self.coverage.requeued += 1;
            self.take_run_at(id).await?;
        }
        Ok(())
    }

    async fn reap(
        &mut self,
        alive: [bool; 3],
        stale: usize,
        dry_run: bool,
        max_attempts: Option<u32>,
    ) -> Result<(), String> {
        let stale_after = Duration::from_millis(STALE_LIMITS_MS[stale]);
        let liveness = OwnerLiveness {
            alive,
            asked: Mutex::new(Vec::new()),
        };
        let plan = self.model.reap_plan(
            self.now,
            stale_after,
            &|o| liveness.is_alive(o),
            max_attempts,
        );
        let mut request = ReapRequest::new(1_000, stale_after);
        request.dry_run = dry_run;
        request.max_attempts = max_attempts;
        let before = if dry_run {
            Some(self.all_items().await?)
        } else {
            None
        };
        let stats = ok(
            self.store
                .items_reap_expired(&request, &liveness, self.now)
                .await,
            "items_reap_expired",
        )?;
        let reported: BTreeMap<ItemId, bool> = stats
            .items
            .iter()
            .map(|r| (r.id, r.dead_lettered))
            .collect();
        ensure_eq!(
            reported,
            plan.taken,
            "the items the sweep took (id → dead-lettered)"
        );
        ensure_eq!(
            stats.items.len(),
            plan.taken.len(),
            "the sweep's item reports"
        );
        ensure_eq!(stats.expired_found, plan.found, "expired_found");
        ensure_eq!(
            stats.recovered,
            plan.taken.values().filter(|d| !**d).count() as u64,
            "recovered"
        );
        ensure_eq!(
            stats.failed,
            plan.taken.values().filter(|d| **d).count() as u64,
            "failed"
        );
        ensure_eq!(stats.skipped_alive, plan.skipped_alive, "skipped_alive");
        ensure_eq!(
            stats.skipped_changed,
            0,
            "skipped_changed (nobody wrote during the sweep)"
        );
        ensure_eq!(stats.dry_run, dry_run, "dry_run");
        let asked: BTreeSet<ItemId> = liveness
            .asked
            .lock()
            .expect("asked log")
            .iter()
            .copied()
            .collect();
        ensure_eq!(asked, plan.asked, "the items whose owner was asked");
        if let Some(before) = before {
            ensure_eq!(self.all_items().await?, before, "the items after a dry run");
            return Ok(());
        }
        self.coverage.skipped_alive += plan.skipped_alive;
        for (id, dead_lettered) in plan.taken {
            self.take_back(id, dead_lettered).await?;
        }
        Ok(())
    }

    async fn recover(&mut self, owner: usize) -> Result<(), String> {
        let owner_id = OWNERS[owner];
        let expected: BTreeMap<ItemId, (i64, bool)> = self
            .model
            .items
            .iter()
            .filter(|(_, m)| {
                m.status == ItemStatus::InProgress && m.owner.as_deref() == Some(owner_id)
            })
            .map(|(id, m)| (*id, (m.epoch, m.attempts >= m.max_attempts)))
            .collect();
        let got = ok(
            self.store.items_recover_owner(owner_id, self.now).await,
            "items_recover_owner",
        )?;
        let got_map: BTreeMap<ItemId, (i64, bool)> = got
            .iter()
            .map(|r| (r.id, (r.previous_epoch, r.dead_lettered)))
            .collect();
        ensure_eq!(
            got.len(),
            got_map.len(),
            "recover_mine's reports (one per item)"
        );
        ensure_eq!(
            got_map,
            expected,
            "recover_mine of {owner_id} (id → previous epoch, dead-lettered)"
        );
        for (id, (_, dead_lettered)) in expected {
            self.take_back(id, dead_lettered).await?;
        }
        Ok(())
    }

    /// The store agrees with the model, and invariants 1–4 hold.
    async fn check(&self) -> Result<(), String> {
        let items = self.all_items().await?;
        let ids: Vec<ItemId> = items.iter().map(|i| i.id).collect();
        let model_ids: Vec<ItemId> = self.model.items.keys().copied().collect();
        ensure_eq!(ids, model_ids, "invariant 1: the ids of all items");
        let counts = ok(self.store.items_count().await, "items_count")?;
        ensure_eq!(
            counts,
            self.model.counts(),
            "invariant 1: the counts by status"
        );
        ensure_eq!(
            counts.total(),
            items.len() as u64,
            "invariant 1: every item counted in exactly one status"
        );
        for item in &items {
            let id = item.id;
            let m = &self.model.items[&id];
            ensure_eq!(item.status, m.status, "item {id}'s status");
            ensure_eq!(item.attempts, m.attempts, "item {id}'s attempts");
            ensure_eq!(item.max_attempts, m.max_attempts, "item {id}'s budget");
            ensure_eq!(item.epoch, m.epoch, "item {id}'s epoch");
            ensure!(
                item.attempts <= item.max_attempts,
                "invariant 4: item {id} has {} attempts of {}",
                item.attempts,
                item.max_attempts
            );
            match item.status {
                ItemStatus::InProgress => {
                    ensure_eq!(item.owner, m.owner, "item {id}'s owner");
                    ensure_eq!(item.lease_expires_at, m.expires, "item {id}'s lease expiry");
                    ensure_eq!(item.last_heartbeat_at, m.heartbeat, "item {id}'s heartbeat");
                }
                ItemStatus::Pending => {
                    ensure_eq!(item.run_at, m.run_at, "item {id}'s run_at");
                    ensure_eq!(item.lease(), None, "pending item {id}'s lease");
                }
                ItemStatus::Failed => {
                    ensure!(
                        item.error.is_some(),
                        "invariant 4: failed item {id} must keep an error"
                    );
                }
                // The model never parks an item nor gives one dependencies: the decision and
                // dependency cases cover those statuses.
                ItemStatus::Completed
                | ItemStatus::Cancelled
                | ItemStatus::Awaiting
                | ItemStatus::Blocked => {}
            }
        }
        for owner in OWNERS {
            let held: BTreeSet<ItemId> =
                ok(self.store.leases_of_owner(owner).await, "leases_of_owner")?
                    .into_iter()
                    .map(|i| i.id)
                    .collect();
            let modelled: BTreeSet<ItemId> = self
                .model
                .items
                .iter()
                .filter(|(_, m)| {
                    m.status == ItemStatus::InProgress && m.owner.as_deref() == Some(owner)
                })
                .map(|(id, _)| *id)
                .collect();
            ensure_eq!(held, modelled, "invariant 2: the leases of {owner}");
        }
        Ok(())
    }
}

fn secs(s: u8) -> Duration {
    Duration::from_secs(u64::from(s))
}

#[cfg(test)]
mod tests {
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
