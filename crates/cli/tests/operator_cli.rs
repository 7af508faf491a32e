//! The operators' actions from the command line: `retry`, `cancel` and `delete` by ids and by
//! filter, each with `--dry-run` (changes nothing) and `--json` (the store's report), each
//! refusing a wrong state with the store's message naming it (exit 2, nothing changed);
//! `pause`/`resume` and the paused kinds in `status`; `item` with its attempt history. The real
//! binary runs against its own SQLite file, whose items are brought into each state through
//! the store beforehand; one test runs retry and cancel against PostgreSQL.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use leasehold_core::{
    AcquireRequest, Clock, FailDisposition, ItemId, ItemStatus, NewItem, Store, SystemClock,
    Timestamp,
};
use leasehold_sqlite::SqliteStore;
use serde_json::{json, Value};

fn run(db: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LEASEHOLD_") || k.starts_with("TASK_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("run leasehold")
}

fn text_ok(db: &str, args: &[&str]) -> String {
    let out = run(db, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn json_ok(db: &str, args: &[&str]) -> Value {
    let text = text_ok(db, &[args, &["--json"]].concat());
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
}

/// Exit 2, nothing on stdout, one `error:` line containing `needle`.
fn refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(needle),
        "{needle:?} not in {stderr}"
    );
}

/// The items in one state each, enqueued and moved through the store.
struct Fixture {
    /// `email`, failed (dead-lettered on its only attempt with "smtp 550").
    failed: ItemId,
    /// `email`, completed.
    completed: ItemId,
    /// `sms`, enqueued two hours ago, failed.
    old_failed: ItemId,
    /// `email`, pending.
    pending: ItemId,
    /// `report`, in progress (held by `w-report` on node `n1`).
    running: ItemId,
}

/// Enqueues `kind` at `at` and leases it to `owner` (the only item of its kind that is ready).
async fn enqueue_and_take(store: &dyn Store, kind: &str, owner: &str, at: Timestamp) -> ItemId {
    let id = store
        .item_enqueue(NewItem::new(kind, json!({ "k": kind })).max_attempts(1), at)
        .await
        .expect("enqueue");
    let held = store
        .item_acquire(
            &AcquireRequest::new(owner, Duration::from_secs(300))
                .kinds([kind])
                .node("n1", 1),
            at,
        )
        .await
        .expect("acquire")
        .expect("the item just enqueued");
    assert_eq!(held.item.id, id);
    id
}

async fn fixture(store: &dyn Store) -> Fixture {
    let now = SystemClock.now();
    let fail = |id| async move {
        let item = store.item_get(id).await.unwrap().unwrap();
        store
            .item_fail(
                &item.lease().unwrap(),
                "smtp 550",
                FailDisposition::Permanent,
                now,
            )
            .await
            .expect("fail");
    };
    let failed = enqueue_and_take(store, "email", "w-email", now).await;
    fail(failed).await;
    let completed = enqueue_and_take(store, "email", "w-email", now).await;
    let lease = store.item_get(completed).await.unwrap().unwrap().lease();
    store
        .item_complete(&lease.unwrap(), json!({ "sent": true }), now)
        .await
        .expect("complete");
    let two_hours_ago = now.minus(Duration::from_secs(7_200));
    let old_failed = enqueue_and_take(store, "sms", "w-sms", two_hours_ago).await;
    fail(old_failed).await;
    let pending = store
        .item_enqueue(NewItem::new("email", json!({ "k": "email" })), now)
        .await
        .expect("enqueue");
    let running = enqueue_and_take(store, "report", "w-report", now).await;
    Fixture {
        failed,
        completed,
        old_failed,
        pending,
        running,
    }
}

async fn sqlite(dir: &Path) -> (String, SqliteStore) {
    let db = dir.join("ops.db");
    let store = SqliteStore::open(&db).await.expect("open");
    (db.to_str().expect("utf-8 path").to_string(), store)
}

async fn status_of(store: &dyn Store, id: ItemId) -> ItemStatus {
    store.item_get(id).await.unwrap().expect("exists").status
}

