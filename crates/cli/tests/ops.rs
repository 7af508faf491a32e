//! The operations subcommands end to end: `workers`, `cleanup` (and its `--dry-run`),
//! `dashboard` (served by the real binary, refused off loopback without a token) and the
//! monitor that `work` runs by default. Each test runs the built executable against its own
//! temporary SQLite file, written beforehand through the store itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use leasehold_core::{
    AcquireRequest, Clock, FailDisposition, ItemStatus, NewItem, NodeRecord, NodeStatus, Store,
    SystemClock, Timestamp,
};
use leasehold_sqlite::SqliteStore;
use serde_json::{json, Value};

const DAY: Duration = Duration::from_secs(86_400);

fn leasehold(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LEASEHOLD_") || k.starts_with("TASK_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--db").arg(db).args(args).envs(env.iter().copied());
    cmd
}

fn run(db: &Path, args: &[&str]) -> Output {
    leasehold(db, args, &[]).output().expect("run leasehold")
}

fn json_ok(db: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = run(db, &all);
    assert!(
        out.status.success(),
        "{all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON value on stdout")
}

/// Exit 2, nothing on stdout, one `error:` line naming `needle`.
fn refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{needle:?} not in {}",
        lines[0]
    );
}

fn row(node: &str, incarnation: i64, at: Timestamp, interval_ms: i64) -> NodeRecord {
    NodeRecord {
        node_id: node.into(),
        incarnation,
        worker_type: "*".into(),
        status: NodeStatus::Idle,
        current_item: None,
        task_text: None,
        last_heartbeat_at: at,
        heartbeat_interval_ms: interval_ms,
        started_at: at,
        metadata: json!({}),
    }
}

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: SqliteStore,
}

async fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ops.db");
    let store = SqliteStore::open(&path).await.unwrap();
    Db {
        _dir: dir,
        path,
        store,
    }
}

