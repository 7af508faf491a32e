//! Work items, their statuses and leases, and the argument structs of the store's operations.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;

/// The id of a work item, assigned by the store at enqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemId(pub i64);

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ItemId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(ItemId)
            .ok_or_else(|| format!("{s:?} is not an item id (a positive integer)"))
    }
}

/// Where an item is in its life.
///
/// ```text
/// pending ──acquire──▶ in_progress ──complete──▶ completed
///    ▲  │                 │  │  │
///    │  └──cancel──▶ cancelled  └──fail (permanent, or attempts spent)──▶ failed
///    └──fail (retryable) / release / reap / recover_mine──┘
///
/// in_progress ──park (the holder asks a question)──▶ awaiting ──decide (an answer)──▶ pending
///
/// blocked ──its last dependency completes──▶ pending
///    └──a dependency fails or is cancelled (or an operator cancels it)──▶ cancelled
/// ```
/// `failed` is the dead-letter state. `awaiting` holds no lease: nothing acquires or reaps it
/// until someone decides ([`Store::item_decide`](crate::Store::item_decide)). `blocked` is an
/// item enqueued with dependencies ([`NewItem::after`]) that have not all completed: nothing
/// acquires it until the store releases it in the transaction that completes the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Waiting to be acquired (once `run_at` has passed).
    Pending,
    /// Leased by an owner.
    InProgress,
    /// Finished with output.
    Completed,
    /// Dead-lettered: a permanent error, or the retry budget spent.
    Failed,
    /// Cancelled before it ran.
    Cancelled,
    /// Parked by its holder until someone answers its question
    /// ([`Decision`](crate::Decision)); holds no lease, is neither acquired nor reaped.
    Awaiting,
    /// Enqueued with dependencies that have not all completed yet ([`NewItem::after`]); not
    /// acquirable. Becomes `pending` when the last completes, `cancelled` when one fails or
    /// is cancelled.
    Blocked,
}

impl ItemStatus {
    /// Every status: the five of the main life in order, then the two waiting ones.
    pub const ALL: [ItemStatus; 7] = [
        ItemStatus::Pending,
        ItemStatus::InProgress,
        ItemStatus::Completed,
        ItemStatus::Failed,
        ItemStatus::Cancelled,
        ItemStatus::Awaiting,
        ItemStatus::Blocked,
    ];

    /// The status's name as stored and printed (`in_progress`).
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::InProgress => "in_progress",
            ItemStatus::Completed => "completed",
            ItemStatus::Failed => "failed",
            ItemStatus::Cancelled => "cancelled",
            ItemStatus::Awaiting => "awaiting",
            ItemStatus::Blocked => "blocked",
        }
    }

    /// Whether nothing more will happen to an item in this status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ItemStatus::Completed | ItemStatus::Failed | ItemStatus::Cancelled
        )
    }
}

impl fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ItemStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ItemStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?}; expected one of pending, in_progress, completed, failed, cancelled, awaiting, blocked"
                )
            })
    }
}

/// One durable unit of work, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Its id.
    pub id: ItemId,
    /// The work type; handlers are registered by kind.
    pub kind: String,
    /// The handler's input.
    pub input: Value,
    /// Where it is in its life.
    pub status: ItemStatus,
    /// Acquisitions so far (a crash or lost lease counts; a graceful release does not).
    pub attempts: u32,
    /// The retry budget: past it the item is dead-lettered.
    pub max_attempts: u32,
    /// Higher runs first.
    pub priority: i32,
    /// Not acquired before this time.
    pub run_at: Timestamp,
    /// An optional group (task) id that acquisition can filter by.
    pub group_id: Option<String>,
    /// The current or last lease holder.
    pub owner: Option<String>,
    /// The node of the current holder.
    pub owner_node: Option<String>,
    /// The incarnation of that node when it acquired the item.
    pub owner_incarnation: Option<i64>,
    /// The fencing token: incremented by every acquisition (and every requeue by the reaper or
    /// `recover_mine`).
    pub epoch: i64,
    /// When the current lease runs out.
    pub lease_expires_at: Option<Timestamp>,
    /// The holder's last renewal.
    pub last_heartbeat_at: Option<Timestamp>,
    /// The handler's output, once completed.
    pub output: Option<Value>,
    /// The last error.
    pub error: Option<String>,
    /// The handler's last progress report.
    pub progress: Option<Value>,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When it reached a terminal status.
    pub finished_at: Option<Timestamp>,
    /// The item's own execution timeout of one attempt, set at enqueue
    /// ([`NewItem::timeout`]); it wins over its kind's and the node's. Stored on the item so that
    /// whichever node runs it applies it.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Graceful releases (a drain that outlasted its timeout gave the item back) so far. The
    /// first `max_releases` of them give their attempt back; later ones count it (see
    /// [`Store::item_release`](crate::Store::item_release)).
    #[serde(default)]
    pub releases: u32,
    /// The deduplication key it was enqueued with ([`NewItem::unique_key`]), if any.
    #[serde(default)]
    pub unique_key: Option<String>,
    /// When the current (or, once it ended, the last) attempt was acquired.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// When an operator asked to cancel the item while it was in progress (see
    /// [`Store::items_cancel`](crate::Store::items_cancel)); cleared by a retry.
    #[serde(default)]
    pub cancel_requested_at: Option<Timestamp>,
    /// The question its holder parked it with, and once decided the answer
    /// ([`Store::item_park`](crate::Store::item_park), [`Store::item_decide`](crate::Store::item_decide)).
    #[serde(default)]
    pub decision: Option<crate::decision::Decision>,
}

