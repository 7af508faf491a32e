//! The fault-injection harness: for our tests and for users testing their own handlers.
//!
//! - [`FaultInjector`] (from [`NodeHandle::faults`](crate::NodeHandle::faults)) kills or panics
//!   a chosen or random worker, heartbeat, reaper or registry actor.
//! - [`FaultPoints`] make a handler panic at a named point ([`JobContext::fault_point`](crate::JobContext::fault_point)), e.g.
//!   before its side effect or after it but before it returns.
//! - [`FaultyStore`] wraps any store and makes it fail or stall for a while.
//! - [`check_invariants`] reads the store afterwards and reports lost items, items completed
//!   twice, attempts over budget and items stuck in progress.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use leasehold_runtime::faults::{check_invariants, FaultPoints};
//! # async fn demo(node: leasehold_runtime::NodeHandle, ids: Vec<leasehold_core::ItemId>) {
//! let faults = node.faults();
//! faults.kill_worker(0);                      // the supervisor restarts it; recover_mine runs
//! faults.kill_heartbeat(1).await;             // worker 1's lease lapses; the item is retried
//! let report = check_invariants(node.store().as_ref(), &ids, faults.completions().as_deref()).await.unwrap();
//! assert!(report.is_clean(), "{report:?}");
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef};
use serde::Serialize;
use serde_json::Value;

use leasehold_core::{
    AcquireRequest, ActionReport, Attempt, Checkpoint, CleanupReport, CleanupRequest,
    DecisionRequest, Dependency, FailDisposition, FailOutcome, FinishedBucket, Item, ItemFilter,
    ItemId, ItemSelector, ItemStatus, KindDepth, LeaseRef, LeaseStatus, Leased, LivenessCheck,
    NewItem, NodeClaim, NodeRecord, PausedKind, ReapRequest, RecoveredItem, RecoveryStats,
    ReleaseOutcome, RetryRequest, ScheduleClaim, ScheduleRecord, ScheduleSpec, StatusCounts, Store,
    StoreError, StoreResult, Timestamp,
};

use crate::node::NodeCtx;
use crate::reaper::ReaperMsg;
use crate::registry::RegistryMsg;
use crate::worker::WorkerMsg;

/// Named points at which handlers panic when armed.
///
/// ```
/// use leasehold_runtime::faults::FaultPoints;
/// let points = FaultPoints::default();
/// points.arm("after_effect", 1);
/// assert!(std::panic::catch_unwind(|| points.hit("after_effect", leasehold_core::ItemId(1))).is_err());
/// points.hit("after_effect", leasehold_core::ItemId(2)); // disarmed after one hit
/// assert_eq!(points.fired("after_effect"), 1);
/// ```
#[derive(Debug, Default)]
pub struct FaultPoints {
    armed: Mutex<HashMap<String, Arm>>,
}

#[derive(Debug, Default)]
struct Arm {
    remaining: u64,
    only: Option<ItemId>,
    fired: u64,
}

impl FaultPoints {
    /// Makes the next `times` hits of `point` (by any item) panic.
    pub fn arm(&self, point: &str, times: u64) {
        let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        let arm = armed.entry(point.to_string()).or_default();
        arm.remaining = times;
        arm.only = None;
    }

    /// Makes the next `times` hits of `point` by `item` panic.
    pub fn arm_for(&self, point: &str, item: ItemId, times: u64) {
        let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        let arm = armed.entry(point.to_string()).or_default();
        arm.remaining = times;
        arm.only = Some(item);
    }

    /// Disarms `point`.
    pub fn disarm(&self, point: &str) {
        let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(arm) = armed.get_mut(point) {
            arm.remaining = 0;
        }
    }

    /// How many times `point` has fired.
    pub fn fired(&self, point: &str) -> u64 {
        let armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
        armed.get(point).map_or(0, |a| a.fired)
    }

    /// Panics if `point` is armed for `item`; otherwise does nothing.
    pub fn hit(&self, point: &str, item: ItemId) {
        let fire = {
            let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
            match armed.get_mut(point) {
                Some(arm) if arm.remaining > 0 && arm.only.is_none_or(|i| i == item) => {
                    arm.remaining -= 1;
                    arm.fired += 1;
                    true
                }
                _ => false,
            }
        };
        if fire {
            panic!("injected fault at {point} (item {item})");
        }
    }
}

