//! LISTEN/NOTIFY reaches the runtime: a node whose idle workers have backed off towards a long
//! poll interval picks up an item that another process (here: another `PgStore`, with its own
//! pool) enqueued, at once, because the node listens to its store's wake-ups. Each test works in
//! its own schema; without `LEASEHOLD_PG_URL` each prints why it was skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use leasehold_core::store::Wakeups;
use leasehold_core::{
    AcquireRequest, Checkpoint, CleanupReport, CleanupRequest, Clock, FailDisposition, FailOutcome,
    FinishedBucket, Item, ItemFilter, ItemId, ItemStatus, KindDepth, LeaseRef, LeaseStatus, Leased,
    LivenessCheck, NewItem, NodeRecord, ReapRequest, RecoveredItem, RecoveryStats, StatusCounts,
    Store, StoreResult, SystemClock, Timestamp,
};
use leasehold_postgres::testing::store_or_skip;
use leasehold_postgres::{PgStore, WAKE_ALL};
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

/// The node's poll interval: far longer than any pickup the test accepts.
const POLL_INTERVAL: Duration = Duration::from_secs(30);
/// The test enqueues once an idle worker's empty polls are at least this far apart: its next
/// timed poll is then at least this far off (idle back-off only grows), so a pickup sooner
/// than [`PROMPT`] can only come from a wake-up.
const QUIET_GAP: Duration = Duration::from_secs(2);
/// The longest a woken pickup may take (NOTIFY, the listener, the worker's acquire), with room
/// for two shared cores under load.
const PROMPT: Duration = Duration::from_secs(1);
/// A bound on every wait, so a broken build fails instead of hanging.
const GIVE_UP: Duration = Duration::from_secs(90);

/// The PostgreSQL store, reporting every acquisition (when it returned, how many items it
/// leased) on a channel: the test's signal that an idle worker polled and found nothing.
#[derive(Debug)]
struct Observed {
    inner: PgStore,
    acquires: mpsc::UnboundedSender<(Instant, usize)>,
}

#[async_trait]
impl Store for Observed {
    async fn items_enqueue(&self, items: Vec<NewItem>, now: Timestamp) -> StoreResult<Vec<ItemId>> {
        self.inner.items_enqueue(items, now).await
    }
    async fn items_acquire(
        &self,
        req: &AcquireRequest,
        now: Timestamp,
    ) -> StoreResult<Vec<Leased>> {
        let leased = self.inner.items_acquire(req, now).await;
        let found = leased.as_ref().map_or(0, Vec::len);
        let _ = self.acquires.send((Instant::now(), found));
        leased
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
        self.inner.item_complete(lease, output, now).await
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
    async fn item_release(&self, l: &LeaseRef, now: Timestamp) -> StoreResult<()> {
        self.inner.item_release(l, now).await
    }
    async fn item_cancel(&self, id: ItemId, now: Timestamp) -> StoreResult<()> {
        self.inner.item_cancel(id, now).await
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
        self.inner.items_reap_expired(req, liveness, now).await
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
        now: Timestamp,
    ) -> StoreResult<Vec<RecoveredItem>> {
        self.inner.items_recover_node(id, inc, now).await
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
    async fn wakeups(&self) -> StoreResult<Option<Box<dyn Wakeups>>> {
        self.inner.wakeups().await
    }
}

/// The next event matching `pick`, within [`GIVE_UP`].
async fn next_event(
    rx: &mut broadcast::Receiver<NodeEvent>,
    pick: impl Fn(&NodeEvent) -> bool,
) -> Instant {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if pick(&e) => return Instant::now(),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the event stream closed"),
            }
        }
    };
    tokio::time::timeout(GIVE_UP, wait)
        .await
        .expect("no matching event in time")
}