impl Item {
    /// The lease this item's current holder writes with, if it is in progress.
    pub fn lease(&self) -> Option<LeaseRef> {
        match (&self.status, &self.owner) {
            (ItemStatus::InProgress, Some(owner)) => Some(LeaseRef {
                item: self.id,
                owner: owner.clone(),
                epoch: self.epoch,
            }),
            _ => None,
        }
    }
}

/// An item to enqueue.
///
/// ```
/// use leasehold_core::NewItem;
/// use std::time::Duration;
/// let item = NewItem::new("email", serde_json::json!({"to": "a@b.c"}))
///     .max_attempts(5)
///     .priority(10)
///     .delay(Duration::from_secs(30))
///     .group("campaign-7")
///     .timeout(Duration::from_secs(90));
/// assert!(item.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewItem {
    /// The work type.
    pub kind: String,
    /// The handler's input.
    pub input: Value,
    /// The retry budget (at least 1).
    pub max_attempts: u32,
    /// Higher runs first.
    pub priority: i32,
    /// Not acquired before `now + delay`.
    pub delay: Duration,
    /// An optional group (task) id.
    pub group_id: Option<String>,
    /// The execution timeout of each attempt, if this item needs its own (at least 1 ms,
    /// stored in whole milliseconds); `None` leaves it to its kind's, else the node's.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// A deduplication key: while an item with this key is pending or in progress, enqueuing
    /// another returns that item's id instead of adding a duplicate (race-safe across
    /// processes sharing the store). Once that item has finished, the key is free again
    /// (unless [`unique_within`](Self::unique_within) keeps a completed one counting).
    #[serde(default)]
    pub unique_key: Option<String>,
    /// With a unique key: how long after an item with the key completed it still counts, so
    /// that enqueuing the key again returns that completed item's id ([`NewItem::unique_within`]).
    /// `None`: only a pending, in-progress, awaiting or blocked item counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_within: Option<Duration>,
    /// The items it needs ([`NewItem::after`]): it is enqueued `blocked` and becomes ready
    /// when all of them have completed. Each must exist already or come earlier in the same
    /// enqueue batch, so no cycle can form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ItemId>,
}

impl NewItem {
    /// The default retry budget (`LEASEHOLD_MAX_ATTEMPTS`'s default).
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

    /// An item of `kind` with `input`, 3 attempts, priority 0, ready now.
    pub fn new(kind: impl Into<String>, input: Value) -> Self {
        NewItem {
            kind: kind.into(),
            input,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            priority: 0,
            delay: Duration::ZERO,
            group_id: None,
            timeout: None,
            unique_key: None,
            unique_within: None,
            depends_on: Vec::new(),
        }
    }

