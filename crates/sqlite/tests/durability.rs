//! The durability setting: `synchronous=FULL` chosen through the options reaches the store's
//! connection, and the default stays `NORMAL`.

use leasehold_sqlite::{SqliteOptions, SqliteStore, Synchronous};

#[tokio::test]
async fn full_durability_is_in_force_on_the_stores_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    let store = SqliteStore::open_with(
        &path,
        SqliteOptions::default().synchronous(Synchronous::Full),
    )
    .await
    .unwrap();
    let sync = store.synchronous().await.unwrap();
    assert_eq!(sync, Synchronous::Full);
    assert_eq!(sync.pragma_value(), 2, "PRAGMA synchronous reads 2 (FULL)");
    drop(store);
    // The setting belongs to the connection, not the file: reopening with the defaults is
    // NORMAL again.
    let again = SqliteStore::open_with(&path, SqliteOptions::default())
        .await
        .unwrap();
    assert_eq!(again.synchronous().await.unwrap().pragma_value(), 1);
}
