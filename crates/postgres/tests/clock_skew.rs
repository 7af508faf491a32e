//! Hosts whose clocks are minutes off share one PostgreSQL queue safely because a node on
//! PostgreSQL takes its lease times from the database server's clock by default.
//!
//! Node B plays a host whose system clock is ten minutes off ([`PgStore::with_host_clock`]);
//! node A is a healthy peer running the reaper and the monitor. With B on its default clock
//! (the database's), A never takes B's live item, and takes it back within seconds once B
//! dies. The `…_on_its_own_clock_…` tests give B its skewed clock explicitly and show the
//! harm the default prevents, so the setup is proven to notice a skew. Each test works in its
//! own schema; without `LEASEHOLD_PG_URL` each is skipped with the reason printed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{Clock, ItemId, ItemStatus, Store, SystemClock, Timestamp};
use leasehold_postgres::testing::{store_or_skip, TestSchema};
use leasehold_postgres::PgStore;
use leasehold_runtime::faults::FaultyStore;
use leasehold_runtime::{
    ClockSource, JobContext, JobError, Leasehold, LeaseholdBuilder, NodeEvent, NodeHandle,
};
use serde_json::json;
use tokio::sync::{broadcast, mpsc, Notify};

/// How far off B's host clock is.
const SKEW: Duration = Duration::from_secs(600);
const LEASE: Duration = Duration::from_millis(1500);
const BEAT: Duration = Duration::from_millis(300);
/// A's sweeps and monitor checks watched before concluding that A leaves B's item alone:
/// together several leases' worth of judgements.
const CHECKS: usize = 12;
/// A bound on every wait, so a broken property fails instead of hanging.
const GIVE_UP: Duration = Duration::from_secs(60);

/// A host clock `ahead` (or behind) the true time by [`SKEW`].
#[derive(Debug)]
struct Skewed {
    ahead: bool,
}

impl Clock for Skewed {
    fn now(&self) -> Timestamp {
        let now = SystemClock.now();
        if self.ahead {
            now.plus(SKEW)
        } else {
            now.minus(SKEW)
        }
    }
}

/// Which clock B runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum BClock {
    /// The default: the database's clock, measured against B's skewed host clock.
    Default,
    /// B's skewed host clock, given explicitly.
    OwnSkewed,
}

fn tuned(builder: LeaseholdBuilder) -> LeaseholdBuilder {
    builder
        .lease(LEASE)
        .heartbeat(BEAT)
        .sweep(BEAT)
        .monitor(true)
        .monitor_interval(BEAT)
        .dead_after_missed(3)
        .poll_interval(Duration::from_millis(100))
        .workers(1)
}

/// The test's two nodes and what they share.
struct Pair {
    a: NodeHandle,
    a_events: broadcast::Receiver<NodeEvent>,
    b: NodeHandle,
    b_store: Arc<FaultyStore>,
    item: ItemId,
    runs: Arc<AtomicUsize>,
    release: Arc<Notify>,
    pg: PgStore,
    _schema: TestSchema,
}

/// Starts B (skewed host, `clock`), lets it take one `hold` item, then starts healthy A.
async fn pair(test: &str, ahead: bool, clock: BClock) -> Option<Pair> {
    let (pg, schema) = store_or_skip(test, "lh_skew").await?;
    let skewed: Arc<dyn Clock> = Arc::new(Skewed { ahead });
    let b_pg = schema
        .open()
        .await
        .expect("open B")
        .with_host_clock(skewed.clone());
    let b_store = Arc::new(FaultyStore::new(Arc::new(b_pg)));
    let runs = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let mut b = tuned(Leasehold::builder(b_store.clone())).node_id("host-b");
    if clock == BClock::OwnSkewed {
        b = b.clock(skewed);
    }
    let (r, rel) = (runs.clone(), release.clone());
    let b = b
        .handler("hold", move |ctx: JobContext| {
            let (r, rel, started) = (r.clone(), rel.clone(), started_tx.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                let _ = started.send(ctx.id());
                rel.notified().await;
                Ok::<_, JobError>(json!({ "by": "b" }))
            }
        })
        .start()
        .await
        .expect("start B");
    let expected = match clock {
        BClock::Default => ClockSource::Database,
        BClock::OwnSkewed => ClockSource::Given,
    };
    assert_eq!(b.clock_source(), expected);
    // Enqueued on B's clock, as B's own code would: B can start it at once.
    let item = b.enqueue(b.item("hold", json!({}))).await.expect("enqueue");
    let taken = tokio::time::timeout(GIVE_UP, started.recv())
        .await
        .expect("B started the item in time")
        .expect("B's handler");
    assert_eq!(taken, item);

    let r = runs.clone();
    let a_builder = tuned(Leasehold::builder(Arc::new(pg.clone())))
        .node_id("host-a")
        .handler("hold", move |_ctx: JobContext| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<_, JobError>(json!({ "by": "a" }))
            }
        });
    let a_events = a_builder.subscribe();
    let a = a_builder.start().await.expect("start A");
    assert_eq!(a.clock_source(), ClockSource::Database);
    Some(Pair {
        a,
        a_events,
        b,
        b_store,
        item,
        runs,
        release,
        pg,
        _schema: schema,
    })
}

