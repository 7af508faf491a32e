//! A SQLite store that is down for a minute when the tree starts: see `outage_scenario`.

use std::sync::Arc;

use leasehold_core::Store;
use leasehold_sqlite::SqliteStore;

mod outage_scenario;

#[tokio::test]
async fn sqlite_tree_survives_a_store_down_for_a_minute_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let real: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("outage.db"))
            .await
            .expect("open store"),
    );
    outage_scenario::tree_survives_a_store_down_at_start(real, "outage-sqlite").await;
}
