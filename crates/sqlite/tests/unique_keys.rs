//! Unique keys across two stores (two connections, each on its own thread) on one file: the
//! same keys enqueued from both at once create one item per key, and every caller gets its id.

use std::collections::BTreeMap;
use std::sync::Arc;

use leasehold_conformance::support::T0;
use leasehold_core::{ItemFilter, ItemId, NewItem, Store};
use leasehold_sqlite::SqliteStore;
use serde_json::json;

const KEYS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_enqueuing_the_same_keys_at_once_create_one_item_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let stores: Vec<Arc<dyn Store>> = vec![
        Arc::new(SqliteStore::open(&path).await.unwrap()),
        Arc::new(SqliteStore::open(&path).await.unwrap()),
    ];
    let tasks = (0..8).map(|t| {
        let store = stores[t % 2].clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            for k in 0..KEYS {
                // Each task walks the keys from a different place, so they collide throughout.
                let key = format!("key-{}", (k + t * 7) % KEYS);
                let id = store
                    .item_enqueue(
                        NewItem::new("sync", json!({ "task": t })).unique_key(&key),
                        T0,
                    )
                    .await
                    .expect("enqueue");
                got.push((key, id));
            }
            got
        })
    });
    let mut by_key: BTreeMap<String, ItemId> = BTreeMap::new();
    for task in futures::future::join_all(tasks).await {
        for (key, id) in task.expect("task") {
            let first = *by_key.entry(key.clone()).or_insert(id);
            assert_eq!(first, id, "key {key} answered with two ids");
        }
    }
    let all = stores[0]
        .items_list(&ItemFilter {
            limit: 1000,
            ..ItemFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), KEYS, "one item per key");
}
