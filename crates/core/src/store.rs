//! The [`Store`] trait: the lease protocol every backend implements, and the reaper's
//! [`LivenessCheck`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::action::{ActionReport, ItemSelector, PausedKind, RetryRequest};
use crate::activity::{FinishedBucket, KindDepth};
use crate::clock::{SharedClock, Timestamp};
use crate::decision::DecisionRequest;
use crate::emergency::{DeadNodesRequest, ReleasedNode};
use crate::error::StoreResult;
use crate::history::Attempt;
use crate::item::{
    AcquireRequest, Checkpoint, Dependency, FailDisposition, FailOutcome, Item, ItemFilter, ItemId,
    LeaseRef, LeaseStatus, Leased, NewItem, RecoveredItem, ReleaseOutcome, StatusCounts,
};
use crate::registry::{CleanupReport, CleanupRequest, NodeClaim, NodeRecord};
use crate::schedule::{ScheduleClaim, ScheduleRecord, ScheduleSpec};

/// The durable store: items, leases, checkpoints and the worker registry.
///
/// Backend-agnostic and object-safe (`Arc<dyn Store>`): no backend type appears here. Every
/// operation takes `now` from the caller's [`Clock`](crate::Clock), so tests move time without
/// sleeping (a backend whose database keeps its own clock may document that it uses that one).
///
/// Every write by a lease holder takes a [`LeaseRef`] and is applied only if the item is still
/// `in_progress` under that owner and epoch; otherwise it returns
/// [`StoreError::LeaseLost`](crate::StoreError::LeaseLost) and changes nothing.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Enqueues items in one transaction and returns their ids in order. All or nothing: one
    /// invalid item refuses the whole batch with `InvalidInput`.
    ///
    /// An item with dependencies ([`NewItem::after`]) is enqueued `blocked` while any of them
    /// has not completed (already completed ones count as done), and `cancelled` at once, with
    /// the error a later failure would give, if one of them has already failed or been
    /// cancelled. A dependency id that names no item at the moment its dependant is inserted
    /// (an unknown id, or an item later in the same batch) refuses the batch with
    /// `InvalidInput` naming the id. The store releases a blocked item (`pending`, ready now)
    /// in the transaction that completes its last dependency, and cancels it, transitively,
    /// in the transaction that fails or cancels one ("dependency N failed: …", "dependency N
    /// was cancelled"), whichever operation does it.
    async fn items_enqueue(&self, items: Vec<NewItem>, now: Timestamp) -> StoreResult<Vec<ItemId>>;

    /// Enqueues one item.
    async fn item_enqueue(&self, item: NewItem, now: Timestamp) -> StoreResult<ItemId> {
        let ids = self.items_enqueue(vec![item], now).await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| crate::StoreError::Corrupt("enqueue returned no id".into()))
    }

    /// Atomically leases up to `req.limit` ready pending items (`run_at <= now`), in order of
    /// priority (higher first), then `run_at`, then id, in one transaction. Each acquisition
    /// increments `epoch` and `attempts` and sets the lease expiry, heartbeat and
    /// `started_at`. Items of a paused kind ([`kind_pause`](Self::kind_pause)) are skipped.
    async fn items_acquire(&self, req: &AcquireRequest, now: Timestamp)
        -> StoreResult<Vec<Leased>>;

    /// Leases the next ready item, if any (`req.limit` is ignored).
    #[doc(alias = "acquire_lease")]
    async fn item_acquire(
        &self,
        req: &AcquireRequest,
        now: Timestamp,
    ) -> StoreResult<Option<Leased>> {
        let mut one = req.clone();
        one.limit = 1;
        Ok(self.items_acquire(&one, now).await?.into_iter().next())
    }

    /// Extends a lease to `now + duration`; returns the new expiry. An item marked for
    /// cancellation is not renewed: [`StoreError::CancelRequested`](crate::StoreError), and
    /// nothing changes.
    #[doc(alias = "renew_lease")]
    async fn lease_renew(
        &self,
        lease: &LeaseRef,
        duration: Duration,
        now: Timestamp,
    ) -> StoreResult<Timestamp>;

    /// Extends every lease `owner` holds, in one statement; returns how many.
    async fn leases_renew_owner(
        &self,
        owner: &str,
        duration: Duration,
        now: Timestamp,
    ) -> StoreResult<u64>;

    /// Completes the item with its output.
    async fn item_complete(
        &self,
        lease: &LeaseRef,
        output: Value,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Completes the item with its output and enqueues `follow_ups` in the same transaction,
    /// returning their ids in order: the follow-ups exist if and only if the completion
    /// committed. A holder whose lease was lost gets `LeaseLost` and nothing is written (a
    /// zombie's follow-ups never appear); an invalid follow-up is `InvalidInput` naming it, and
    /// the item stays in progress. With no follow-ups this is
    /// [`item_complete`](Self::item_complete).
    async fn item_complete_with_follow_ups(
        &self,
        lease: &LeaseRef,
        output: Value,
        follow_ups: Vec<NewItem>,
        now: Timestamp,
    ) -> StoreResult<Vec<ItemId>>;

    /// Records a failure. `Retry` puts the item back to pending at `now + delay` unless its
    /// attempts are spent; `Permanent` (or a spent budget) dead-letters it with `error` kept.
    async fn item_fail(
        &self,
        lease: &LeaseRef,
        error: &str,
        disposition: FailDisposition,
        now: Timestamp,
    ) -> StoreResult<FailOutcome>;

    /// Gives the item back to pending, ready at `now` (a graceful stop whose drain timed out).
    ///
    /// With `max_releases: Some(n)` the release is counted in the item's `releases`; while
    /// that count (this release included) is at most `n` the attempt is given back, as a
    /// graceful stop is not the item's failure. Past it the attempt stays counted, so an item
    /// that always outlasts the drain timeout still spends its budget: when `attempts` has
    /// reached `max_attempts` it is dead-lettered, its error saying it was released too often.
    /// With `None` the release is neither counted nor limited (an item given back before its
    /// handler started).
    #[doc(alias = "release_lease")]
    async fn item_release(
        &self,
        lease: &LeaseRef,
        max_releases: Option<u32>,
        now: Timestamp,
    ) -> StoreResult<ReleaseOutcome>;

    /// Cancels one item as [`items_cancel`](Self::items_cancel) does: a pending, blocked or
    /// awaiting item becomes `cancelled`, an in-progress one is marked for cancellation; any
    /// other status is `InvalidState`.
    async fn item_cancel(&self, id: ItemId, now: Timestamp) -> StoreResult<()> {
        self.items_cancel(&ItemSelector::Ids(vec![id]), false, now)
            .await
            .map(|_| ())
    }

    /// An operator's cancel. A `pending`, `blocked` or `awaiting` item becomes `cancelled` at
    /// once (and its blocked dependants with it; an awaiting item keeps its question, and a
    /// later decision is refused). An `in_progress`
    /// item is marked for cancellation (`cancel_requested_at`) and stays leased: its holder's
    /// next renewal is refused with [`StoreError::CancelRequested`](crate::StoreError) and the
    /// holder ends the attempt with [`item_cancel_confirm`](Self::item_cancel_confirm); a
    /// failure of a marked item ends it `cancelled` rather than retried, and whoever takes a
    /// marked item back from a dead holder (reaper, `recover_mine`, monitor) cancels it instead
    /// of requeuing it. An item already marked is reported again and left as it is. Any other
    /// status refuses the whole call with `InvalidState` (see [`ItemSelector`]). With
    /// `dry_run` nothing changes and the same report comes back.
    async fn items_cancel(
        &self,
        target: &ItemSelector,
        dry_run: bool,
        now: Timestamp,
    ) -> StoreResult<ActionReport>;

    /// The holder's end of an attempt whose item was marked for cancellation: fenced like
    /// every holder write; the item becomes `cancelled` and the attempt is recorded as such.
    /// An item not marked is `InvalidState` (a holder never cancels on its own), and changes
    /// nothing.
    async fn item_cancel_confirm(&self, lease: &LeaseRef, now: Timestamp) -> StoreResult<()>;

    /// An operator's retry: `failed` or `cancelled` items back to `pending`, ready at `now`
    /// (or to `blocked`, an item with dependencies that have not all completed: it waits for
    /// them again), their attempt count (and release count) back to 0 and, with
    /// `req.max_attempts`, a new budget. Error, output and history are kept; the epoch stays (the next acquisition moves
    /// it on). Any other status refuses the whole call with `InvalidState` (see
    /// [`ItemSelector`]). With `req.dry_run` nothing changes and the same report comes back.
    async fn items_retry(&self, req: &RetryRequest, now: Timestamp) -> StoreResult<ActionReport>;

    /// Removes finished items (`completed`, `failed`, `cancelled`) with their checkpoints and
    /// attempt history. Any other status refuses the whole call with `InvalidState` (see
    /// [`ItemSelector`]). With `dry_run` nothing changes and the same report comes back.
    async fn items_delete(&self, target: &ItemSelector, dry_run: bool)
        -> StoreResult<ActionReport>;

    /// Pauses acquisition of `kind` on every node of the store (in-flight work finishes);
    /// returns whether it was not paused already. An empty kind is `InvalidInput`.
    async fn kind_pause(&self, kind: &str, now: Timestamp) -> StoreResult<bool>;

    /// Resumes acquisition of `kind`; returns whether it was paused.
    async fn kind_resume(&self, kind: &str) -> StoreResult<bool>;

    /// The paused kinds, by name.
    async fn kinds_paused(&self) -> StoreResult<Vec<PausedKind>>;

    /// Registers a schedule (a node does this at start for each of its schedules): inserts its
    /// row with `next_run_at = spec.first_run_at`, or updates an existing row's expression,
    /// kind, input and catch-up policy. An existing row keeps its `next_run_at` while its cron
    /// expression is unchanged (so ticks missed while no node ran are still due) and takes
    /// `spec.first_run_at` when the expression changed. Returns the row as stored. A spec that
    /// does not validate is `InvalidInput` and changes nothing.
    async fn schedule_upsert(
        &self,
        spec: &ScheduleSpec,
        now: Timestamp,
    ) -> StoreResult<ScheduleRecord>;

    /// Claims a schedule's due tick: in one transaction, moves the row's `next_run_at` from
    /// `claim.due` to `claim.next` (conditional on it still being `claim.due`) and enqueues
    /// `claim.items` as [`items_enqueue`](Self::items_enqueue) does. Returns their ids, or
    /// `None` when the row no longer has `claim.due` (another node won the tick, or the schedule
    /// is gone): then nothing is written. Exactly one claimer wins each tick, however many
    /// nodes race for it. A claim that does not validate is `InvalidInput` and changes nothing.
    async fn schedule_claim(
        &self,
        claim: &ScheduleClaim,
        now: Timestamp,
    ) -> StoreResult<Option<Vec<ItemId>>>;

    /// Every schedule, by name.
    async fn schedules_list(&self) -> StoreResult<Vec<ScheduleRecord>>;

    /// The item's ended attempts, oldest first: the last `history_keep` of them (a store
    /// option, default [`DEFAULT_HISTORY_KEEP`](crate::history::DEFAULT_HISTORY_KEEP)). Each
    /// record is written in the transaction that ended the attempt; a completed attempt's is
    /// the completed item itself (completion is final), read back as a record. An unknown id
    /// has none.
    #[doc(alias = "get_execution_history")]
    async fn item_attempts(&self, id: ItemId) -> StoreResult<Vec<Attempt>>;

    /// The items `id` was enqueued to wait for ([`NewItem::after`]), in id order, with their
    /// status and output: what a released item's handler reads. One query. An unknown id, or
    /// an item without dependencies, has none; a dependency deleted since (cleanup, an
    /// operator's delete) is no longer listed.
    async fn item_dependencies(&self, id: ItemId) -> StoreResult<Vec<Dependency>>;

    /// Parks the item until someone decides (fenced): `in_progress` under this lease →
    /// `awaiting`, holding no lease (owner and lease cleared, so it is neither acquired nor
    /// reaped), its attempt given back (waiting for a person is not a failure), with
    /// `request` stored as its open [`Decision`](crate::Decision). A request that does not
    /// validate is `InvalidInput` and changes nothing.
    async fn item_park(
        &self,
        lease: &LeaseRef,
        request: &DecisionRequest,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Answers an `awaiting` item's question: the item goes back to `pending`, ready at
    /// `now`, its [`Decision`](crate::Decision) answered and, when its input is a JSON object,
    /// the question and answer in its input under `"decision"`
    /// ([`Decision::merge_into`](crate::Decision::merge_into)). Returns the item as resumed.
    /// An item in any other status is `InvalidState` (naming it), an answer the question does
    /// not accept is `InvalidInput` (naming it); either changes nothing.
    async fn item_decide(&self, id: ItemId, answer: &str, now: Timestamp) -> StoreResult<Item>;

    /// Records the holder's progress report (fenced).
    async fn item_progress(
        &self,
        lease: &LeaseRef,
        progress: Value,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Saves a checkpoint payload for the item (fenced); returns the checkpoint's id.
    async fn checkpoint_save(
        &self,
        lease: &LeaseRef,
        name: &str,
        payload: Value,
        now: Timestamp,
    ) -> StoreResult<i64>;

    /// The item's checkpoints, oldest first.
    async fn checkpoints_list(&self, item: ItemId) -> StoreResult<Vec<Checkpoint>>;

    /// The lease on one item as of `now` (seed 000's `check_lease_status`).
    async fn lease_status(&self, id: ItemId, now: Timestamp) -> StoreResult<LeaseStatus>;

    /// The in-progress items `owner` holds (seed 000's `get_my_leases`).
    #[doc(alias = "get_my_leases")]
    async fn leases_of_owner(&self, owner: &str) -> StoreResult<Vec<Item>>;

    /// One item, if it exists.
    async fn item_get(&self, id: ItemId) -> StoreResult<Option<Item>>;

    /// Items by status.
    async fn items_count(&self) -> StoreResult<StatusCounts>;

    /// Items matching the filter, by id.
    async fn items_list(&self, filter: &ItemFilter) -> StoreResult<Vec<Item>>;

    /// The reaper's store side. Finds up to `req.batch` in-progress items whose lease expired
    /// (`lease_expires_at <= now`) or whose last heartbeat is older than `req.stale_after`; asks
    /// `liveness` about the owner of each expired one (items past the stale limit are taken
    /// whatever the owner says); requeues the others (bumping epoch) or dead-letters them when
    /// their attempts are spent. Each change is conditional on the item being unchanged since
    /// the scan, so an owner's renewal during the sweep wins. With `req.dry_run` nothing changes
    /// and the same statistics are reported.
    #[doc(alias = "reap_stale_tasks")]
    #[doc(alias = "scan_and_recover")]
    async fn items_reap_expired(
        &self,
        req: &ReapRequest,
        liveness: &dyn LivenessCheck,
        now: Timestamp,
    ) -> StoreResult<RecoveryStats>;

    /// `recover_mine`: requeues (bumping epoch) or dead-letters every in-progress item held by
    /// `owner`, whatever its lease says, and returns what it did. A worker runs this on every
    /// (re)start before it acquires anything.
    #[doc(alias = "recover_mine")]
    async fn items_recover_owner(
        &self,
        owner: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<RecoveredItem>>;

    /// Requeues (bumping epoch) or dead-letters every in-progress item held by any worker of
    /// node `node_id` at `incarnation` whose own last heartbeat is before `heartbeat_before`,
    /// whatever its lease says, and returns what it did. For a node incarnation the worker
    /// registry has declared dead: its items need not wait for their leases to run out. An item
    /// heartbeated since `heartbeat_before` is left alone — its worker is renewing it, whatever
    /// the registry row says (the row can lag). Items of other incarnations of the same node id
    /// are untouched.
    async fn items_recover_node(
        &self,
        node_id: &str,
        incarnation: i64,
        heartbeat_before: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Vec<RecoveredItem>>;

    /// One sweep of [`items_reap_expired`](Store::items_reap_expired) judging owners by the
    /// worker registry alone (as [`RegistryLiveness`] does, dead after `missed_intervals`
    /// missed heartbeats): the one-shot `leasehold reap`. The default runs that in Rust
    /// ([`emergency::reap_by_registry`](crate::emergency::reap_by_registry)); a backend with
    /// stored functions may run the same judgement there (PostgreSQL's
    /// `leasehold_reap_expired`), so that an operator with only SQL gets the same result.
    async fn items_reap_by_registry(
        &self,
        req: &ReapRequest,
        missed_intervals: u32,
        now: Timestamp,
    ) -> StoreResult<RecoveryStats> {
        crate::emergency::reap_by_registry(self.as_dyn(), req, missed_intervals, now).await
    }

    /// Takes back at once, without waiting for leases to expire, the items of every node
    /// incarnation the registry does not vouch for at `now` (dead, or stopped while still
    /// holding items; `req.exclude` is never judged) whose own last heartbeat is older than
    /// that row's window, through [`items_recover_node`](Store::items_recover_node): seed
    /// 002's `release_dead_worker_leases()`, `leasehold reap --dead-nodes` and the monitor's
    /// check. Reports every dead incarnation (even holding nothing) and every stopped one
    /// that held items. With `req.dry_run` nothing changes and the same report comes back.
    /// The default runs in Rust
    /// ([`emergency::release_dead_nodes`](crate::emergency::release_dead_nodes)); PostgreSQL
    /// calls its SQL function `leasehold_release_dead_nodes`.
    #[doc(alias = "release_dead_worker_leases")]
    async fn items_release_dead_nodes(
        &self,
        req: &DeadNodesRequest,
        now: Timestamp,
    ) -> StoreResult<Vec<ReleasedNode>> {
        crate::emergency::release_dead_nodes(self.as_dyn(), req, now).await
    }

    /// This store as a trait object (for the default methods that hand it on).
    fn as_dyn(&self) -> &dyn Store;

    /// Claims node `node.node_id`'s registry row for a new incarnation, check and write in one
    /// transaction, so two nodes starting at once under one id never both succeed. When the
    /// row shows a live incarnation (alive at `now` by [`NodeRecord::state`] with
    /// `missed_intervals`), nothing changes and that row comes back as
    /// [`NodeClaim::InUse`]. Otherwise `node` is written (replacing a dead or stopped row) with
    /// its incarnation raised to the previous one + 1 if that is larger
    /// ([`next_incarnation`](crate::next_incarnation)), and comes back as
    /// [`NodeClaim::Registered`].
    async fn node_register(
        &self,
        node: &NodeRecord,
        missed_intervals: u32,
        now: Timestamp,
    ) -> StoreResult<NodeClaim>;

    /// Writes (inserts or replaces) a node's registry row. A write for an older incarnation
    /// than the row's, or for an incarnation already marked stopped, changes nothing: a
    /// lingering predecessor, or a late tick after a graceful stop, never overwrites the row
    /// that other nodes judge liveness by. The predecessor is told:
    /// [`StoreError::Superseded`](crate::StoreError::Superseded) names the incarnation that
    /// holds the row (a late tick of a stopped incarnation is not an error).
    #[doc(alias = "upsert_worker_heartbeat")]
    async fn node_heartbeat(&self, node: &NodeRecord) -> StoreResult<()>;

    /// Marks a node's incarnation stopped (graceful shutdown). A newer incarnation's row is
    /// left alone.
    async fn node_stop(&self, node_id: &str, incarnation: i64, now: Timestamp) -> StoreResult<()>;

    /// One node's registry row.
    async fn node_get(&self, node_id: &str) -> StoreResult<Option<NodeRecord>>;

    /// Every registry row, by node id.
    async fn nodes_list(&self) -> StoreResult<Vec<NodeRecord>>;

    /// Open work (pending and in progress) counted by kind, by kind name. Reads only open
    /// items, so its cost follows the queue's depth, not its history.
    async fn items_depth_by_kind(&self) -> StoreResult<Vec<KindDepth>>;

    /// Items that reached a terminal status at or after `since`, counted per window of width
    /// `bucket` starting at `since` (bucket `k` covers `since + k·bucket` up to the next one);
    /// only non-empty buckets, oldest first. A bucket under 1 ms is `InvalidInput`.
    async fn items_finished_since(
        &self,
        since: Timestamp,
        bucket: Duration,
    ) -> StoreResult<Vec<FinishedBucket>>;

    /// The `limit` items of terminal `status` that finished last, newest first (by
    /// `finished_at`, then id). A status that is not terminal, or a zero limit, is
    /// `InvalidInput`.
    async fn items_recently_finished(
        &self,
        status: crate::item::ItemStatus,
        limit: u32,
    ) -> StoreResult<Vec<Item>>;

    /// Removes, in one transaction, the registry rows `req.nodes` names (each only if it is
    /// unchanged since read and its incarnation holds no in-progress item) and the finished
    /// items older than `req.finished_before` with their checkpoints. With `req.dry_run`
    /// nothing changes and the same report is returned.
    #[doc(alias = "cleanup_stale_workers")]
    #[doc(alias = "cleanup_dead_workers")]
    async fn cleanup(&self, req: &CleanupRequest) -> StoreResult<CleanupReport>;

    /// Checks that the store answers (a trivial read). The reaper stands down when this fails.
    async fn ping(&self) -> StoreResult<()>;

    /// Wake-ups for idle workers, for a backend that can tell when items became ready through
    /// *any* writer, this process or another (PostgreSQL's LISTEN/NOTIFY). Each message is how
    /// many items became ready, or [`WAKE_ALL`] when notifications may have been missed. Once
    /// this returns, nothing committed later is missed. `None` (the default) means the backend
    /// has no such notifications: nodes learn of other writers' items by polling.
    async fn wakeups(&self) -> StoreResult<Option<Box<dyn Wakeups>>> {
        Ok(None)
    }

    /// A clock synchronised to the database's own, for a backend whose database several hosts
    /// share and can read the time of (PostgreSQL): lease times taken from it agree across
    /// hosts whatever their system clocks say. Measured when called (a few round trips). `None` (the default) means the store lives on one host, whose system clock
    /// every node on it shares.
    async fn clock_sync(&self) -> StoreResult<Option<Arc<dyn SharedClock>>> {
        Ok(None)
    }
}

/// The count a [`Wakeups`] source sends when notifications may have been missed: wake every
/// idle worker.
pub const WAKE_ALL: u64 = u64::MAX;

/// A source of wake-ups (see [`Store::wakeups`]): a stream of counts of items that became
/// ready. A trait of its own rather than a `Stream`, so that the core needs no stream library.
#[async_trait]
pub trait Wakeups: Send + fmt::Debug + 'static {
    /// The next count ([`WAKE_ALL`] after missed notifications), or `None` once the source has
    /// ended (its store was dropped). Cancel-safe: dropping the future loses no message.
    async fn next(&mut self) -> Option<u64>;
}

/// A reaper sweep's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReapRequest {
    /// At most this many candidates per sweep (at least 1).
    pub batch: u32,
    /// In-progress items not heard from for this long are requeued whatever the owner says.
    pub stale_after: Duration,
    /// Report only; change nothing.
    pub dry_run: bool,
    /// Dead-letter instead of requeue when an item's attempts reach this, if it is lower than
    /// the item's own budget (seed 001's emergency cleanup with a retry limit).
    pub max_attempts: Option<u32>,
    /// Continue the scan after this position (the previous batch's
    /// [`RecoveryStats::next`]), so that a full batch of items whose owners are alive cannot
    /// hide the expired items behind it. `None` scans from the oldest expiry.
    pub after: Option<ReapCursor>,
}

/// A position in the reaper's scan order: lease expiry, then item id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReapCursor {
    /// The lease expiry of the last candidate scanned.
    pub lease_expires_at: Timestamp,
    /// Its id.
    pub item: ItemId,
}

impl ReapRequest {
    /// A real (not dry-run) sweep of `batch` items with the given stale limit.
    pub fn new(batch: u32, stale_after: Duration) -> Self {
        ReapRequest {
            batch,
            stale_after,
            dry_run: false,
            max_attempts: None,
            after: None,
        }
    }

    /// The same sweep, continued after `cursor` (a previous batch's [`RecoveryStats::next`]).
    pub fn after(mut self, cursor: Option<ReapCursor>) -> Self {
        self.after = cursor;
        self
    }

    /// Refuses a zero batch, a zero stale limit or a zero attempt limit.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch == 0 {
            return Err("reap batch must be at least 1".into());
        }
        if self.stale_after.is_zero() {
            return Err("stale limit must be positive".into());
        }
        if self.max_attempts == Some(0) {
            return Err("max attempts must be at least 1".into());
        }
        Ok(())
    }
}

