//! Follow-ups through the tree: a handler's `ctx.follow_up` items are committed with its
//! completion, and a zombie's (a handler whose lease lapsed and was taken over) never appear:
//! the worker drops the lapsed attempt, and the store refuses its lease's completion.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

use leasehold_core::{Clock, ItemFilter, ItemStatus, ManualClock, NewItem, Store, SystemClock};
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent, SweepOutcome};
use leasehold_sqlite::SqliteStore;

mod common;
use common::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombies_follow_up_never_appears_and_the_successors_does_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("f.db")).await.unwrap());
    let clock = ManualClock::new(SystemClock.now());
    let release_zombie = Arc::new(Notify::new());
    let rz = release_zombie.clone();
    let builder = Leasehold::builder(store.clone())
        .node_id("follow-up-zombie")
        .lease(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(100))
        .sweep(Duration::from_secs(3600))
        .stale(Duration::from_secs(3600))
        .poll_interval(Duration::from_millis(50))
        .clock(Arc::new(clock.clone()))
        .workers(2)
        .handler("research", move |ctx: JobContext| {
            let rz = rz.clone();
            async move {
                ctx.follow_up(NewItem::new(
                    "contacts",
                    json!({ "from_attempt": ctx.attempt() }),
                ))?;
                if ctx.attempt() == 1 {
                    // A zombie: it ignores cancellation and returns its result (and with it
                    // its follow-up) after its lease was taken over.
                    ctx.cancelled().await;
                    rz.notified().await;
                }
                Ok::<_, JobError>(json!({ "attempt": ctx.attempt() }))
            }
        })
        .handler("contacts", |ctx: JobContext| async move {
            Ok::<_, JobError>(ctx.input().clone())
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();
    wait_for(&mut events, "the sweep at start", |e| {
        matches!(
            e,
            NodeEvent::Swept { .. } | NodeEvent::ReaperStoodDown { .. }
        )
        .then_some(())
    })
    .await;
    let id = node
        .enqueue(NewItem::new("research", json!({})))
        .await
        .unwrap();
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
    clock.advance(Duration::from_secs(61));
    let SweepOutcome::Swept(stats) = node.sweep_now().await.unwrap() else {
        panic!("the reaper stood down")
    };
    assert_eq!(stats.recovered, 1, "{stats:?}");
    // The successor completes the item, then its follow-up runs.
    let mut completed = Vec::new();
    while completed.len() < 2 {
        completed.push(
            wait_for(&mut events, "the successor's completions", |e| match e {
                NodeEvent::Completed { item, .. } => Some(*item),
                _ => None,
            })
            .await,
        );
    }
    // Now the zombie returns its output and follow-up. Its worker dropped that attempt when the
    // lease lapsed; and the store refuses the stale lease's completion with follow-ups anyway.
    release_zombie.notify_one();
    let stale = leasehold_core::LeaseRef {
        item: id,
        owner: node.owner_id(worker),
        epoch: first_epoch,
    };
    let err = store
        .item_complete_with_follow_ups(
            &stale,
            json!("zombie"),
            vec![NewItem::new("contacts", json!({ "from": "zombie" }))],
            clock.now(),
        )
        .await
        .unwrap_err();
    assert!(err.is_lease_lost(), "{err}");
    node.shutdown(Duration::from_secs(5)).await.unwrap();

    let all = store.items_list(&ItemFilter::default()).await.unwrap();
    assert_eq!(
        all.len(),
        2,
        "the item and the successor's follow-up only: {all:?}"
    );
    assert_eq!(all[0].output, Some(json!({ "attempt": 2 })));
    assert_eq!(all[1].input, json!({ "from_attempt": 2 }));
    assert_eq!(all[1].status, ItemStatus::Completed);
}
