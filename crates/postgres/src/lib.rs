//! leasehold's [`Store`] on PostgreSQL: the backend for several processes or hosts sharing one
//! queue.
//!
//! [`PgStore::open`] connects a pool (tokio-postgres + deadpool-postgres) to the database a
//! `postgres://` URL names, refuses a schema written by a newer leasehold or by someone else
//! without touching it, and applies the versioned migrations in leasehold's own schema
//! (`leasehold`, or `?schema=NAME` in the URL). Acquisition uses `FOR UPDATE SKIP LOCKED`, so
//! acquirers on any number of hosts pass over each other's rows; every lease holder's write is
//! fenced by `(item, owner, epoch)` in the statement itself.
//!
//! # Time
//! Like every backend, this one takes `now` from the caller's clock and never reads its own:
//! the conformance suite drives time through those arguments, and one rule for every backend
//! keeps the runtime's reasoning about leases the same. What keeps hosts from disagreeing is
//! that a lease's expiry and the reaper's judgement of it are both computed from timestamps
//! the callers supply, so the nodes' clocks must agree to well within a lease (NTP does
//! this; leases are seconds to minutes). To take host clocks out of it altogether, give every
//! node a [`DatabaseClock`]: the server's clock, as measured from this host, so all lease times
//! come from the one clock every node shares; docs/scale-out.md says more.
//!
//! # Layout
//! - [`PgStore`] (this file): the handle and its [`Store`] impl, which only moves arguments
//!   to the operation that does the work.
//! - [`options`]: the URL, the schema name, the pool size.
//! - `schema`: the tables and indexes, the versioned migrations and the open sequence.
//! - [`DatabaseClock`]: a `Clock` anchored to the server's clock, for every node to share.
//! - `db`: the pool and the helpers every operation runs statements with.
//! - `batch`: the hot path's batcher: every caller's acquisitions, completions, failed
//!   attempts and renewals written together, one transaction per batch.
//! - `ops`: one module per operation, each holding its own SQL (a completion that carries
//!   follow-ups, `follow_up`, runs in a transaction of its own, outside the batch).
//! - `durable`: the [`DurableStore`](leasehold_core::durable::DurableStore) impl (checkpoints
//!   with evidence, the tool ledger, the LLM output cache with cross-host claims), one module
//!   per concern as in `ops`.
//! - `notify`: LISTEN/NOTIFY wake-ups for idle workers ([`PgStore::subscribe`], and the
//!   runtime's [`Store::wakeups`], which every node listens to).
//! - `row`: the column lists every query selects and their decoders to core types.
//! - `error`: how PostgreSQL's errors become [`StoreError`]s.
//! - [`testing`]: a fresh schema per test from `LEASEHOLD_PG_URL`, or the reason to skip.

mod batch;
mod clock;
mod db;
mod durable;
mod error;
mod notify;
mod ops;
pub mod options;
mod row;
mod schema;
pub mod testing;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use leasehold_core::store::Wakeups;
use leasehold_core::{
    AcquireRequest, ActionReport, Attempt, Checkpoint, CleanupReport, CleanupRequest, Clock,
    DecisionRequest, Dependency, FailDisposition, FailOutcome, FinishedBucket, Item, ItemFilter,
    ItemId, ItemSelector, ItemStatus, KindDepth, LeaseRef, LeaseStatus, Leased, LivenessCheck,
    NewItem, NodeClaim, NodeRecord, PausedKind, ReapRequest, RecoveredItem, RecoveryStats,
    ReleaseOutcome, RetryRequest, ScheduleClaim, ScheduleRecord, ScheduleSpec, SharedClock,
    StatusCounts, Store, StoreError, StoreResult, SystemClock, Timestamp,
};
use serde_json::Value;
use tokio::sync::{broadcast, OnceCell};
use tokio_postgres::NoTls;

pub use batch::{BatchCommitHook, BatchStats};
pub use clock::DatabaseClock;
pub use notify::WAKE_ALL;
pub use options::{is_postgres_url, PgOptions};