    /// Sets the retry budget.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the priority (higher first).
    pub fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }

    /// Delays the first acquisition.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Sets the group (task) id.
    pub fn group(mut self, g: impl Into<String>) -> Self {
        self.group_id = Some(g.into());
        self
    }

    /// Sets the execution timeout of each attempt: past it the handler is cancelled and the
    /// attempt fails as retryable ("timed out after …"). Wins over the kind's and the node's.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Sets the deduplication key: enqueuing while an item with the same key is pending or in
    /// progress returns the existing item's id and adds nothing.
    ///
    /// ```
    /// use leasehold_core::NewItem;
    /// let item = NewItem::new("sync", serde_json::json!({"account": 7})).unique_key("sync:7");
    /// assert_eq!(item.unique_key.as_deref(), Some("sync:7"));
    /// ```
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Extends the unique key's reach past completion: while an item with the key completed
    /// less than `window` ago, enqueuing returns that item's id and adds nothing (an item
    /// that failed or was cancelled does not count: the work is not done). An open item with
    /// the key still wins over a completed one. Needs [`unique_key`](Self::unique_key); the
    /// window is at least 1 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// use leasehold_core::NewItem;
    /// // At most one report per account per hour, however often it is asked for.
    /// let item = NewItem::new("report", serde_json::json!({"account": 7}))
    ///     .unique_key("report:7")
    ///     .unique_within(Duration::from_secs(3600));
    /// assert!(item.validate().is_ok());
    /// ```
    pub fn unique_within(mut self, window: Duration) -> Self {
        self.unique_within = Some(window);
        self
    }

    /// The earliest completion that still counts for the unique key at `now`
    /// ([`unique_within`](Self::unique_within)), if the item has a window.
    pub fn unique_completed_since(&self, now: Timestamp) -> Option<Timestamp> {
        self.unique_within.map(|w| now.minus(w))
    }

    /// Makes the item wait for `ids`: it is enqueued `blocked` and becomes `pending` (ready
    /// now) in the transaction that completes the last of them; when one of them fails or is
    /// cancelled, it ends `cancelled` with an error naming that dependency. Each id must name
    /// an item that exists already or comes earlier in the same enqueue batch (anything else
    /// refuses the enqueue, naming the id), so dependencies cannot form a cycle. Adds to any
    /// ids given before.
    ///
    /// ```
    /// use leasehold_core::{ItemId, NewItem};
    /// let summary = NewItem::new("summary", serde_json::json!({}))
    ///     .after([ItemId(4), ItemId(5)]);
    /// assert_eq!(summary.depends_on, vec![ItemId(4), ItemId(5)]);
    /// ```
    pub fn after(mut self, ids: impl IntoIterator<Item = ItemId>) -> Self {
        self.depends_on.extend(ids);
        self
    }

    /// The timeout as stored: whole milliseconds (checked by [`validate`](Self::validate)).
    pub fn timeout_ms(&self) -> Option<i64> {
        self.timeout
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// Refuses an empty kind, a zero retry budget, an empty group, a timeout under 1 ms, an
    /// empty unique key, a `unique_within` without a key or under 1 ms, or a dependency id that
    /// is not positive or is named twice.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind.trim().is_empty() {
            return Err("kind must not be empty".into());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if let Some(g) = &self.group_id {
            if g.is_empty() {
                return Err("group id must not be empty when given".into());
            }
        }
        if let Some(t) = self.timeout {
            if t < Duration::from_millis(1) {
                return Err(format!("timeout {t:?} must be at least 1 ms"));
            }
        }
        if let Some(k) = &self.unique_key {
            if k.is_empty() {
                return Err("unique key must not be empty when given".into());
            }
        }
        if let Some(w) = self.unique_within {
            if self.unique_key.is_none() {
                return Err("unique_within needs a unique key".into());
            }
            if w < Duration::from_millis(1) {
                return Err(format!("unique_within {w:?} must be at least 1 ms"));
            }
        }
        for (i, id) in self.depends_on.iter().enumerate() {
            if id.0 <= 0 {
                return Err(format!(
                    "dependency {id} is not an item id (a positive integer)"
                ));
            }
            if self.depends_on[..i].contains(id) {
                return Err(format!("dependency {id} is named twice"));
            }
        }
        Ok(())
    }
}

/// The identity a lease holder writes with: every fenced write carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRef {
    /// The leased item.
    pub item: ItemId,
    /// The holder.
    pub owner: String,
    /// The epoch of the holder's acquisition.
    pub epoch: i64,
}

/// An acquisition request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcquireRequest {
    /// The acquiring owner, stable across its restarts (e.g. `node-a/w3`).
    pub owner: String,
    /// The owner's node (its row in the worker registry).
    pub node_id: String,
    /// The node's incarnation: tells a restarted node from its dead predecessor.
    pub incarnation: i64,
    /// Only these kinds; empty means any kind.
    pub kinds: Vec<String>,
    /// Only this group.
    pub group_id: Option<String>,
    /// At most this many items (at least 1).
    pub limit: u32,
    /// How long the lease lasts before it must be renewed.
    pub lease: Duration,
}