#[tokio::test]
async fn retry_by_id_and_filter_refusing_wrong_states_and_changing_nothing_in_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = sqlite(dir.path()).await;
    let f = fixture(&store).await;
    let (failed, completed) = (f.failed.to_string(), f.completed.to_string());
    let before = store.items_list(&Default::default()).await.unwrap();

    // Refused, naming the state or the problem; all or nothing.
    refused(
        &run(&db, &["retry", &completed]),
        &format!("item {completed} is completed; retry needs it failed or cancelled"),
    );
    refused(&run(&db, &["retry", &failed, &completed]), "is completed");
    refused(&run(&db, &["retry", "999"]), "item 999 not found");
    refused(
        &run(&db, &["retry", "--status", "completed"]),
        "retry applies to failed or cancelled items, not completed",
    );
    refused(&run(&db, &["retry"]), "needs item ids or a filter");
    refused(
        &run(&db, &["retry", &failed, "--attempts", "0"]),
        "at least 1",
    );
    refused(&run(&db, &["retry", "--before", "soon"]), "RFC 3339");
    refused(
        &run(&db, &["retry", &failed, "--kind", "email"]),
        "cannot be used",
    );

    // A dry run reports and changes nothing.
    let dry = json_ok(&db, &["retry", &failed, "--dry-run"]);
    assert_eq!(
        dry,
        json!({ "action": "retry", "dry_run": true, "count": 1, "items": [
            { "id": f.failed.0, "kind": "email", "from": "failed", "to": "pending" } ] })
    );
    let text = text_ok(&db, &["retry", "--status", "failed", "--dry-run"]);
    assert!(
        text.starts_with("dry run (nothing changed): would retry 2 items\n"),
        "{text}"
    );
    assert_eq!(
        store.items_list(&Default::default()).await.unwrap(),
        before,
        "nothing changed"
    );

    // By id, with a raised budget.
    let done = json_ok(&db, &["retry", &failed, "--attempts", "5"]);
    assert_eq!(
        (done["count"].clone(), done["dry_run"].clone()),
        (json!(1), json!(false))
    );
    let item = store.item_get(f.failed).await.unwrap().unwrap();
    assert_eq!(
        (item.status, item.attempts, item.max_attempts),
        (ItemStatus::Pending, 0, 5)
    );

    // By filter: only the old sms item is failed and enqueued over an hour ago.
    assert_eq!(
        json_ok(&db, &["retry", "--before", "2000-01-01"])["count"],
        json!(0)
    );
    let text = text_ok(&db, &["retry", "--status", "failed", "--before", "1h"]);
    assert!(text.starts_with("retried 1 item\n"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    f.old_failed.to_string().as_str(),
                    "sms",
                    "failed",
                    "pending"
                ]),
        "{text}"
    );
    assert_eq!(status_of(&store, f.old_failed).await, ItemStatus::Pending);
    assert_eq!(
        json_ok(&db, &["retry", "--status", "failed"])["count"],
        json!(0)
    );

    // The history of the retried item is kept and shown.
    let shown = json_ok(&db, &["item", &failed]);
    assert_eq!(shown["status"], json!("pending"));
    assert_eq!(shown["max_attempts"], json!(5));
    let history = shown["history"].as_array().expect("a history list");
    assert_eq!(history.len(), 1, "{shown}");
    assert_eq!(history[0]["outcome"], json!("failed"));
    assert_eq!(history[0]["error"], json!("smtp 550"));
    assert_eq!(history[0]["owner"], json!("w-email"));
    assert_eq!(history[0]["attempt"], json!(1));
}