use crate::batch::Batcher;
use crate::db::Db;
use crate::error::no_nul;
use crate::notify::{Listener, Subscription};
use crate::ops::{
    activity, cancel, checkpoint, cleanup, decide, delete, dependencies, emergency, enqueue,
    follow_up, history, park, pause, progress, read, reap, recover, registry, release, renew,
    retry, schedule,
};

/// How long a connection attempt may take before the open (or an operation) fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an operation waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The PostgreSQL store. Clones share one pool (and one notification listener).
#[derive(Debug, Clone)]
pub struct PgStore {
    db: Db,
    /// Where the hot path's fenced writes and acquisitions go (see `batch`).
    batch: Batcher,
    opts: Arc<PgOptions>,
    config: Arc<tokio_postgres::Config>,
    channel: Arc<str>,
    listener: Arc<OnceCell<Listener>>,
    /// Items this process has enqueued, until it has once asked for fresh statistics.
    enqueued: Arc<AtomicU64>,
    analyzed: Arc<AtomicBool>,
    /// The host clock [`Store::clock_sync`] measures the server's against.
    host_clock: Arc<dyn Clock>,
}

/// After this many items enqueued by one process, it runs `ANALYZE items` once. A fresh table
/// has no statistics until autovacuum gets to it (a minute or more; never, with autovacuum
/// off), and until then the planner takes the queue for empty. The batcher's ungrouped
/// acquisitions are planned in queue order whatever the statistics say (`ops::acquire`); the
/// statistics still serve the rest: grouped acquisitions, the reaper's scans, the operators'
/// reads.
const ANALYZE_AFTER: u64 = 10_000;

impl PgStore {
    /// Counts `n` enqueued items and, the first time the count passes [`ANALYZE_AFTER`], runs
    /// `ANALYZE items`. A failure is only logged: the enqueue has committed, and autovacuum
    /// will analyze the table in time.
    async fn analyze_once_grown(&self, n: u64) {
        if self.analyzed.load(Ordering::Relaxed)
            || self.enqueued.fetch_add(n, Ordering::Relaxed) + n < ANALYZE_AFTER
            || self.analyzed.swap(true, Ordering::Relaxed)
        {
            return;
        }
        if let Err(e) = self.db.execute("ANALYZE items", &[]).await {
            tracing::warn!(error = %e, "could not refresh the planner's statistics of items");
        }
    }

    /// Opens the store a `postgres://…[?schema=NAME]` URL names, creating and migrating its
    /// schema if needed. See [`PgStore::open_with`].
    pub async fn open(url: &str) -> StoreResult<PgStore> {
        PgStore::open_with(PgOptions::from_url(url)?).await
    }