/// An in-progress item the reaper is judging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReapCandidate {
    /// The item.
    pub item: ItemId,
    /// Its kind (reported, never used to judge).
    pub kind: String,
    /// The holder.
    pub owner: String,
    /// The holder's node.
    pub owner_node: Option<String>,
    /// The holder node's incarnation at acquisition.
    pub owner_incarnation: Option<i64>,
    /// The holder's epoch.
    pub epoch: i64,
    /// When the lease ran out.
    pub lease_expires_at: Option<Timestamp>,
    /// The holder's last renewal.
    pub last_heartbeat_at: Option<Timestamp>,
    /// Attempts used.
    pub attempts: u32,
    /// The budget.
    pub max_attempts: u32,
    /// Whether it is past the hard stale limit (then liveness is not asked).
    pub past_stale_limit: bool,
}

/// The reaper's verdict on an owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// The owner answered that it still holds this item at this epoch: leave it.
    Alive,
    /// The owner is gone, did not answer in time, or no longer works on the item.
    Dead,
}

/// How the reaper asks whether an owner is alive and still working on an item.
#[async_trait]
pub trait LivenessCheck: Send + Sync {
    /// The verdict on `candidate`'s owner. Must not take longer than the caller's sweep can
    /// afford: implementations use a timeout.
    async fn check(&self, candidate: &ReapCandidate) -> Liveness;
}

