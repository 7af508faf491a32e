//! What only the SQLite backend can get wrong: opening files (migrations, refusals that leave
//! the file untouched), several connections on one file, and a smoke run of the lease protocol
//! on a real file. The cross-backend semantics are the conformance suite's.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use leasehold_core::{
    AcquireRequest, FailDisposition, FailOutcome, ItemFilter, ItemId, ItemStatus, LeaseRef,
    Liveness, LivenessCheck, NewItem, NoLiveness, NodeRecord, NodeStatus, ReapCandidate,
    ReapRequest, Store, StoreError, Timestamp,
};
use leasehold_sqlite::SqliteStore;
use serde_json::json;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const LEASE: Duration = Duration::from_secs(30);
const STALE: Duration = Duration::from_secs(900);

fn at(ms: i64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

async fn store_in(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("leasehold.db"))
        .await
        .expect("open store")
}

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

fn req(owner: &str) -> AcquireRequest {
    AcquireRequest::new(owner, LEASE)
}

async fn enqueue_one(store: &SqliteStore, kind: &str) -> ItemId {
    store
        .item_enqueue(NewItem::new(kind, json!({"n": 1})), T0)
        .await
        .expect("enqueue")
}

// ---------------------------------------------------------------------------------------------
// Opening files

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
    newer
        .execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA user_version = 99;")
        .expect("bump");
    let main_file = std::fs::read(&path).expect("read");

    match SqliteStore::open(&path).await {
        Err(StoreError::SchemaTooNew { found: 99, .. }) => {}
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

#[tokio::test]
async fn lifecycle_enqueue_acquire_renew_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir).await;
    let id = enqueue_one(&store, "email").await;

    let leased = store
        .item_acquire(&req("w1").node("node-a", 7), at(1))
        .await
        .expect("acquire")
        .expect("an item");
    assert_eq!(leased.item.id, id);
    assert_eq!(leased.item.status, ItemStatus::InProgress);
    assert_eq!(leased.item.attempts, 1);
    assert_eq!(leased.item.epoch, 1);
    assert_eq!(leased.item.owner_node.as_deref(), Some("node-a"));
    assert_eq!(leased.item.owner_incarnation, Some(7));
    assert_eq!(leased.expires_at, at(1).plus(LEASE));
    assert_eq!(leased.lease, leased.item.lease().expect("lease"));

    let renewed = store
        .lease_renew(&leased.lease, LEASE, at(10_000))
        .await
        .expect("renew");
    assert_eq!(renewed, at(10_000).plus(LEASE));
    store
        .item_progress(&leased.lease, json!({"pct": 50}), at(11_000))
        .await
        .expect("progress");

    let stale = LeaseRef {
        epoch: leased.lease.epoch - 1,
        ..leased.lease.clone()
    };
    let err = store
        .item_complete(&stale, json!("zombie"), at(12_000))
        .await
        .expect_err("stale epoch");
    assert!(err.is_lease_lost(), "{err:?}");

    store
        .item_complete(&leased.lease, json!({"sent": true}), at(12_000))
        .await
        .expect("complete");
    let done = store.item_get(id).await.expect("get").expect("item");
    assert_eq!(done.status, ItemStatus::Completed);
    assert_eq!(done.output, Some(json!({"sent": true})));
    assert_eq!(done.progress, Some(json!({"pct": 50})));
    assert_eq!(done.finished_at, Some(at(12_000)));
    assert_eq!(done.lease(), None);

    let again = store
        .item_complete(&leased.lease, json!("twice"), at(13_000))
        .await
        .expect_err("completed once");
    assert!(again.is_lease_lost());
    assert_eq!(
        store.item_get(id).await.expect("get").expect("item").output,
        Some(json!({"sent": true}))
    );
}

