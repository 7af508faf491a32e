//! leasehold's [`Store`] on SQLite: the embedded default backend.
//!
//! [`SqliteStore::open`] opens (or creates) one database file, refuses a file that is not a
//! SQLite database or whose schema is newer than this build without touching it, switches it to
//! WAL and applies the schema migrations. Every operation then runs on one tokio-rusqlite
//! connection thread, so no SQLite call blocks the async runtime, and every lease holder's write
//! is fenced by `(item, owner, epoch)`.
//!
//! # Layout
//! - [`SqliteStore`] (this file): the handle and its [`Store`] impl, which only moves arguments
//!   to the operation that does the work.
//! - `db`: the connection handle, the `BEGIN IMMEDIATE` write-transaction helper, and the group
//!   commit that lets the hot path's fenced writes (acquire, renew, complete, fail) arriving
//!   together share one transaction, each answered only after it commits; it reopens the
//!   connection when a panic killed its thread.
//! - `options`: [`SqliteOptions`], the durability setting ([`Synchronous`], from
//!   `LEASEHOLD_SQLITE_SYNC` or the caller).
//! - `schema`: the tables and indexes, the versioned migrations (`PRAGMA user_version`) and the
//!   order in which a file is checked, configured and migrated.
//! - `ops`: one module per operation, each holding its own SQL (`acquire`, `renew`,
//!   `complete`, `follow_up` (a completion with the items it enqueues), `fail`, `release`, `cancel`, `progress`, `checkpoint`, `read`, `reap`,
//!   `recover`, `registry`, `cleanup`, `activity` (the operators' reads), `take_back`, the
//!   requeue/dead-letter write the reaper and `recover_mine` share; the operators' actions
//!   `retry`, `delete`, `pause` (with `cancel`) and their shared `select`; and `history`, the
//!   record of each ended attempt).
//! - `durable`: the [`DurableStore`](leasehold_core::durable::DurableStore) impl (checkpoints
//!   with evidence, the tool ledger, the LLM output cache), SQL in one module per concern.
//! - `row`: the column lists every query selects and their decoders to core types.
//! - `error`: how SQLite's errors become [`StoreError`]s.

mod db;
mod durable;
mod error;
mod ops;
mod options;
mod row;
mod schema;

pub use options::{SqliteOptions, Synchronous, SYNC_VAR};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use leasehold_core::{
    AcquireRequest, ActionReport, Attempt, Checkpoint, CleanupReport, CleanupRequest,
    DecisionRequest, Dependency, FailDisposition, FailOutcome, FinishedBucket, Item, ItemFilter,
    ItemId, ItemSelector, ItemStatus, KindDepth, LeaseRef, LeaseStatus, Leased, LivenessCheck,
    NewItem, NodeClaim, NodeRecord, PausedKind, ReapRequest, RecoveredItem, RecoveryStats,
    ReleaseOutcome, RetryRequest, ScheduleClaim, ScheduleRecord, ScheduleSpec, StatusCounts, Store,
    StoreError, StoreResult, Timestamp,
};
use serde_json::Value;

use crate::db::Db;
use crate::ops::{
    acquire, activity, cancel, checkpoint, cleanup, complete, decide, delete, dependencies,
    enqueue, fail, follow_up, history, park, pause, progress, read, reap, recover, registry,
    release, renew, retry, schedule,
};

