//! The decision step from the command line: `items --status awaiting` lists a parked item with
//! its question, `status --json` counts it, `decide` refuses an item that is not parked (naming
//! its status) and an answer not allowed (naming it) without changing anything, and an allowed
//! answer puts the item back to pending with the answer in its input. The real binary runs
//! against its own SQLite file, parked through the store beforehand.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use leasehold_core::{
    AcquireRequest, Clock, DecisionRequest, ItemStatus, NewItem, Store, SystemClock,
};
use leasehold_sqlite::SqliteStore;
use serde_json::{json, Value};

fn run(db: &Path, args: &[&str]) -> Output {
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

fn json_ok(db: &Path, args: &[&str]) -> Value {
    let out = run(db, &[args, &["--json"]].concat());
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON value on stdout")
}

/// Exit 2, nothing on stdout, one `error:` line containing `needle`.
fn refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(needle),
        "{needle:?} not in {stderr}"
    );
}

#[tokio::test]
async fn decide_resumes_a_parked_item_and_refuses_the_rest_changing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("decide.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let now = SystemClock.now();
    let parked = store
        .item_enqueue(NewItem::new("lead", json!({ "domain": "acme.com" })), now)
        .await
        .unwrap();
    let pending = store
        .item_enqueue(NewItem::new("lead", json!({ "domain": "b.com" })), now)
        .await
        .unwrap();
    let held = store
        .item_acquire(&AcquireRequest::new("w", Duration::from_secs(30)), now)
        .await
        .unwrap()
        .expect("the first item");
    assert_eq!(held.item.id, parked);
    let ask = DecisionRequest::new("no contact found for acme.com", ["skip", "manual"]);
    store.item_park(&held.lease, &ask, now).await.unwrap();

    let listed = json_ok(&db, &["items", "--status", "awaiting"]);
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], json!(parked.0));
    assert_eq!(listed[0]["decision"]["question"], json!(ask.question));
    let text = run(&db, &["items", "--status", "awaiting"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("awaiting") && text.contains("[skip|manual]"),
        "{text}"
    );
    assert_eq!(json_ok(&db, &["status"])["awaiting"], json!(1));

    let before = store.items_list(&Default::default()).await.unwrap();
    refused(
        &run(&db, &["decide", &pending.to_string(), "--answer", "skip"]),
        "is pending",
    );
    refused(
        &run(&db, &["decide", &parked.to_string(), "--answer", "later"]),
        "\"later\"",
    );
    refused(
        &run(&db, &["decide", "999", "--answer", "skip"]),
        "not found",
    );
    refused(&run(&db, &["decide", "x", "--answer", "skip"]), "item id");
    assert_eq!(
        store.items_list(&Default::default()).await.unwrap(),
        before,
        "nothing changed"
    );

    let decided = json_ok(&db, &["decide", &parked.to_string(), "--answer", "manual"]);
    assert_eq!(decided["status"], json!("pending"));
    let item = store.item_get(parked).await.unwrap().unwrap();
    assert_eq!(item.status, ItemStatus::Pending);
    assert_eq!(
        item.input,
        json!({ "domain": "acme.com",
                "decision": { "question": ask.question, "answer": "manual" } })
    );
    refused(
        &run(&db, &["decide", &parked.to_string(), "--answer", "skip"]),
        "is pending",
    );
}