#[tokio::test]
async fn cancel_pending_and_mark_running_refusing_finished_items() {
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = sqlite(dir.path()).await;
    let f = fixture(&store).await;
    let (pending, running) = (f.pending.to_string(), f.running.to_string());
    let before = store.items_list(&Default::default()).await.unwrap();

    refused(
        &run(&db, &["cancel", &f.completed.to_string()]),
        "is completed; cancel needs it pending, blocked, awaiting or in_progress",
    );
    refused(
        &run(&db, &["cancel", &pending, &f.failed.to_string()]),
        "is failed",
    );
    refused(
        &run(&db, &["cancel", "--status", "failed"]),
        "cancel applies to pending, blocked, awaiting or in_progress items, not failed",
    );
    let dry = json_ok(&db, &["cancel", &pending, &running, "--dry-run"]);
    assert_eq!(dry["dry_run"], json!(true));
    assert_eq!(dry["count"], json!(2));
    assert_eq!(
        store.items_list(&Default::default()).await.unwrap(),
        before,
        "nothing changed"
    );

    let text = text_ok(&db, &["cancel", &pending, &running]);
    assert!(text.starts_with("cancelled 2 items\n"), "{text}");
    assert!(
        text.contains("1 in progress marked for cancellation"),
        "{text}"
    );
    assert!(text.contains("cancel requested"), "{text}");
    assert_eq!(status_of(&store, f.pending).await, ItemStatus::Cancelled);
    let marked = store.item_get(f.running).await.unwrap().unwrap();
    assert_eq!(marked.status, ItemStatus::InProgress, "still leased");
    assert!(marked.cancel_requested_at.is_some());
    let shown = text_ok(&db, &["item", &running]);
    assert!(shown.contains("cancel requested:"), "{shown}");

    // By filter: the kind's pending items, counted.
    store
        .item_enqueue(NewItem::new("email", json!({})), SystemClock.now())
        .await
        .unwrap();
    let by_kind = json_ok(&db, &["cancel", "--kind", "email"]);
    assert_eq!(by_kind["count"], json!(1), "{by_kind}");
    assert_eq!(by_kind["items"][0]["from"], json!("pending"));
}

