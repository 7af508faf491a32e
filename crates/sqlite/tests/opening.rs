//! Opening files, what only the SQLite backend can get wrong: migrations run once, and every
//! refusal (a newer schema, in the file or still in its write-ahead log; a text file; another
//! program's database; a directory) leaves the file untouched. The protocol's semantics are
//! the conformance suite's (`tests/conformance.rs`).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;

use leasehold_core::{ItemId, NewItem, Store, StoreError, Timestamp};
use leasehold_sqlite::SqliteStore;
use serde_json::json;

const T0: Timestamp = Timestamp(1_700_000_000_000);

/// Every file in `dir` with its length and a hash of its bytes: what "left untouched" is
/// checked against (a difference prints names and sizes, not megabytes).
fn snapshot(dir: &Path) -> BTreeMap<String, (usize, u64)> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("dir entry");
            let bytes = std::fs::read(e.path()).expect("read file");
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            (
                e.file_name().to_string_lossy().into_owned(),
                (bytes.len(), h.finish()),
            )
        })
        .collect()
}

fn user_version(path: &Path) -> i64 {
    let c = rusqlite::Connection::open(path).expect("raw open");
    c.pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}

async fn enqueue_one(store: &SqliteStore, kind: &str) -> ItemId {
    store
        .item_enqueue(NewItem::new(kind, json!({"n": 1})), T0)
        .await
        .expect("enqueue")
}

#[tokio::test]
async fn opening_twice_migrates_once_and_keeps_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("leasehold.db");
    let store = SqliteStore::open(&path).await.expect("first open");
    let id = enqueue_one(&store, "email").await;
    drop(store);

    let again = SqliteStore::open(&path).await.expect("second open");
    let third = SqliteStore::open(&path)
        .await
        .expect("open beside a live store");
    let item = again.item_get(id).await.expect("get").expect("item kept");
    assert_eq!(item.kind, "email");
    assert_eq!(third.items_count().await.expect("count").pending, 1);
    assert_eq!(user_version(&path), SqliteStore::schema_version());

    let c = rusqlite::Connection::open(&path).expect("raw open");
    let mode: String = c
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn an_empty_file_becomes_a_new_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").expect("create empty file");
    let store = SqliteStore::open(&path).await.expect("open empty file");
    enqueue_one(&store, "k").await;
    assert_eq!(user_version(&path), SqliteStore::schema_version());
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_the_file_is_untouched() {
    for wal in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("future.db");
        {
            let c = rusqlite::Connection::open(&path).expect("raw create");
            if wal {
                let _: String = c
                    .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                    .expect("wal");
            }
            c.execute_batch(
                "CREATE TABLE items (id INTEGER PRIMARY KEY, shape_from_the_future BLOB);
                 INSERT INTO items (shape_from_the_future) VALUES (x'00ff');
                 PRAGMA user_version = 99;",
            )
            .expect("future schema");
        }
        let before = snapshot(dir.path());

        let err = SqliteStore::open(&path).await.expect_err("must refuse");
        match err {
            StoreError::SchemaTooNew { found, supported } => {
                assert_eq!(found, 99);
                assert_eq!(supported, SqliteStore::schema_version());
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        assert_eq!(
            snapshot(dir.path()),
            before,
            "the directory changed (wal = {wal})"
        );
    }
}

#[tokio::test]
async fn a_newer_schema_still_in_the_write_ahead_log_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("future.db");
    drop(SqliteStore::open(&path).await.expect("create"));
    // Another (newer) process holds the file open and has bumped the version in its log, not
    // yet in the file: the header alone would say version 1.
    let newer = rusqlite::Connection::open(&path).expect("raw open");
    let future = SqliteStore::schema_version() + 1;
    newer
        .execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA user_version = {future};"
        ))
        .expect("bump");
    let main_file = std::fs::read(&path).expect("read");

    match SqliteStore::open(&path).await {
        Err(StoreError::SchemaTooNew { found, .. }) if found == future => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).expect("read"), main_file);
    drop(newer);
}

#[tokio::test]
async fn a_text_file_is_not_a_database_and_is_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(40)).expect("write");
    let before = snapshot(dir.path());

    let err = SqliteStore::open(&path).await.expect_err("must refuse");
    match &err {
        StoreError::NotADatabase(why) => assert!(why.contains("notes.txt"), "{why}"),
        other => panic!("expected NotADatabase, got {other:?}"),
    }
    assert_eq!(snapshot(dir.path()), before);

    let tiny = dir.path().join("tiny");
    std::fs::write(&tiny, "x").expect("write");
    assert!(matches!(
        SqliteStore::open(&tiny).await,
        Err(StoreError::NotADatabase(_))
    ));
    assert_eq!(std::fs::read(&tiny).expect("read"), b"x");
}

#[tokio::test]
async fn another_programs_sqlite_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&path).expect("raw create");
        c.execute_batch("CREATE TABLE workers (name TEXT); INSERT INTO workers VALUES ('bob');")
            .expect("other schema");
    }
    let before = snapshot(dir.path());
    let err = SqliteStore::open(&path).await.expect_err("must refuse");
    assert!(matches!(err, StoreError::NotADatabase(_)), "{err:?}");
    assert_eq!(snapshot(dir.path()), before);
}

#[tokio::test]
async fn a_directory_is_not_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = SqliteStore::open(dir.path())
        .await
        .expect_err("must refuse");
    assert!(matches!(err, StoreError::NotADatabase(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// The lease protocol on a real file
