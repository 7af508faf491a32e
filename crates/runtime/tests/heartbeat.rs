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

const WAIT: Duration = Duration::from_secs(30);

/// Waits for the next renewal of `lease`, failing the test after [`WAIT`].
async fn next_renewal(
    rx: &mut broadcast::Receiver<(LeaseRef, Timestamp)>,
    lease: (leasehold_core::ItemId, i64),
) -> Timestamp {
    let fut = async {
        loop {
            match rx.recv().await {
                Ok((l, expires_at)) if (l.item, l.epoch) == lease => return expires_at,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("renewal stream closed: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("no renewal of item {} within {WAIT:?}", lease.0))
}

async fn next_event<T>(
    rx: &mut broadcast::Receiver<NodeEvent>,
    what: &str,
    mut pick: impl FnMut(&NodeEvent) -> Option<T>,
) -> T {
    let fut = async {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("event stream closed while waiting for {what}: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
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
    next_event(&mut events, "the quick items' completions", |e| {
        if let NodeEvent::Completed { item, .. } = e {
            left.remove(item);
        }
        left.is_empty().then_some(())
    })
    .await;

    let mut renewals = store.renewals();
    let long = node.enqueue(node.item("long", json!({}))).await.unwrap();
    let epoch = next_event(&mut events, "the long item's acquisition", |e| match e {
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
    next_event(&mut events, "the long item's completion", |e| match e {
        NodeEvent::Completed { item, epoch: e } if *item == long => Some(*e),
        _ => None,
    })
    .await;
    let item = store.item_get(long).await.unwrap().expect("item exists");
    assert_eq!(item.status, ItemStatus::Completed);
    assert_eq!((item.epoch, item.attempts), (epoch, 1), "never taken over");
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}
