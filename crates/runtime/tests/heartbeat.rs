//! The heartbeat child against a real SQLite file: its one timer serves lease after lease, so a
//! long item taken after many quick ones is still renewed every interval. Tests wait on the
//! renewals the store reports (with an overall timeout, so a missing renewal fails the test
//! instead of hanging), never on sleeps.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, Notify};

use leasehold_core::{ItemStatus, LeaseRef, Store, Timestamp};
use leasehold_runtime::faults::FaultyStore;
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};
use leasehold_sqlite::SqliteStore;

mod common;
use common::wait_for;

/// Waits for the next renewal of `lease`; returns the expiry it wrote.
async fn next_renewal(
    rx: &mut broadcast::Receiver<(LeaseRef, Timestamp)>,
    lease: (leasehold_core::ItemId, i64),
) -> Timestamp {
    wait_for(rx, &format!("a renewal of item {}", lease.0), |(l, at)| {
        ((l.item, l.epoch) == lease).then_some(*at)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_item_after_many_quick_ones_is_renewed_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("heartbeat.db"))
            .await
            .expect("open store"),
    );
    let store = Arc::new(FaultyStore::new(sqlite));
    let release = Arc::new(Notify::new());
    let held = release.clone();
    let builder = Leasehold::builder(store.clone())
        .node_id("heartbeat")
        .workers(1)
        .lease(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(100))
        .sweep(Duration::from_secs(3600))
        .stale(Duration::from_secs(3600))
        .handler("quick", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(null))
        })
        .handler("long", move |_ctx: JobContext| {
            let held = held.clone();
            async move {
                held.notified().await;
                Ok::<_, JobError>(json!("done"))
            }
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();

    // Many leases taken and settled by the one worker: its heartbeat's timer, armed for the
    // first of them, is still pending when the long item arrives.
    let quick: Vec<_> = (0..30).map(|i| node.item("quick", json!(i))).collect();
    let quick = node.enqueue_many(quick).await.unwrap();
    let mut left: std::collections::HashSet<_> = quick.iter().copied().collect();
    wait_for(&mut events, "the quick items' completions", |e| {
        if let NodeEvent::Completed { item, .. } = e {
            left.remove(item);
        }
        left.is_empty().then_some(())
    })
    .await;

    let mut renewals = store.renewals();
    let long = node.enqueue(node.item("long", json!({}))).await.unwrap();
    let epoch = wait_for(&mut events, "the long item's acquisition", |e| match e {
        NodeEvent::Acquired { item, epoch, .. } if *item == long => Some(*epoch),
        _ => None,
    })
    .await;
    let mut last = None;
    for n in 0..3 {
        let expires_at = next_renewal(&mut renewals, (long, epoch)).await;
        if let Some(before) = last {
            assert!(
                expires_at > before,
                "renewal {n} did not extend the lease: {expires_at:?} after {before:?}"
            );
        }
        last = Some(expires_at);
    }

    release.notify_one();
    wait_for(&mut events, "the long item's completion", |e| match e {
        NodeEvent::Completed { item, epoch: e } if *item == long => Some(*e),
        _ => None,
    })
    .await;
    let item = store.item_get(long).await.unwrap().expect("item exists");
    assert_eq!(item.status, ItemStatus::Completed);
    assert_eq!((item.epoch, item.attempts), (epoch, 1), "never taken over");
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}