#[tokio::test]
async fn acquire_takes_ready_items_by_priority_then_run_at_then_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir).await;
    let ids = store
        .items_enqueue(
            vec![
                NewItem::new("a", json!(0)),
                NewItem::new("a", json!(1)).priority(5),
                NewItem::new("a", json!(2))
                    .delay(Duration::from_secs(60))
                    .priority(9),
                NewItem::new("b", json!(3)).priority(5),
                NewItem::new("a", json!(4)).group("g"),
            ],
            T0,
        )
        .await
        .expect("enqueue");

    let got = store
        .items_acquire(&req("w").limit(10), at(1))
        .await
        .expect("acquire");
    let order: Vec<ItemId> = got.iter().map(|l| l.item.id).collect();
    assert_eq!(order, vec![ids[1], ids[3], ids[0], ids[4]]);

    let later = store
        .items_acquire(&req("w").limit(10), at(60_000))
        .await
        .expect("acquire");
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].item.id, ids[2]);

    let more = store
        .items_enqueue(
            vec![
                NewItem::new("a", json!(5)),
                NewItem::new("b", json!(6)),
                NewItem::new("b", json!(7)).group("g"),
            ],
            T0,
        )
        .await
        .expect("enqueue");
    let b_in_g = store
        .items_acquire(&req("w").kinds(["b"]).group("g").limit(5), at(1))
        .await
        .expect("acquire");
    assert_eq!(b_in_g.len(), 1);
    assert_eq!(b_in_g[0].item.id, more[2]);
    let b = store
        .items_acquire(&req("w").kinds(["b", "c"]).limit(5), at(1))
        .await
        .expect("acquire");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].item.id, more[1]);
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir).await;
    let err = store
        .items_enqueue(
            vec![
                NewItem::new("ok", json!(1)),
                NewItem::new("bad", json!(2)).max_attempts(0),
            ],
            T0,
        )
        .await
        .expect_err("one bad item");
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
    assert_eq!(store.items_count().await.expect("count").total(), 0);

    enqueue_one(&store, "k").await;
    let err = store
        .items_acquire(&req("w").limit(0), at(1))
        .await
        .expect_err("limit 0");
    assert!(matches!(err, StoreError::InvalidInput(_)));
    let err = store
        .items_reap_expired(&ReapRequest::new(0, STALE), &NoLiveness, at(1))
        .await
        .expect_err("batch 0");
    assert!(matches!(err, StoreError::InvalidInput(_)));
    assert_eq!(store.items_count().await.expect("count").pending, 1);
}

#[tokio::test]
async fn fail_retries_until_the_budget_is_spent_then_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir).await;
    let id = store
        .item_enqueue(NewItem::new("k", json!(1)).max_attempts(2), T0)
        .await
        .expect("enqueue");
    let retry = FailDisposition::Retry {
        delay: Duration::from_secs(5),
    };

    let first = store
        .item_acquire(&req("w"), at(1))
        .await
        .expect("acq")
        .expect("item");
    let outcome = store
        .item_fail(&first.lease, "boom 1", retry, at(2))
        .await
        .expect("fail");
    assert_eq!(outcome, FailOutcome::Retrying { run_at: at(5_002) });
    let item = store.item_get(id).await.expect("get").expect("item");
    assert_eq!(item.status, ItemStatus::Pending);
    assert_eq!(item.owner, None);
    assert_eq!(item.error.as_deref(), Some("boom 1"));
    assert!(store
        .item_acquire(&req("w"), at(5_001))
        .await
        .expect("acq")
        .is_none());

    let second = store
        .item_acquire(&req("w"), at(5_002))
        .await
        .expect("acq")
        .expect("item");
    assert_eq!(second.item.attempts, 2);
    let stale = store
        .item_fail(&first.lease, "late", retry, at(5_003))
        .await
        .expect_err("old epoch");
    assert!(stale.is_lease_lost());
    let outcome = store
        .item_fail(&second.lease, "boom 2", retry, at(5_004))
        .await
        .expect("fail");
    assert_eq!(outcome, FailOutcome::DeadLettered);
    let item = store.item_get(id).await.expect("get").expect("item");
    assert_eq!(item.status, ItemStatus::Failed);
    assert_eq!(item.attempts, 2);
    assert_eq!(item.error.as_deref(), Some("boom 2"));
    assert_eq!(item.finished_at, Some(at(5_004)));

    let id2 = enqueue_one(&store, "k").await;
    let l = store
        .item_acquire(&req("w"), at(1))
        .await
        .expect("acq")
        .expect("item");
    assert_eq!(l.item.id, id2);
    let outcome = store
        .item_fail(&l.lease, "bad input", FailDisposition::Permanent, at(2))
        .await
        .expect("fail");
    assert_eq!(outcome, FailOutcome::DeadLettered);
}

