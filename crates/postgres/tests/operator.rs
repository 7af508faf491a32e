//! An operator's cancel reaching a running tree on PostgreSQL: the holder learns it from its
//! batched renewal, cancels its handler and ends the item `cancelled` with a fenced write,
//! recorded in the attempt history by the same statement. Its own schema; without
//! `LEASEHOLD_PG_URL` it prints why it was skipped.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{AttemptOutcome, ItemSelector, ItemStatus, Store};
use leasehold_postgres::testing::store_or_skip;
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};
use serde_json::json;
use tokio::sync::broadcast;

async fn until<T>(
    rx: &mut broadcast::Receiver<NodeEvent>,
    pick: impl Fn(&NodeEvent) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the event stream closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("no matching event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_item_on_postgres_ends_it_cancelled_through_the_renewal() {
    let test = "cancelling_a_running_item_on_postgres_ends_it_cancelled_through_the_renewal";
    let Some((store, _schema)) = store_or_skip(test, "lh_cancel").await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(store);
    let builder = Leasehold::builder(store.clone())
        .node_id("pg-cancel")
        .workers(1)
        .lease(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(100))
        .sweep(Duration::from_secs(3600))
        .poll_interval(Duration::from_millis(100))
        .handler("long", |ctx: JobContext| async move {
            ctx.cancelled().await;
            Err::<serde_json::Value, _>(JobError::retryable("stopped"))
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.expect("start");
    let id = node.enqueue(node.item("long", json!({}))).await.unwrap();
    until(&mut events, |e| match e {
        NodeEvent::Acquired { item, .. } if *item == id => Some(()),
        _ => None,
    })
    .await;
    node.cancel(&ItemSelector::Ids(vec![id]), false)
        .await
        .unwrap();
    let confirmed = until(&mut events, |e| match e {
        NodeEvent::Cancelled {
            item, confirmed, ..
        } if *item == id => Some(*confirmed),
        NodeEvent::AttemptFailed { item, .. } if *item == id => {
            panic!("a cancelled attempt must not be failed")
        }
        _ => None,
    })
    .await;
    assert!(confirmed);
    let item = store.item_get(id).await.unwrap().unwrap();
    assert_eq!((item.status, item.attempts), (ItemStatus::Cancelled, 1));
    let history = store.item_attempts(id).await.unwrap();
    assert_eq!(
        history.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [AttemptOutcome::Cancelled]
    );
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}
