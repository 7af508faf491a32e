//! `leasehold monitor` as a real process against a real SQLite file. The dead nodes are
//! registry rows whose heartbeats stopped long ago with items still held — what a SIGKILLed
//! node leaves behind — written through the store beforehand, so each check's outcome is
//! known. Proves: a dead node's items are taken back at once and a live node's are not; the
//! hook runs once per death (not once per check) with the node's record on stdin; SIGTERM
//! stops the monitor with exit 0; two monitors racing take nothing twice.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leasehold_core::{
    AcquireRequest, Clock, ItemId, ItemStatus, NewItem, NodeRecord, NodeStatus, Store, SystemClock,
    Timestamp,
};
use leasehold_sqlite::SqliteStore;
use serde_json::{json, Value};

fn monitor(db: &Path, args: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LEASEHOLD_") || k.starts_with("TASK_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--db")
        .arg(db)
        .arg("monitor")
        .arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start leasehold monitor")
}

fn row(node: &str, at: Timestamp, interval_ms: i64) -> NodeRecord {
    NodeRecord {
        node_id: node.into(),
        incarnation: 1,
        worker_type: "*".into(),
        status: NodeStatus::Processing,
        current_item: None,
        task_text: None,
        last_heartbeat_at: at,
        heartbeat_interval_ms: interval_ms,
        started_at: at,
        metadata: json!({}),
    }
}

/// `n` items held by node `node` (incarnation 1), acquired at `at`, and its registry row
/// last heartbeating at `at` every `interval_ms`.
async fn holding(
    store: &SqliteStore,
    node: &str,
    n: u32,
    at: Timestamp,
    interval_ms: i64,
) -> Vec<ItemId> {
    let items = (0..n)
        .map(|i| NewItem::new("k", json!({ "i": i })))
        .collect();
    store.items_enqueue(items, at).await.unwrap();
    let req = AcquireRequest::new(format!("{node}/w0"), Duration::from_secs(3600))
        .node(node, 1)
        .limit(n);
    let got = store.items_acquire(&req, at).await.unwrap();
    assert_eq!(got.len(), n as usize);
    store
        .node_heartbeat(&row(node, at, interval_ms))
        .await
        .unwrap();
    got.into_iter().map(|l| l.item.id).collect()
}

/// Reads statistics lines until one satisfies `pick`; fails after 60 lines.
fn until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    pick: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..60 {
        let line = lines.next().expect("the monitor printed a line").unwrap();
        let v: Value = serde_json::from_str(&line).expect("one JSON object per line");
        if pick(&v) {
            return v;
        }
    }
    panic!("no statistics line matched");
}

fn hook_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("the hook got JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_takes_back_dead_nodes_items_alerts_once_per_death_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("monitor.db");
    let hook = dir.path().join("hook.jsonl");
    let store = SqliteStore::open(&db).await.unwrap();
    let now = SystemClock.now();
    let long_ago = Timestamp(now.0 - 600_000);
    let dead = holding(&store, "node-dead", 2, long_ago, 1_000).await;
    let live = holding(&store, "node-live", 1, now, 600_000).await;

    let hook_cmd = format!("tr -d '\\n' >> {0}; echo >> {0}", hook.display());
    let mut child = monitor(&db, &["--interval-s", "0.2", "--on-dead-exec", &hook_cmd]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = until(&mut lines, |v| v["taken_back"] == json!(2));
    assert_eq!(
        (first["dead"].as_u64(), first["alive"].as_u64()),
        (Some(1), Some(1)),
        "{first}"
    );
    assert_eq!(
        first["expired_leases"],
        json!(0),
        "an hour's leases had not expired"
    );
    // Two more checks: nothing more to take, no second alert for the same death.
    until(&mut lines, |v| v["taken_back"] == json!(0));
    until(&mut lines, |v| v["taken_back"] == json!(0));
    let records = hook_records(&hook);
    assert_eq!(records.len(), 1, "one alert per death: {records:?}");
    assert_eq!(records[0]["node"]["node_id"], json!("node-dead"));
    assert_eq!(
        records[0]["taken_back"]["items"].as_array().map(Vec::len),
        Some(2)
    );
    for id in &dead {
        let item = store.item_get(*id).await.unwrap().unwrap();
        assert_eq!(item.status, ItemStatus::Pending, "item {id}");
        assert_eq!(item.epoch, 2, "taken back once");
    }
    assert_eq!(
        store.item_get(live[0]).await.unwrap().unwrap().status,
        ItemStatus::InProgress
    );

    // A second death while it runs: taken back and alerted once too.
    let second = holding(&store, "node-dead-2", 1, long_ago, 1_000).await;
    until(&mut lines, |v| {
        v["taken_back"] == json!(1) && v["newly_dead"] == json!(1)
    });
    until(&mut lines, |v| v["taken_back"] == json!(0));
    let records = hook_records(&hook);
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1]["node"]["node_id"], json!("node-dead-2"));
    assert_eq!(
        store.item_get(second[0]).await.unwrap().unwrap().status,
        ItemStatus::Pending
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM stops the monitor cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_monitors_racing_take_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("race.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let long_ago = Timestamp(SystemClock.now().0 - 600_000);
    let mut all = Vec::new();
    for n in 0..20 {
        all.extend(holding(&store, &format!("node-{n:02}"), 5, long_ago, 1_000).await);
    }
    let (a, b) = (monitor(&db, &["--once"]), monitor(&db, &["--once"]));
    let mut taken = 0;
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("one statistics line");
        taken += v["taken_back"].as_u64().unwrap();
    }
    assert_eq!(
        taken,
        all.len() as u64,
        "every item taken back by exactly one monitor"
    );
    for id in all {
        let item = store.item_get(id).await.unwrap().unwrap();
        assert_eq!(
            (item.status, item.epoch),
            (ItemStatus::Pending, 2),
            "item {id}: once"
        );
    }
}