    /// Opens the store with explicit options.
    ///
    /// Refuses, leaving the database as it was: bad options with `InvalidInput`; a schema
    /// written by a newer leasehold with `SchemaTooNew`; a schema holding tables of our names
    /// but no version, or (with `create` unset) no schema at all, with `NotADatabase`; an
    /// unreachable server with `Backend`. Opening an up-to-date schema again changes nothing.
    pub async fn open_with(opts: PgOptions) -> StoreResult<PgStore> {
        opts.validate()?;
        let mut config: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|e| StoreError::InvalidInput(format!("bad PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("leasehold");
        }
        let listen_config = config.clone();
        // Every pooled connection resolves our tables in our schema only.
        let search_path = format!("-c search_path={}", opts.schema);
        let options = match config.get_options() {
            Some(given) if !given.is_empty() => format!("{given} {search_path}"),
            _ => search_path,
        };
        config.options(&options);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL pool: {e}").into()))?;
        schema::open(&pool, &opts).await?;
        tracing::debug!(schema = %opts.schema, version = schema::SCHEMA_VERSION, "opened PostgreSQL store");
        let db = Db::new(pool);
        Ok(PgStore {
            batch: Batcher::start(db.clone(), opts.history_keep),
            db,
            channel: opts.channel().into(),
            opts: Arc::new(opts),
            config: Arc::new(listen_config),
            listener: Arc::new(OnceCell::new()),
            enqueued: Arc::default(),
            analyzed: Arc::default(),
            host_clock: Arc::new(SystemClock),
        })
    }

    /// This store, with `host` standing for this host's clock when [`Store::clock_sync`]
    /// measures the server's (the system clock by default): a test plays a host whose clock
    /// is minutes off with it.
    pub fn with_host_clock(mut self, host: Arc<dyn Clock>) -> PgStore {
        self.host_clock = host;
        self
    }

    /// Sets (or clears) the hook called right before each batch of the hot path's writes
    /// commits (see [`BatchCommitHook`]); a fault-injection point for tests.
    pub fn set_batch_commit_hook(&self, hook: Option<BatchCommitHook>) {
        self.batch.set_hook(hook);
    }

    /// How many batches of the hot path's writes this store (and its clones) committed, and
    /// how many calls they carried.
    pub fn batch_stats(&self) -> BatchStats {
        self.batch.stats()
    }

    /// The schema this store works in.
    pub fn schema(&self) -> &str {
        &self.opts.schema
    }

    /// The schema version this build creates and reads.
    pub fn schema_version() -> i64 {
        schema::SCHEMA_VERSION
    }

    /// Wake-ups for idle workers: one message per commit that made items ready (an enqueue
    /// of ready items, or a requeue by any node), carrying how many, or [`WAKE_ALL`] after
    /// the listening connection was lost and re-established. The first call opens the
    /// listening connection and returns once it listens, so nothing committed after it
    /// returns is missed. A slow receiver may see `Lagged`: treat it as [`WAKE_ALL`].
    pub async fn subscribe(&self) -> StoreResult<broadcast::Receiver<u64>> {
        let listener = self
            .listener
            .get_or_try_init(|| Listener::start((*self.config).clone(), self.channel.to_string()))
            .await?;
        Ok(listener.subscribe())
    }

    /// The database server's clock now (`clock_timestamp()`, milliseconds since the Unix
    /// epoch): the one clock every node of a deployment shares, to check the hosts' skew
    /// against.
    pub async fn database_time(&self) -> StoreResult<Timestamp> {
        let rows = self
            .db
            .query(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )
            .await?;
        let ms: i64 = row::col(rows.first().ok_or(StoreError::Closed)?, 0)?;
        Ok(Timestamp(ms))
    }
}

#[async_trait]
impl Store for PgStore {
    fn as_dyn(&self) -> &dyn Store {
        self
    }

    async fn items_enqueue(&self, items: Vec<NewItem>, now: Timestamp) -> StoreResult<Vec<ItemId>> {
        let ids = enqueue::run(&self.db, &self.channel, items, now).await?;
        self.analyze_once_grown(ids.len() as u64).await;
        Ok(ids)
    }

    async fn items_acquire(
        &self,
        req: &AcquireRequest,
        now: Timestamp,
    ) -> StoreResult<Vec<Leased>> {
        self.batch.acquire(req, now).await
    }

    async fn lease_renew(
        &self,
        lease: &LeaseRef,
        duration: Duration,
        now: Timestamp,
    ) -> StoreResult<Timestamp> {
        self.batch.renew(lease, duration, now).await
    }

    async fn leases_renew_owner(
        &self,
        owner: &str,
        duration: Duration,
        now: Timestamp,
    ) -> StoreResult<u64> {
        renew::owner(&self.db, owner, duration, now).await
    }

    async fn item_complete(
        &self,
        lease: &LeaseRef,
        output: Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.batch.complete(lease, output, now).await
    }

    async fn item_complete_with_follow_ups(
        &self,
        lease: &LeaseRef,
        output: Value,
        follow_ups: Vec<NewItem>,
        now: Timestamp,
    ) -> StoreResult<Vec<ItemId>> {
        if follow_ups.is_empty() {
            self.batch.complete(lease, output, now).await?;
            return Ok(Vec::new());
        }
        follow_up::run(&self.db, &self.channel, lease, output, follow_ups, now).await
    }

    async fn item_fail(
        &self,
        lease: &LeaseRef,
        error: &str,
        disposition: FailDisposition,
        now: Timestamp,
    ) -> StoreResult<FailOutcome> {
        self.batch.fail(lease, error, disposition, now).await
    }

