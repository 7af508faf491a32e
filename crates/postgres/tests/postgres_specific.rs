//! What only the PostgreSQL backend has to prove: its schema handling (versioned migrations
//! in a schema of its own, a newer or foreign schema refused untouched), LISTEN/NOTIFY
//! wake-ups, and acquirers on separate pools (as on separate hosts) never sharing an item.
//! Each test works in its own schema; without `LEASEHOLD_PG_URL` each prints why it was
//! skipped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use leasehold_conformance::support::{at_s, enqueue_n, req, T0};
use leasehold_core::{NewItem, Store, StoreError};
use leasehold_postgres::testing::{store_or_skip, TestSchema};
use leasehold_postgres::{PgOptions, PgStore, WAKE_ALL};
use serde_json::json;
use tokio_postgres::NoTls;

/// Runs `sql` on the test server outside any store.
async fn psql(schema: &TestSchema, sql: &str) -> Vec<tokio_postgres::Row> {
    let url = PgOptions::from_url(&schema.url()).expect("url").url;
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.expect("ping");
    client.query(sql, &[]).await.expect(sql)
}

async fn tables_of(schema: &TestSchema) -> Vec<String> {
    psql(
        schema,
        &format!(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = '{}' ORDER BY 1",
            schema.schema()
        ),
    )
    .await
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn reopening_an_up_to_date_schema_changes_nothing_and_concurrent_opens_migrate_once() {
    let Ok(schema) = TestSchema::create("lh_pg")
        .await
        .map_err(|why| eprintln!("skipped: {why}"))
    else {
        return;
    };
    // Five processes' worth of opens at once on a new schema: one migrates, all succeed.
    let opens = (0..5).map(|_| schema.open());
    for r in futures::future::join_all(opens).await {
        r.expect("concurrent open");
    }
    let versions = psql(
        &schema,
        &format!(
            "SELECT version FROM {}.schema_migrations ORDER BY 1",
            schema.schema()
        ),
    )
    .await;
    let versions: Vec<i64> = versions.iter().map(|r| r.get(0)).collect();
    // One row per migration, each applied once.
    assert_eq!(
        versions,
        (1..=PgStore::schema_version()).collect::<Vec<_>>(),
        "each migration applied exactly once"
    );
    let before = tables_of(&schema).await;
    assert_eq!(
        before,
        vec![
            "checkpoints",
            "durable_checkpoints",
            "item_attempts",
            "item_deps",
            "items",
            "llm_cache",
            "paused_kinds",
            "schedules",
            "schema_migrations",
            "tool_ledger",
            "workers"
        ]
    );
    let store = schema.open().await.expect("reopen");
    store.ping().await.expect("ping");
    assert_eq!(tables_of(&schema).await, before);
}

#[tokio::test]
async fn a_schema_written_by_a_newer_leasehold_is_refused_and_left_untouched() {
    let Some((store, schema)) = store_or_skip("newer schema", "lh_pg").await else {
        return;
    };
    let newer = PgStore::schema_version() + 1;
    psql(
        &schema,
        &format!(
            "INSERT INTO {}.schema_migrations (version) VALUES ({newer})",
            schema.schema()
        ),
    )
    .await;
    drop(store);
    match schema.open().await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (newer, PgStore::schema_version()));
        }
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
    let versions: Vec<i64> = psql(
        &schema,
        &format!(
            "SELECT version FROM {}.schema_migrations ORDER BY 1",
            schema.schema()
        ),
    )
    .await
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(versions, (1..=newer).collect::<Vec<_>>(), "nothing altered");
}

#[tokio::test]
async fn a_foreign_schema_with_our_table_names_is_refused_and_a_missing_one_is_not_created_for_reads(
) {
    let Ok(schema) = TestSchema::create("lh_pg")
        .await
        .map_err(|why| eprintln!("skipped: {why}"))
    else {
        return;
    };
    let existing = PgOptions::from_url(&schema.url())
        .expect("url")
        .existing_only();
    match PgStore::open_with(existing.clone()).await {
        Err(StoreError::NotADatabase(why)) => assert!(why.contains(schema.schema()), "{why}"),
        other => panic!("a missing schema must be refused for reads, got {other:?}"),
    }
    assert!(tables_of(&schema).await.is_empty(), "nothing created");
    psql(&schema, &format!("CREATE SCHEMA {}", schema.schema())).await;
    psql(
        &schema,
        &format!("CREATE TABLE {}.items (x int)", schema.schema()),
    )
    .await;
    match schema.open().await {
        Err(StoreError::NotADatabase(why)) => assert!(why.contains("items"), "{why}"),
        other => panic!("someone else's items table must be refused, got {other:?}"),
    }
    assert_eq!(tables_of(&schema).await, vec!["items"], "nothing added");
}