#[tokio::test]
async fn workers_shows_each_node_alive_dead_or_stopped() {
    let db = db().await;
    let now = SystemClock.now();
    let s = &db.store;
    // alive: heartbeats every 10 min, last one now; dead: every 10 s, last one an hour ago.
    s.node_heartbeat(&NodeRecord {
        metadata: json!({ "host": "web-a", "pid": 4242 }),
        ..row("alive-node", 1, now, 600_000)
    })
    .await
    .unwrap();
    s.node_heartbeat(&row(
        "dead-node",
        2,
        now.minus(Duration::from_secs(3600)),
        10_000,
    ))
    .await
    .unwrap();
    s.node_heartbeat(&row("stopped-node", 3, now, 10_000))
        .await
        .unwrap();
    s.node_stop("stopped-node", 3, now).await.unwrap();

    let v = json_ok(&db.path, &["workers"]);
    let seen: Vec<(String, String, bool)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["node_id"].as_str().unwrap().into(),
                w["state"].as_str().unwrap().into(),
                w["alive"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("alive-node".into(), "alive".into(), true),
            ("dead-node".into(), "dead".into(), false),
            ("stopped-node".into(), "stopped".into(), false)
        ]
    );
    let dead_silence = v[1]["seconds_since_heartbeat"].as_f64().unwrap();
    assert!((3600.0..3700.0).contains(&dead_silence), "{dead_silence}");

    // More missed intervals allowed: the hour-old node is still dead at 300, alive at 400.
    let lenient = json_ok(&db.path, &["workers", "--dead-after", "400"]);
    assert_eq!(lenient[1]["state"], "alive");

    let text = run(&db.path, &["workers"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("NODE"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("dead-node") && l.contains(" dead ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("alive-node") && l.contains(" web-a:4242 ")),
        "the process holding the node id: {text}"
    );
    assert!(
        text.ends_with("by type: *: 1 alive, 1 dead, 1 stopped\n"),
        "{text}"
    );

    refused(
        &run(&db.path, &["workers", "--dead-after", "0"]),
        "at least 1",
    );
    let missing = db.path.with_file_name("missing.db");
    refused(&run(&missing, &["workers"]), "no database");
    assert!(!missing.exists());
}

/// Old: a stopped row and a dead row silent for 10 days, 3 items finished 10 days ago (one
/// with a checkpoint). Kept: an alive row, a recently stopped row, a dead row whose
/// incarnation still holds an item, items finished an hour ago, open items.
async fn cleanup_fixture(db: &Db) -> (Vec<i64>, Vec<i64>) {
    let s = &db.store;
    let now = SystemClock.now();
    let old = now.minus(DAY * 10);
    s.node_heartbeat(&row("alive", 1, now, 600_000))
        .await
        .unwrap();
    s.node_heartbeat(&row("stopped-old", 1, old, 10_000))
        .await
        .unwrap();
    s.node_stop("stopped-old", 1, old).await.unwrap();
    s.node_heartbeat(&row(
        "stopped-new",
        1,
        now.minus(Duration::from_secs(60)),
        10_000,
    ))
    .await
    .unwrap();
    s.node_stop("stopped-new", 1, now).await.unwrap();
    s.node_heartbeat(&row("dead-old", 1, old, 10_000))
        .await
        .unwrap();
    s.node_heartbeat(&row("dead-holding", 4, old, 10_000))
        .await
        .unwrap();

    let enqueue = |n: i64, at: Timestamp| async move {
        s.item_enqueue(NewItem::new("k", json!({ "n": n })), at)
            .await
            .unwrap()
    };
    let mut old_ids = Vec::new();
    let mut kept = Vec::new();
    let w = AcquireRequest::new("w/w0", Duration::from_secs(600)).node("w", 1);
    for (i, (at, ok)) in [
        (old, true),
        (old, false),
        (now.minus(Duration::from_secs(3600)), true),
    ]
    .into_iter()
    .enumerate()
    {
        let id = enqueue(i as i64, at.minus(Duration::from_secs(10))).await;
        let l = s
            .item_acquire(&w, at.minus(Duration::from_secs(5)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.item.id, id);
        s.checkpoint_save(&l.lease, "step", json!(i), at.minus(Duration::from_secs(1)))
            .await
            .unwrap();
        if ok {
            s.item_complete(&l.lease, json!("done"), at).await.unwrap();
        } else {
            s.item_fail(&l.lease, "boom", FailDisposition::Permanent, at)
                .await
                .unwrap();
        }
        if at == old {
            old_ids.push(id.0)
        } else {
            kept.push(id.0)
        }
    }
    let cancelled = enqueue(10, old).await;
    s.item_cancel(cancelled, old).await.unwrap();
    old_ids.push(cancelled.0);
    kept.push(enqueue(11, now).await.0);
    let holding = enqueue(12, old).await;
    let h = AcquireRequest::new("dead-holding/w0", Duration::from_secs(30)).node("dead-holding", 4);
    s.item_acquire(&h, old).await.unwrap().unwrap();
    kept.push(holding.0);
    (old_ids, kept)
}

async fn snapshot(s: &SqliteStore) -> (Vec<NodeRecord>, Vec<leasehold_core::Item>, usize) {
    let nodes = s.nodes_list().await.unwrap();
    let items = s
        .items_list(&leasehold_core::ItemFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut checkpoints = 0;
    for i in &items {
        checkpoints += s.checkpoints_list(i.id).await.unwrap().len();
    }
    (nodes, items, checkpoints)
}

#[tokio::test]
async fn cleanup_removes_only_what_it_reports_and_dry_run_removes_nothing() {
    let db = db().await;
    let (old_ids, kept) = cleanup_fixture(&db).await;
    let before = snapshot(&db.store).await;

    let dry = json_ok(&db.path, &["cleanup", "--dry-run", "--older-than", "86400"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["nodes_removed"], json!(["dead-old", "stopped-old"]));
    assert_eq!(dry["items_removed"], 3);
    assert_eq!(dry["checkpoints_removed"], 2);
    assert_eq!(
        snapshot(&db.store).await,
        before,
        "a dry run removed something"
    );

    let done = json_ok(&db.path, &["cleanup", "--older-than", "86400"]);
    assert_eq!(done["dry_run"], false);
    for key in ["nodes_removed", "items_removed", "checkpoints_removed"] {
        assert_eq!(
            done[key], dry[key],
            "{key}: the dry run did not tell the truth"
        );
    }
    let (nodes, items, checkpoints) = snapshot(&db.store).await;
    let mut left: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
    left.sort();
    assert_eq!(left, ["alive", "dead-holding", "stopped-new"]);
    let ids: Vec<i64> = items.iter().map(|i| i.id.0).collect();
    assert_eq!(ids, kept, "exactly the old finished items went");
    assert!(old_ids.iter().all(|id| !ids.contains(id)));
    assert_eq!(checkpoints, before.2 - 2);
    assert!(items.iter().any(
        |i| i.status == ItemStatus::InProgress && i.owner.as_deref() == Some("dead-holding/w0")
    ));

    let text = run(&db.path, &["cleanup", "--dry-run", "--older-than", "86400"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.starts_with("dry run (nothing changed): would remove 0 worker rows, 0 finished items"),
        "{text}"
    );

    // --workers-only keeps items whatever their age.
    let db2 = self::db().await;
    cleanup_fixture(&db2).await;
    let only = json_ok(
        &db2.path,
        &["cleanup", "--workers-only", "--older-than", "86400"],
    );
    assert_eq!(
        (
            only["items_removed"].as_u64(),
            only["nodes_removed"].as_array().unwrap().len()
        ),
        (Some(0), 2)
    );
}

#[tokio::test]
async fn cleanup_refuses_bad_input_and_changes_nothing() {
    let db = db().await;
    cleanup_fixture(&db).await;
    let before = snapshot(&db.store).await;
    for (args, needle) in [
        (&["cleanup", "--older-than", "0"][..], "positive"),
        (&["cleanup", "--older-than", "-5"][..], "positive"),
        (&["cleanup", "--older-than", "soon"][..], "older-than"),
        (&["cleanup", "--dead-after", "0"][..], "at least 1"),
        (&["cleanup", "--bogus"][..], "--bogus"),
    ] {
        refused(&run(&db.path, args), needle);
    }
    assert_eq!(snapshot(&db.store).await, before);
    let missing = db.path.with_file_name("missing.db");
    refused(&run(&missing, &["cleanup", "--dry-run"]), "no database");
    assert!(!missing.exists(), "cleanup created a database");
}

/// A running `leasehold dashboard` child, killed on drop.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers");
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

#[tokio::test]
async fn dashboard_serves_the_database_and_needs_a_token_off_loopback() {
    let db = db().await;
    db.store
        .item_enqueue(NewItem::new("k", json!({})), SystemClock.now())
        .await
        .unwrap();
    // Off loopback without a token: refused before anything listens.
    let out = run(&db.path, &["dashboard", "--addr", "0.0.0.0:0"]);
    refused(&out, "--token");
    refused(
        &run(
            &db.path,
            &["dashboard", "--addr", "127.0.0.1:0", "--token", ""],
        ),
        "token",
    );
    refused(
        &run(&db.path, &["dashboard", "--addr", "nowhere"]),
        "--addr",
    );
    refused(
        &run(&db.path, &["dashboard", "--refresh-s", "0"]),
        "positive",
    );
    let missing = db.path.with_file_name("missing.db");
    refused(
        &run(&missing, &["dashboard", "--addr", "127.0.0.1:0"]),
        "no database",
    );

    let mut child = leasehold(
        &db.path,
        &["dashboard", "--addr", "127.0.0.1:0"],
        &[("LEASEHOLD_DASHBOARD_TOKEN", "cli-token")],
    )
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .expect("spawn dashboard");
    let stderr = child.stderr.take().unwrap();
    let served = Served(child);
    // The first stderr line names the address (port 0 picked a free one).
    let mut first = String::new();
    BufReader::new(stderr).read_line(&mut first).unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    assert_eq!(http_get(&addr, "/api/status", None).0, 401);
    let (code, body) = http_get(&addr, "/api/status", Some("cli-token"));
    assert_eq!(code, 200, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["items"]["pending"], 1);
    assert_eq!(
        http_get(&addr, "/api/items?limit=0", Some("cli-token")).0,
        400
    );
    drop(served);
}

#[tokio::test]
async fn work_runs_the_monitor_which_takes_back_a_dead_nodes_item() {
    let db = db().await;
    let now = SystemClock.now();
    // A node that died an hour ago holding an item on a 10-minute lease, last renewed 5 s ago
    // (past its 3 s window): the reaper would wait for the lease, the monitor does not.
    db.store
        .node_heartbeat(&row(
            "crashed",
            9,
            now.minus(Duration::from_secs(3600)),
            1_000,
        ))
        .await
        .unwrap();
    let id = db
        .store
        .item_enqueue(
            NewItem::new("k", json!({"n": 1})),
            now.minus(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let req = AcquireRequest::new("crashed/w0", Duration::from_secs(600)).node("crashed", 9);
    db.store
        .item_acquire(&req, now.minus(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();

    let out = leasehold(
        &db.path,
        &[
            "work",
            "--workers",
            "1",
            "--exec",
            "cat",
            "--exit-when-done",
            "--json",
        ],
        &[("LEASEHOLD_HEARTBEAT_S", "0.2"), ("LEASEHOLD_LEASE_S", "5")],
    )
    .output()
    .expect("run work");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("node crashed (incarnation 9) is dead")
            && stderr.contains("took back 1 items"),
        "{stderr}"
    );
    let item = db.store.item_get(id).await.unwrap().unwrap();
    assert_eq!(item.status, ItemStatus::Completed);
    assert_eq!(item.output, Some(json!({"n": 1})));
    assert_eq!(item.epoch, 3, "acquired, taken back, acquired again");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stats"]["monitor"]["dead_nodes"], 1);
    assert_eq!(v["stats"]["monitor"]["recovered"], 1);
}

#[tokio::test]
async fn reap_dead_after_sets_how_many_missed_heartbeats_make_an_owner_dead() {
    let db = db().await;
    let now = SystemClock.now();
    let s = &db.store;
    // Heartbeats every 10 s, the last one 50 s ago: dead after 3 missed intervals, alive
    // after 10. Its item's lease ran out a minute ago.
    s.node_heartbeat(&row("slow", 1, now.minus(Duration::from_secs(50)), 10_000))
        .await
        .unwrap();
    let id = s
        .item_enqueue(
            NewItem::new("k", json!({})),
            now.minus(Duration::from_secs(120)),
        )
        .await
        .unwrap();
    let req = AcquireRequest::new("slow/w0", Duration::from_secs(30)).node("slow", 1);
    s.item_acquire(&req, now.minus(Duration::from_secs(90)))
        .await
        .unwrap()
        .unwrap();

    let patient = json_ok(&db.path, &["reap", "--dry-run", "--dead-after", "10"]);
    assert_eq!(patient["expired_found"], json!(1), "{patient}");
    assert_eq!(
        patient["recovered"],
        json!(0),
        "owner alive at 10: {patient}"
    );
    let default = json_ok(&db.path, &["reap", "--dry-run"]);
    assert_eq!(default["recovered"], json!(1), "owner dead at 3: {default}");
    assert_eq!(default["items"][0]["id"], json!(id.0));
    refused(
        &run(&db.path, &["reap", "--dead-after", "0"]),
        "--dead-after",
    );
    let item = s.item_get(id).await.unwrap().unwrap();
    assert_eq!(
        item.status,
        ItemStatus::InProgress,
        "dry runs and refusals change nothing"
    );
}