    async fn item_release(
        &self,
        lease: &LeaseRef,
        max_releases: Option<u32>,
        now: Timestamp,
    ) -> StoreResult<ReleaseOutcome> {
        release::run(&self.db, lease, max_releases, self.opts.history_keep, now).await
    }

    async fn items_cancel(
        &self,
        target: &ItemSelector,
        dry_run: bool,
        now: Timestamp,
    ) -> StoreResult<ActionReport> {
        cancel::run(&self.db, target, dry_run, now).await
    }

    async fn item_cancel_confirm(&self, lease: &LeaseRef, now: Timestamp) -> StoreResult<()> {
        no_nul("owner", &lease.owner)?;
        cancel::confirm(&self.db, lease, self.opts.history_keep, now).await
    }

    async fn items_retry(&self, req: &RetryRequest, now: Timestamp) -> StoreResult<ActionReport> {
        retry::run(&self.db, &self.channel, req, now).await
    }

    async fn items_delete(
        &self,
        target: &ItemSelector,
        dry_run: bool,
    ) -> StoreResult<ActionReport> {
        delete::run(&self.db, target, dry_run).await
    }

    async fn kind_pause(&self, kind: &str, now: Timestamp) -> StoreResult<bool> {
        pause::pause(&self.db, kind, now).await
    }

    async fn kind_resume(&self, kind: &str) -> StoreResult<bool> {
        pause::resume(&self.db, &self.channel, kind).await
    }

    async fn kinds_paused(&self) -> StoreResult<Vec<PausedKind>> {
        pause::list(&self.db).await
    }

    async fn schedule_upsert(
        &self,
        spec: &ScheduleSpec,
        now: Timestamp,
    ) -> StoreResult<ScheduleRecord> {
        schedule::upsert(&self.db, spec, now).await
    }

    async fn schedule_claim(
        &self,
        claim: &ScheduleClaim,
        now: Timestamp,
    ) -> StoreResult<Option<Vec<ItemId>>> {
        schedule::claim(&self.db, &self.channel, claim, now).await
    }

    async fn schedules_list(&self) -> StoreResult<Vec<ScheduleRecord>> {
        schedule::list(&self.db).await
    }

    async fn item_attempts(&self, id: ItemId) -> StoreResult<Vec<Attempt>> {
        history::list(&self.db, id, self.opts.history_keep).await
    }

    async fn item_dependencies(&self, id: ItemId) -> StoreResult<Vec<Dependency>> {
        dependencies::list(&self.db, id).await
    }

    async fn item_park(
        &self,
        lease: &LeaseRef,
        request: &DecisionRequest,
        now: Timestamp,
    ) -> StoreResult<()> {
        park::run(&self.db, lease, request, now).await
    }

    async fn item_decide(&self, id: ItemId, answer: &str, now: Timestamp) -> StoreResult<Item> {
        decide::run(&self.db, id, answer, now).await
    }

    async fn item_progress(
        &self,
        lease: &LeaseRef,
        progress: Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        progress::run(&self.db, lease, &progress, now).await
    }

    async fn checkpoint_save(
        &self,
        lease: &LeaseRef,
        name: &str,
        payload: Value,
        now: Timestamp,
    ) -> StoreResult<i64> {
        checkpoint::save(&self.db, lease, name, &payload, now).await
    }

    async fn checkpoints_list(&self, item: ItemId) -> StoreResult<Vec<Checkpoint>> {
        checkpoint::list(&self.db, item).await
    }

    async fn lease_status(&self, id: ItemId, now: Timestamp) -> StoreResult<LeaseStatus> {
        read::lease_status(&self.db, id, now).await
    }

    async fn leases_of_owner(&self, owner: &str) -> StoreResult<Vec<Item>> {
        read::of_owner(&self.db, owner).await
    }

    async fn item_get(&self, id: ItemId) -> StoreResult<Option<Item>> {
        read::get(&self.db, id).await
    }

