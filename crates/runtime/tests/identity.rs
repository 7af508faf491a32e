//! One live incarnation per node id, through the builder, on a real SQLite file: a second start
//! under a live node id is refused (naming the other incarnation's host, pid and silence) and
//! takes nothing; `takeover` waits until that incarnation is dead, then starts and takes back
//! its items; incarnations grow when the clock steps back. Time is a ManualClock moved by hand;
//! tests wait on events, never on sleeps.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast::Receiver;
use tokio::sync::Notify;

use leasehold_core::{
    Clock, Item, ItemId, ItemStatus, ManualClock, NewItem, NodeClaim, NodeRecord, NodeStatus,
    Store, SystemClock, Timestamp, WorkerState,
};
use leasehold_runtime::faults::{check_invariants, FaultyStore};
use leasehold_runtime::{
    JobContext, JobError, Leasehold, LeaseholdBuilder, NodeEvent, NodeHandle, RuntimeError,
    TreeExit, TreeState,
};
use leasehold_sqlite::SqliteStore;

mod common;
use common::{wait_for, WAIT};

/// Every node here heartbeats this often (real time); the manual clock alone ages its row.
const BEAT: Duration = Duration::from_millis(100);

async fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(dir.path().join("identity.db"))
            .await
            .expect("open store"),
    )
}

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
        .record_completions(true)
}

/// Registers a "job" handler whose first run blocks until `gate` is notified; later runs
/// finish at once.
fn blocking_once(b: LeaseholdBuilder, gate: Arc<Notify>) -> LeaseholdBuilder {
    let runs = Arc::new(AtomicU32::new(0));
    b.handler("job", move |_ctx: JobContext| {
        let (gate, runs) = (gate.clone(), runs.clone());
        async move {
            if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                gate.notified().await;
            }
            Ok::<_, JobError>(json!("done"))
        }
    })
}