/// Kills or crashes the actors of one running node.
#[derive(Clone)]
pub struct FaultInjector {
    ctx: Arc<NodeCtx>,
}

impl std::fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultInjector")
            .field("node", &self.ctx.node_id)
            .finish()
    }
}

impl FaultInjector {
    pub(crate) fn new(ctx: Arc<NodeCtx>) -> Self {
        FaultInjector { ctx }
    }

    /// Workers in the tree.
    pub fn workers(&self) -> usize {
        self.ctx.cfg.workers
    }

    /// (worker index, item) for every worker holding an item now.
    pub fn busy_workers(&self) -> Vec<(usize, ItemId)> {
        self.ctx
            .busy
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let id = a.load(std::sync::atomic::Ordering::Relaxed);
                (id != 0).then_some((i, ItemId(id)))
            })
            .collect()
    }

    /// Kills worker `i` outright (no cleanup runs; its heartbeat child dies with it). The
    /// supervisor restarts it under the same owner id and it runs recover_mine. Returns whether
    /// the worker was running.
    pub fn kill_worker(&self, i: usize) -> bool {
        self.cell(&self.ctx.worker_name(i))
            .map(|c| c.kill())
            .is_some()
    }

    /// Makes worker `i` panic inside its message loop.
    pub fn crash_worker(&self, i: usize) -> bool {
        self.cell(&self.ctx.worker_name(i))
            .is_some_and(|c| c.send_message(WorkerMsg::Crash("injected".into())).is_ok())
    }

    /// Kills a random worker (by `pick(workers)`, e.g. a seeded RNG); returns its index and the
    /// item it held, if any.
    pub fn kill_random_worker(&self, pick: impl FnOnce(usize) -> usize) -> (usize, Option<ItemId>) {
        let i = pick(self.ctx.cfg.workers) % self.ctx.cfg.workers.max(1);
        let held = self
            .busy_workers()
            .into_iter()
            .find(|(w, _)| *w == i)
            .map(|(_, id)| id);
        self.kill_worker(i);
        (i, held)
    }

    /// Kills worker `i`'s current heartbeat child; its lease then lapses. Returns whether there
    /// was one.
    pub async fn kill_heartbeat(&self, i: usize) -> bool {
        match self.heartbeat(i).await {
            Some(cell) => {
                cell.kill();
                true
            }
            None => false,
        }
    }

    /// Makes worker `i`'s current heartbeat child panic.
    pub async fn crash_heartbeat(&self, i: usize) -> bool {
        match self.heartbeat(i).await {
            Some(cell) => cell
                .send_message(crate::heartbeat::HeartbeatMsg::Crash("injected".into()))
                .is_ok(),
            None => false,
        }
    }

    /// Kills the reaper (the supervisor restarts it).
    pub fn kill_reaper(&self) -> bool {
        self.cell(&self.ctx.actor_name("reaper"))
            .map(|c| c.kill())
            .is_some()
    }

    /// Makes the reaper panic.
    pub fn crash_reaper(&self) -> bool {
        self.cell(&self.ctx.actor_name("reaper"))
            .is_some_and(|c| c.send_message(ReaperMsg::Crash("injected".into())).is_ok())
    }

    /// Kills the registry actor (the supervisor restarts it).
    pub fn kill_registry(&self) -> bool {
        self.cell(&self.ctx.actor_name("registry"))
            .map(|c| c.kill())
            .is_some()
    }

    /// Makes the registry actor panic.
    pub fn crash_registry(&self) -> bool {
        self.cell(&self.ctx.actor_name("registry"))
            .is_some_and(|c| {
                c.send_message(RegistryMsg::Crash("injected".into()))
                    .is_ok()
            })
    }

    /// The fault points the node's handlers see.
    pub fn points(&self) -> &Arc<FaultPoints> {
        &self.ctx.faults
    }

    /// Every acknowledged completion (item, epoch) so far, if the node was built with
    /// [`record_completions`](crate::LeaseholdBuilder::record_completions).
    pub fn completions(&self) -> Option<Vec<(ItemId, i64)>> {
        self.ctx
            .metrics
            .completions
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn cell(&self, name: &str) -> Option<ActorCell> {
        ractor::registry::where_is(name)
    }

    async fn heartbeat(&self, i: usize) -> Option<ActorCell> {
        let worker: ActorRef<WorkerMsg> = self.cell(&self.ctx.worker_name(i))?.into();
        match worker
            .call(WorkerMsg::HeartbeatCell, Some(Duration::from_secs(5)))
            .await
        {
            Ok(CallResult::Success(cell)) => cell,
            _ => None,
        }
    }
}

