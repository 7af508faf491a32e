//! A node built with a group takes only items of that group: items of other groups and items
//! without one stay pending for other nodes, even when they would run first by priority.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use leasehold_core::{Clock, ItemStatus, NewItem, Store, SystemClock};
use leasehold_runtime::{JobContext, Leasehold, NodeEvent, RuntimeError};
use leasehold_sqlite::SqliteStore;

mod common;
use common::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_group_acquires_only_that_groups_items() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("group.db"))
            .await
            .unwrap(),
    );
    let now = SystemClock.now();
    let enqueue = |group: Option<&str>, priority: i32| {
        let store = store.clone();
        let mut item = NewItem::new("job", json!({})).priority(priority);
        if let Some(g) = group {
            item = item.group(g);
        }
        async move { store.item_enqueue(item, now).await.unwrap() }
    };
    // The foreign and group-less items outrank ours, so an unfiltered worker takes them first.
    let other = enqueue(Some("b"), 10).await;
    let none = enqueue(None, 5).await;
    let ours_1 = enqueue(Some("a"), 0).await;
    let ours_2 = enqueue(Some("a"), -1).await;

    let builder = Leasehold::builder(store.clone())
        .node_id("grouped")
        .workers(1)
        .group("a")
        .poll_interval(Duration::from_millis(20))
        .handler("job", |_ctx: JobContext| async move {
            Ok::<_, leasehold_runtime::JobError>(json!("done"))
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();
    let mut acquired = Vec::new();
    let mut completed = BTreeSet::new();
    wait_for(&mut events, "both items of group a completed", |e| {
        match e {
            NodeEvent::Acquired { item, .. } => acquired.push(*item),
            NodeEvent::Completed { item, .. } => {
                completed.insert(*item);
            }
            _ => {}
        }
        (completed.len() == 2).then_some(())
    })
    .await;
    node.shutdown(Duration::from_secs(5)).await.unwrap();

    assert_eq!(acquired, vec![ours_1, ours_2], "acquired in order");
    assert_eq!(completed, BTreeSet::from([ours_1, ours_2]));
    for id in [other, none] {
        let item = store.item_get(id).await.unwrap().unwrap();
        assert_eq!(item.status, ItemStatus::Pending, "item {id:?}");
        assert_eq!(item.attempts, 0, "item {id:?}");
    }
}

#[tokio::test]
async fn an_empty_group_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("empty.db"))
            .await
            .unwrap(),
    );
    let err = Leasehold::builder(store)
        .group("  ")
        .handler("job", |_ctx: JobContext| async move {
            Ok::<_, leasehold_runtime::JobError>(json!(null))
        })
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("group"), "{err}");
}
