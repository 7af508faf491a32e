//! The monitor against a real SQLite file and real trees: a node that stops heartbeating is
//! declared dead after exactly the configured number of intervals and its items are taken
//! back; a gracefully stopped node is "stopped", never dead; a monitor whose own store access
//! fails judges nobody. Time is a ManualClock moved by hand; checks run on demand
//! (`monitor_now`), and tests wait on events, never on sleeps.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, Notify};

use leasehold_core::{
    Clock, ItemId, ItemStatus, ManualClock, NewItem, Store, SystemClock, WorkerState, WorkerView,
};
use leasehold_runtime::faults::FaultyStore;
use leasehold_runtime::{
    DeadNode, JobContext, JobError, Leasehold, LeaseholdBuilder, MonitorOutcome, MonitorReport,
    NodeEvent,
};
use leasehold_sqlite::SqliteStore;

mod common;
use common::{wait_for, WAIT};
/// What this test binary logs at WARN and above, captured by one global subscriber (the monitor
/// runs on the runtime's threads, so a thread-local one would miss it).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
    LOGS.get_or_init(Mutex::default)
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured log lines that contain every one of `parts`.
fn logged(parts: &[&str]) -> Vec<String> {
    String::from_utf8_lossy(&logs().lock().unwrap())
        .lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .map(str::to_string)
        .collect()
}

/// The heartbeat interval of every node here; dead after 3 of them.
const BEAT: Duration = Duration::from_secs(10);

async fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(dir.path().join("monitor.db"))
            .await
            .expect("open store"),
    )
}

/// A node whose timers (heartbeat, sweep, monitor) are far apart in real time: the manual
/// clock alone moves its view of time, and checks run on demand.
fn builder(store: Arc<dyn Store>, node: &str, clock: &ManualClock) -> LeaseholdBuilder {
    Leasehold::builder(store)
        .node_id(node)
        .workers(1)
        .lease(Duration::from_secs(600))
        .heartbeat(BEAT)
        .sweep(Duration::from_secs(3600))
        .stale(Duration::from_secs(3600))
        .poll_interval(Duration::from_millis(50))
        .monitor_interval(Duration::from_secs(3600))
        .clock(Arc::new(clock.clone()))
}

fn checked(outcome: MonitorOutcome) -> MonitorReport {
    match outcome {
        MonitorOutcome::Checked(r) => r,
        MonitorOutcome::StoodDown(why) => panic!("the monitor stood down: {why}"),
    }
}

