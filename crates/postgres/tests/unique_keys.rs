//! Unique keys across three pools (three hosts' stores) on one schema: the same keys enqueued
//! from all at once create one item per key, and every caller gets its id.

use std::sync::Arc;

use leasehold_conformance::support::same_keys_from_many_stores_make_one_item_each;
use leasehold_core::Store;
use leasehold_postgres::testing::store_or_skip;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_on_separate_pools_enqueuing_the_same_keys_create_one_item_per_key() {
    let Some((store, schema)) = store_or_skip("unique keys", "lh_keys").await else {
        return;
    };
    let mut hosts: Vec<Arc<dyn Store>> = vec![Arc::new(store)];
    for _ in 0..2 {
        hosts.push(Arc::new(schema.open().await.expect("another host's pool")));
    }
    same_keys_from_many_stores_make_one_item_each(&hosts, 9).await;
}
