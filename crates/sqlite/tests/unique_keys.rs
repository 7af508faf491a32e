//! Unique keys across two stores (two connections, each on its own thread) on one file: the
//! same keys enqueued from both at once create one item per key, and every caller gets its id.

use std::sync::Arc;

use leasehold_conformance::support::same_keys_from_many_stores_make_one_item_each;
use leasehold_core::Store;
use leasehold_sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_enqueuing_the_same_keys_at_once_create_one_item_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let stores: Vec<Arc<dyn Store>> = vec![
        Arc::new(SqliteStore::open(&path).await.unwrap()),
        Arc::new(SqliteStore::open(&path).await.unwrap()),
    ];
    same_keys_from_many_stores_make_one_item_each(&stores, 8).await;
}
