//! The supervised tree against a real SQLite file: crashes, kills, lapsed leases, the reaper's
//! liveness check, escalation and graceful shutdown. Tests wait on the node's events (with an
//! overall timeout so a broken property fails instead of hanging), never on sleeps.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, Notify};

use leasehold_core::{
    AcquireRequest, Clock, ItemId, ItemStatus, ManualClock, NewItem, NodeRecord, NodeStatus, Store,
    SystemClock, Timestamp,
};
use leasehold_runtime::faults::{check_invariants, FaultyStore};
use leasehold_runtime::{
    JobContext, JobError, Leasehold, LeaseholdBuilder, NodeEvent, NodeHandle, SweepOutcome,
    TreeExit,
};
use leasehold_sqlite::SqliteStore;

mod common;
use common::{wait_for, WAIT};

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(dir.path().join("tree.db"))
            .await
            .expect("open store"),
    )
}

/// A builder with settings that suit tests: short heartbeats, a long lease (expiry is driven by
/// a manual clock where a test needs it), no periodic sweeps (tests sweep on demand).
fn builder(store: Arc<dyn Store>, node: &str) -> LeaseholdBuilder {
    Leasehold::builder(store)
        .node_id(node)
        .lease(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(100))
        .sweep(Duration::from_secs(3600))
        .stale(Duration::from_secs(3600))
        .poll_interval(Duration::from_millis(50))
        .backoff(leasehold_core::Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(10),
            ..leasehold_core::Backoff::default()
        })
        .record_completions(true)
}

/// Starts the node and waits for the sweep every reaper runs at start, so that the sweep a
/// test asks for after moving the clock is the one that finds its expired leases.
async fn start_swept(b: LeaseholdBuilder) -> NodeHandle {
    let mut events = b.subscribe();
    let node = b.start().await.unwrap();
    wait_for(&mut events, "the sweep at start", |e| {
        matches!(
            e,
            NodeEvent::Swept { .. } | NodeEvent::ReaperStoodDown { .. }
        )
        .then_some(())
    })
    .await;
    node
}

/// Waits until every item of `ids` has completed, in whatever order the workers finish them.
async fn wait_all_completed(rx: &mut broadcast::Receiver<NodeEvent>, ids: &[ItemId]) {
    let mut left: std::collections::HashSet<ItemId> = ids.iter().copied().collect();
    wait_for(rx, &format!("completion of {} items", ids.len()), |e| {
        if let NodeEvent::Completed { item, .. } = e {
            left.remove(item);
        }
        left.is_empty().then_some(())
    })
    .await;
}

async fn wait_completed(rx: &mut broadcast::Receiver<NodeEvent>, id: ItemId) -> i64 {
    wait_for(rx, &format!("completion of item {id}"), |e| match e {
        NodeEvent::Completed { item, epoch } if *item == id => Some(*epoch),
        _ => None,
    })
    .await
}