impl AcquireRequest {
    /// A request for one item of any kind by `owner` on `node_id` (incarnation 0).
    pub fn new(owner: impl Into<String>, lease: Duration) -> Self {
        let owner = owner.into();
        AcquireRequest {
            node_id: owner.clone(),
            owner,
            incarnation: 0,
            kinds: Vec::new(),
            group_id: None,
            limit: 1,
            lease,
        }
    }

    /// Sets the node and incarnation.
    pub fn node(mut self, node_id: impl Into<String>, incarnation: i64) -> Self {
        self.node_id = node_id.into();
        self.incarnation = incarnation;
        self
    }

    /// Restricts to these kinds.
    pub fn kinds<I, S>(mut self, kinds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.kinds = kinds.into_iter().map(Into::into).collect();
        self
    }

    /// Restricts to one group.
    pub fn group(mut self, g: impl Into<String>) -> Self {
        self.group_id = Some(g.into());
        self
    }

    /// Sets the batch size.
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = n;
        self
    }

    /// Refuses an empty owner, a zero limit or a zero lease.
    pub fn validate(&self) -> Result<(), String> {
        if self.owner.is_empty() {
            return Err("owner must not be empty".into());
        }
        if self.node_id.is_empty() {
            return Err("node id must not be empty".into());
        }
        if self.limit == 0 {
            return Err("acquire limit must be at least 1".into());
        }
        if self.lease.is_zero() {
            return Err("lease duration must be positive".into());
        }
        Ok(())
    }
}

/// An item just acquired, with the lease to write with.
#[derive(Clone, Debug, PartialEq)]
pub struct Leased {
    /// The item as it is after the acquisition (status `in_progress`, epoch and attempts bumped).
    pub item: Item,
    /// The lease to carry on every write.
    pub lease: LeaseRef,
    /// When the lease runs out unless renewed.
    pub expires_at: Timestamp,
}

/// How a failure is to be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailDisposition {
    /// Back to pending after `delay`, unless the retry budget is spent.
    Retry {
        /// The backoff before the next attempt.
        delay: Duration,
    },
    /// Dead-letter now.
    Permanent,
}

/// What a failure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FailOutcome {
    /// Back to pending; acquirable from `run_at`.
    Retrying {
        /// When it may run again.
        run_at: Timestamp,
    },
    /// Dead-lettered (`failed`).
    DeadLettered,
}

/// What a release did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReleaseOutcome {
    /// Back to pending, ready now, its attempt given back.
    Released,
    /// Back to pending, ready now, but its attempt stays counted: the item was released more
    /// often than the limit allows.
    AttemptCounted,
    /// Dead-lettered (`failed`): released past the limit with its attempts spent.
    DeadLettered,
}

/// A fenced holder's view of one lease (seed 000's `check_lease_status`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// The item.
    pub item: ItemId,
    /// Its status.
    pub status: ItemStatus,
    /// The holder, if any.
    pub owner: Option<String>,
    /// The current epoch.
    pub epoch: i64,
    /// When the lease runs out.
    pub lease_expires_at: Option<Timestamp>,
    /// The last renewal.
    pub last_heartbeat_at: Option<Timestamp>,
    /// Whether the item is in progress with its lease past expiry at `now`.
    pub expired: bool,
    /// Time left on the lease at `now` (zero once expired; `None` when not leased).
    pub remaining: Option<Duration>,
}

/// Counts of items by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    /// Pending items (including delayed ones).
    pub pending: u64,
    /// Leased items.
    pub in_progress: u64,
    /// Completed items.
    pub completed: u64,
    /// Dead-lettered items.
    pub failed: u64,
    /// Cancelled items.
    pub cancelled: u64,
    /// Items parked awaiting a decision.
    #[serde(default)]
    pub awaiting: u64,
    /// Items waiting for their dependencies.
    #[serde(default)]
    pub blocked: u64,
}

impl StatusCounts {
    /// The count for one status.
    pub fn get(&self, status: ItemStatus) -> u64 {
        match status {
            ItemStatus::Pending => self.pending,
            ItemStatus::InProgress => self.in_progress,
            ItemStatus::Completed => self.completed,
            ItemStatus::Failed => self.failed,
            ItemStatus::Cancelled => self.cancelled,
            ItemStatus::Awaiting => self.awaiting,
            ItemStatus::Blocked => self.blocked,
        }
    }