/// What [`check_invariants`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InvariantReport {
    /// Items checked.
    pub items: usize,
    /// Items in each status.
    pub counts: StatusCounts,
    /// Expected items missing from the store (invariant 1).
    pub lost: Vec<ItemId>,
    /// Items whose completion was acknowledged more than once (invariants 3 and 8).
    pub double_completions: Vec<ItemId>,
    /// Items whose attempts exceed their budget (invariant 4).
    pub over_budget: Vec<ItemId>,
    /// Dead-lettered items without an error kept (invariant 4).
    pub failed_without_error: Vec<ItemId>,
    /// Items still in progress (after a run that should have finished: stranded work).
    pub stuck_in_progress: Vec<ItemId>,
    /// Items still pending.
    pub pending: Vec<ItemId>,
}

impl InvariantReport {
    /// Nothing lost, nothing completed twice, no budget exceeded, nothing stuck or left pending.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.double_completions.is_empty()
            && self.over_budget.is_empty()
            && self.failed_without_error.is_empty()
            && self.stuck_in_progress.is_empty()
            && self.pending.is_empty()
    }
}

/// Reads every item of the store and checks the invariants against the ids that were enqueued
/// and, if given, the acknowledged completions.
pub async fn check_invariants(
    store: &dyn Store,
    expected: &[ItemId],
    completions: Option<&[(ItemId, i64)]>,
) -> StoreResult<InvariantReport> {
    let mut report = InvariantReport::default();
    let mut seen = HashSet::new();
    let mut filter = ItemFilter {
        limit: 1000,
        ..ItemFilter::default()
    };
    loop {
        let page = store.items_list(&filter).await?;
        let Some(last) = page.last().map(|i| i.id) else {
            break;
        };
        for item in &page {
            seen.insert(item.id);
            report.items += 1;
            report
                .counts
                .set(item.status, report.counts.get(item.status) + 1);
            if item.attempts > item.max_attempts {
                report.over_budget.push(item.id);
            }
            match item.status {
                ItemStatus::Failed if item.error.as_deref().unwrap_or("").is_empty() => {
                    report.failed_without_error.push(item.id)
                }
                ItemStatus::InProgress => report.stuck_in_progress.push(item.id),
                ItemStatus::Pending => report.pending.push(item.id),
                _ => {}
            }
        }
        filter.after = Some(last);
    }
    report.lost = expected
        .iter()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    if let Some(done) = completions {
        let mut per_item: HashMap<ItemId, u32> = HashMap::new();
        for (id, _) in done {
            *per_item.entry(*id).or_default() += 1;
        }
        report.double_completions = per_item
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(id, _)| id)
            .collect();
        report.double_completions.sort();
    }
    Ok(report)
}

/// A store that fails or stalls on demand, wrapping a real one.
///
/// ```no_run
/// # async fn demo(real: std::sync::Arc<dyn leasehold_core::Store>) {
/// use leasehold_runtime::faults::FaultyStore;
/// use std::time::Duration;
/// let faulty = std::sync::Arc::new(FaultyStore::new(real));
/// faulty.fail_for(Duration::from_secs(2));   // every call errors for 2 s
/// faulty.stall_for(Duration::from_secs(5), Duration::from_millis(200)); // then each call waits 200 ms
/// # }
/// ```
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    mode: Mutex<Option<(Fault, tokio::time::Instant)>>,
    /// `node_register` passes the fault by (see [`FaultyStore::spare_registration`]).
    registration_spared: std::sync::atomic::AtomicBool,
    renewals: tokio::sync::broadcast::Sender<(LeaseRef, Timestamp)>,
    acquisitions: tokio::sync::broadcast::Sender<(std::time::Instant, usize)>,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Fail,
    Stall(Duration),
}

