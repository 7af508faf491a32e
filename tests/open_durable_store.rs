//! `open_durable_store` gives the store a URL names for durable execution too: a SQLite file
//! for a path, a `PgStore` for a `postgres://` URL (when `LEASEHOLD_PG_URL` answers), the queue
//! and the durable records being one store.

use leasehold::core::durable::{CheckpointType, NewStep};
use leasehold::postgres::testing::TestSchema;
use leasehold::{AcquireRequest, NewItem, Timestamp};
use serde_json::json;
use std::time::Duration;

async fn one_durable_write(url: &str) -> String {
    let (store, durable) = leasehold::open_durable_store(url).await.expect("open");
    let now = Timestamp(1_700_000_000_000);
    let id = store
        .item_enqueue(NewItem::new("k", json!({})), now)
        .await
        .expect("enqueue");
    let lease = store
        .item_acquire(&AcquireRequest::new("w", Duration::from_secs(60)), now)
        .await
        .expect("acquire")
        .expect("the item")
        .lease;
    let step = NewStep {
        step: Some(0),
        name: "s".into(),
        checkpoint_type: CheckpointType::ManualCheckpoint,
        snapshot: json!({}),
    };
    durable.step_begin(&lease, &step, now).await.expect("begin");
    assert_eq!(durable.checkpoints_of(id, 10).await.expect("read").len(), 1);
    format!("{durable:?}")
}

#[tokio::test]
async fn a_path_opens_sqlite_and_a_postgres_url_opens_pgstore_for_durable_execution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("d.db");
    let sqlite = one_durable_write(path.to_str().expect("utf-8")).await;
    assert!(sqlite.starts_with("SqliteStore"), "{sqlite}");
    assert!(leasehold::open_durable_store("mysql://x").await.is_err());
    match TestSchema::create("lh_facade").await {
        Ok(schema) => {
            let pg = one_durable_write(&schema.url()).await;
            assert!(pg.starts_with("PgStore"), "{pg}");
        }
        Err(why) => eprintln!("the PostgreSQL half skipped (PostgreSQL not available): {why}"),
    }
}