#[tokio::test]
async fn delete_finished_items_only_and_item_then_reports_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = sqlite(dir.path()).await;
    let f = fixture(&store).await;
    let completed = f.completed.to_string();
    let before = store.items_list(&Default::default()).await.unwrap();

    refused(
        &run(&db, &["delete", &f.pending.to_string()]),
        "is pending; delete needs it finished",
    );
    refused(
        &run(&db, &["delete", &f.running.to_string()]),
        "is in_progress",
    );
    refused(&run(&db, &["delete", "--status", "pending"]), "not pending");
    let dry = text_ok(&db, &["delete", "--kind", "email", "--dry-run"]);
    assert!(
        dry.starts_with("dry run (nothing changed): would delete 2 items\n"),
        "{dry}"
    );
    assert_eq!(
        store.items_list(&Default::default()).await.unwrap(),
        before,
        "nothing changed"
    );

    let done = json_ok(&db, &["delete", &completed]);
    assert_eq!(
        done,
        json!({ "action": "delete", "dry_run": false, "count": 1, "items": [
            { "id": f.completed.0, "kind": "email", "from": "completed", "to": "completed" } ] })
    );
    assert!(store.item_get(f.completed).await.unwrap().is_none());
    refused(&run(&db, &["item", &completed]), "not found");

    let by_status = json_ok(&db, &["delete", "--status", "failed"]);
    assert_eq!(by_status["count"], json!(2), "{by_status}");
    assert_eq!(
        store.items_list(&Default::default()).await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn pause_shows_in_status_and_stops_acquisition_until_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = sqlite(dir.path()).await;
    let f = fixture(&store).await;

    refused(&run(&db, &["pause", " "]), "must not be empty");
    assert_eq!(json_ok(&db, &["status"])["paused_kinds"], json!([]));
    assert_eq!(
        json_ok(&db, &["pause", "email"]),
        json!({ "kind": "email", "paused": true, "changed": true })
    );
    assert_eq!(json_ok(&db, &["pause", "email"])["changed"], json!(false));

    let status = json_ok(&db, &["status"]);
    let paused = status["paused_kinds"].as_array().expect("a list");
    assert_eq!(paused.len(), 1, "{status}");
    assert_eq!(paused[0]["kind"], json!("email"));
    let text = text_ok(&db, &["status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("paused") && l.contains(" email (since ")),
        "{text}"
    );

    // No node takes the paused kind: the pending email item is not acquired.
    let email = AcquireRequest::new("w", Duration::from_secs(30)).kinds(["email"]);
    let take = || store.item_acquire(&email, SystemClock.now());
    assert!(take().await.unwrap().is_none(), "paused");

    let text = text_ok(&db, &["resume", "email"]);
    assert_eq!(text.trim(), "kind \"email\" resumed");
    assert_eq!(json_ok(&db, &["resume", "email"])["changed"], json!(false));
    assert_eq!(json_ok(&db, &["status"])["paused_kinds"], json!([]));
    assert_eq!(take().await.unwrap().expect("resumed").item.id, f.pending);
}

#[tokio::test]
async fn item_shows_fields_and_one_line_per_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = sqlite(dir.path()).await;
    let f = fixture(&store).await;
    let failed = f.failed.to_string();
    // A second attempt after an operator's retry: the history has two lines.
    text_ok(&db, &["retry", &failed]);
    text_ok(&db, &["cancel", &f.pending.to_string()]);
    let held = store
        .item_acquire(
            &AcquireRequest::new("w-two", Duration::from_secs(30))
                .kinds(["email"])
                .node("n2", 7),
            SystemClock.now(),
        )
        .await
        .unwrap()
        .expect("the retried item");
    assert_eq!(held.item.id, f.failed);
    store
        .item_complete(&held.lease, json!({ "ok": 1 }), SystemClock.now())
        .await
        .unwrap();

    let text = text_ok(&db, &["item", &failed]);
    for field in [
        "id:",
        "kind:",
        "status:",
        "attempts:",
        "node:",
        "input:",
        "output:",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(field)),
            "{field} in {text}"
        );
    }
    assert!(text.contains("history: 2 ended attempts"), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.starts_with("ATTEMPT"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    // ATTEMPT EPOCH STARTED ENDED OWNER NODE OUTCOME ERROR
    assert_eq!(
        (rows[0][0], rows[0][4], rows[0][5], rows[0][6], rows[0][7]),
        ("1", "w-email", "n1#1", "failed", "smtp")
    );
    assert_eq!(
        (rows[1][0], rows[1][4], rows[1][5], rows[1][6], rows[1][7]),
        ("1", "w-two", "n2#7", "completed", "-")
    );
    assert!(
        rows[0][2].ends_with('Z') && rows[0][3].ends_with('Z'),
        "{text}"
    );

    refused(&run(&db, &["item", "0"]), "item id");
    refused(&run(&db, &["item", "424242"]), "item 424242 not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_cancel_on_postgres() {
    let schema = match leasehold_postgres::testing::TestSchema::create("lh_cli_ops").await {
        Ok(s) => s,
        Err(why) => {
            eprintln!("retry_and_cancel_on_postgres: skipped: {why}");
            return;
        }
    };
    let db = schema.url();
    let store = leasehold_postgres::PgStore::open(&db).await.expect("open");
    let f = fixture(&store).await;
    let (failed, completed) = (f.failed.to_string(), f.completed.to_string());

    refused(&run(&db, &["retry", &completed]), "is completed");
    refused(&run(&db, &["cancel", &completed]), "is completed");
    let before = store.items_list(&Default::default()).await.unwrap();
    assert_eq!(
        json_ok(&db, &["retry", "--status", "failed", "--dry-run"])["count"],
        json!(2)
    );
    assert_eq!(store.items_list(&Default::default()).await.unwrap(), before);

    let done = json_ok(&db, &["retry", &failed, "--attempts", "3"]);
    assert_eq!(done["items"][0]["to"], json!("pending"));
    let item = store.item_get(f.failed).await.unwrap().unwrap();
    assert_eq!((item.status, item.max_attempts), (ItemStatus::Pending, 3));
    assert_eq!(
        json_ok(&db, &["item", &failed])["history"][0]["error"],
        json!("smtp 550")
    );

    let cancelled = json_ok(
        &db,
        &["cancel", &f.pending.to_string(), &f.running.to_string()],
    );
    assert_eq!(cancelled["count"], json!(2));
    assert_eq!(status_of(&store, f.pending).await, ItemStatus::Cancelled);
    let marked = store.item_get(f.running).await.unwrap().unwrap();
    assert!(marked.cancel_requested_at.is_some());
    println!(
        "retry_and_cancel_on_postgres: ran against schema {}",
        schema.schema()
    );
}