#[tokio::test]
async fn text_postgres_cannot_store_is_refused_as_bad_input() {
    let Some((store, _schema)) = store_or_skip("nul text", "lh_pg").await else {
        return;
    };
    let refused = store
        .item_enqueue(NewItem::new("a\0b", json!({})), T0)
        .await;
    assert!(
        matches!(refused, Err(StoreError::InvalidInput(_))),
        "{refused:?}"
    );
    // JSON keeps a NUL inside a string, as SQLite does.
    let id = store
        .item_enqueue(NewItem::new("k", json!({"s": "a\u{0}b"})), T0)
        .await
        .expect("enqueue");
    let item = store.item_get(id).await.expect("get").expect("exists");
    assert_eq!(item.input, json!({"s": "a\u{0}b"}));
    assert_eq!(store.items_count().await.expect("count").pending, 1);
}

#[tokio::test]
async fn enqueue_and_requeue_notify_subscribers_and_delayed_items_do_not() {
    let Some((store, schema)) = store_or_skip("notify", "lh_pg").await else {
        return;
    };
    let mut wakeups = store.subscribe().await.expect("subscribe");
    // Another process (its own pool) enqueues: this one hears of it.
    let other = schema.open().await.expect("second store");
    other
        .items_enqueue(
            vec![
                NewItem::new("k", json!(1)),
                NewItem::new("k", json!(2)),
                NewItem::new("k", json!(3)).delay(Duration::from_secs(60)),
            ],
            T0,
        )
        .await
        .expect("enqueue");
    let got = tokio::time::timeout(Duration::from_secs(5), wakeups.recv())
        .await
        .expect("a notification within 5 s")
        .expect("recv");
    assert_eq!(got, 2, "two of the three items are ready now");
    // Delayed only: no notification.
    other
        .item_enqueue(
            NewItem::new("k", json!(4)).delay(Duration::from_secs(60)),
            T0,
        )
        .await
        .expect("enqueue delayed");
    // A requeue by recover_mine wakes workers again.
    let leased = other
        .item_acquire(&req("w"), at_s(1))
        .await
        .expect("acquire")
        .expect("item");
    let recovered = other
        .items_recover_owner("w", at_s(2))
        .await
        .expect("recover");
    assert_eq!(recovered.len(), 1);
    let next = tokio::time::timeout(Duration::from_secs(5), wakeups.recv())
        .await
        .expect("a notification for the requeue")
        .expect("recv");
    assert_eq!(
        next, 1,
        "the delayed enqueue sent nothing; the requeue of {:?} sent 1",
        leased.item.id
    );
    assert_ne!(next, WAKE_ALL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquirers_on_separate_pools_never_lease_an_item_twice() {
    let Some((store, schema)) = store_or_skip("separate pools", "lh_pg").await else {
        return;
    };
    let ids = enqueue_n(&store, "bulk", 300, T0).await;
    let mut hosts: Vec<Arc<dyn Store>> = vec![Arc::new(store)];
    for _ in 0..2 {
        hosts.push(Arc::new(schema.open().await.expect("another host's pool")));
    }
    let tasks = (0..12).map(|w| {
        let host = hosts[w % hosts.len()].clone();
        tokio::spawn(async move {
            let request = req(&format!("w{w}")).limit(7);
            let mut got = Vec::new();
            loop {
                let batch = host
                    .items_acquire(&request, at_s(1))
                    .await
                    .expect("acquire");
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|l| l.item.id));
            }
        })
    });
    let mut seen = BTreeSet::new();
    for t in futures::future::join_all(tasks).await {
        for id in t.expect("task") {
            assert!(seen.insert(id), "item {id} leased twice");
        }
    }
    assert_eq!(seen, ids.into_iter().collect(), "every item leased once");
}

