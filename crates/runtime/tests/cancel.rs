//! Operators' actions reaching a running tree, against a real SQLite file: an in-progress item
//! cancelled through the handle is stopped at its holder's next renewal, its handler cancelled,
//! and it ends `cancelled` (recorded as such), neither failed nor retried, while the handler's
//! late write is refused; a paused kind is not taken by the node until resumed, while other
//! kinds run.
//!
//! Real time, short intervals (the SQLite store answers from its own thread, so paused time
//! would jump past the renewals); the tests wait on the node's events, never on sleeps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use leasehold_core::{AttemptOutcome, ItemSelector, ItemStatus, Store, StoreError};
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};
use leasehold_sqlite::SqliteStore;

mod common;
use common::wait_for;

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(dir.path().join("cancel.db"))
            .await
            .expect("open store"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_item_stops_its_handler_at_the_next_renewal_and_ends_it_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let late: Arc<Mutex<Option<Result<(), StoreError>>>> = Arc::default();
    let seen = late.clone();
    let builder = Leasehold::builder(store(&dir).await)
        .node_id("cancel-node")
        .workers(1)
        .lease(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(50))
        .sweep(Duration::from_secs(3600))
        .poll_interval(Duration::from_millis(50))
        .handler("long", move |ctx: JobContext| {
            let seen = seen.clone();
            async move {
                // Runs until cancelled, then tries to write anyway and fails.
                ctx.cancelled().await;
                *seen.lock().unwrap() = Some(
                    ctx.progress(json!("late"))
                        .await
                        .map_err(|e| StoreError::InvalidInput(e.to_string())),
                );
                Err::<serde_json::Value, _>(JobError::retryable("stopped"))
            }
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();
    let id = node
        .enqueue(node.item("long", json!({})).max_attempts(3))
        .await
        .unwrap();
    wait_for(&mut events, "the item acquired", |e| match e {
        NodeEvent::Acquired { item, .. } if *item == id => Some(()),
        _ => None,
    })
    .await;

    let report = node
        .cancel(&ItemSelector::Ids(vec![id]), false)
        .await
        .unwrap();
    assert_eq!(report.count, 1);
    assert_eq!(
        report.items[0].to,
        ItemStatus::InProgress,
        "marked, not yet ended"
    );
    let confirmed = wait_for(&mut events, "the cancel reaching the worker", |e| match e {
        NodeEvent::Cancelled {
            item, confirmed, ..
        } if *item == id => Some(*confirmed),
        NodeEvent::AttemptFailed { item, .. } if *item == id => {
            panic!("a cancelled attempt must not be failed")
        }
        _ => None,
    })
    .await;
    assert!(confirmed, "the worker's fenced confirm was written");

    let item = node.store().item_get(id).await.unwrap().unwrap();
    assert_eq!(item.status, ItemStatus::Cancelled);
    assert_eq!(item.attempts, 1, "not retried");
    let history = node.attempts(id).await.unwrap();
    assert_eq!(
        history.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [AttemptOutcome::Cancelled]
    );
    assert_eq!(node.stats().cancelled, 1);
    let kind = node.store().item_get(id).await.unwrap().unwrap().kind;
    assert_eq!(
        node.metrics().kinds.get(&kind).map(|k| k.cancelled),
        Some(1),
        "counted under its kind for /metrics"
    );
    // The handler saw its cancellation; its late write was refused.
    tokio::time::timeout(Duration::from_secs(10), async {
        while late.lock().unwrap().is_none() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the handler was cancelled");
    assert!(
        late.lock().unwrap().as_ref().unwrap().is_err(),
        "the handler's write after the cancel is refused"
    );
    node.shutdown(Duration::from_secs(5)).await.unwrap();
    let item = node.store().item_get(id).await.unwrap().unwrap();
    assert_eq!(
        item.status,
        ItemStatus::Cancelled,
        "still cancelled after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_kind_waits_while_other_kinds_run_and_runs_once_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let builder = Leasehold::builder(store(&dir).await)
        .node_id("pause-node")
        .workers(2)
        .poll_interval(Duration::from_millis(50))
        .handler("p", |ctx: JobContext| async move {
            Ok::<_, JobError>(ctx.input().clone())
        })
        .handler("q", |ctx: JobContext| async move {
            Ok::<_, JobError>(ctx.input().clone())
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();
    assert!(node.pause("p").await.unwrap());
    let paused = node.enqueue(node.item("p", json!(1))).await.unwrap();
    let free = node.enqueue(node.item("q", json!(2))).await.unwrap();
    wait_for(&mut events, "the other kind completed", |e| match e {
        NodeEvent::Completed { item, .. } if *item == free => Some(()),
        NodeEvent::Acquired { item, .. } if *item == paused => {
            panic!("a paused kind was acquired")
        }
        _ => None,
    })
    .await;
    assert_eq!(
        node.store().item_get(paused).await.unwrap().unwrap().status,
        ItemStatus::Pending
    );
    assert_eq!(node.paused_kinds().await.unwrap()[0].kind, "p");
    assert!(node.resume("p").await.unwrap());
    wait_for(&mut events, "the resumed kind completed", |e| match e {
        NodeEvent::Completed { item, .. } if *item == paused => Some(()),
        _ => None,
    })
    .await;
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}
