//! The suite is not vacuous: run against deliberately broken stores (the SQLite store wrapped
//! so that it breaks one rule), the cases that guard that rule, and the model, must fail.
//!
//! - [`Zombie`] completes by item id alone when the holder's lease is gone — the bug River,
//!   Oban and graphile-worker had (invariant 3).
//! - [`Deaf`] sweeps without asking owners, as a time-only rescuer does (invariant 5).
//! - [`Grabby`] lets the monitor's take-back seize items whose worker still renews them.
//! - [`Impostor`] lets a node start under an id a live incarnation holds.
//! - [`Duplicator`] ignores unique keys, as a queue without them does.
//! - [`Unbounded`] ignores the release limit, so an item that always outlasts the drain
//!   timeout is released forever without spending its budget (invariant 4).
//! - [`Piecemeal`] applies an operator's action to each listed item on its own, so a call
//!   refused for one item still changes the others.
//! - [`Heedless`] remembers a pause without storing it: acquisition goes on taking the kind.
//! - [`Unfenced`] parks an item for a holder whose lease was taken over.
//! - [`Pushover`] answers a decision with an answer the question does not accept.
//! - [`Greedy`] claims a schedule's tick by reading the row and then writing, unconditionally,
//!   so a slow claimer enqueues a tick another node already won.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use leasehold_conformance::{cases, model};
use leasehold_core::{
    AcquireRequest, ActionReport, Attempt, Checkpoint, CleanupReport, CleanupRequest,
    DecisionRequest, Dependency, FailDisposition, FailOutcome, FinishedBucket, Item, ItemFilter,
    ItemId, ItemSelector, ItemStatus, KindDepth, LeaseRef, LeaseStatus, Leased, LivenessCheck,
    NewItem, NoLiveness, NodeClaim, NodeRecord, PausedKind, ReapRequest, RecoveredItem,
    RecoveryStats, ReleaseOutcome, RetryRequest, ScheduleClaim, ScheduleRecord, ScheduleSpec,
    StatusCounts, Store, StoreError, StoreResult, Timestamp,
};
use leasehold_sqlite::SqliteStore;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::Value;

/// Which rule the wrapper breaks.
#[derive(Debug, Clone, Copy)]
enum Flaw {
    /// `item_complete` (and `item_complete_with_follow_ups`) with a lost lease completes the
    /// item under its current lease.
    Zombie,
    /// `items_reap_expired` ignores the liveness check it is given.
    Deaf,
    /// `items_recover_node` takes items whose own heartbeat is fresh.
    Grabby,
    /// `node_register` claims a node id whatever its live incarnation says.
    Impostor,
    /// `item_release` ignores its release limit: every release gives its attempt back.
    Unbounded,
    /// `items_enqueue` ignores unique keys: every enqueue adds an item.
    Duplicator,
    /// `items_retry`/`items_cancel`/`items_delete` by ids apply item by item, skipping refusals.
    Piecemeal,
    /// `kind_pause` is answered from memory and never reaches the store.
    Heedless,
    /// `item_park` with a lost lease parks the item under its current lease.
    Unfenced,
    /// `item_decide` with an answer not allowed resumes the item with the first allowed one.
    Pushover,
    /// `items_enqueue` drops every item's dependencies: it is ready at once.
    Impatient,
    /// `schedule_claim` claims whatever tick the row holds now, not the one the claimer read.
    Greedy,
}

#[derive(Debug)]
struct Mutant {
    inner: SqliteStore,
    flaw: Flaw,
    /// [`Flaw::Heedless`]'s paused kinds.
    paused: std::sync::Mutex<Vec<PausedKind>>,
    _dir: Arc<tempfile::TempDir>,
}

async fn mutant(flaw: Flaw) -> Arc<dyn Store> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let inner = SqliteStore::open(dir.path().join("mutant.db"))
        .await
        .expect("open");
    Arc::new(Mutant {
        inner,
        flaw,
        paused: std::sync::Mutex::default(),
        _dir: Arc::new(dir),
    })
}