    async fn items_count(&self) -> StoreResult<StatusCounts> {
        read::count(&self.db).await
    }

    async fn items_list(&self, filter: &ItemFilter) -> StoreResult<Vec<Item>> {
        read::list(&self.db, filter).await
    }

    async fn items_reap_expired(
        &self,
        req: &ReapRequest,
        liveness: &dyn LivenessCheck,
        now: Timestamp,
    ) -> StoreResult<RecoveryStats> {
        reap::run(
            &self.db,
            &self.channel,
            req,
            liveness,
            self.opts.history_keep,
            now,
        )
        .await
    }

    async fn items_reap_by_registry(
        &self,
        req: &ReapRequest,
        missed_intervals: u32,
        now: Timestamp,
    ) -> StoreResult<RecoveryStats> {
        emergency::reap(&self.db, req, missed_intervals, self.opts.history_keep, now).await
    }

    async fn items_release_dead_nodes(
        &self,
        req: &leasehold_core::DeadNodesRequest,
        now: Timestamp,
    ) -> StoreResult<Vec<leasehold_core::ReleasedNode>> {
        emergency::release_dead_nodes(&self.db, req, self.opts.history_keep, now).await
    }

    async fn items_recover_owner(
        &self,
        owner: &str,
        now: Timestamp,
    ) -> StoreResult<Vec<RecoveredItem>> {
        let holder = recover::Holder::Owner(owner.to_owned());
        recover::run(
            &self.db,
            &self.channel,
            &holder,
            self.opts.history_keep,
            now,
        )
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
        recover::run(
            &self.db,
            &self.channel,
            &holder,
            self.opts.history_keep,
            now,
        )
        .await
    }

    async fn node_register(
        &self,
        node: &NodeRecord,
        missed_intervals: u32,
        now: Timestamp,
    ) -> StoreResult<NodeClaim> {
        registry::register(&self.db, node, missed_intervals, now).await
    }

    async fn node_heartbeat(&self, node: &NodeRecord) -> StoreResult<()> {
        registry::heartbeat(&self.db, node).await
    }

    async fn node_stop(&self, node_id: &str, incarnation: i64, now: Timestamp) -> StoreResult<()> {
        registry::stop(&self.db, node_id, incarnation, now).await
    }

    async fn node_get(&self, node_id: &str) -> StoreResult<Option<NodeRecord>> {
        registry::get(&self.db, node_id).await
    }

    async fn nodes_list(&self) -> StoreResult<Vec<NodeRecord>> {
        registry::list(&self.db).await
    }

    async fn items_depth_by_kind(&self) -> StoreResult<Vec<KindDepth>> {
        activity::depth_by_kind(&self.db).await
    }

    async fn items_finished_since(
        &self,
        since: Timestamp,
        bucket: Duration,
    ) -> StoreResult<Vec<FinishedBucket>> {
        let bucket_ms = leasehold_core::clock::duration_millis(bucket);
        activity::finished_since(&self.db, since, bucket_ms).await
    }

    async fn items_recently_finished(
        &self,
        status: ItemStatus,
        limit: u32,
    ) -> StoreResult<Vec<Item>> {
        activity::recently_finished(&self.db, status, limit).await
    }

    async fn cleanup(&self, req: &CleanupRequest) -> StoreResult<CleanupReport> {
        cleanup::run(&self.db, req).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.db.query("SELECT 1", &[]).await.map(|_| ())
    }

    /// This store's [subscription](PgStore::subscribe): opens the listening connection on the
    /// first call (shared by every clone) and returns once it listens.
    async fn wakeups(&self) -> StoreResult<Option<Box<dyn Wakeups>>> {
        let receiver = self.subscribe().await?;
        Ok(Some(Box::new(Subscription(receiver))))
    }

    /// A [`DatabaseClock`] on the server's clock: every host sharing this database takes its
    /// lease times from the one clock.
    async fn clock_sync(&self) -> StoreResult<Option<Arc<dyn SharedClock>>> {
        let clock = DatabaseClock::sync_from(self, self.host_clock.clone()).await?;
        Ok(Some(Arc::new(clock)))
    }
}
