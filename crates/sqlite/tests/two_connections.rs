//! Two connections (two `SqliteStore`s, as two processes would open) on one file: SQLite's
//! locking, not the store's own serialisation, keeps every item leased once.

use std::time::Duration;

use leasehold_core::{AcquireRequest, NewItem, Store, Timestamp};
use leasehold_sqlite::SqliteStore;
use serde_json::json;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn at(ms: i64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

fn req(owner: &str) -> AcquireRequest {
    AcquireRequest::new(owner, Duration::from_secs(30))
}

#[tokio::test]
async fn two_connections_on_one_file_never_lease_the_same_item_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let first = SqliteStore::open(&path).await.expect("open");
    let second = SqliteStore::open(&path).await.expect("open");
    first
        .items_enqueue((0..200).map(|i| NewItem::new("k", json!(i))).collect(), T0)
        .await
        .expect("enqueue");

    let mut tasks = Vec::new();
    for (n, store) in [first.clone(), second.clone(), first.clone(), second.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{n}");
            let mut got = Vec::new();
            while let Some(l) = store
                .item_acquire(&req(&owner), at(1))
                .await
                .expect("acquire")
            {
                store
                    .item_complete(&l.lease, json!(n), at(2))
                    .await
                    .expect("complete");
                got.push(l.item.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, 200);
    assert_eq!(all.len(), 200);
    assert_eq!(second.items_count().await.expect("count").completed, 200);
}
