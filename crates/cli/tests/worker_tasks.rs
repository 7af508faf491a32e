//! What each worker is doing, round trip: a handler in a running node says what it does
//! (`JobContext::set_task`), the registry heartbeat writes it under `metadata.worker_tasks`
//! with the worker's item and since when, and `leasehold workers` (a real process reading the
//! same SQLite file) shows it, as JSON and as text.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{NewItem, Store};
use leasehold_runtime::{JobContext, JobError, Leasehold};
use leasehold_sqlite::SqliteStore;
use serde_json::{json, Value};
use tokio::sync::Notify;

fn workers(db: &std::path::Path, json: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    cmd.env_remove("LEASEHOLD_DB").env_remove("RUST_LOG");
    cmd.arg("--db").arg(db).arg("workers");
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run leasehold workers");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_task_text_reaches_workers_json_with_its_item() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let (r, s) = (release.clone(), started.clone());
    let node = Leasehold::builder(store.clone())
        .node_id("researcher")
        .workers(2)
        .heartbeat(Duration::from_millis(100))
        .lease(Duration::from_secs(5))
        .handler("research", move |ctx: JobContext| {
            let (r, s) = (r.clone(), s.clone());
            async move {
                ctx.set_task("Researching example.com");
                s.notify_one();
                r.notified().await;
                Ok::<_, JobError>(json!("done"))
            }
        })
        .start()
        .await
        .unwrap();
    let id = node
        .enqueue(NewItem::new("research", json!({ "domain": "example.com" })))
        .await
        .unwrap();
    started.notified().await;

    // The next registry heartbeats (every 100 ms) carry the text; read until one has.
    let mut found = None;
    for _ in 0..100 {
        let views: Value = serde_json::from_str(&workers(&db, true)).expect("JSON");
        let tasks = views[0]["metadata"]["worker_tasks"].clone();
        let busy: Vec<Value> = tasks
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["task"].is_string())
            .cloned()
            .collect();
        if let Some(w) = busy.into_iter().next() {
            found = Some((tasks, w));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (tasks, w) = found.expect("the task text reached the registry");
    assert_eq!(
        tasks.as_array().map(Vec::len),
        Some(2),
        "every worker is listed: {tasks}"
    );
    assert_eq!(w["task"], json!("Researching example.com"));
    assert_eq!(w["item"], json!(id.0));
    assert!(w["since"].is_i64(), "{w}");
    assert!(
        w["owner"].as_str().unwrap().starts_with("researcher/w"),
        "{w}"
    );
    let text = workers(&db, false);
    assert!(
        text.contains(&format!("item {id}")) && text.contains("Researching example.com"),
        "{text}"
    );

    // Once the item is settled, the next heartbeats report the worker idle, its text gone.
    release.notify_one();
    let mut cleared = false;
    for _ in 0..100 {
        let views: Value = serde_json::from_str(&workers(&db, true)).unwrap();
        if views[0]["metadata"]["worker_tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["task"].is_null() && w["item"].is_null())
        {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cleared, "the text goes with the item");
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}