async fn item(node: &NodeHandle, id: ItemId) -> leasehold_core::Item {
    node.store()
        .item_get(id)
        .await
        .unwrap()
        .expect("item exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_is_restarted_recovers_its_item_and_it_completes_once() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Notify::new());
    let runs = Arc::new(AtomicU32::new(0));
    let (g, r) = (gate.clone(), runs.clone());
    let node = builder(store(&dir).await, "kill-worker")
        .workers(1)
        .handler("job", move |_ctx: JobContext| {
            let (g, r) = (g.clone(), r.clone());
            async move {
                // The first attempt blocks until the test kills its worker.
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    g.notified().await;
                }
                Ok::<_, JobError>(json!("done"))
            }
        })
        .start()
        .await
        .unwrap();
    let mut events = node.events();
    let id = node.enqueue(node.item("job", json!({}))).await.unwrap();
    wait_for(&mut events, "first acquisition", |e| {
        matches!(e, NodeEvent::Acquired { item, .. } if *item == id).then_some(())
    })
    .await;

    assert!(node.faults().kill_worker(0));
    let recovered = wait_for(
        &mut events,
        "the restarted worker's recover_mine",
        |e| match e {
            NodeEvent::WorkerStarted {
                worker: 0,
                recovered,
            } => Some(*recovered),
            _ => None,
        },
    )
    .await;
    assert_eq!(
        recovered, 1,
        "recover_mine must take back the killed worker's item"
    );
    let epoch = wait_completed(&mut events, id).await;

    let it = item(&node, id).await;
    assert_eq!(it.status, ItemStatus::Completed);
    assert_eq!(it.attempts, 2, "the killed attempt counts");
    assert!(
        epoch > 1,
        "completed under a newer epoch than the killed one"
    );
    assert_eq!(node.stats().restarts, 1);
    let report = check_invariants(
        node.store().as_ref(),
        &[id],
        node.faults().completions().as_deref(),
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{report:?}");
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_heartbeat_lets_the_lease_lapse_and_the_zombie_cannot_complete() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let release_zombie = Arc::new(Notify::new());
    let zombie_saw_cancel = Arc::new(AtomicU32::new(0));
    let (rz, saw) = (release_zombie.clone(), zombie_saw_cancel.clone());
    let node = start_swept(
        builder(store(&dir).await, "kill-heartbeat")
            .workers(2)
            .clock(Arc::new(clock.clone()))
            .handler("job", move |ctx: JobContext| {
                let (rz, saw) = (rz.clone(), saw.clone());
                async move {
                    if ctx.attempt() == 1 {
                        // A zombie: it ignores cancellation and tries to return a result anyway.
                        ctx.cancelled().await;
                        saw.fetch_add(1, Ordering::SeqCst);
                        rz.notified().await;
                        return Ok::<_, JobError>(json!("zombie result"));
                    }
                    Ok(json!("good result"))
                }
            }),
    )
    .await;
    let mut events = node.events();
    let id = node.enqueue(node.item("job", json!({}))).await.unwrap();
    let (worker, first_epoch) = wait_for(&mut events, "first acquisition", |e| match e {
        NodeEvent::Acquired {
            worker,
            item,
            epoch,
        } if *item == id => Some((*worker, *epoch)),
        _ => None,
    })
    .await;

    assert!(node.faults().kill_heartbeat(worker).await);
    wait_for(&mut events, "the heartbeat's death", |e| {
        matches!(e, NodeEvent::HeartbeatDied { .. }).then_some(())
    })
    .await;
    // Nothing renews now: move past the lease and let the reaper ask the owner.
    clock.advance(Duration::from_secs(61));
    let outcome = node.sweep_now().await.unwrap();
    let SweepOutcome::Swept(stats) = outcome else {
        panic!("reaper stood down: {outcome:?}")
    };
    assert_eq!((stats.recovered, stats.skipped_alive), (1, 0), "{stats:?}");

    let epoch = wait_completed(&mut events, id).await;
    assert!(epoch > first_epoch);
    assert_eq!(item(&node, id).await.output, Some(json!("good result")));
    assert_eq!(
        zombie_saw_cancel.load(Ordering::SeqCst),
        1,
        "the lapsed handler was cancelled"
    );

    // The zombie returns its result now: it must be dropped, and a direct fenced write with
    // its old lease is refused.
    release_zombie.notify_one();
    let stale = leasehold_core::LeaseRef {
        item: id,
        owner: node.owner_id(worker),
        epoch: first_epoch,
    };
    let err = node
        .store()
        .item_complete(&stale, json!("zombie"), clock.now())
        .await
        .unwrap_err();
    assert!(err.is_lease_lost(), "{err}");
    assert_eq!(item(&node, id).await.output, Some(json!("good result")));
    let report = check_invariants(
        node.store().as_ref(),
        &[id],
        node.faults().completions().as_deref(),
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{report:?}");
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_that_always_panics_is_dead_lettered_and_the_tree_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = builder(store(&dir).await, "panics")
        .workers(2)
        .handler("boom", |_ctx: JobContext| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<_, JobError>(json!(null))
        })
        .handler("ok", |ctx: JobContext| async move {
            Ok::<_, JobError>(ctx.input().clone())
        })
        .start()
        .await
        .unwrap();
    let mut events = node.events();
    let boom = node
        .enqueue(NewItem::new("boom", json!({})).max_attempts(3))
        .await
        .unwrap();
    wait_for(&mut events, "dead-lettering of the panicking item", |e| {
        matches!(e, NodeEvent::AttemptFailed { item, dead_lettered: true } if *item == boom)
            .then_some(())
    })
    .await;
    let it = item(&node, boom).await;
    assert_eq!((it.status, it.attempts), (ItemStatus::Failed, 3));
    assert!(it.error.unwrap().contains("handler panicked: handler bug"));

    let ids = node
        .enqueue_many((0..20).map(|i| NewItem::new("ok", json!(i))).collect())
        .await
        .unwrap();
    wait_all_completed(&mut events, &ids).await;
    assert_eq!(node.stats().handler_panics, 3);
    assert!(node.exit_status().is_none(), "the tree still runs");
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_keeps_a_live_owners_item_and_requeues_a_dead_owners() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let store = store(&dir).await;
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let node = start_swept(
        builder(store.clone(), "reaper-node")
            .workers(1)
            // Heartbeats far apart, so only the ping can keep the expired lease.
            .heartbeat(Duration::from_secs(30))
            .clock(Arc::new(clock.clone()))
            .handler("slow", move |_ctx: JobContext| {
                let g = g.clone();
                async move {
                    g.notified().await;
                    Ok::<_, JobError>(json!("slow done"))
                }
            }),
    )
    .await;
    let mut events = node.events();
    let live = node.enqueue(node.item("slow", json!({}))).await.unwrap();
    wait_for(&mut events, "acquisition", |e| {
        matches!(e, NodeEvent::Acquired { item, .. } if *item == live).then_some(())
    })
    .await;

    // An item held by an owner on a node that has no registry row: dead. Its kind has no
    // handler here, and the reaper must requeue it all the same (River #1105).
    let orphan = store
        .item_enqueue(NewItem::new("elsewhere", json!({})), clock.now())
        .await
        .unwrap();
    let ghost = AcquireRequest::new("ghost/w0", Duration::from_secs(60))
        .node("ghost", 1)
        .kinds(["elsewhere"]);
    store
        .item_acquire(&ghost, clock.now())
        .await
        .unwrap()
        .unwrap();

    clock.advance(Duration::from_secs(120));
    let SweepOutcome::Swept(stats) = node.sweep_now().await.unwrap() else {
        panic!("stood down")
    };
    assert_eq!(stats.expired_found, 2, "{stats:?}");
    assert_eq!(stats.skipped_alive, 1, "the local owner answered the ping");
    assert_eq!(stats.recovered, 1, "the ghost's item was requeued");
    let live_item = item(&node, live).await;
    assert_eq!(live_item.status, ItemStatus::InProgress);
    assert_eq!(live_item.epoch, 1, "the live owner's lease was not touched");
    let orphan_item = item(&node, orphan).await;
    assert_eq!(orphan_item.status, ItemStatus::Pending);
    assert_eq!(orphan_item.kind, "elsewhere");

    gate.notify_one();
    wait_completed(&mut events, live).await;
    assert_eq!(node.stats().reaper.total_skipped_alive, 1);
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_node_name_does_not_vouch_for_its_dead_predecessor() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let store = store(&dir).await;
    // Node "alpha", incarnation 1, took an item and died. Incarnation 2 of "alpha" is alive
    // and heartbeating (a restarted process that has not run recover_mine for that owner).
    let id = store
        .item_enqueue(NewItem::new("job", json!({})), clock.now())
        .await
        .unwrap();
    let old = AcquireRequest::new("alpha/w9", Duration::from_secs(10)).node("alpha", 1);
    store
        .item_acquire(&old, clock.now())
        .await
        .unwrap()
        .unwrap();
    let alive_successor = NodeRecord {
        node_id: "alpha".into(),
        incarnation: 2,
        worker_type: "job".into(),
        status: NodeStatus::Idle,
        current_item: None,
        task_text: None,
        last_heartbeat_at: clock.now(),
        heartbeat_interval_ms: 600_000,
        started_at: clock.now(),
        metadata: json!({}),
    };
    store.node_heartbeat(&alive_successor).await.unwrap();

    let node = start_swept(
        builder(store.clone(), "beta")
            .workers(1)
            .clock(Arc::new(clock.clone()))
            .handler("job", |_ctx: JobContext| async move {
                Ok::<_, JobError>(json!("ok"))
            }),
    )
    .await;
    let mut events = node.events();
    clock.advance(Duration::from_secs(11));
    let SweepOutcome::Swept(stats) = node.sweep_now().await.unwrap() else {
        panic!("stood down")
    };
    assert_eq!((stats.recovered, stats.skipped_alive), (1, 0), "{stats:?}");
    wait_completed(&mut events, id).await;
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaper_stands_down_when_its_store_is_failing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let real = store(&dir).await;
    let faulty = Arc::new(FaultyStore::new(real.clone()));
    let id = real
        .item_enqueue(NewItem::new("job", json!({})), clock.now())
        .await
        .unwrap();
    let dead = AcquireRequest::new("gone/w0", Duration::from_secs(10)).node("gone", 1);
    real.item_acquire(&dead, clock.now())
        .await
        .unwrap()
        .unwrap();
    let node = start_swept(
        builder(faulty.clone(), "sick")
            .workers(1)
            .clock(Arc::new(clock.clone()))
            .handler("other", |_ctx: JobContext| async move {
                Ok::<_, JobError>(json!(1))
            }),
    )
    .await;
    clock.advance(Duration::from_secs(30));
    faulty.fail_for(Duration::from_secs(3600));
    let outcome = node.sweep_now().await.unwrap();
    assert!(matches!(outcome, SweepOutcome::StoodDown(_)), "{outcome:?}");
    assert_eq!(
        item_status(&real, id).await,
        ItemStatus::InProgress,
        "nothing requeued"
    );
    faulty.heal();
    let SweepOutcome::Swept(stats) = node.sweep_now().await.unwrap() else {
        panic!("still standing down after the store healed")
    };
    assert_eq!(stats.recovered, 1);
    assert!(node.stats().reaper.stand_downs >= 1);
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

async fn item_status(store: &Arc<dyn Store>, id: ItemId) -> ItemStatus {
    store.item_get(id).await.unwrap().unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_restart_intensity_escalates_and_reports_why() {
    let dir = tempfile::tempdir().unwrap();
    let node = builder(store(&dir).await, "escalate")
        .workers(1)
        .restart_intensity(2, Duration::from_secs(60))
        .handler("job", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(1))
        })
        .start()
        .await
        .unwrap();
    let mut events = node.events();
    for n in 0..2 {
        assert!(node.faults().crash_worker(0));
        wait_for(&mut events, &format!("restart {n}"), |e| {
            matches!(e, NodeEvent::ChildRestarted { .. }).then_some(())
        })
        .await;
        wait_for(&mut events, "the worker back up", |e| {
            matches!(e, NodeEvent::WorkerStarted { worker: 0, .. }).then_some(())
        })
        .await;
    }
    assert!(node.faults().crash_worker(0));
    let exit = tokio::time::timeout(WAIT, node.wait())
        .await
        .expect("tree stops");
    match exit {
        TreeExit::Escalated(why) => assert!(why.contains("restart intensity exceeded"), "{why}"),
        other => panic!("expected an escalation, got {other:?}"),
    }
    let err = node.sweep_now().await.unwrap_err();
    assert!(err.to_string().contains("escalated"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_strands_nothing_and_counts_no_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let node = builder(store.clone(), "graceful")
        .workers(3)
        .handler("forever", |ctx: JobContext| async move {
            ctx.cancelled().await;
            Err::<serde_json::Value, _>(JobError::retryable("cancelled"))
        })
        .handler("quick", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!("q"))
        })
        .start()
        .await
        .unwrap();
    let mut events = node.events();
    let ids = node
        .enqueue_many((0..3).map(|i| NewItem::new("forever", json!(i))).collect())
        .await
        .unwrap();
    for _ in 0..3 {
        wait_for(&mut events, "acquisition", |e| {
            matches!(e, NodeEvent::Acquired { .. }).then_some(())
        })
        .await;
    }
    let report = node.shutdown(Duration::from_millis(200)).await.unwrap();
    assert_eq!(report.released, 3, "{report:?}");
    assert!(report.registry_marked_stopped);
    let counts = store.items_count().await.unwrap();
    assert_eq!((counts.in_progress, counts.pending), (0, 3));
    for id in ids {
        assert_eq!(store.item_get(id).await.unwrap().unwrap().attempts, 0);
    }
    let row = store.node_get("graceful").await.unwrap().unwrap();
    assert_eq!(row.status, NodeStatus::Stopped);
    assert!(matches!(node.exit_status(), Some(TreeExit::Shutdown)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_work_finish_within_the_drain_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let started = Arc::new(Notify::new());
    let s = started.clone();
    let node = builder(store.clone(), "drain")
        .workers(1)
        .handler("job", move |_ctx: JobContext| {
            let s = s.clone();
            async move {
                s.notify_one();
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, JobError>(json!("finished during drain"))
            }
        })
        .start()
        .await
        .unwrap();
    let id = node.enqueue(node.item("job", json!({}))).await.unwrap();
    tokio::time::timeout(WAIT, started.notified())
        .await
        .unwrap();
    let report = node.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(report.finished, 1, "{report:?}");
    let it = store.item_get(id).await.unwrap().unwrap();
    assert_eq!((it.status, it.attempts), (ItemStatus::Completed, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_through_the_handle_wakes_an_idle_worker() {
    let dir = tempfile::tempdir().unwrap();
    let node = builder(store(&dir).await, "wake")
        .workers(2)
        // Idle workers would not look again within the test's patience without the wake-up.
        .poll_interval(Duration::from_secs(3600))
        .handler("job", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(1))
        });
    let mut events = node.subscribe();
    let node = node.start().await.unwrap();
    // Let both workers go idle (their first empty poll), then enqueue.
    for _ in 0..2 {
        wait_for(&mut events, "worker start", |e| {
            matches!(e, NodeEvent::WorkerStarted { .. }).then_some(())
        })
        .await;
    }
    tokio::task::yield_now().await;
    for _ in 0..5 {
        let id = node.enqueue(node.item("job", json!({}))).await.unwrap();
        let fut = wait_completed(&mut events, id);
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .expect("woken at once");
    }
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_and_missing_handlers_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let err = Leasehold::builder(s.clone())
        .handler(
            "job",
            |_ctx: JobContext| async move { Ok::<_, JobError>(1) },
        )
        .lease(Duration::from_secs(10))
        .heartbeat(Duration::from_secs(10))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("heartbeat"), "{err}");
    let err = Leasehold::builder(s.clone()).start().await.unwrap_err();
    assert!(err.to_string().contains("no handlers"), "{err}");
    let err = Leasehold::builder(s)
        .handler(
            "job",
            |_ctx: JobContext| async move { Ok::<_, JobError>(1) },
        )
        .workers(0)
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("workers"), "{err}");
    let _ = Timestamp(0);
}