#[tokio::test]
async fn the_database_clock_follows_the_server_within_a_round_trip() {
    let Some((store, _schema)) = store_or_skip("database clock", "lh_pg").await else {
        return;
    };
    let clock = leasehold_postgres::DatabaseClock::sync(&store)
        .await
        .expect("sync");
    // On one host the offset is near zero (its arithmetic is unit-tested in src/clock.rs);
    // what this checks is that the clock reads the live server: its time lies in the window.
    let before = leasehold_core::Clock::now(&clock);
    let server = store.database_time().await.expect("server time");
    let after = leasehold_core::Clock::now(&clock);
    assert!(
        before.0 - 50 <= server.0 && server.0 <= after.0 + 50,
        "server {server} outside [{before}, {after}] (offset {} ms)",
        clock.offset_ms()
    );
    let rtt = clock.resync().await.expect("resync");
    assert!(rtt < Duration::from_secs(1), "local round trip {rtt:?}");
}

#[tokio::test]
async fn a_store_that_fills_a_fresh_table_gives_the_planner_its_statistics() {
    let Ok(schema) = TestSchema::create("lh_pg")
        .await
        .map_err(|why| eprintln!("skipped: {why}"))
    else {
        return;
    };
    let store = schema.open().await.expect("open");
    let sql = format!(
        "SELECT c.reltuples::float8 FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = '{}' AND c.relname = 'items'",
        schema.schema()
    );
    // A never-analyzed table reports -1 tuples (PostgreSQL 14 and later).
    let batch = |from: usize| -> Vec<NewItem> {
        (from..from + 4_000)
            .map(|i| NewItem::new("k", json!(i)))
            .collect()
    };
    store.items_enqueue(batch(0), T0).await.expect("enqueue");
    store
        .items_enqueue(batch(4_000), T0)
        .await
        .expect("enqueue");
    assert!(
        psql(&schema, &sql).await[0].get::<_, f64>(0) < 1.0,
        "8,000 items: not analyzed yet"
    );
    store
        .items_enqueue(batch(8_000), T0)
        .await
        .expect("enqueue");
    let tuples = psql(&schema, &sql).await[0].get::<_, f64>(0);
    assert!(
        (11_000.0..=13_000.0).contains(&tuples),
        "after 12,000 items the planner should know about them, sees {tuples}"
    );
}

/// `db_row` evidence reads only the store's own schema: a row of another schema's table of the
/// same name is not found, the catalog's tables are not tables of the store, and values are
/// bound, never spliced.
#[tokio::test]
async fn row_evidence_reads_only_the_stores_own_schema() {
    use leasehold_core::durable::{DurableStore, RowProbe};
    let Some((mine, _mine_guard)) = store_or_skip("row evidence", "lh_pg").await else {
        return;
    };
    let Some((theirs, _theirs_guard)) = store_or_skip("row evidence", "lh_pg").await else {
        return;
    };
    let id = theirs
        .item_enqueue(NewItem::new("k", json!({})), T0)
        .await
        .expect("enqueue in the other schema");
    let probe = |table: &str, id: serde_json::Value| RowProbe {
        table: table.into(),
        where_: json!({ "id": id }).as_object().cloned().expect("object"),
        values: json!({ "status": "pending" })
            .as_object()
            .cloned()
            .expect("object"),
    };
    assert!(theirs
        .evidence_row_exists(&probe("items", json!(id.0)))
        .await
        .expect("probe"));
    assert!(
        !mine
            .evidence_row_exists(&probe("items", json!(id.0)))
            .await
            .expect("probe"),
        "a row of another schema's items was found"
    );
    for table in ["pg_class", "pg_namespace", "tables", "columns"] {
        let err = mine
            .evidence_row_exists(&RowProbe {
                table: table.into(),
                where_: json!({ "oid": 1 }).as_object().cloned().expect("object"),
                values: serde_json::Map::new(),
            })
            .await
            .expect_err("not a table of the store");
        assert!(
            matches!(&err, StoreError::InvalidInput(m) if m.contains("no table")),
            "{table}: {err:?}"
        );
    }
    let injected = theirs
        .evidence_row_exists(&probe("items", json!(format!("{} OR 1=1", id.0))))
        .await
        .expect("a bound value, compared as text");
    assert!(!injected);
}