    /// Sets the count for one status.
    pub fn set(&mut self, status: ItemStatus, n: u64) {
        match status {
            ItemStatus::Pending => self.pending = n,
            ItemStatus::InProgress => self.in_progress = n,
            ItemStatus::Completed => self.completed = n,
            ItemStatus::Failed => self.failed = n,
            ItemStatus::Cancelled => self.cancelled = n,
            ItemStatus::Awaiting => self.awaiting = n,
            ItemStatus::Blocked => self.blocked = n,
        }
    }

    /// All items.
    pub fn total(&self) -> u64 {
        ItemStatus::ALL.iter().map(|s| self.get(*s)).sum()
    }
}

/// A listing filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemFilter {
    /// Only this status.
    pub status: Option<ItemStatus>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this group.
    pub group_id: Option<String>,
    /// Only this owner.
    pub owner: Option<String>,
    /// Only ids greater than this (keyset paging).
    pub after: Option<ItemId>,
    /// At most this many (at least 1), in id order.
    pub limit: u32,
}

impl Default for ItemFilter {
    fn default() -> Self {
        ItemFilter {
            status: None,
            kind: None,
            group_id: None,
            owner: None,
            after: None,
            limit: 100,
        }
    }
}

/// A checkpoint payload saved by a holder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Its id (increasing per store).
    pub id: i64,
    /// The item.
    pub item: ItemId,
    /// The epoch of the holder that wrote it.
    pub epoch: i64,
    /// The step name.
    pub name: String,
    /// The payload.
    pub payload: Value,
    /// When it was written.
    pub created_at: Timestamp,
}

/// What a recovery (the reaper or `recover_mine`) did, or in a dry run would do, to one item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredItem {
    /// The item.
    pub id: ItemId,
    /// Its kind.
    pub kind: String,
    /// The holder it was taken from.
    pub previous_owner: String,
    /// The holder's epoch.
    pub previous_epoch: i64,
    /// Attempts used so far.
    pub attempts: u32,
    /// Its retry budget.
    pub max_attempts: u32,
    /// Requeued (`false`) or dead-lettered (`true`).
    pub dead_lettered: bool,
}

/// One item another waits for ([`NewItem::after`]), as its dependant's handler reads it
/// ([`Store::item_dependencies`](crate::Store::item_dependencies)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    /// The dependency's id.
    pub id: ItemId,
    /// Its kind.
    pub kind: String,
    /// Its status now (`completed` for every dependency of a released item, unless an
    /// operator retried one since).
    pub status: ItemStatus,
    /// Its output, once completed.
    pub output: Option<Value>,
}

/// How an item with dependencies starts at enqueue, from its dependencies' states then: what
/// both backends insert ([`Store::items_enqueue`](crate::Store::items_enqueue)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependantStart {
    /// `blocked` while some dependency has not completed, `pending` when all have, `cancelled`
    /// when one has already failed or been cancelled.
    pub status: ItemStatus,
    /// The dependencies not yet completed (0 unless `blocked`).
    pub deps_left: u32,
    /// The error of an item cancelled at enqueue, as a later failure would word it.
    pub error: Option<String>,
}

impl DependantStart {
    /// Judges `deps` (id, status, error of each dependency, in the order named): the first
    /// failed or cancelled one cancels the dependant; otherwise it waits for the ones not
    /// completed.
    pub fn judge<'a>(
        deps: impl IntoIterator<Item = (ItemId, ItemStatus, Option<&'a str>)>,
    ) -> Self {
        let mut left = 0u32;
        for (id, status, error) in deps {
            match status {
                ItemStatus::Completed => {}
                ItemStatus::Failed | ItemStatus::Cancelled => {
                    return DependantStart {
                        status: ItemStatus::Cancelled,
                        deps_left: 0,
                        error: Some(dependency_ended(id, status, error)),
                    }
                }
                _ => left += 1,
            }
        }
        DependantStart {
            status: if left > 0 {
                ItemStatus::Blocked
            } else {
                ItemStatus::Pending
            },
            deps_left: left,
            error: None,
        }
    }
}

/// The error a dependant is cancelled with when dependency `id` ends `failed` (with `error`)
/// or `cancelled`: "dependency 7 failed: …", "dependency 7 was cancelled". The backends'
/// triggers word it the same way.
pub fn dependency_ended(id: ItemId, status: ItemStatus, error: Option<&str>) -> String {
    match status {
        ItemStatus::Failed => format!(
            "dependency {id} failed: {}",
            error.unwrap_or("no error recorded")
        ),
        _ => format!("dependency {id} was cancelled"),
    }
}
