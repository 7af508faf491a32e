//! Releases are bounded in the running tree: an item whose handler always outlasts the drain
//! timeout is released at every graceful stop, counts attempts past `max_releases`, and is
//! dead-lettered when its budget is spent, however often the node restarts.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use leasehold_core::{Clock, ItemStatus, NewItem, Store, SystemClock};
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};
use leasehold_sqlite::SqliteStore;

mod common;
use common::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_that_always_outlasts_the_drain_is_dead_lettered_once_its_releases_spend_its_budget(
) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("releases.db"))
            .await
            .unwrap(),
    );
    let id = store
        .item_enqueue(
            NewItem::new("slow", json!({})).max_attempts(2),
            SystemClock.now(),
        )
        .await
        .unwrap();
    // max_releases 1, budget 2: the 1st release gives the attempt back, the 2nd keeps it, the
    // 3rd finds the budget spent.
    let mut statuses = Vec::new();
    for run in 0..4 {
        if store.item_get(id).await.unwrap().unwrap().status != ItemStatus::Pending {
            break;
        }
        let builder = Leasehold::builder(store.clone())
            .node_id("drainer")
            .workers(1)
            .max_releases(1)
            .lease(Duration::from_secs(60))
            .heartbeat(Duration::from_secs(5))
            .poll_interval(Duration::from_millis(20))
            .handler("slow", |ctx: JobContext| async move {
                ctx.cancelled().await;
                Err::<serde_json::Value, _>(JobError::retryable("cancelled by the drain"))
            });
        let mut events = builder.subscribe();
        let node = builder.start().await.unwrap();
        wait_for(&mut events, &format!("run {run}: the item acquired"), |e| {
            matches!(e, NodeEvent::Acquired { item, .. } if *item == id).then_some(())
        })
        .await;
        let report = node.shutdown(Duration::from_millis(50)).await.unwrap();
        assert_eq!(report.released, 1, "run {run}: {report:?}");
        let item = store.item_get(id).await.unwrap().unwrap();
        statuses.push((item.status, item.attempts, item.releases));
    }
    assert_eq!(
        statuses,
        vec![
            (ItemStatus::Pending, 0, 1),
            (ItemStatus::Pending, 1, 2),
            (ItemStatus::Failed, 2, 3),
        ],
        "(status, attempts, releases) after each graceful stop"
    );
    let error = store.item_get(id).await.unwrap().unwrap().error.unwrap();
    assert!(error.contains("released 3 times"), "{error}");
}