/// A schema at version 1 (before durable execution) migrates to the current version: its items
/// stay, the durable tables appear, and durable writes work.
#[tokio::test]
async fn a_version_1_schema_migrates_to_the_durable_tables_keeping_its_items() {
    use leasehold_core::durable::{CheckpointType, DurableStore, NewStep};
    use leasehold_core::AcquireRequest;
    let Some((store, schema)) = store_or_skip("migrate v1", "lh_pg").await else {
        return;
    };
    let id = store
        .item_enqueue(NewItem::new("k", json!({"kept": true})), T0)
        .await
        .expect("enqueue");
    drop(store);
    let s = schema.schema();
    psql(
        &schema,
        &format!(
            "DROP TABLE {s}.tool_ledger, {s}.llm_cache, {s}.durable_checkpoints, \
             {s}.item_attempts, {s}.paused_kinds, {s}.schedules"
        ),
    )
    .await;
    psql(
        &schema,
        &format!(
            "ALTER TABLE {s}.items DROP COLUMN timeout_ms, DROP COLUMN releases, \
             DROP COLUMN unique_key, DROP COLUMN started_at, DROP COLUMN cancel_requested_at"
        ),
    )
    .await;
    // Versions 10 and 12: dependencies, forgetting a deleted item's history (each trigger
    // goes with its function).
    for sql in [
        format!("DROP FUNCTION {s}.leasehold_forget_attempts CASCADE"),
        format!("DROP TABLE {s}.item_deps"),
        format!("DROP FUNCTION {s}.leasehold_dependants_settle CASCADE"),
        format!("DROP INDEX {s}.items_blocked"),
        format!("ALTER TABLE {s}.items DROP COLUMN deps_left, DROP COLUMN has_dependants"),
    ] {
        psql(&schema, &sql).await;
    }
    // Versions 5 and 6: the decision column and its index, the status CHECK as version 1 had
    // it, the emergency functions.
    for sql in [
        format!("ALTER TABLE {s}.items DROP COLUMN decision"),
        format!("DROP INDEX {s}.items_awaiting"),
        format!(
            "ALTER TABLE {s}.items DROP CONSTRAINT items_status_check, ADD CONSTRAINT \
             items_status_check CHECK (status IN ('pending', 'in_progress', 'completed', \
             'failed', 'cancelled'))"
        ),
        format!(
            "DROP FUNCTION {s}.leasehold_reap_expired, {s}.leasehold_release_dead_nodes, \
             {s}.leasehold_take_back, {s}.leasehold_owner_alive"
        ),
    ] {
        psql(&schema, &sql).await;
    }
    // Version 1's indexes, as version 5 found them.
    for sql in [
        format!("DROP INDEX {s}.items_finished, {s}.items_dead"),
        format!("CREATE INDEX items_owner_in_progress ON {s}.items (owner) WHERE status = 'in_progress'"),
        format!(
            "CREATE INDEX items_node_in_progress ON {s}.items (owner_node, owner_incarnation) \
             WHERE status = 'in_progress'"
        ),
        format!("CREATE INDEX items_status ON {s}.items (status, id)"),
        format!("CREATE INDEX items_finished ON {s}.items (finished_at) WHERE finished_at IS NOT NULL"),
    ] {
        psql(&schema, &sql).await;
    }
    psql(
        &schema,
        &format!("DELETE FROM {s}.schema_migrations WHERE version > 1 RETURNING version"),
    )
    .await;
    assert_eq!(
        tables_of(&schema).await,
        vec!["checkpoints", "items", "schema_migrations", "workers"]
    );
    let store = schema.open().await.expect("migrate from version 1");
    let versions: Vec<i64> = psql(
        &schema,
        &format!("SELECT version FROM {s}.schema_migrations ORDER BY 1"),
    )
    .await
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(
        versions,
        (1..=PgStore::schema_version()).collect::<Vec<_>>()
    );
    let item = store.item_get(id).await.expect("get").expect("kept");
    assert_eq!(item.input, json!({"kept": true}));
    let lease = store
        .item_acquire(&AcquireRequest::new("w", Duration::from_secs(60)), T0)
        .await
        .expect("acquire")
        .expect("the kept item")
        .lease;
    let step = NewStep {
        step: Some(0),
        name: "after the migration".into(),
        checkpoint_type: CheckpointType::ManualCheckpoint,
        snapshot: json!({}),
    };
    store
        .step_begin(&lease, &step, T0)
        .await
        .expect("a durable write");
    assert_eq!(store.checkpoints_of(id, 10).await.expect("read").len(), 1);
}
