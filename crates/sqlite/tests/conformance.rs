//! The cross-backend conformance suite, run against [`SqliteStore`]: one test per case, each on
//! its own temporary database file.

use std::sync::Arc;

use leasehold_core::Store;
use leasehold_sqlite::SqliteStore;

/// A fresh store on its own file; the directory lives as long as the test.
async fn fresh() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("conformance.db"))
        .await
        .expect("open a fresh SQLite store");
    (Arc::new(store), dir)
}

leasehold_conformance::conformance_tests!(fresh());