#[async_trait]
impl Store for Mutant {
    fn as_dyn(&self) -> &dyn Store {
        self
    }

    async fn items_enqueue(
        &self,
        mut items: Vec<NewItem>,
        now: Timestamp,
    ) -> StoreResult<Vec<ItemId>> {
        if matches!(self.flaw, Flaw::Duplicator) {
            for item in &mut items {
                item.unique_key = None;
            }
        }
        if matches!(self.flaw, Flaw::Impatient) {
            for item in &mut items {
                item.depends_on.clear();
            }
        }
        self.inner.items_enqueue(items, now).await
    }
    async fn items_acquire(
        &self,
        req: &AcquireRequest,
        now: Timestamp,
    ) -> StoreResult<Vec<Leased>> {
        self.inner.items_acquire(req, now).await
    }
    async fn lease_renew(
        &self,
        l: &LeaseRef,
        d: Duration,
        now: Timestamp,
    ) -> StoreResult<Timestamp> {
        self.inner.lease_renew(l, d, now).await
    }
    async fn leases_renew_owner(&self, o: &str, d: Duration, now: Timestamp) -> StoreResult<u64> {
        self.inner.leases_renew_owner(o, d, now).await
    }
    async fn item_complete(
        &self,
        lease: &LeaseRef,
        output: Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        match self.inner.item_complete(lease, output.clone(), now).await {
            Err(e) if e.is_lease_lost() && matches!(self.flaw, Flaw::Zombie) => {
                match self
                    .inner
                    .item_get(lease.item)
                    .await?
                    .and_then(|i| i.lease())
                {
                    Some(current) => self.inner.item_complete(&current, output, now).await,
                    None => Err(e),
                }
            }
            other => other,
        }
    }
    async fn item_complete_with_follow_ups(
        &self,
        lease: &LeaseRef,
        output: Value,
        follow_ups: Vec<NewItem>,
        now: Timestamp,
    ) -> StoreResult<Vec<ItemId>> {
        match self
            .inner
            .item_complete_with_follow_ups(lease, output.clone(), follow_ups.clone(), now)
            .await
        {
            Err(e) if e.is_lease_lost() && matches!(self.flaw, Flaw::Zombie) => {
                match self
                    .inner
                    .item_get(lease.item)
                    .await?
                    .and_then(|i| i.lease())
                {
                    Some(current) => {
                        self.inner
                            .item_complete_with_follow_ups(&current, output, follow_ups, now)
                            .await
                    }
                    None => Err(e),
                }
            }
            other => other,
        }
    }
    async fn item_fail(
        &self,
        l: &LeaseRef,
        error: &str,
        d: FailDisposition,
        now: Timestamp,
    ) -> StoreResult<FailOutcome> {
        self.inner.item_fail(l, error, d, now).await
    }
    async fn item_release(
        &self,
        l: &LeaseRef,
        max_releases: Option<u32>,
        now: Timestamp,
    ) -> StoreResult<ReleaseOutcome> {
        let limit = match self.flaw {
            Flaw::Unbounded => None,
            _ => max_releases,
        };
        self.inner.item_release(l, limit, now).await
    }
    async fn items_cancel(
        &self,
        target: &ItemSelector,
        dry_run: bool,
        now: Timestamp,
    ) -> StoreResult<ActionReport> {
        if let (Flaw::Piecemeal, ItemSelector::Ids(ids)) = (self.flaw, target) {
            for id in ids {
                let _ = self
                    .inner
                    .items_cancel(&ItemSelector::Ids(vec![*id]), dry_run, now)
                    .await;
            }
        }
        self.inner.items_cancel(target, dry_run, now).await
    }
    async fn item_cancel_confirm(&self, lease: &LeaseRef, now: Timestamp) -> StoreResult<()> {
        self.inner.item_cancel_confirm(lease, now).await
    }
    async fn items_retry(&self, req: &RetryRequest, now: Timestamp) -> StoreResult<ActionReport> {
        if let (Flaw::Piecemeal, ItemSelector::Ids(ids)) = (self.flaw, &req.target) {
            for id in ids {
                let one = RetryRequest {
                    target: ItemSelector::Ids(vec![*id]),
                    ..req.clone()
                };
                let _ = self.inner.items_retry(&one, now).await;
            }
        }
        self.inner.items_retry(req, now).await
    }
    async fn items_delete(
        &self,
        target: &ItemSelector,
        dry_run: bool,
    ) -> StoreResult<ActionReport> {
        self.inner.items_delete(target, dry_run).await
    }
    async fn kind_pause(&self, kind: &str, now: Timestamp) -> StoreResult<bool> {
        if matches!(self.flaw, Flaw::Heedless) && !kind.is_empty() {
            let mut paused = self.paused.lock().expect("paused kinds");
            if paused.iter().any(|p| p.kind == kind) {
                return Ok(false);
            }
            paused.push(PausedKind {
                kind: kind.to_owned(),
                paused_at: now,
            });
            return Ok(true);
        }
        self.inner.kind_pause(kind, now).await
    }
    async fn kind_resume(&self, kind: &str) -> StoreResult<bool> {
        if matches!(self.flaw, Flaw::Heedless) {
            let mut paused = self.paused.lock().expect("paused kinds");
            let before = paused.len();
            paused.retain(|p| p.kind != kind);
            return Ok(paused.len() < before);
        }
        self.inner.kind_resume(kind).await
    }
    async fn kinds_paused(&self) -> StoreResult<Vec<PausedKind>> {
        if matches!(self.flaw, Flaw::Heedless) {
            return Ok(self.paused.lock().expect("paused kinds").clone());
        }
        self.inner.kinds_paused().await
    }
    async fn schedule_upsert(
        &self,
        spec: &ScheduleSpec,
        now: Timestamp,
    ) -> StoreResult<ScheduleRecord> {
        self.inner.schedule_upsert(spec, now).await
    }
    async fn schedule_claim(
        &self,
        claim: &ScheduleClaim,
        now: Timestamp,
    ) -> StoreResult<Option<Vec<ItemId>>> {
        if matches!(self.flaw, Flaw::Greedy) {
            // Read, then write: the row's current tick, whatever the claimer read.
            let rows = self.inner.schedules_list().await?;
            if let Some(row) = rows.iter().find(|r| r.name == claim.name) {
                let mut claim = claim.clone();
                let step = claim.next.0 - claim.due.0;
                claim.due = row.next_run_at;
                claim.last_tick = row.next_run_at;
                claim.next = Timestamp(row.next_run_at.0 + step.max(1));
                return self.inner.schedule_claim(&claim, now).await;
            }
        }
        self.inner.schedule_claim(claim, now).await
    }
    async fn schedules_list(&self) -> StoreResult<Vec<ScheduleRecord>> {
        self.inner.schedules_list().await
    }
    async fn item_attempts(&self, id: ItemId) -> StoreResult<Vec<Attempt>> {
        self.inner.item_attempts(id).await
    }
    async fn item_dependencies(&self, id: ItemId) -> StoreResult<Vec<Dependency>> {
        self.inner.item_dependencies(id).await
    }
    async fn item_park(
        &self,
        lease: &LeaseRef,
        request: &DecisionRequest,
        now: Timestamp,
    ) -> StoreResult<()> {
        match self.inner.item_park(lease, request, now).await {
            Err(e) if e.is_lease_lost() && matches!(self.flaw, Flaw::Unfenced) => {
                match self
                    .inner
                    .item_get(lease.item)
                    .await?
                    .and_then(|i| i.lease())
                {
                    Some(current) => self.inner.item_park(&current, request, now).await,
                    None => Err(e),
                }
            }
            other => other,
        }
    }
    async fn item_decide(&self, id: ItemId, answer: &str, now: Timestamp) -> StoreResult<Item> {
        match self.inner.item_decide(id, answer, now).await {
            Err(StoreError::InvalidInput(why)) if matches!(self.flaw, Flaw::Pushover) => {
                let first = self
                    .inner
                    .item_get(id)
                    .await?
                    .and_then(|i| i.decision)
                    .and_then(|d| d.answers.into_iter().next());
                match first {
                    Some(a) => self.inner.item_decide(id, &a, now).await,
                    None => Err(StoreError::InvalidInput(why)),
                }
            }
            other => other,
        }
    }
    async fn item_progress(&self, l: &LeaseRef, p: Value, now: Timestamp) -> StoreResult<()> {
        self.inner.item_progress(l, p, now).await
    }
    async fn checkpoint_save(
        &self,
        l: &LeaseRef,
        name: &str,
        p: Value,
        now: Timestamp,
    ) -> StoreResult<i64> {
        self.inner.checkpoint_save(l, name, p, now).await
    }
    async fn checkpoints_list(&self, item: ItemId) -> StoreResult<Vec<Checkpoint>> {
        self.inner.checkpoints_list(item).await
    }
    async fn lease_status(&self, id: ItemId, now: Timestamp) -> StoreResult<LeaseStatus> {
        self.inner.lease_status(id, now).await
    }
    async fn leases_of_owner(&self, owner: &str) -> StoreResult<Vec<Item>> {
        self.inner.leases_of_owner(owner).await
    }
    async fn item_get(&self, id: ItemId) -> StoreResult<Option<Item>> {
        self.inner.item_get(id).await
    }
    async fn items_count(&self) -> StoreResult<StatusCounts> {
        self.inner.items_count().await
    }
    async fn items_list(&self, f: &ItemFilter) -> StoreResult<Vec<Item>> {
        self.inner.items_list(f).await
    }
    async fn items_reap_expired(
        &self,
        req: &ReapRequest,
        liveness: &dyn LivenessCheck,
        now: Timestamp,
    ) -> StoreResult<RecoveryStats> {
        match self.flaw {
            Flaw::Deaf => self.inner.items_reap_expired(req, &NoLiveness, now).await,
            _ => self.inner.items_reap_expired(req, liveness, now).await,
        }
    }
    async fn items_recover_owner(
        &self,
        o: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<RecoveredItem>> {
        self.inner.items_recover_owner(o, now).await
    }
    async fn items_recover_node(
        &self,
        id: &str,
        inc: i64,
        heartbeat_before: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Vec<RecoveredItem>> {
        let heartbeat_before = match self.flaw {
            // Every item of the incarnation counts as silent, renewed or not.
            Flaw::Grabby => Timestamp(i64::MAX),
            _ => heartbeat_before,
        };
        self.inner
            .items_recover_node(id, inc, heartbeat_before, now)
            .await
    }
    async fn node_register(
        &self,
        n: &NodeRecord,
        missed: u32,
        now: Timestamp,
    ) -> StoreResult<NodeClaim> {
        match self.flaw {
            // Judges every existing row dead, as a start without the check would.
            Flaw::Impostor => {
                self.inner
                    .node_register(n, missed, Timestamp(i64::MAX))
                    .await
            }
            _ => self.inner.node_register(n, missed, now).await,
        }
    }
    async fn node_heartbeat(&self, n: &NodeRecord) -> StoreResult<()> {
        self.inner.node_heartbeat(n).await
    }
    async fn node_stop(&self, id: &str, inc: i64, now: Timestamp) -> StoreResult<()> {
        self.inner.node_stop(id, inc, now).await
    }
    async fn node_get(&self, id: &str) -> StoreResult<Option<NodeRecord>> {
        self.inner.node_get(id).await
    }
    async fn nodes_list(&self) -> StoreResult<Vec<NodeRecord>> {
        self.inner.nodes_list().await
    }
    async fn items_depth_by_kind(&self) -> StoreResult<Vec<KindDepth>> {
        self.inner.items_depth_by_kind().await
    }
    async fn items_finished_since(
        &self,
        since: Timestamp,
        bucket: Duration,
    ) -> StoreResult<Vec<FinishedBucket>> {
        self.inner.items_finished_since(since, bucket).await
    }
    async fn items_recently_finished(
        &self,
        status: ItemStatus,
        limit: u32,
    ) -> StoreResult<Vec<Item>> {
        self.inner.items_recently_finished(status, limit).await
    }
    async fn cleanup(&self, req: &CleanupRequest) -> StoreResult<CleanupReport> {
        self.inner.cleanup(req).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

/// Whether `case` panics (fails) against a fresh mutant with `flaw`.
async fn fails<F, Fut>(flaw: Flaw, case: F) -> bool
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let store = mutant(flaw).await;
    AssertUnwindSafe(case(store)).catch_unwind().await.is_err()
}

/// Whether the model finds the flaw in some generated history.
fn model_finds(flaw: Flaw) -> bool {
    let mut runner = TestRunner::new(model::config());
    runner
        .run(&model::ops(), |ops| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime
                .block_on(async { model::run(mutant(flaw).await, &ops).await })
                .map(|_| ())
                .map_err(TestCaseError::fail)
        })
        .is_err()
}

#[tokio::test]
async fn fencing_cases_catch_a_store_that_lets_a_zombie_complete() {
    assert!(fails(Flaw::Zombie, cases::zombie_cannot_complete_after_takeover).await);
    assert!(
        fails(
            Flaw::Zombie,
            cases::stale_epoch_after_reap_and_takeover_cannot_write
        )
        .await
    );
    assert!(
        fails(
            Flaw::Zombie,
            cases::wrong_owner_with_the_current_epoch_cannot_write
        )
        .await
    );
    assert!(
        !fails(Flaw::Zombie, cases::lease_lifecycle_acquire_renew_complete).await,
        "a case that never writes with a lost lease passes on this mutant"
    );
}

#[tokio::test]
async fn reaper_cases_catch_a_store_that_does_not_ask_liveness() {
    assert!(
        fails(
            Flaw::Deaf,
            cases::reap_keeps_an_expired_lease_whose_owner_is_alive
        )
        .await
    );
    assert!(fails(Flaw::Deaf, cases::reap_renewal_between_scan_and_write_wins).await);
    assert!(
        fails(
            Flaw::Deaf,
            cases::reap_with_registry_liveness_spares_live_nodes_and_requeues_dead_ones
        )
        .await
    );
}

#[tokio::test]
async fn follow_up_case_catches_a_store_that_lets_a_zombie_enqueue() {
    assert!(
        fails(
            Flaw::Zombie,
            cases::zombie_completion_with_follow_ups_creates_nothing
        )
        .await
    );
    assert!(
        !fails(
            Flaw::Zombie,
            cases::follow_ups_are_enqueued_in_the_completions_commit
        )
        .await,
        "a case with no takeover passes on this mutant"
    );
}

#[tokio::test]
async fn unique_key_cases_catch_a_store_that_ignores_keys() {
    assert!(
        fails(
            Flaw::Duplicator,
            cases::unique_key_returns_the_open_items_id_and_is_freed_when_it_finishes
        )
        .await
    );
    assert!(
        fails(
            Flaw::Duplicator,
            cases::concurrent_enqueues_of_one_key_create_one_item
        )
        .await
    );
}

#[tokio::test]
async fn monitor_take_back_case_catches_a_store_that_takes_renewed_items() {
    assert!(
        fails(
            Flaw::Grabby,
            cases::recover_node_leaves_items_whose_own_heartbeat_is_fresh
        )
        .await
    );
    assert!(
        !fails(
            Flaw::Grabby,
            cases::recover_node_takes_back_only_that_incarnations_items
        )
        .await,
        "a case whose items are all silent passes on this mutant"
    );
}

#[tokio::test]
async fn registration_cases_catch_a_store_that_lets_an_id_be_claimed_twice() {
    assert!(
        fails(
            Flaw::Impostor,
            cases::node_register_refuses_a_live_incarnation_and_claims_a_dead_or_stopped_one
        )
        .await
    );
    assert!(
        fails(
            Flaw::Impostor,
            cases::concurrent_node_registrations_of_one_id_let_exactly_one_through
        )
        .await
    );
    assert!(
        !fails(
            Flaw::Impostor,
            cases::node_register_incarnation_grows_when_the_clock_steps_back
        )
        .await,
        "a case of stopped rows only passes on this mutant"
    );
}

#[tokio::test]
async fn release_cases_catch_a_store_that_ignores_the_release_limit() {
    assert!(
        fails(
            Flaw::Unbounded,
            cases::releases_past_the_limit_count_attempts_and_dead_letter_when_spent
        )
        .await
    );
    assert!(
        !fails(Flaw::Unbounded, cases::release_does_not_count_an_attempt).await,
        "an unlimited release passes the case that sets no limit"
    );
}

#[tokio::test]
async fn action_cases_catch_a_store_that_applies_part_of_a_refused_call() {
    assert!(
        fails(
            Flaw::Piecemeal,
            cases::actions_refuse_a_wrong_state_or_bad_selector_and_change_nothing
        )
        .await
    );
    assert!(
        !fails(
            Flaw::Piecemeal,
            cases::pause_skips_a_kind_on_every_acquisition_until_resumed
        )
        .await,
        "a case without a refused action passes on this mutant"
    );
}

#[tokio::test]
async fn pause_case_catches_a_store_that_does_not_store_a_pause() {
    assert!(
        fails(
            Flaw::Heedless,
            cases::pause_skips_a_kind_on_every_acquisition_until_resumed
        )
        .await
    );
    assert!(
        !fails(
            Flaw::Heedless,
            cases::retry_returns_failed_and_cancelled_items_to_pending_with_a_fresh_budget
        )
        .await
    );
}

#[tokio::test]
async fn decision_cases_catch_an_unfenced_park_and_a_pushover_decision() {
    assert!(
        fails(
            Flaw::Unfenced,
            cases::park_is_fenced_and_refuses_an_invalid_question
        )
        .await
    );
    assert!(
        !fails(
            Flaw::Unfenced,
            cases::park_then_decide_resumes_the_item_with_the_answer
        )
        .await,
        "a case with one holder passes on this mutant"
    );
    assert!(
        fails(
            Flaw::Pushover,
            cases::decide_refuses_an_item_not_parked_and_an_answer_not_allowed
        )
        .await
    );
    assert!(
        !fails(
            Flaw::Pushover,
            cases::park_then_decide_resumes_the_item_with_the_answer
        )
        .await,
        "a case that gives only allowed answers passes on this mutant"
    );
}

#[tokio::test]
async fn dependency_cases_catch_a_store_that_ignores_dependencies() {
    assert!(
        fails(
            Flaw::Impatient,
            cases::dependant_of_many_is_released_by_the_last_completion
        )
        .await
    );
    assert!(
        fails(
            Flaw::Impatient,
            cases::failed_dependency_cancels_its_dependants_transitively
        )
        .await
    );
    assert!(
        !fails(
            Flaw::Impatient,
            cases::follow_ups_are_enqueued_in_the_completions_commit
        )
        .await,
        "a case without dependencies passes on this mutant"
    );
}

#[tokio::test]
async fn schedule_claim_case_catches_a_store_that_claims_without_the_condition() {
    assert!(
        fails(
            Flaw::Greedy,
            cases::schedule_claim_lets_one_claimer_win_each_tick
        )
        .await
    );
    assert!(
        !fails(
            Flaw::Greedy,
            cases::schedule_upsert_keeps_the_next_run_unless_the_expression_changed
        )
        .await,
        "a case without a claim passes on this mutant"
    );
}

#[test]
fn the_model_catches_both_mutants() {
    assert!(
        model_finds(Flaw::Zombie),
        "the model missed the zombie completion"
    );
    assert!(model_finds(Flaw::Deaf), "the model missed the deaf reaper");
}
