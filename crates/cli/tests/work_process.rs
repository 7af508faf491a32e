//! `leasehold work` as a real child process, SIGKILLed mid-run: a successor finishes the work
//! and nothing is lost. The store is observed from outside through the same SQLite file.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use leasehold_core::{Clock, ItemStatus, NewItem, Store, SystemClock};
use leasehold_runtime::faults::check_invariants;
use leasehold_sqlite::SqliteStore;

const BIN: &str = env!("CARGO_BIN_EXE_leasehold");

fn spawn_work(db: &Path, node: &str, extra: &[&str]) -> Child {
    Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(["work", "--workers", "4", "--exec", "sleep 0.05; cat"])
        .args(extra)
        .env("LEASEHOLD_WORKER_ID", node)
        .env("LEASEHOLD_LEASE_S", "2")
        .env("LEASEHOLD_HEARTBEAT_S", "0.2")
        .env("LEASEHOLD_SWEEP_S", "0.3")
        .env("LEASEHOLD_MAX_ATTEMPTS", "5")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start leasehold work")
}

/// Observes the store from outside until `pred` holds, failing after `limit`.
async fn wait_until(
    store: &Arc<dyn Store>,
    limit: Duration,
    what: &str,
    pred: impl Fn(&leasehold_core::StatusCounts) -> bool,
) {
    let start = Instant::now();
    loop {
        let c = store.items_count().await.unwrap();
        if pred(&c) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup(
    n: usize,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<dyn Store>,
    Vec<leasehold_core::ItemId>,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("work.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let ids = store
        .items_enqueue(
            (0..n)
                .map(|i| NewItem::new("job", json!({ "n": i })).max_attempts(5))
                .collect(),
            SystemClock.now(),
        )
        .await
        .unwrap();
    (dir, db, store, ids)
}

async fn kill_mid_run(store: &Arc<dyn Store>, child: &mut Child) {
    wait_until(store, Duration::from_secs(60), "work in flight", |c| {
        c.completed >= 5 && c.in_progress > 0
    })
    .await;
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_node_restarted_under_the_same_id_recovers_its_items_at_once() {
    let (_dir, db, store, ids) = setup(40).await;
    let mut first = spawn_work(&db, "proc-node", &[]);
    kill_mid_run(&store, &mut first).await;
    let stranded = store.items_count().await.unwrap().in_progress;
    assert!(stranded > 0, "the kill left leases behind");
    // A start under the same id is refused while the killed process's row is fresh (one
    // live process per node id); once it is stale, the restart proceeds at once.
    let start = Instant::now();
    loop {
        let row = store.node_get("proc-node").await.unwrap().expect("row");
        if row.state(SystemClock.now(), 3) == leasehold_core::WorkerState::Dead {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the row stays fresh"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let second = spawn_work(&db, "proc-node", &["--exit-when-done", "--json"]);
    let out = second.wait_with_output().unwrap();
    assert!(out.status.success(), "second run failed: {out:?}");
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert!(
        summary["stats"]["recovered_on_start"].as_u64().unwrap() >= stranded,
        "recover_mine took back the stranded items at once: {summary}"
    );
    let report = check_invariants(store.as_ref(), &ids, None).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.counts.completed, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_node_is_taken_over_by_another_nodes_reaper() {
    let (_dir, db, store, ids) = setup(40).await;
    let mut first = spawn_work(&db, "doomed", &[]);
    kill_mid_run(&store, &mut first).await;
    let held: Vec<_> = store.leases_of_owner("doomed/w0").await.unwrap();

    let second = spawn_work(&db, "survivor", &["--exit-when-done"]);
    let out = second.wait_with_output().unwrap();
    assert!(out.status.success(), "survivor failed: {out:?}");
    let report = check_invariants(store.as_ref(), &ids, None).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    for it in held {
        let now = store.item_get(it.id).await.unwrap().unwrap();
        assert_eq!(now.status, ItemStatus::Completed);
        assert!(now.epoch > it.epoch, "completed under a newer lease");
    }
}