impl FaultyStore {
    /// Wraps `inner`; healthy until told otherwise.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        FaultyStore {
            inner,
            mode: Mutex::new(None),
            registration_spared: std::sync::atomic::AtomicBool::new(false),
            renewals: tokio::sync::broadcast::channel(1024).0,
            acquisitions: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Every lease renewal that succeeds from now on, with the expiry it wrote: lets a test
    /// wait on heartbeats instead of sleeping.
    pub fn renewals(&self) -> tokio::sync::broadcast::Receiver<(LeaseRef, Timestamp)> {
        self.renewals.subscribe()
    }

    /// Every acquisition that succeeds from now on: when it returned (wall clock) and how many
    /// items it leased. Lets a test see an idle worker's empty polls instead of guessing them.
    pub fn acquisitions(&self) -> tokio::sync::broadcast::Receiver<(std::time::Instant, usize)> {
        self.acquisitions.subscribe()
    }

    /// With `true`, `node_register` reaches the store whatever the fault: a node then starts
    /// (its start waits for the registration) while every other call still fails, so a test
    /// sees what the running tree does with a failing store rather than a start that waits.
    pub fn spare_registration(&self, spared: bool) {
        self.registration_spared
            .store(spared, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every call fails with a backend error for `d` (tokio time).
    pub fn fail_for(&self, d: Duration) {
        self.set(Some((Fault::Fail, tokio::time::Instant::now() + d)));
    }

    /// Every call waits `each` before it runs, for `d`.
    pub fn stall_for(&self, d: Duration, each: Duration) {
        self.set(Some((Fault::Stall(each), tokio::time::Instant::now() + d)));
    }

    /// Back to healthy now.
    pub fn heal(&self) {
        self.set(None);
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    fn set(&self, m: Option<(Fault, tokio::time::Instant)>) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = m;
    }

    async fn gate(&self) -> StoreResult<()> {
        let mode = *self.mode.lock().unwrap_or_else(|p| p.into_inner());
        match mode {
            Some((fault, until)) if tokio::time::Instant::now() < until => match fault {
                Fault::Fail => Err(StoreError::backend(std::io::Error::other(
                    "injected store failure",
                ))),
                Fault::Stall(each) => {
                    tokio::time::sleep(each).await;
                    Ok(())
                }
            },
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    fn as_dyn(&self) -> &dyn Store {
        self
    }
    async fn items_reap_by_registry(
        &self,
        req: &ReapRequest,
        missed_intervals: u32,
        now: Timestamp,
    ) -> StoreResult<RecoveryStats> {
        self.gate().await?;
        self.inner
            .items_reap_by_registry(req, missed_intervals, now)
            .await
    }
    async fn items_release_dead_nodes(
        &self,
        req: &leasehold_core::DeadNodesRequest,
        now: Timestamp,
    ) -> StoreResult<Vec<leasehold_core::ReleasedNode>> {
        self.gate().await?;
        self.inner.items_release_dead_nodes(req, now).await
    }

    async fn items_enqueue(&self, items: Vec<NewItem>, now: Timestamp) -> StoreResult<Vec<ItemId>> {
        self.gate().await?;
        self.inner.items_enqueue(items, now).await
    }
    async fn items_acquire(
        &self,
        req: &AcquireRequest,
        now: Timestamp,
    ) -> StoreResult<Vec<Leased>> {
        self.gate().await?;
        let leased = self.inner.items_acquire(req, now).await?;
        let _ = self
            .acquisitions
            .send((std::time::Instant::now(), leased.len()));
        Ok(leased)
    }
    async fn lease_renew(
        &self,
        lease: &LeaseRef,
        d: Duration,
        now: Timestamp,
    ) -> StoreResult<Timestamp> {
        self.gate().await?;
        let expires_at = self.inner.lease_renew(lease, d, now).await?;
        let _ = self.renewals.send((lease.clone(), expires_at));
        Ok(expires_at)
    }
    async fn leases_renew_owner(
        &self,
        owner: &str,
        d: Duration,
        now: Timestamp,
    ) -> StoreResult<u64> {
        self.gate().await?;
        self.inner.leases_renew_owner(owner, d, now).await
    }
    async fn item_complete(
        &self,
        lease: &LeaseRef,
        output: Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.gate().await?;
        self.inner.item_complete(lease, output, now).await
    }
    async fn item_complete_with_follow_ups(
        &self,
        lease: &LeaseRef,
        output: Value,
        follow_ups: Vec<NewItem>,
        now: Timestamp,
    ) -> StoreResult<Vec<ItemId>> {
        self.gate().await?;
        self.inner
            .item_complete_with_follow_ups(lease, output, follow_ups, now)
            .await
    }
    async fn item_fail(
        &self,
        lease: &LeaseRef,
        error: &str,
        d: FailDisposition,
        now: Timestamp,
    ) -> StoreResult<FailOutcome> {
        self.gate().await?;
        self.inner.item_fail(lease, error, d, now).await
    }
    async fn item_release(
        &self,
        lease: &LeaseRef,
        max_releases: Option<u32>,
        now: Timestamp,
    ) -> StoreResult<ReleaseOutcome> {
        self.gate().await?;
        self.inner.item_release(lease, max_releases, now).await
    }
    async fn items_cancel(
        &self,
        target: &ItemSelector,
        dry_run: bool,
        now: Timestamp,
    ) -> StoreResult<ActionReport> {
        self.gate().await?;
        self.inner.items_cancel(target, dry_run, now).await
    }
    async fn item_cancel_confirm(&self, lease: &LeaseRef, now: Timestamp) -> StoreResult<()> {
        self.gate().await?;
        self.inner.item_cancel_confirm(lease, now).await
    }
    async fn items_retry(&self, req: &RetryRequest, now: Timestamp) -> StoreResult<ActionReport> {
        self.gate().await?;
        self.inner.items_retry(req, now).await
    }
    async fn items_delete(
        &self,
        target: &ItemSelector,
        dry_run: bool,
    ) -> StoreResult<ActionReport> {
        self.gate().await?;
        self.inner.items_delete(target, dry_run).await
    }
    async fn kind_pause(&self, kind: &str, now: Timestamp) -> StoreResult<bool> {
        self.gate().await?;
        self.inner.kind_pause(kind, now).await
    }
    async fn kind_resume(&self, kind: &str) -> StoreResult<bool> {
        self.gate().await?;
        self.inner.kind_resume(kind).await
    }
    async fn kinds_paused(&self) -> StoreResult<Vec<PausedKind>> {
        self.gate().await?;
        self.inner.kinds_paused().await
    }
    async fn schedule_upsert(
        &self,
        spec: &ScheduleSpec,
        now: Timestamp,
    ) -> StoreResult<ScheduleRecord> {
        self.gate().await?;
        self.inner.schedule_upsert(spec, now).await
    }
    async fn schedule_claim(
        &self,
        claim: &ScheduleClaim,
        now: Timestamp,
    ) -> StoreResult<Option<Vec<ItemId>>> {
        self.gate().await?;
        self.inner.schedule_claim(claim, now).await
    }
    async fn schedules_list(&self) -> StoreResult<Vec<ScheduleRecord>> {
        self.gate().await?;
        self.inner.schedules_list().await
    }
    async fn item_attempts(&self, id: ItemId) -> StoreResult<Vec<Attempt>> {
        self.gate().await?;
        self.inner.item_attempts(id).await
    }
    async fn item_dependencies(&self, id: ItemId) -> StoreResult<Vec<Dependency>> {
        self.gate().await?;
        self.inner.item_dependencies(id).await
    }
    async fn item_park(
        &self,
        lease: &LeaseRef,
        request: &DecisionRequest,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.gate().await?;
        self.inner.item_park(lease, request, now).await
    }
    async fn item_decide(&self, id: ItemId, answer: &str, now: Timestamp) -> StoreResult<Item> {
        self.gate().await?;
        self.inner.item_decide(id, answer, now).await
    }
    async fn item_progress(
        &self,
        lease: &LeaseRef,
        progress: Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.gate().await?;
        self.inner.item_progress(lease, progress, now).await
    }
    async fn checkpoint_save(
        &self,
        lease: &LeaseRef,
        name: &str,
        payload: Value,
        now: Timestamp,
    ) -> StoreResult<i64> {
        self.gate().await?;
        self.inner.checkpoint_save(lease, name, payload, now).await
    }
    async fn checkpoints_list(&self, item: ItemId) -> StoreResult<Vec<Checkpoint>> {
        self.gate().await?;
        self.inner.checkpoints_list(item).await
    }
    async fn lease_status(&self, id: ItemId, now: Timestamp) -> StoreResult<LeaseStatus> {
        self.gate().await?;
        self.inner.lease_status(id, now).await
    }
    async fn leases_of_owner(&self, owner: &str) -> StoreResult<Vec<Item>> {
        self.gate().await?;
        self.inner.leases_of_owner(owner).await
    }
    async fn item_get(&self, id: ItemId) -> StoreResult<Option<Item>> {
        self.gate().await?;
        self.inner.item_get(id).await
    }
    async fn items_count(&self) -> StoreResult<StatusCounts> {
        self.gate().await?;
        self.inner.items_count().await
    }
    async fn items_list(&self, filter: &ItemFilter) -> StoreResult<Vec<Item>> {
        self.gate().await?;
        self.inner.items_list(filter).await
    }
    async fn items_reap_expired(
        &self,
        req: &ReapRequest,
        liveness: &dyn LivenessCheck,
        now: Timestamp,
    ) -> StoreResult<RecoveryStats> {
        self.gate().await?;
        self.inner.items_reap_expired(req, liveness, now).await
    }
    async fn items_recover_owner(
        &self,
        owner: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<RecoveredItem>> {
        self.gate().await?;
        self.inner.items_recover_owner(owner, now).await
    }
    async fn items_recover_node(
        &self,
        node_id: &str,
        incarnation: i64,
        heartbeat_before: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Vec<RecoveredItem>> {
        self.gate().await?;
        self.inner
            .items_recover_node(node_id, incarnation, heartbeat_before, now)
            .await
    }
    async fn node_register(
        &self,
        node: &NodeRecord,
        missed_intervals: u32,
        now: Timestamp,
    ) -> StoreResult<NodeClaim> {
        if !self
            .registration_spared
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.gate().await?;
        }
        self.inner.node_register(node, missed_intervals, now).await
    }
    async fn node_heartbeat(&self, node: &NodeRecord) -> StoreResult<()> {
        self.gate().await?;
        self.inner.node_heartbeat(node).await
    }
    async fn node_stop(&self, node_id: &str, incarnation: i64, now: Timestamp) -> StoreResult<()> {
        self.gate().await?;
        self.inner.node_stop(node_id, incarnation, now).await
    }
    async fn node_get(&self, node_id: &str) -> StoreResult<Option<NodeRecord>> {
        self.gate().await?;
        self.inner.node_get(node_id).await
    }
    async fn nodes_list(&self) -> StoreResult<Vec<NodeRecord>> {
        self.gate().await?;
        self.inner.nodes_list().await
    }
    async fn items_depth_by_kind(&self) -> StoreResult<Vec<KindDepth>> {
        self.gate().await?;
        self.inner.items_depth_by_kind().await
    }
    async fn items_finished_since(
        &self,
        since: Timestamp,
        bucket: Duration,
    ) -> StoreResult<Vec<FinishedBucket>> {
        self.gate().await?;
        self.inner.items_finished_since(since, bucket).await
    }
    async fn items_recently_finished(
        &self,
        status: ItemStatus,
        limit: u32,
    ) -> StoreResult<Vec<Item>> {
        self.gate().await?;
        self.inner.items_recently_finished(status, limit).await
    }
    async fn cleanup(&self, req: &CleanupRequest) -> StoreResult<CleanupReport> {
        self.gate().await?;
        self.inner.cleanup(req).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.gate().await?;
        self.inner.ping().await
    }
    /// The wrapped store's wake-ups, ungated: they are asked for once, when a node starts, and
    /// the injected faults are about the calls that follow.
    async fn wakeups(&self) -> StoreResult<Option<Box<dyn leasehold_core::store::Wakeups>>> {
        self.inner.wakeups().await
    }

    async fn clock_sync(&self) -> StoreResult<Option<Arc<dyn leasehold_core::SharedClock>>> {
        self.inner.clock_sync().await
    }
}
