//! A node embedded through the facade takes its lease times from the database server's clock
//! on PostgreSQL without being told to, and from the system clock on SQLite.

use std::time::Duration;

use leasehold::postgres::testing::TestSchema;
use leasehold::{ClockSource, JobContext, JobError, Leasehold};

async fn source_of(url: &str) -> ClockSource {
    let store = leasehold::open_store(url).await.expect("open");
    let node = Leasehold::builder(store)
        .handler("noop", |_ctx: JobContext| async {
            Ok::<_, JobError>(serde_json::json!(null))
        })
        .workers(1)
        .start()
        .await
        .expect("start");
    let source = node.clock_source();
    node.shutdown(Duration::from_secs(5)).await.expect("stop");
    source
}

#[tokio::test]
async fn open_store_users_get_the_database_clock_on_postgres_and_the_system_clock_on_sqlite() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("clock.db");
    assert_eq!(
        source_of(path.to_str().expect("utf-8 path")).await,
        ClockSource::System
    );
    let Ok(schema) = TestSchema::create("lh_facade_clock").await else {
        return;
    };
    assert_eq!(source_of(&schema.url()).await, ClockSource::Database);
}