#[tokio::test]
async fn release_gives_the_attempt_back_and_cancel_only_takes_pending_items() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir).await;
    let id = enqueue_one(&store, "k").await;
    let l = store
        .item_acquire(&req("w"), at(1))
        .await
        .expect("acq")
        .expect("item");
    store
        .item_release(&l.lease, None, at(2))
        .await
        .expect("release");
    let item = store.item_get(id).await.expect("get").expect("item");
    assert_eq!(
        (
            item.status,
            item.attempts,
            item.epoch,
            item.run_at,
            item.owner
        ),
        (ItemStatus::Pending, 0, 1, at(2), None)
    );
    assert!(store
        .item_release(&l.lease, None, at(3))
        .await
        .expect_err("twice")
        .is_lease_lost());

    let l = store
        .item_acquire(&req("w"), at(3))
        .await
        .expect("acq")
        .expect("item");
    assert_eq!((l.item.attempts, l.item.epoch), (1, 2));
    match store.item_cancel(id, at(4)).await {
        Err(StoreError::InvalidState { status, .. }) => assert_eq!(status, ItemStatus::InProgress),
        other => panic!("expected InvalidState, got {other:?}"),
    }
    assert!(matches!(
        store.item_cancel(ItemId(9_999), at(4)).await,
        Err(StoreError::NotFound(ItemId(9_999)))
    ));
    let other = enqueue_one(&store, "k").await;
    store
        .item_cancel(other, at(5))
        .await
        .expect("cancel pending");
    let item = store.item_get(other).await.expect("get").expect("item");
    assert_eq!(item.status, ItemStatus::Cancelled);
    assert_eq!(item.finished_at, Some(at(5)));
}

#[tokio::test]
async fn lease_status_reports_expiry_and_an_unreaped_expired_lease_can_be_renewed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir).await;
    let id = enqueue_one(&store, "k").await;
    assert!(matches!(
        store.lease_status(ItemId(404), at(0)).await,
        Err(StoreError::NotFound(_))
    ));
    let pending = store.lease_status(id, at(0)).await.expect("status");
    assert!(!pending.expired);
    assert_eq!(pending.remaining, None);

    let l = store
        .item_acquire(&req("w"), at(0))
        .await
        .expect("acq")
        .expect("item");
    let live = store.lease_status(id, at(10_000)).await.expect("status");
    assert!(!live.expired);
    assert_eq!(live.remaining, Some(Duration::from_secs(20)));
    let late = store.lease_status(id, at(40_000)).await.expect("status");
    assert!(late.expired);
    assert_eq!(late.remaining, Some(Duration::ZERO));

    let renewed = store
        .lease_renew(&l.lease, LEASE, at(40_000))
        .await
        .expect("renew");
    assert_eq!(renewed, at(70_000));
    assert_eq!(
        store
            .leases_renew_owner("w", LEASE, at(50_000))
            .await
            .expect("renew all"),
        1
    );
    assert_eq!(
        store
            .leases_renew_owner("nobody", LEASE, at(50_000))
            .await
            .expect("renew all"),
        0
    );
    let mine = store.leases_of_owner("w").await.expect("mine");
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].lease_expires_at, Some(at(80_000)));
}

// ---------------------------------------------------------------------------------------------
// Recovery