/// Watches A's next [`CHECKS`] sweeps and monitor checks; returns how many items they took
/// back.
async fn taken_back_over_checks(events: &mut broadcast::Receiver<NodeEvent>) -> u64 {
    let mut seen = 0;
    let mut taken = 0;
    let watch = async {
        while seen < CHECKS {
            match events.recv().await {
                Ok(NodeEvent::Swept {
                    recovered, failed, ..
                }) => {
                    seen += 1;
                    taken += recovered + failed;
                }
                Ok(NodeEvent::NodeDead { recovered, .. }) => taken += recovered as u64,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("A's events closed: {e}"),
            }
        }
        taken
    };
    tokio::time::timeout(GIVE_UP, watch)
        .await
        .expect("A kept sweeping")
}

/// Waits until A takes back an item (a sweep or the monitor).
async fn until_taken_back(events: &mut broadcast::Receiver<NodeEvent>) {
    let watch = async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::Swept { recovered, .. }) if recovered > 0 => return,
                Ok(NodeEvent::NodeDead { recovered, .. }) if recovered > 0 => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("A's events closed: {e}"),
            }
        }
    };
    tokio::time::timeout(GIVE_UP, watch)
        .await
        .expect("A took the dead host's item back in time");
}

async fn epoch_of(pg: &PgStore, item: ItemId) -> (ItemStatus, i64) {
    let it = pg.item_get(item).await.expect("read").expect("the item");
    (it.status, it.epoch)
}

async fn stop(p: &Pair) {
    let _ = p.a.shutdown(Duration::from_secs(5)).await;
    p.b_store.heal();
    let _ = p.b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_clock_is_minutes_behind_keeps_its_live_lease_on_the_database_clock() {
    let test = "a_host_whose_clock_is_minutes_behind_keeps_its_live_lease_on_the_database_clock";
    let Some(mut p) = pair(test, false, BClock::Default).await else {
        return;
    };
    let taken = taken_back_over_checks(&mut p.a_events).await;
    assert_eq!(taken, 0, "A took back B's live item");
    assert_eq!(
        epoch_of(&p.pg, p.item).await,
        (ItemStatus::InProgress, 1),
        "B still holds its first lease"
    );
    p.release.notify_one();
    let mut b_events = p.b.events();
    let done = async {
        loop {
            if let Ok(NodeEvent::Completed { item, epoch }) = b_events.recv().await {
                if item == p.item {
                    return epoch;
                }
            }
        }
    };
    let epoch = tokio::time::timeout(GIVE_UP, done)
        .await
        .expect("B completed");
    assert_eq!(epoch, 1);
    assert_eq!(p.runs.load(Ordering::SeqCst), 1, "the item ran once");
    stop(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_clock_is_minutes_behind_loses_its_live_lease_on_its_own_clock() {
    let test = "a_host_whose_clock_is_minutes_behind_loses_its_live_lease_on_its_own_clock";
    let Some(mut p) = pair(test, false, BClock::OwnSkewed).await else {
        return;
    };
    until_taken_back(&mut p.a_events).await;
    let (_, epoch) = epoch_of(&p.pg, p.item).await;
    assert!(
        epoch > 1,
        "a healthy peer took the live item (epoch {epoch})"
    );
    p.release.notify_one();
    stop(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_host_whose_clock_is_minutes_ahead_has_its_item_taken_back_on_the_database_clock() {
    let test =
        "a_dead_host_whose_clock_is_minutes_ahead_has_its_item_taken_back_on_the_database_clock";
    let Some(mut p) = pair(test, true, BClock::Default).await else {
        return;
    };
    // B dies as far as anyone else can tell: none of its writes reach the database again.
    p.b_store.fail_for(GIVE_UP * 2);
    until_taken_back(&mut p.a_events).await;
    let done = async {
        loop {
            if let (ItemStatus::Completed, epoch) = epoch_of(&p.pg, p.item).await {
                return epoch;
            }
            tokio::time::sleep(BEAT).await;
        }
    };
    let epoch = tokio::time::timeout(GIVE_UP, done)
        .await
        .expect("A completed it");
    assert!(epoch > 1, "A completed the item under a later lease");
    assert_eq!(p.runs.load(Ordering::SeqCst), 2, "B's attempt, then A's");
    stop(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_host_whose_clock_is_minutes_ahead_keeps_its_item_on_its_own_clock() {
    let test = "a_dead_host_whose_clock_is_minutes_ahead_keeps_its_item_on_its_own_clock";
    let Some(mut p) = pair(test, true, BClock::OwnSkewed).await else {
        return;
    };
    p.b_store.fail_for(GIVE_UP * 2);
    let taken = taken_back_over_checks(&mut p.a_events).await;
    assert_eq!(taken, 0);
    assert_eq!(
        epoch_of(&p.pg, p.item).await,
        (ItemStatus::InProgress, 1),
        "the dead host's lease, dated ten minutes ahead, still holds the item"
    );
    stop(&p).await;
}