/// What [`SqliteStore::set_group_commit_hook`] calls before each group commit: the names of the
/// group's operations, in order.
pub type GroupCommitHook = Arc<dyn Fn(&[&'static str]) + Send + Sync>;

/// The SQLite store. Clones share one connection.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Db,
    path: Arc<PathBuf>,
    /// Ended attempts kept per item ([`SqliteOptions::history_keep`]).
    keep: u32,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies migrations, with the
    /// options of the environment ([`SqliteOptions::from_env`]: `LEASEHOLD_SQLITE_SYNC`).
    ///
    /// Refuses, leaving the file byte-for-byte as it was: a file that is not a SQLite database
    /// (or is another application's) with `NotADatabase`, and a schema written by a newer
    /// leasehold with `SchemaTooNew`. Opening an up-to-date database again changes nothing. An
    /// unparsable `LEASEHOLD_SQLITE_SYNC` is `InvalidInput` naming the variable.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        Self::open_with(path, SqliteOptions::from_env()?).await
    }

    /// [`open`](Self::open) with explicit options (the environment is not read).
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> StoreResult<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        if options.history_keep == 0 {
            return Err(StoreError::InvalidInput(
                "history_keep must be at least 1 (ended attempts kept per item)".into(),
            ));
        }
        let conn = schema::open(&path, options).await?;
        tracing::debug!(path = %path.display(), version = schema::SCHEMA_VERSION, synchronous = ?options.synchronous, "opened SQLite store");
        // A connection whose thread died (a panic inside an operation) is replaced by one opened
        // the same way.
        let reopen_at = path.clone();
        let opener: db::Opener = Arc::new(move || {
            let path = reopen_at.clone();
            Box::pin(async move { schema::open(&path, options).await })
        });
        Ok(SqliteStore {
            db: Db::new(conn, Some(opener)),
            path: Arc::new(path),
            keep: options.history_keep,
        })
    }

    /// The durability setting in force on the store's connection, as SQLite reports it
    /// (`PRAGMA synchronous`).
    pub async fn synchronous(&self) -> StoreResult<Synchronous> {
        let value = self
            .db
            .call(|c| -> error::OpResult<i64> {
                Ok(c.pragma_query_value(None, "synchronous", |r| r.get(0))?)
            })
            .await?;
        match value {
            1 => Ok(Synchronous::Normal),
            2 => Ok(Synchronous::Full),
            other => Err(leasehold_core::StoreError::Corrupt(format!(
                "PRAGMA synchronous is {other}, which leasehold never sets"
            ))),
        }
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fault injection for tests: `hook` is called on the connection thread right before each
    /// group commit (the one transaction that the acquisitions, renewals, completions and
    /// failures arriving together share), with the names of its operations in order
    /// (`"acquire"`, `"renew"`, `"renew_owner"`, `"complete"`, `"fail"`). Nothing of the group
    /// has committed, and no caller has been answered, while it runs. `None` removes it.
    pub fn set_group_commit_hook(&self, hook: Option<GroupCommitHook>) {
        self.db.set_commit_hook(hook);
    }

    /// The schema version this build creates and reads.
    pub fn schema_version() -> i64 {
        schema::SCHEMA_VERSION
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn as_dyn(&self) -> &dyn Store {
        self
    }

    async fn items_enqueue(&self, items: Vec<NewItem>, now: Timestamp) -> StoreResult<Vec<ItemId>> {
        self.db.call(move |c| enqueue::run(c, items, now)).await
    }

    async fn items_acquire(
        &self,
        req: &AcquireRequest,
        now: Timestamp,
    ) -> StoreResult<Vec<Leased>> {
        acquire::validate(req)?;
        let req = req.clone();
        self.db
            .grouped("acquire", move |tx| acquire::run(tx, &req, now))
            .await
    }

    async fn lease_renew(
        &self,
        lease: &LeaseRef,
        duration: Duration,
        now: Timestamp,
    ) -> StoreResult<Timestamp> {
        let lease = lease.clone();
        self.db
            .grouped("renew", move |tx| renew::one(tx, &lease, duration, now))
            .await
    }

    async fn leases_renew_owner(
        &self,
        owner: &str,
        duration: Duration,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let owner = owner.to_owned();
        self.db
            .grouped("renew_owner", move |tx| {
                renew::owner(tx, &owner, duration, now)
            })
            .await
    }

    async fn item_complete(
        &self,
        lease: &LeaseRef,
        output: Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        let lease = lease.clone();
        let output = row::json_text(&output)?;
        self.db
            .grouped("complete", move |tx| {
                complete::run(tx, &lease, &output, now)
            })
            .await
    }

    async fn item_complete_with_follow_ups(
        &self,
        lease: &LeaseRef,
        output: Value,
        follow_ups: Vec<NewItem>,
        now: Timestamp,
    ) -> StoreResult<Vec<ItemId>> {
        let lease = lease.clone();
        let output = row::json_text(&output)?;
        let follow_ups = enqueue::Checked::new(follow_ups, "follow-up")?;
        self.db
            .grouped("complete_with_follow_ups", move |tx| {
                follow_up::run(tx, &lease, &output, &follow_ups, now)
            })
            .await
    }

    async fn item_fail(
        &self,
        lease: &LeaseRef,
        error: &str,
        disposition: FailDisposition,
        now: Timestamp,
    ) -> StoreResult<FailOutcome> {
        let lease = lease.clone();
        let error = error.to_owned();
        let keep = self.keep;
        self.db
            .grouped("fail", move |tx| {
                fail::run(tx, &lease, &error, disposition, keep, now)
            })
            .await
    }

    async fn item_release(
        &self,
        lease: &LeaseRef,
        max_releases: Option<u32>,
        now: Timestamp,
    ) -> StoreResult<ReleaseOutcome> {
        let lease = lease.clone();
        let keep = self.keep;
        self.db
            .call(move |c| release::run(c, &lease, max_releases, keep, now))
            .await
    }

    async fn items_cancel(
        &self,
        target: &ItemSelector,
        dry_run: bool,
        now: Timestamp,
    ) -> StoreResult<ActionReport> {
        let target = target.clone();
        self.db
            .call(move |c| cancel::run(c, &target, dry_run, now))
            .await
    }

    async fn item_cancel_confirm(&self, lease: &LeaseRef, now: Timestamp) -> StoreResult<()> {
        let lease = lease.clone();
        let keep = self.keep;
        self.db
            .call(move |c| cancel::confirm(c, &lease, keep, now))
            .await
    }

    async fn items_retry(&self, req: &RetryRequest, now: Timestamp) -> StoreResult<ActionReport> {
        let req = req.clone();
        self.db.call(move |c| retry::run(c, &req, now)).await
    }

    async fn items_delete(
        &self,
        target: &ItemSelector,
        dry_run: bool,
    ) -> StoreResult<ActionReport> {
        let target = target.clone();
        self.db
            .call(move |c| delete::run(c, &target, dry_run))
            .await
    }

    async fn kind_pause(&self, kind: &str, now: Timestamp) -> StoreResult<bool> {
        let kind = kind.to_owned();
        self.db.call(move |c| pause::pause(c, &kind, now)).await
    }

    async fn kind_resume(&self, kind: &str) -> StoreResult<bool> {
        let kind = kind.to_owned();
        self.db.call(move |c| pause::resume(c, &kind)).await
    }

    async fn kinds_paused(&self) -> StoreResult<Vec<PausedKind>> {
        self.db.call(pause::list).await
    }

    async fn schedule_upsert(
        &self,
        spec: &ScheduleSpec,
        now: Timestamp,
    ) -> StoreResult<ScheduleRecord> {
        let spec = spec.clone();
        self.db.call(move |c| schedule::upsert(c, &spec, now)).await
    }

    async fn schedule_claim(
        &self,
        claim: &ScheduleClaim,
        now: Timestamp,
    ) -> StoreResult<Option<Vec<ItemId>>> {
        let claim = claim.clone();
        self.db.call(move |c| schedule::claim(c, &claim, now)).await
    }

    async fn schedules_list(&self) -> StoreResult<Vec<ScheduleRecord>> {
        self.db.call(schedule::list).await
    }

    async fn item_attempts(&self, id: ItemId) -> StoreResult<Vec<Attempt>> {
        let keep = self.keep;
        self.db.call(move |c| history::list(c, id, keep)).await
    }

    async fn item_dependencies(&self, id: ItemId) -> StoreResult<Vec<Dependency>> {
        self.db.call(move |c| dependencies::list(c, id)).await
    }

    async fn item_park(
        &self,
        lease: &LeaseRef,
        request: &DecisionRequest,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (lease, request) = (lease.clone(), request.clone());
        self.db
            .call(move |c| park::run(c, &lease, &request, now))
            .await
    }

    async fn item_decide(&self, id: ItemId, answer: &str, now: Timestamp) -> StoreResult<Item> {
        let answer = answer.to_owned();
        self.db
            .call(move |c| decide::run(c, id, &answer, now))
            .await
    }

    async fn item_progress(
        &self,
        lease: &LeaseRef,
        progress: Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        let lease = lease.clone();
        self.db
            .call(move |c| progress::run(c, &lease, &progress, now))
            .await
    }

    async fn checkpoint_save(
        &self,
        lease: &LeaseRef,
        name: &str,
        payload: Value,
        now: Timestamp,
    ) -> StoreResult<i64> {
        let lease = lease.clone();
        let name = name.to_owned();
        self.db
            .call(move |c| checkpoint::save(c, &lease, &name, &payload, now))
            .await
    }

    async fn checkpoints_list(&self, item: ItemId) -> StoreResult<Vec<Checkpoint>> {
        self.db.call(move |c| checkpoint::list(c, item)).await
    }

    async fn lease_status(&self, id: ItemId, now: Timestamp) -> StoreResult<LeaseStatus> {
        self.db.call(move |c| read::lease_status(c, id, now)).await
    }

    async fn leases_of_owner(&self, owner: &str) -> StoreResult<Vec<Item>> {
        let owner = owner.to_owned();
        self.db.call(move |c| read::of_owner(c, &owner)).await
    }

    async fn item_get(&self, id: ItemId) -> StoreResult<Option<Item>> {
        self.db.call(move |c| read::get(c, id)).await
    }

    async fn items_count(&self) -> StoreResult<StatusCounts> {
        self.db.call(read::count).await
    }

    async fn items_list(&self, filter: &ItemFilter) -> StoreResult<Vec<Item>> {
        let filter = filter.clone();
        self.db.call(move |c| read::list(c, &filter)).await
    }

    async fn items_reap_expired(
        &self,
        req: &ReapRequest,
        liveness: &dyn LivenessCheck,
        now: Timestamp,
    ) -> StoreResult<RecoveryStats> {
        reap::run(&self.db, req, liveness, self.keep, now).await
    }

    async fn items_recover_owner(
        &self,
        owner: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<RecoveredItem>> {
        let holder = recover::Holder::Owner(owner.to_owned());
        let keep = self.keep;
        self.db
            .call(move |c| recover::run(c, &holder, keep, now))
            .await
    }

    async fn items_recover_node(
        &self,
        node_id: &str,
        incarnation: i64,
        heartbeat_before: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Vec<RecoveredItem>> {
        let holder = recover::Holder::Node {
            node_id: node_id.to_owned(),
            incarnation,
            heartbeat_before,
        };
        let keep = self.keep;
        self.db
            .call(move |c| recover::run(c, &holder, keep, now))
            .await
    }

    async fn node_register(
        &self,
        node: &NodeRecord,
        missed_intervals: u32,
        now: Timestamp,
    ) -> StoreResult<NodeClaim> {
        let node = node.clone();
        self.db
            .call(move |c| registry::register(c, &node, missed_intervals, now))
            .await
    }

    async fn node_heartbeat(&self, node: &NodeRecord) -> StoreResult<()> {
        let node = node.clone();
        self.db.call(move |c| registry::heartbeat(c, &node)).await
    }

    async fn node_stop(&self, node_id: &str, incarnation: i64, now: Timestamp) -> StoreResult<()> {
        let node_id = node_id.to_owned();
        self.db
            .call(move |c| registry::stop(c, &node_id, incarnation, now))
            .await
    }

    async fn node_get(&self, node_id: &str) -> StoreResult<Option<NodeRecord>> {
        let node_id = node_id.to_owned();
        self.db.call(move |c| registry::get(c, &node_id)).await
    }

    async fn nodes_list(&self) -> StoreResult<Vec<NodeRecord>> {
        self.db.call(registry::list).await
    }

    async fn items_depth_by_kind(&self) -> StoreResult<Vec<KindDepth>> {
        self.db.call(activity::depth_by_kind).await
    }

    async fn items_finished_since(
        &self,
        since: Timestamp,
        bucket: Duration,
    ) -> StoreResult<Vec<FinishedBucket>> {
        let bucket_ms = leasehold_core::clock::duration_millis(bucket);
        self.db
            .call(move |c| activity::finished_since(c, since, bucket_ms))
            .await
    }

    async fn items_recently_finished(
        &self,
        status: ItemStatus,
        limit: u32,
    ) -> StoreResult<Vec<Item>> {
        self.db
            .call(move |c| activity::recently_finished(c, status, limit))
            .await
    }

    async fn cleanup(&self, req: &CleanupRequest) -> StoreResult<CleanupReport> {
        let req = req.clone();
        self.db.call(move |c| cleanup::run(c, &req)).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.db
            .call(|c| -> error::OpResult<()> {
                c.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
                Ok(())
            })
            .await
    }
}