/// Judges owners by the worker registry: an owner is alive when its node's row exists with the
/// same incarnation the item was acquired under, is not stopped, and heartbeated within
/// `missed_intervals` of its own heartbeat interval. This is how a reaper judges owners on other
/// nodes, and how the one-shot `leasehold reap` judges every owner.
///
/// A reused node name with a new incarnation does not vouch for its dead predecessor's items.
#[derive(Debug, Clone)]
pub struct RegistryLiveness {
    store: std::sync::Arc<dyn Store>,
    missed_intervals: u32,
    now: Timestamp,
}

impl RegistryLiveness {
    /// Reads `store`'s registry, judging heartbeats as of `now`; a node is dead after
    /// `missed_intervals` missed heartbeats (3 by convention).
    pub fn new(store: std::sync::Arc<dyn Store>, missed_intervals: u32, now: Timestamp) -> Self {
        RegistryLiveness {
            store,
            missed_intervals,
            now,
        }
    }
}

#[async_trait]
impl LivenessCheck for RegistryLiveness {
    async fn check(&self, candidate: &ReapCandidate) -> Liveness {
        crate::emergency::registry_verdict(
            self.store.as_ref(),
            candidate,
            self.missed_intervals,
            self.now,
        )
        .await
    }
}

/// A liveness check that knows no owner: every expired lease's owner counts as dead. What the
/// one-shot `leasehold reap` uses when no tree runs in the process.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLiveness;

#[async_trait]
impl LivenessCheck for NoLiveness {
    async fn check(&self, _candidate: &ReapCandidate) -> Liveness {
        Liveness::Dead
    }
}

/// What a sweep found and did (seed 000's `RecoveryStats`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoveryStats {
    /// In-progress items with an expired lease (or past the stale limit) found by the scan.
    pub expired_found: u64,
    /// Requeued (or, in a dry run, would be).
    pub recovered: u64,
    /// Dead-lettered because their attempts were spent (or would be).
    pub failed: u64,
    /// Left alone because their owner answered that it still works on them.
    pub skipped_alive: u64,
    /// Changed by someone else between the scan and the write (e.g. renewed); left alone.
    pub skipped_changed: u64,
    /// How long the sweep took.
    #[serde(with = "duration_ms")]
    pub scan_duration: Duration,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// What happened (or would happen) to each item.
    pub items: Vec<RecoveredItem>,
    /// Where the scan stopped when it filled its batch (more candidates may follow: pass it
    /// to [`ReapRequest::after`]); `None` when the scan reached the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<ReapCursor>,
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64(ms.max(0.0) / 1000.0))
    }
}