#[tokio::test]
async fn an_idle_node_picks_up_an_item_another_store_enqueued_without_waiting_for_its_poll() {
    let test = "an_idle_node_picks_up_an_item_another_store_enqueued_without_waiting_for_its_poll";
    let Some((store, schema)) = store_or_skip(test, "lh_wake").await else {
        return;
    };
    let (acquires, mut polls) = mpsc::unbounded_channel();
    let observed = Arc::new(Observed {
        inner: store,
        acquires,
    });
    let builder = Leasehold::builder(observed)
        .node_id("listener")
        .workers(1)
        .poll_interval(POLL_INTERVAL)
        .handler("echo", |ctx: JobContext| async move {
            Ok::<_, JobError>(ctx.input().clone())
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.expect("start");

    // Wait (on the store's reports, not a timer) until the idle worker's empty polls are
    // QUIET_GAP apart.
    let mut last: Option<Instant> = None;
    let (quiet_since, gap) = loop {
        let (at, found) = tokio::time::timeout(GIVE_UP, polls.recv())
            .await
            .expect("the worker kept polling")
            .expect("the store is alive");
        assert_eq!(found, 0, "nothing was enqueued yet");
        if let Some(gap) = last.map(|prev| at.duration_since(prev)) {
            if gap >= QUIET_GAP {
                break (at, gap);
            }
        }
        last = Some(at);
    };

    // Another process's enqueue: a second store with its own pool, not the node's handle.
    let other = PgStore::open(&schema.url())
        .await
        .expect("open a second store");
    let enqueued = Instant::now();
    let id = other
        .item_enqueue(
            NewItem::new("echo", json!({ "from": "elsewhere" })),
            SystemClock.now(),
        )
        .await
        .expect("enqueue");
    let acquired = next_event(
        &mut events,
        |e| matches!(e, NodeEvent::Acquired { item, .. } if *item == id),
    )
    .await;
    next_event(
        &mut events,
        |e| matches!(e, NodeEvent::Completed { item, .. } if *item == id),
    )
    .await;
    let pickup = acquired.duration_since(enqueued);
    println!(
        "{test}: enqueued {:?} after the worker's last empty poll (its polls were {:?} apart); \
         picked up {:?} after the enqueue (poll interval {:?})",
        enqueued.duration_since(quiet_since),
        gap,
        pickup,
        POLL_INTERVAL
    );
    assert!(
        pickup < PROMPT,
        "picked up after {pickup:?}: that is the worker's timed poll, not a wake-up"
    );
    let item = other.item_get(id).await.expect("read").expect("the item");
    assert_eq!(item.status, ItemStatus::Completed);
    assert_eq!(item.output, Some(json!({ "from": "elsewhere" })));
    let report = node
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert!(report.registry_marked_stopped);
}

#[tokio::test]
async fn wakeups_carry_the_counts_of_ready_items_other_stores_commit() {
    let test = "wakeups_carry_the_counts_of_ready_items_other_stores_commit";
    let Some((store, schema)) = store_or_skip(test, "lh_wake").await else {
        return;
    };
    let mut wakeups = store
        .wakeups()
        .await
        .expect("listen")
        .expect("PostgreSQL has wake-ups");
    let other = PgStore::open(&schema.url())
        .await
        .expect("open a second store");
    let now = SystemClock.now();
    let items = (0..3).map(|i| NewItem::new("k", json!(i))).collect();
    other.items_enqueue(items, now).await.expect("enqueue");
    let count = tokio::time::timeout(GIVE_UP, wakeups.next())
        .await
        .expect("a wake-up");
    assert_eq!(count, Some(3));
    assert_ne!(count, Some(WAKE_ALL));
    // The listener belongs to the store: once every clone is gone, the wake-ups end.
    drop(store);
    let end = tokio::time::timeout(GIVE_UP, wakeups.next())
        .await
        .expect("the stream ends");
    assert_eq!(end, None);
    println!("{test}: one wake-up of 3 for a batch of 3, then the end when the store went");
}