/// Starts a node whose first handler run blocks until `gate` is notified (see
/// [`blocking_once`]), enqueues one item and waits until the node holds it: the node, its
/// events, the item and the item as leased.
async fn start_holding_one(
    b: LeaseholdBuilder,
    gate: Arc<Notify>,
) -> (NodeHandle, Receiver<NodeEvent>, ItemId, Item) {
    let node = blocking_once(b, gate).start().await.unwrap();
    let mut events = node.events();
    let id = node.enqueue(NewItem::new("job", json!({}))).await.unwrap();
    wait_for(&mut events, "the first node's acquisition", |e| {
        matches!(e, NodeEvent::Acquired { item, .. } if *item == id).then_some(())
    })
    .await;
    let held = node.store().item_get(id).await.unwrap().unwrap();
    (node, events, id, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_start_under_a_live_node_id_is_refused_naming_host_pid_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let store = open(&dir).await;
    let gate = Arc::new(Notify::new());
    let (first, mut events, id, held) =
        start_holding_one(builder(store.clone(), "dup", &clock), gate.clone()).await;

    clock.advance(Duration::from_millis(250));
    let err = builder(store.clone(), "dup", &clock)
        .handler("job", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!("second"))
        })
        .start()
        .await
        .expect_err("a second start under a live node id");
    assert!(err.is_node_id_in_use(), "{err:?}");
    let RuntimeError::NodeIdInUse {
        node_id,
        incarnation,
        host,
        pid,
        since,
    } = &err
    else {
        unreachable!()
    };
    assert_eq!(
        (node_id.as_str(), *incarnation, *pid),
        ("dup", first.incarnation(), Some(std::process::id()))
    );
    assert!(host.as_deref().is_some_and(|h| !h.is_empty()), "{host:?}");
    assert!(*since <= Duration::from_millis(250), "{since:?}");
    let message = err.to_string();
    for part in [
        "node id \"dup\" is in use",
        &format!("pid {}", std::process::id()),
        host.as_deref().unwrap(),
        "s ago",
        "--takeover",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert!(!message.contains('\n'), "one line: {message}");

    // The refused start took nothing: the item is still the first node's, same lease.
    assert_eq!(store.item_get(id).await.unwrap().unwrap(), held);
    let row = store.node_get("dup").await.unwrap().expect("row");
    assert_eq!(
        row.incarnation,
        first.incarnation(),
        "the row is still the first's"
    );
    assert_eq!(row.pid(), Some(std::process::id()));

    gate.notify_one();
    wait_for(&mut events, "the first node's completion", |e| {
        matches!(e, NodeEvent::Completed { item, .. } if *item == id).then_some(())
    })
    .await;
    let done = store.item_get(id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.epoch),
        (ItemStatus::Completed, held.epoch)
    );
    let report = check_invariants(
        store.as_ref(),
        &[id],
        first.faults().completions().as_deref(),
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{report:?}");
    first.shutdown(Duration::from_secs(5)).await.unwrap();

    // Stopped: the same id starts at once.
    let again = builder(store.clone(), "dup", &clock)
        .handler("job", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(1))
        })
        .start()
        .await
        .expect("a stopped incarnation does not hold its id");
    again.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_waits_until_the_live_incarnation_is_dead_then_starts_and_recovers_its_items() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let store = open(&dir).await;
    // The first node's store access can be cut, as a crash or a partition would.
    let first_store = Arc::new(FaultyStore::new(store.clone()));
    let gate = Arc::new(Notify::new());
    let (first, mut first_events, id, held) =
        start_holding_one(builder(first_store.clone(), "dup", &clock), gate.clone()).await;

    let second = builder(store.clone(), "dup", &clock)
        .takeover(true)
        .handler("job", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!("taken over"))
        });
    let mut second_events = second.subscribe();
    let mut starting = tokio::spawn(second.start());
    let waited = wait_for(&mut second_events, "the takeover's wait", |e| match e {
        NodeEvent::WaitingForTakeover {
            node_id,
            incarnation,
        } if node_id == "dup" => Some(*incarnation),
        _ => None,
    })
    .await;
    assert_eq!(waited, first.incarnation());
    // While the first lives (its row beats at the manual clock's now), the second waits.
    // Exactly one window on: still alive, and its beats keep it so. (A wait that must not end
    // can only be shown with a timeout.)
    clock.advance(BEAT * 3);
    tokio::time::timeout(Duration::from_millis(500), &mut starting)
        .await
        .expect_err("the takeover started beside a live incarnation");
    let now_held = store.item_get(id).await.unwrap().unwrap();
    assert_eq!(
        (now_held.status, now_held.owner_incarnation, now_held.epoch),
        (ItemStatus::InProgress, held.owner_incarnation, held.epoch),
        "nothing taken while it waits"
    );

    // The first node dies: nothing it writes lands any more. One window later its row is dead.
    first_store.fail_for(Duration::from_secs(3600));
    let row = store.node_get("dup").await.unwrap().expect("row");
    clock.advance(BEAT * 3 + Duration::from_millis(1));
    assert_eq!(row.state(clock.now(), 3), WorkerState::Dead);
    let second = tokio::time::timeout(WAIT, starting)
        .await
        .expect("the takeover started once the row was dead")
        .unwrap()
        .expect("start");
    assert!(
        second.incarnation() > first.incarnation(),
        "{} after {}",
        second.incarnation(),
        first.incarnation()
    );
    // Its worker's recover_mine took the dead incarnation's item back; it completes it.
    let epoch = wait_for(&mut second_events, "the item's completion", |e| match e {
        NodeEvent::Completed { item, epoch } if *item == id => Some(*epoch),
        _ => None,
    })
    .await;
    assert!(epoch > held.epoch, "completed under a new lease");
    let done = store.item_get(id).await.unwrap().unwrap();
    assert_eq!(done.output, Some(json!("taken over")));
    // The first node comes back as a zombie: its late result is fenced out (if it gets to
    // write it before its tree stops), its late registry beat cannot take the row back from
    // the newer incarnation, and that beat tells it it was superseded: its tree stops.
    first_store.heal();
    gate.notify_one();
    let by = wait_for(
        &mut first_events,
        "the zombie's tree learning it was superseded",
        |e| match e {
            NodeEvent::Superseded { incarnation, by } if *incarnation == first.incarnation() => {
                Some(*by)
            }
            _ => None,
        },
    )
    .await;
    assert_eq!(by, second.incarnation());
    superseded_and_stopped(&first, second.incarnation()).await;
    assert_eq!(
        store.item_get(id).await.unwrap().unwrap().output,
        Some(json!("taken over"))
    );
    let row = store.node_get("dup").await.unwrap().expect("row");
    assert_eq!(row.incarnation, second.incarnation());
    assert_ne!(
        row.status,
        NodeStatus::Stopped,
        "the superseded tree's stop leaves the newer incarnation's row alone"
    );
    second.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// `node` stopped itself because incarnation `by` replaced it: its exit, its state, and the
