//! A node sweeps once as it starts, not one sweep interval later: a cluster restarted after an
//! outage gets back the leases that expired while it was down at once, however long its sweep
//! interval. Real time and a sweep interval of an hour: only the sweep at start can requeue
//! the item within the test's wait.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use leasehold_core::{AcquireRequest, Clock, ItemStatus, NewItem, Store, SystemClock};
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};
use leasehold_sqlite::SqliteStore;

mod common;
use common::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_requeues_a_dead_owners_expired_lease_without_waiting_for_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("first_sweep.db"))
            .await
            .unwrap(),
    );
    // Taken an hour ago by a node that has no registry row (dead), on a one-minute lease.
    let past = SystemClock.now().minus(Duration::from_secs(3600));
    let id = store
        .item_enqueue(NewItem::new("orphaned", json!({})), past)
        .await
        .unwrap();
    let dead = AcquireRequest::new("gone/w0", Duration::from_secs(60)).node("gone", 1);
    store.item_acquire(&dead, past).await.unwrap().unwrap();

    // No handler for the item's kind, so the requeued item stays pending to be looked at; no
    // monitor, so only the reaper can take it back.
    let builder = Leasehold::builder(store.clone())
        .node_id("restarted")
        .workers(1)
        .sweep(Duration::from_secs(3600))
        .monitor(false)
        .handler("other", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(null))
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();
    let recovered = wait_for(&mut events, "the sweep at start", |e| match e {
        NodeEvent::Swept { recovered, .. } => Some(*recovered),
        _ => None,
    })
    .await;
    assert_eq!(recovered, 1);
    let item = store.item_get(id).await.unwrap().unwrap();
    assert_eq!(item.status, ItemStatus::Pending, "{item:?}");
    assert_eq!(item.owner, None, "{item:?}");
    assert_eq!(node.stats().reaper.total_recovered, 1);
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}