/// Answers `Alive` for one owner and `Dead` for the rest.
struct AliveOwner(&'static str);

#[async_trait]
impl LivenessCheck for AliveOwner {
    async fn check(&self, c: &ReapCandidate) -> Liveness {
        if c.owner == self.0 {
            Liveness::Alive
        } else {
            Liveness::Dead
        }
    }
}

/// The owner renews its lease while the reaper is asking about it, then (too late) is judged
/// dead: the renewal must win.
struct RenewsWhileAsked {
    store: Arc<SqliteStore>,
    now: Timestamp,
}

#[async_trait]
impl LivenessCheck for RenewsWhileAsked {
    async fn check(&self, c: &ReapCandidate) -> Liveness {
        let lease = LeaseRef {
            item: c.item,
            owner: c.owner.clone(),
            epoch: c.epoch,
        };
        self.store
            .lease_renew(&lease, LEASE, self.now)
            .await
            .expect("the store is usable while the reaper waits on liveness");
        Liveness::Dead
    }
}

#[tokio::test]
async fn the_reaper_asks_liveness_requeues_the_dead_and_fences_the_zombie() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir).await;
    let a = enqueue_one(&store, "k").await;
    let b = enqueue_one(&store, "k").await;
    let la = store
        .item_acquire(&req("alive"), at(0))
        .await
        .expect("acq")
        .expect("a");
    let lb = store
        .item_acquire(&req("dead"), at(1))
        .await
        .expect("acq")
        .expect("b");
    assert_eq!((la.item.id, lb.item.id), (a, b));

    let before_expiry = store
        .items_reap_expired(&ReapRequest::new(10, STALE), &NoLiveness, at(29_000))
        .await
        .expect("sweep");
    assert_eq!(before_expiry.expired_found, 0);

    let mut dry = ReapRequest::new(10, STALE);
    dry.dry_run = true;
    let report = store
        .items_reap_expired(&dry, &AliveOwner("alive"), at(31_000))
        .await
        .expect("dry run");
    assert!(report.dry_run);
    assert_eq!(
        (report.expired_found, report.skipped_alive, report.recovered),
        (2, 1, 1)
    );
    assert_eq!(report.items.len(), 1);
    assert_eq!(report.items[0].id, b);
    assert_eq!(store.items_count().await.expect("count").in_progress, 2);

    let stats = store
        .items_reap_expired(
            &ReapRequest::new(10, STALE),
            &AliveOwner("alive"),
            at(31_000),
        )
        .await
        .expect("sweep");
    assert_eq!(
        (
            stats.expired_found,
            stats.skipped_alive,
            stats.recovered,
            stats.failed
        ),
        (2, 1, 1, 0)
    );
    assert_eq!(stats.items, report.items);
    let requeued = store.item_get(b).await.expect("get").expect("b");
    assert_eq!(requeued.status, ItemStatus::Pending);
    assert_eq!(
        (requeued.epoch, requeued.attempts, requeued.owner.as_deref()),
        (2, 1, None)
    );
    assert!(
        requeued.run_at <= at(31_000),
        "a requeued item keeps its (past) place in the queue"
    );

    // The zombie's writes change nothing; no checkpoint is written.
    assert!(store
        .item_complete(&lb.lease, json!("zombie"), at(32_000))
        .await
        .expect_err("zombie complete")
        .is_lease_lost());
    assert!(store
        .checkpoint_save(&lb.lease, "step", json!(1), at(32_000))
        .await
        .expect_err("zombie checkpoint")
        .is_lease_lost());
    assert!(store.checkpoints_list(b).await.expect("list").is_empty());
    assert!(store
        .lease_renew(&lb.lease, LEASE, at(32_000))
        .await
        .is_err());

    let again = store
        .item_acquire(&req("next"), at(33_000))
        .await
        .expect("acq")
        .expect("b");
    assert_eq!(
        (again.item.id, again.item.epoch, again.item.attempts),
        (b, 3, 2)
    );
    let cp = store
        .checkpoint_save(&again.lease, "step", json!({"at": 1}), at(34_000))
        .await
        .expect("checkpoint");
    let cps = store.checkpoints_list(b).await.expect("list");
    assert_eq!(cps.len(), 1);
    assert_eq!(
        (cps[0].id, cps[0].epoch, cps[0].payload.clone()),
        (cp, 3, json!({"at": 1}))
    );
}