async fn status(store: &Arc<dyn Store>, id: ItemId) -> ItemStatus {
    store.item_get(id).await.unwrap().expect("item").status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_stops_heartbeating_is_dead_after_three_intervals_and_its_items_are_taken_back() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let store = open(&dir).await;

    // Node "bravo" runs a handler that blocks, on a store that will stop answering it.
    let bravo_store = Arc::new(FaultyStore::new(store.clone()));
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let bravo = builder(bravo_store.clone(), "bravo", &clock)
        .handler("job", move |_ctx: JobContext| {
            let g = g.clone();
            async move {
                g.notified().await;
                Ok::<_, JobError>(json!("late"))
            }
        })
        .start()
        .await
        .unwrap();
    let mut bravo_events = bravo.events();
    let id = bravo.enqueue(NewItem::new("job", json!({}))).await.unwrap();
    wait_for(&mut bravo_events, "bravo's acquisition", |e| {
        matches!(e, NodeEvent::Acquired { item, .. } if *item == id).then_some(())
    })
    .await;

    // "alpha" watches, with an alert callback; it has no handler for "job", so a taken-back
    // item stays pending where the test can see it.
    let (alerts_tx, mut alerts) = mpsc::unbounded_channel::<DeadNode>();
    let builder = builder(store.clone(), "alpha", &clock)
        .monitor(true)
        .on_node_dead(move |dead| {
            let _ = alerts_tx.send(dead.clone());
        })
        .handler("other", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(1))
        });
    let mut alpha_events = builder.subscribe();
    let alpha = builder.start().await.unwrap();

    // Bravo's store fails from now on: its heartbeats stop landing.
    bravo_store.fail_for(Duration::from_secs(3600));
    let row = store.node_get("bravo").await.unwrap().expect("bravo's row");

    clock.advance(BEAT * 3);
    let report = checked(alpha.monitor_now().await.unwrap());
    assert!(
        report.dead.is_empty(),
        "alive at exactly 3 intervals: {report:?}"
    );
    assert_eq!(status(&store, id).await, ItemStatus::InProgress);
    assert_eq!(
        WorkerView::of(&row, clock.now(), 3).state,
        WorkerState::Alive
    );

    clock.advance(Duration::from_millis(1));
    let report = checked(alpha.monitor_now().await.unwrap());
    assert_eq!(report.dead.len(), 1, "{report:?}");
    let dead = &report.dead[0];
    assert_eq!(
        (
            dead.node_id.as_str(),
            dead.incarnation,
            dead.state,
            dead.first_seen
        ),
        ("bravo", bravo.incarnation(), WorkerState::Dead, true)
    );
    assert_eq!(dead.recovered.len(), 1);
    assert_eq!(dead.recovered[0].id, id);
    assert_eq!(report.requeued, 1);
    let item = store.item_get(id).await.unwrap().unwrap();
    assert_eq!(item.status, ItemStatus::Pending, "the lease was released");
    assert_eq!(item.epoch, 2, "the requeue fenced out bravo's epoch");
    assert!(
        item.lease_expires_at.is_none() && item.owner.is_none(),
        "{item:?}"
    );

    // The three alerts: the callback, the event and a warning in the log.
    let alert = tokio::time::timeout(WAIT, alerts.recv())
        .await
        .expect("callback in time")
        .expect("callback");
    assert_eq!(
        (alert.node_id.as_str(), alert.recovered.len()),
        ("bravo", 1)
    );
    wait_for(&mut alpha_events, "the NodeDead event", |e| match e {
        NodeEvent::NodeDead {
            node_id, recovered, ..
        } if node_id == "bravo" => Some(*recovered),
        _ => None,
    })
    .await;
    assert_eq!(
        WorkerView::of(&row, clock.now(), 3).state,
        WorkerState::Dead
    );
    let bravo_incarnation = format!("incarnation={}", bravo.incarnation());
    let warning = [
        "WARN",
        "worker node is dead: no heartbeat for 3 intervals",
        "node=bravo",
        bravo_incarnation.as_str(),
        "items_taken_back=1",
    ];
    assert_eq!(logged(&warning).len(), 1, "{:?}", logged(&["node=bravo"]));

    // Once per incarnation: the next check neither alerts nor finds anything to take back.
    let again = checked(alpha.monitor_now().await.unwrap());
    assert!(again.dead.is_empty(), "{again:?}");
    assert!(
        alerts.try_recv().is_err(),
        "a second alert for the same death"
    );
    assert_eq!(
        logged(&warning).len(),
        1,
        "a second warning for the same death"
    );
    let stats = alpha.stats().monitor;
    assert_eq!((stats.dead_nodes, stats.recovered), (1, 1));

    // Bravo's zombie handler finishes: its write at epoch 1 is refused. (Bravo, healed, may
    // then acquire the item again at a new epoch: that is fine, and not a completion.)
    bravo_store.heal();
    gate.notify_one();
    wait_for(&mut bravo_events, "bravo's lease loss", |e| {
        matches!(e, NodeEvent::LeaseLost { item, epoch } if *item == id && *epoch == 1)
            .then_some(())
    })
    .await;
    let item = store.item_get(id).await.unwrap().unwrap();
    assert_ne!(
        item.status,
        ItemStatus::Completed,
        "the zombie completed: {item:?}"
    );
    alpha.shutdown(Duration::from_secs(5)).await.unwrap();
    bravo.shutdown(Duration::from_millis(100)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gracefully_stopped_node_is_stopped_not_dead() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let store = open(&dir).await;
    let bravo = builder(store.clone(), "bravo", &clock)
        .handler("job", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(1))
        })
        .start()
        .await
        .unwrap();
    let report = bravo.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.registry_marked_stopped, "{report:?}");

    let (alerts_tx, mut alerts) = mpsc::unbounded_channel::<DeadNode>();
    let alpha = builder(store.clone(), "alpha", &clock)
        .monitor(true)
        .on_node_dead(move |dead| {
            let _ = alerts_tx.send(dead.clone());
        })
        .handler("other", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(1))
        })
        .start()
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    let report = checked(alpha.monitor_now().await.unwrap());
    assert!(report.dead.is_empty(), "{report:?}");
    assert!(alerts.try_recv().is_err(), "a stopped node raised an alert");
    let row = store.node_get("bravo").await.unwrap().expect("row kept");
    assert_eq!(
        WorkerView::of(&row, clock.now(), 3).state,
        WorkerState::Stopped
    );
    assert_eq!(alpha.stats().monitor.dead_nodes, 0);
    alpha.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_judges_nobody_while_its_own_store_is_failing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let store = open(&dir).await;
    // A dead node's row and its item, written directly.
    let ghost = leasehold_core::NodeRecord {
        node_id: "ghost".into(),
        incarnation: 7,
        worker_type: "*".into(),
        status: leasehold_core::NodeStatus::Processing,
        current_item: None,
        task_text: None,
        last_heartbeat_at: clock.now(),
        heartbeat_interval_ms: 10_000,
        started_at: clock.now(),
        metadata: json!({}),
    };
    store.node_heartbeat(&ghost).await.unwrap();
    let id = store
        .item_enqueue(NewItem::new("elsewhere", json!({})), clock.now())
        .await
        .unwrap();
    let req =
        leasehold_core::AcquireRequest::new("ghost/w0", Duration::from_secs(600)).node("ghost", 7);
    store
        .item_acquire(&req, clock.now())
        .await
        .unwrap()
        .unwrap();

    let faulty = Arc::new(FaultyStore::new(store.clone()));
    let builder = builder(faulty.clone(), "alpha", &clock)
        .monitor(true)
        .handler("other", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(1))
        });
    let mut events = builder.subscribe();
    let alpha = builder.start().await.unwrap();
    clock.advance(Duration::from_secs(31));
    faulty.fail_for(Duration::from_secs(3600));
    let outcome = alpha.monitor_now().await.unwrap();
    assert!(
        matches!(outcome, MonitorOutcome::StoodDown(_)),
        "{outcome:?}"
    );
    assert_eq!(
        status(&store, id).await,
        ItemStatus::InProgress,
        "nothing taken back"
    );
    wait_for(&mut events, "the stand-down event", |e| {
        matches!(e, NodeEvent::MonitorStoodDown { .. }).then_some(())
    })
    .await;

    faulty.heal();
    let report = checked(alpha.monitor_now().await.unwrap());
    assert_eq!(report.dead.len(), 1, "{report:?}");
    assert_eq!(status(&store, id).await, ItemStatus::Pending);
    let stats = alpha.stats().monitor;
    assert!(stats.stand_downs >= 1 && stats.dead_nodes == 1, "{stats:?}");
    alpha.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_leaves_an_item_whose_heartbeat_is_fresh_although_its_nodes_row_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let store = open(&dir).await;
    // Node "lagging" (incarnation 7) holds two items. Its registry row stops at the start,
    // while one worker keeps renewing its lease: the row lags the leases' heartbeats.
    let row = leasehold_core::NodeRecord {
        node_id: "lagging".into(),
        incarnation: 7,
        worker_type: "*".into(),
        status: leasehold_core::NodeStatus::Processing,
        current_item: None,
        task_text: None,
        last_heartbeat_at: clock.now(),
        heartbeat_interval_ms: 10_000,
        started_at: clock.now(),
        metadata: json!({}),
    };
    store.node_heartbeat(&row).await.unwrap();
    store
        .items_enqueue(
            vec![
                NewItem::new("elsewhere", json!({ "n": 0 })),
                NewItem::new("elsewhere", json!({ "n": 1 })),
            ],
            clock.now(),
        )
        .await
        .unwrap();
    let mut leases = Vec::new();
    for w in ["lagging/w0", "lagging/w1"] {
        let req =
            leasehold_core::AcquireRequest::new(w, Duration::from_secs(600)).node("lagging", 7);
        leases.push(
            store
                .item_acquire(&req, clock.now())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let (silent, renewed) = (&leases[0], &leases[1]);

    let alpha = builder(store.clone(), "alpha", &clock)
        .handler("other", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(1))
        })
        .start()
        .await
        .unwrap();
    assert!(alpha.config().monitor, "the monitor is on by default");
    clock.advance(BEAT * 3 + Duration::from_millis(1));
    assert_eq!(
        WorkerView::of(&row, clock.now(), 3).state,
        WorkerState::Dead,
        "the row is stale"
    );
    store
        .lease_renew(&renewed.lease, Duration::from_secs(600), clock.now())
        .await
        .unwrap();

    let report = checked(alpha.monitor_now().await.unwrap());
    assert_eq!(report.dead.len(), 1, "{report:?}");
    let taken: Vec<ItemId> = report.dead[0].recovered.iter().map(|r| r.id).collect();
    assert_eq!(
        taken,
        vec![silent.item.id],
        "only the silent item: {report:?}"
    );
    assert_eq!(status(&store, silent.item.id).await, ItemStatus::Pending);
    let kept = store.item_get(renewed.item.id).await.unwrap().unwrap();
    assert_eq!(
        (kept.status, kept.epoch, kept.owner.as_deref()),
        (
            ItemStatus::InProgress,
            renewed.item.epoch,
            Some("lagging/w1")
        ),
        "the renewed item keeps its lease"
    );
    store
        .item_complete(
            &renewed.lease,
            json!("finished by its own worker"),
            clock.now(),
        )
        .await
        .expect("its worker still completes it");

    // Had a worker gone silent too, the next window takes its item: the same worker takes
    // the requeued item again and is heard from no more.
    let req = leasehold_core::AcquireRequest::new("lagging/w1", Duration::from_secs(600))
        .node("lagging", 7)
        .kinds(["elsewhere"]);
    let late = store
        .item_acquire(&req, clock.now())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(late.item.id, renewed.item.id);
    let report = checked(alpha.monitor_now().await.unwrap());
    assert!(
        report
            .dead
            .iter()
            .all(|d| d.recovered.iter().all(|r| r.id != late.item.id)),
        "a fresh acquisition is not taken: {report:?}"
    );
    clock.advance(BEAT * 3 + Duration::from_millis(1));
    let report = checked(alpha.monitor_now().await.unwrap());
    let taken: Vec<ItemId> = report
        .dead
        .iter()
        .flat_map(|d| d.recovered.iter().map(|r| r.id))
        .collect();
    assert_eq!(taken, vec![late.item.id], "{report:?}");
    alpha.shutdown(Duration::from_secs(5)).await.unwrap();
}