/// handle's refusals say so.
async fn superseded_and_stopped(node: &NodeHandle, by: i64) {
    let exit = tokio::time::timeout(WAIT, node.wait())
        .await
        .expect("the superseded tree stopped");
    let TreeExit::Superseded(why) = &exit else {
        panic!("expected a superseded exit, got {exit:?}");
    };
    for part in [
        format!("incarnation {}", node.incarnation()),
        format!("superseded by incarnation {by}"),
    ] {
        assert!(why.contains(&part), "{part:?} missing from: {why}");
    }
    assert!(
        matches!(node.state(), TreeState::Superseded { .. }),
        "{:?}",
        node.state()
    );
    let refused = node
        .shutdown(Duration::from_secs(1))
        .await
        .expect_err("a stopped tree does not shut down again");
    assert!(
        matches!(refused, RuntimeError::Superseded(_)),
        "{refused:?}"
    );
}

/// A process whose registry row went stale while it still ran (a stall, a lost database)
/// finds, at its next beat, that another process registered its node id: it writes nothing
/// more to the row, stops its tree (its workers' handlers cancelled), and what it held is
/// left to the newer incarnation's recovery, not completed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_incarnation_stops_its_tree_at_its_next_beat() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let store = open(&dir).await;
    let gate = Arc::new(Notify::new());
    let (first, mut events, id, held) =
        start_holding_one(builder(store.clone(), "dup", &clock), gate.clone()).await;

    // Another process registers the id as if the row had gone stale (its own clock says so).
    let row = store.node_get("dup").await.unwrap().expect("row");
    let later = Timestamp(clock.now().0 + 3_600_000);
    let newer = match store
        .node_register(
            &NodeRecord {
                incarnation: row.incarnation + 1,
                last_heartbeat_at: later,
                started_at: later,
                ..row.clone()
            },
            3,
            later,
        )
        .await
        .unwrap()
    {
        NodeClaim::Registered(r) => r,
        other => panic!("the stale row should be claimed: {other:?}"),
    };
    assert!(newer.incarnation > first.incarnation());

    let by = wait_for(&mut events, "the superseded event", |e| match e {
        NodeEvent::Superseded { incarnation, by } if *incarnation == first.incarnation() => {
            Some(*by)
        }
        _ => None,
    })
    .await;
    assert_eq!(by, newer.incarnation);
    superseded_and_stopped(&first, newer.incarnation).await;
    // Its handler was cancelled with the tree: letting it go now completes nothing.
    gate.notify_one();
    tokio::time::sleep(BEAT * 3).await;
    let after = store.item_get(id).await.unwrap().unwrap();
    assert_eq!(
        (after.status, after.epoch, after.output),
        (ItemStatus::InProgress, held.epoch, None),
        "the superseded tree wrote nothing more for its item"
    );
    assert_eq!(
        store.node_get("dup").await.unwrap().expect("row"),
        newer,
        "the newer incarnation's row is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incarnation_grows_when_the_clock_steps_back() {
    let dir = tempfile::tempdir().unwrap();
    let start = SystemClock.now();
    let clock = ManualClock::new(start);
    let store = open(&dir).await;
    let mut last = 0;
    for (i, at) in [
        start,
        // NTP stepped the clock back an hour, then another.
        Timestamp(start.0 - 3_600_000),
        Timestamp(start.0 - 7_200_000),
    ]
    .into_iter()
    .enumerate()
    {
        clock.set(at);
        let node = builder(store.clone(), "steady", &clock)
            .handler("job", |_ctx: JobContext| async move {
                Ok::<_, JobError>(json!(1))
            })
            .start()
            .await
            .unwrap();
        assert!(
            node.incarnation() > last,
            "start {i}: incarnation {} after {last}",
            node.incarnation()
        );
        last = node.incarnation();
        assert_eq!(
            store.node_get("steady").await.unwrap().unwrap().incarnation,
            last
        );
        node.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}