#[tokio::test]
async fn the_reaper_dead_letters_spent_items_and_keeps_the_last_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir).await;
    let id = store
        .item_enqueue(NewItem::new("k", json!(1)).max_attempts(2), T0)
        .await
        .expect("enqueue");
    let l = store
        .item_acquire(&req("w"), at(0))
        .await
        .expect("acq")
        .expect("item");
    store
        .item_fail(
            &l.lease,
            "first failure",
            FailDisposition::Retry {
                delay: Duration::ZERO,
            },
            at(1),
        )
        .await
        .expect("fail");
    store
        .item_acquire(&req("w"), at(2))
        .await
        .expect("acq")
        .expect("item");

    let stats = store
        .items_reap_expired(&ReapRequest::new(10, STALE), &NoLiveness, at(60_000))
        .await
        .expect("sweep");
    assert_eq!((stats.recovered, stats.failed), (0, 1));
    assert!(stats.items[0].dead_lettered);
    let item = store.item_get(id).await.expect("get").expect("item");
    assert_eq!(item.status, ItemStatus::Failed);
    assert_eq!(item.attempts, 2);
    let error = item.error.expect("an error");
    assert!(
        error.contains("lease expired") && error.contains("owner w"),
        "{error}"
    );
    assert!(error.contains("2 of 2 attempts"), "{error}");
    assert!(error.contains("first failure"), "{error}");

    // A lower attempt limit on the request dead-letters earlier.
    let id = store
        .item_enqueue(NewItem::new("k", json!(2)).max_attempts(5), T0)
        .await
        .expect("enqueue");
    store
        .item_acquire(&req("w"), at(0))
        .await
        .expect("acq")
        .expect("item");
    let mut strict = ReapRequest::new(10, STALE);
    strict.max_attempts = Some(1);
    let stats = store
        .items_reap_expired(&strict, &NoLiveness, at(60_000))
        .await
        .expect("sweep");
    assert_eq!(stats.failed, 1);
    assert_eq!(
        store.item_get(id).await.expect("get").expect("item").status,
        ItemStatus::Failed
    );
}

#[tokio::test]
async fn past_the_stale_limit_liveness_is_not_asked_and_a_renewal_during_the_sweep_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(store_in(&dir).await);
    let id = enqueue_one(&store, "k").await;
    let long = AcquireRequest::new("w", Duration::from_secs(3_600));
    store
        .item_acquire(&long, at(0))
        .await
        .expect("acq")
        .expect("item");
    let stats = store
        .items_reap_expired(
            &ReapRequest::new(10, Duration::from_secs(60)),
            &AliveOwner("w"),
            at(61_000),
        )
        .await
        .expect("sweep");
    assert_eq!(
        (stats.expired_found, stats.skipped_alive, stats.recovered),
        (1, 0, 1)
    );
    assert_eq!(
        store.item_get(id).await.expect("get").expect("item").status,
        ItemStatus::Pending
    );

    let l = store
        .item_acquire(&req("w"), at(70_000))
        .await
        .expect("acq")
        .expect("item");
    let liveness = RenewsWhileAsked {
        store: store.clone(),
        now: at(101_000),
    };
    let stats = store
        .items_reap_expired(&ReapRequest::new(10, STALE), &liveness, at(101_000))
        .await
        .expect("sweep");
    assert_eq!(
        (stats.expired_found, stats.skipped_changed, stats.recovered),
        (1, 1, 0)
    );
    assert!(stats.items.is_empty());
    let item = store.item_get(id).await.expect("get").expect("item");
    assert_eq!(item.status, ItemStatus::InProgress);
    assert_eq!(item.epoch, l.item.epoch);
}

