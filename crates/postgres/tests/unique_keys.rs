//! Unique keys across three pools (three hosts' stores) on one schema: the same keys enqueued
//! from all at once create one item per key, and every caller gets its id.

use std::collections::BTreeMap;
use std::sync::Arc;

use leasehold_conformance::support::T0;
use leasehold_core::{ItemFilter, ItemId, NewItem, Store};
use leasehold_postgres::testing::store_or_skip;
use serde_json::json;

const KEYS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_on_separate_pools_enqueuing_the_same_keys_create_one_item_per_key() {
    let Some((store, schema)) = store_or_skip("unique keys", "lh_keys").await else {
        return;
    };
    let mut hosts: Vec<Arc<dyn Store>> = vec![Arc::new(store)];
    for _ in 0..2 {
        hosts.push(Arc::new(schema.open().await.expect("another host's pool")));
    }
    let tasks = (0..9).map(|t| {
        let store = hosts[t % hosts.len()].clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            for k in 0..KEYS {
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
    let all = hosts[0]
        .items_list(&ItemFilter {
            limit: 1000,
            ..ItemFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), KEYS, "one item per key");
}