#[tokio::test]
async fn recover_mine_takes_back_everything_the_owner_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir).await;
    let spent = store
        .item_enqueue(NewItem::new("k", json!(1)).max_attempts(1), T0)
        .await
        .expect("enqueue");
    let fresh = enqueue_one(&store, "k").await;
    let other = enqueue_one(&store, "k").await;
    store
        .items_acquire(&req("w").limit(2), at(0))
        .await
        .expect("acq");
    store
        .item_acquire(&req("x"), at(0))
        .await
        .expect("acq")
        .expect("item");

    let done = store
        .items_recover_owner("w", at(1))
        .await
        .expect("recover");
    let summary: Vec<(ItemId, bool)> = done.iter().map(|r| (r.id, r.dead_lettered)).collect();
    assert_eq!(summary, vec![(spent, true), (fresh, false)]);
    let f = store.item_get(fresh).await.expect("get").expect("item");
    assert_eq!((f.status, f.epoch, f.owner), (ItemStatus::Pending, 2, None));
    let s = store.item_get(spent).await.expect("get").expect("item");
    assert_eq!(s.status, ItemStatus::Failed);
    assert!(s.error.expect("error").contains("recover_mine"));
    assert_eq!(
        store
            .item_get(other)
            .await
            .expect("get")
            .expect("item")
            .status,
        ItemStatus::InProgress
    );
    assert!(store
        .items_recover_owner("w", at(2))
        .await
        .expect("again")
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
// Registry, listing, several connections

fn node(id: &str, incarnation: i64, beat: Timestamp) -> NodeRecord {
    NodeRecord {
        node_id: id.into(),
        incarnation,
        worker_type: "any".into(),
        status: NodeStatus::Idle,
        current_item: Some(ItemId(3)),
        task_text: Some("working".into()),
        last_heartbeat_at: beat,
        heartbeat_interval_ms: 1_000,
        started_at: T0,
        metadata: json!({"pid": 42}),
    }
}

#[tokio::test]
async fn the_registry_upserts_and_stops_only_the_named_incarnation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir).await;
    store.ping().await.expect("ping");
    assert_eq!(store.node_get("n1").await.expect("get"), None);
    store
        .node_heartbeat(&node("n1", 1, at(0)))
        .await
        .expect("beat");
    store
        .node_heartbeat(&node("n0", 1, at(0)))
        .await
        .expect("beat");
    store
        .node_heartbeat(&node("n1", 2, at(5)))
        .await
        .expect("beat");
    assert_eq!(
        store.node_get("n1").await.expect("get"),
        Some(node("n1", 2, at(5)))
    );

    store.node_stop("n1", 1, at(6)).await.expect("stop old");
    assert_eq!(
        store
            .node_get("n1")
            .await
            .expect("get")
            .expect("row")
            .status,
        NodeStatus::Idle
    );
    store.node_stop("n1", 2, at(7)).await.expect("stop");
    let row = store.node_get("n1").await.expect("get").expect("row");
    assert_eq!(row.status, NodeStatus::Stopped);
    assert!(!row.is_alive(at(7), 3));
    let ids: Vec<String> = store
        .nodes_list()
        .await
        .expect("list")
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(ids, vec!["n0", "n1"]);
}

#[tokio::test]
async fn listing_filters_and_pages_by_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_in(&dir).await;
    let ids = store
        .items_enqueue(
            (0..6)
                .map(|i| NewItem::new(if i % 2 == 0 { "even" } else { "odd" }, json!(i)))
                .collect(),
            T0,
        )
        .await
        .expect("enqueue");
    let page = store
        .items_list(&ItemFilter {
            kind: Some("even".into()),
            after: Some(ids[0]),
            limit: 1,
            ..ItemFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(page.iter().map(|i| i.id).collect::<Vec<_>>(), vec![ids[2]]);
    store.item_acquire(&req("w"), at(0)).await.expect("acq");
    let mine = store
        .items_list(&ItemFilter {
            status: Some(ItemStatus::InProgress),
            owner: Some("w".into()),
            ..ItemFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(mine.len(), 1);
    let counts = store.items_count().await.expect("count");
    assert_eq!(
        (counts.pending, counts.in_progress, counts.total()),
        (5, 1, 6)
    );
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
