//! End-to-end tests of the `leasehold` binary: each test runs the built executable against its
//! own temporary database and checks stdout, the one-line stderr error and the exit code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use leasehold_core::{AcquireRequest, Clock, NewItem, Store, SystemClock};
use leasehold_sqlite::SqliteStore;
use serde_json::{json, Value};
use tempfile::TempDir;

/// Environment variables that would change the binary's defaults; cleared for every run.
const CONFIG_VARS: &[&str] = &[
    "LEASEHOLD_DB",
    "LEASEHOLD_LEASE_S",
    "TASK_LEASE_S",
    "LEASEHOLD_HEARTBEAT_S",
    "TASK_HEARTBEAT_S",
    "LEASEHOLD_SWEEP_S",
    "TASK_SWEEP_S",
    "LEASEHOLD_STALE_S",
    "TASK_STALE_S",
    "LEASEHOLD_MAX_ATTEMPTS",
    "TASK_MAX_REQUEUE",
    "LEASEHOLD_REAP_BATCH",
    "TASK_REAP_BATCH",
    "LEASEHOLD_WORKER_ID",
    "TASK_WORKER_ID",
    "LEASEHOLD_TIMEOUT_S",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// A temporary directory with a database path in it (not created until a command creates it).
struct TestDb {
    _dir: TempDir,
    path: PathBuf,
}

impl TestDb {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("leasehold.db");
        TestDb { _dir: dir, path }
    }

    fn url(&self) -> String {
        self.path.display().to_string()
    }

    /// Runs `leasehold --db PATH ARGS…` with a clean environment.
    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// Runs with extra environment variables.
    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        run_bin(&self.url(), args, env)
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&out, args);
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs with `--json` and expects success; returns the parsed stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout of {all:?} is not one JSON value ({e}): {stdout}"))
    }

    /// `status --json`.
    fn status(&self) -> Value {
        self.json(&["status"])
    }

    /// Enqueues an item of `kind` and returns its id.
    fn enqueue(&self, kind: &str, extra: &[&str]) -> i64 {
        let mut args = vec!["enqueue", "--kind", kind, "--input", r#"{"n": 1}"#];
        args.extend_from_slice(extra);
        let v = self.json(&args);
        v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
    }

    /// Opens the same file with the store directly (what a worker would do).
    async fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.path).await.expect("open store")
    }
}

fn run_bin(db: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    for var in CONFIG_VARS {
        cmd.env_remove(var);
    }
    cmd.arg("--db").arg(db).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run leasehold")
}

fn assert_success(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "{args:?} failed with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts a refusal: exit `code`, nothing on stdout, and exactly one stderr line that starts
/// with `error: ` and mentions `needle`. Returns that line.
fn assert_error(out: &Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}; stderr: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout not empty: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "not an error line: {line}");
    assert!(
        line.contains(needle),
        "error line does not mention {needle:?}: {line}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    line.to_string()
}

fn counts(pending: u64, in_progress: u64, completed: u64, failed: u64, cancelled: u64) -> Value {
    json!({
        "pending": pending,
        "in_progress": in_progress,
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        // Nothing in these tests parks an item (tests/decide.rs does).
        "awaiting": 0,
        "blocked": 0,
        "total": pending + in_progress + completed + failed + cancelled,
        // Nothing in these tests pauses a kind (tests/operator_cli.rs does).
        "paused_kinds": [],
    })
}

/// Enqueues an item and leases it to `owner` an hour ago with a one-second lease, so its lease
/// has long expired and no registry row vouches for the owner.
async fn expired_lease(db: &TestDb, kind: &str, max_attempts: u32, owner: &str) -> i64 {
    let store = db.store().await;
    let past = SystemClock.now().minus(Duration::from_secs(3_600));
    let id = store
        .item_enqueue(
            NewItem::new(kind, json!({"k": kind})).max_attempts(max_attempts),
            past,
        )
        .await
        .expect("enqueue");
    let leased = store
        .item_acquire(
            &AcquireRequest::new(owner, Duration::from_secs(1)).kinds([kind]),
            past,
        )
        .await
        .expect("acquire")
        .expect("an item to acquire");
    assert_eq!(leased.item.id, id);
    id.0
}

#[test]
fn enqueue_then_status_json_counts_exactly() {
    let db = TestDb::new();
    let a = db.enqueue("email", &[]);
    let b = db.enqueue("email", &["--priority", "-5", "--delay-s", "0.5"]);
    let c = db.enqueue("resize", &["--max-attempts", "7", "--group", "g1"]);
    assert!(a < b && b < c, "ids increase: {a} {b} {c}");
    assert_eq!(db.status(), counts(3, 0, 0, 0, 0));

    // Text enqueue prints the bare id.
    let text = db.ok(&["enqueue", "--kind", "email", "--input", "[1, 2]"]);
    let d: i64 = text.trim().parse().expect("bare id");
    assert!(d > c);
    assert_eq!(db.status(), counts(4, 0, 0, 0, 0));

    // Text status: one line per status, then the total.
    let text = db.ok(&["status"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert!(
        lines[0].starts_with("pending") && lines[0].ends_with(" 4"),
        "{text}"
    );
    assert!(
        lines[7].starts_with("total") && lines[7].ends_with(" 4"),
        "{text}"
    );

    // The item carries what was asked for.
    let items = db.json(&["items", "--kind", "resize"]);
    assert_eq!(items[0]["id"], json!(c));
    assert_eq!(items[0]["max_attempts"], json!(7));
    assert_eq!(items[0]["group_id"], json!("g1"));
    assert_eq!(items[0]["input"], json!({"n": 1}));
    let items = db.json(&["items", "--limit", "2"]);
    assert_eq!(items[1]["priority"], json!(-5));
}

#[test]
fn enqueue_with_a_key_returns_the_open_items_id_and_refuses_an_empty_key() {
    let db = TestDb::new();
    let a = db.enqueue("sync", &["--key", "account-7"]);
    let b = db.enqueue("sync", &["--key", "account-7"]);
    assert_eq!(a, b, "the open item's id comes back");
    let c = db.enqueue("sync", &["--key", "account-8"]);
    assert_ne!(a, c);
    assert_eq!(db.status(), counts(2, 0, 0, 0, 0));
    let items = db.json(&["items", "--kind", "sync"]);
    assert_eq!(items[0]["unique_key"], json!("account-7"));

    let out = db.run(&["enqueue", "--kind", "sync", "--input", "{}", "--key", ""]);
    assert_error(&out, 2, "--key");
    assert_eq!(db.status(), counts(2, 0, 0, 0, 0), "nothing written");
}

#[test]
fn enqueue_key_within_s_returns_a_recently_completed_item_and_needs_a_key() {
    let db = TestDb::new();
    let windowed = ["--key", "report-7", "--key-within-s", "3600"];
    let first = db.enqueue("report", &windowed);
    let work = [
        "work",
        "--workers",
        "1",
        "--exec",
        "cat",
        "--exit-when-done",
    ];
    assert_success(&db.run(&work), &work);
    assert_eq!(db.json(&["status"])["completed"], json!(1));
    assert_eq!(
        db.enqueue("report", &windowed),
        first,
        "completed within the hour: its id"
    );
    assert_ne!(
        db.enqueue("report", &["--key", "report-7"]),
        first,
        "without the window a finished item frees its key"
    );
    let enqueue = |extra: &[&str]| {
        let mut args = vec!["enqueue", "--kind", "report", "--input", "{}"];
        args.extend_from_slice(extra);
        db.run(&args)
    };
    assert_error(&enqueue(&["--key-within-s", "5"]), 2, "--key");
    assert_error(
        &enqueue(&["--key", "k", "--key-within-s", "0"]),
        2,
        "--key-within-s",
    );
    assert_eq!(
        db.json(&["status"])["total"],
        json!(2),
        "nothing else written"
    );
}

#[test]
fn enqueue_after_ids_blocks_the_item_and_refuses_an_unknown_id() {
    let db = TestDb::new();
    let a = db.enqueue("research", &[]);
    let b = db.enqueue("research", &[]);
    let (a_s, b_s) = (a.to_string(), b.to_string());
    let summary = db.enqueue("summary", &["--after", &a_s, &b_s]);
    let status = db.json(&["status"]);
    assert_eq!(status["blocked"], json!(1), "{status}");
    assert_eq!(status["pending"], json!(2), "{status}");
    let listed = db.json(&["items", "--status", "blocked"]);
    assert_eq!(listed[0]["id"], json!(summary));

    let out = db.run(&[
        "enqueue", "--kind", "summary", "--input", "{}", "--after", &a_s, "999",
    ]);
    let err = assert_error(&out, 2, "dependency 999");
    assert!(err.contains("does not exist"), "{err}");
    let out = db.run(&[
        "enqueue", "--kind", "summary", "--input", "{}", "--after", "x",
    ]);
    assert_error(&out, 2, "--after");
    assert_eq!(db.json(&["status"])["total"], json!(3), "nothing written");
}

#[test]
fn enqueue_takes_its_default_budget_from_the_environment() {
    let db = TestDb::new();
    let args = ["enqueue", "--kind", "k", "--input", "{}", "--json"];
    assert_success(&db.run(&args), &args);
    let out = db.run_env(&args, &[("TASK_MAX_REQUEUE", "4")]);
    assert_success(&out, &args);
    let out = db.run_env(
        &args,
        &[("TASK_MAX_REQUEUE", "4"), ("LEASEHOLD_MAX_ATTEMPTS", "6")],
    );
    assert_success(&out, &args);
    let budgets: Vec<Value> = db
        .json(&["items"])
        .as_array()
        .expect("array")
        .iter()
        .map(|i| i["max_attempts"].clone())
        .collect();
    assert_eq!(budgets, vec![json!(3), json!(4), json!(6)]);
}

#[test]
fn items_lists_with_filters() {
    let db = TestDb::new();
    let e1 = db.enqueue("email", &["--group", "campaign"]);
    let r1 = db.enqueue("resize", &[]);
    let e2 = db.enqueue("email", &[]);

    let ids = |v: Value| -> Vec<i64> {
        v.as_array()
            .expect("a JSON array")
            .iter()
            .map(|i| i["id"].as_i64().expect("id"))
            .collect()
    };
    assert_eq!(ids(db.json(&["items"])), vec![e1, r1, e2]);
    assert_eq!(ids(db.json(&["items", "--kind", "email"])), vec![e1, e2]);
    assert_eq!(ids(db.json(&["items", "--group", "campaign"])), vec![e1]);
    assert_eq!(
        ids(db.json(&["items", "--status", "pending", "--kind", "resize"])),
        vec![r1]
    );
    assert_eq!(
        ids(db.json(&["items", "--status", "completed"])),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(db.json(&["items", "--owner", "nobody"])),
        Vec::<i64>::new()
    );
    assert_eq!(ids(db.json(&["items", "--limit", "2"])), vec![e1, r1]);

    // Every item object has the fields the table shows.
    let all = db.json(&["items"]);
    for field in [
        "id",
        "kind",
        "status",
        "owner",
        "epoch",
        "attempts",
        "max_attempts",
        "lease_expires_at",
        "error",
    ] {
        assert!(
            all[0].get(field).is_some(),
            "item lacks {field}: {}",
            all[0]
        );
    }
    assert_eq!(all[0]["status"], json!("pending"));

    // The text table: a header, then one row per item.
    let text = db.ok(&["items", "--kind", "email"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for col in [
        "ID", "KIND", "STATUS", "OWNER", "EPOCH", "ATTEMPTS", "LEASE", "ERROR",
    ] {
        assert!(lines[0].contains(col), "header lacks {col}: {}", lines[0]);
    }
    assert!(lines[1].starts_with(&e1.to_string()) && lines[1].contains("email"));
    assert!(lines[1].contains("0/3"), "{text}");
    assert_eq!(db.ok(&["items", "--status", "failed"]).trim(), "no items");
    assert!(db.ok(&["items", "--limit", "1"]).contains("raise --limit"));
}

#[tokio::test]
async fn items_show_the_holder_and_its_lease() {
    let db = TestDb::new();
    let id = expired_lease(&db, "scan", 3, "node-a/w1").await;
    let items = db.json(&["items", "--owner", "node-a/w1"]);
    assert_eq!(items.as_array().map(Vec::len), Some(1));
    assert_eq!(items[0]["id"], json!(id));
    assert_eq!(items[0]["status"], json!("in_progress"));
    assert_eq!(items[0]["epoch"], json!(1));
    assert!(items[0]["lease_expires_at"].is_i64());
    let text = db.ok(&["items", "--status", "in_progress"]);
    assert!(
        text.contains("node-a/w1") && text.contains("expired"),
        "{text}"
    );
}

#[tokio::test]
async fn reap_dry_run_reports_and_changes_nothing() {
    let db = TestDb::new();
    let id = expired_lease(&db, "scan", 3, "node-a/w1").await;
    db.enqueue("other", &[]);
    assert_eq!(db.status(), counts(1, 1, 0, 0, 0));
    let before = db.json(&["items"]);

    let stats = db.json(&["reap", "--dry-run"]);
    assert_eq!(stats["dry_run"], json!(true));
    assert_eq!(stats["expired_found"], json!(1));
    assert_eq!(stats["recovered"], json!(1));
    assert_eq!(stats["failed"], json!(0));
    assert_eq!(stats["items"][0]["id"], json!(id));
    assert_eq!(stats["items"][0]["previous_owner"], json!("node-a/w1"));
    assert_eq!(stats["items"][0]["dead_lettered"], json!(false));
    assert!(stats["scan_duration"].is_number(), "{stats}");

    let text = db.ok(&["reap", "--dry-run"]);
    assert!(text.starts_with("dry run"), "{text}");
    assert!(
        text.contains(&format!("would requeue item {id} ")),
        "{text}"
    );
    assert_eq!(db.status(), counts(1, 1, 0, 0, 0));
    assert_eq!(db.json(&["items"]), before, "a dry run changed an item");

    let stats = db.json(&["reap"]);
    assert_eq!(stats["dry_run"], json!(false));
    assert_eq!(stats["recovered"], json!(1));
    assert_eq!(stats["items"][0]["id"], json!(id));
    assert_eq!(db.status(), counts(2, 0, 0, 0, 0));
    let items = db.json(&["items", "--kind", "scan"]);
    assert_eq!(items[0]["status"], json!("pending"));
    assert!(
        items[0]["epoch"].as_i64() > Some(1),
        "requeue bumps the epoch"
    );

    // Nothing left to reap.
    let stats = db.json(&["reap"]);
    assert_eq!(stats["expired_found"], json!(0));
}

#[tokio::test]
async fn reap_dead_letters_a_spent_budget() {
    let db = TestDb::new();
    let id = expired_lease(&db, "once", 1, "node-b/w0").await;
    let text = db.ok(&["reap", "--batch", "10", "--stale-after", "0.5"]);
    assert!(
        text.contains(&format!("dead-lettered item {id} ")),
        "{text}"
    );
    assert_eq!(db.status(), counts(0, 0, 0, 1, 0));
}

#[tokio::test]
async fn reap_max_attempts_lowers_the_budget() {
    let db = TestDb::new();
    let id = expired_lease(&db, "scan", 5, "node-c/w0").await;
    let stats = db.json(&["reap", "--max-attempts", "1"]);
    assert_eq!(stats["failed"], json!(1), "{stats}");
    assert_eq!(stats["items"][0]["id"], json!(id));
    assert_eq!(db.status(), counts(0, 0, 0, 1, 0));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let db = TestDb::new();
    db.enqueue("email", &[]);
    let before = db.status();
    assert_eq!(before, counts(1, 0, 0, 0, 0));

    let cases: &[(&[&str], &str)] = &[
        (
            &["enqueue", "--kind", "k", "--input", "{not json"],
            "--input is not valid JSON",
        ),
        (
            &["enqueue", "--kind", "k", "--input", ""],
            "--input is not valid JSON",
        ),
        (&["enqueue", "--kind", "", "--input", "{}"], "--kind"),
        (&["enqueue", "--kind", "   ", "--input", "{}"], "--kind"),
        (
            &[
                "enqueue",
                "--kind",
                "k",
                "--input",
                "{}",
                "--max-attempts",
                "0",
            ],
            "--max-attempts",
        ),
        (
            &[
                "enqueue",
                "--kind",
                "k",
                "--input",
                "{}",
                "--max-attempts",
                "-2",
            ],
            "--max-attempts",
        ),
        (
            &[
                "enqueue",
                "--kind",
                "k",
                "--input",
                "{}",
                "--max-attempts",
                "lots",
            ],
            "--max-attempts",
        ),
        (
            &["enqueue", "--kind", "k", "--input", "{}", "--delay-s", "0"],
            "--delay-s",
        ),
        (
            &[
                "enqueue",
                "--kind",
                "k",
                "--input",
                "{}",
                "--delay-s",
                "-1.5",
            ],
            "--delay-s",
        ),
        (
            &["enqueue", "--kind", "k", "--input", "{}", "--group", ""],
            "--group",
        ),
        (
            &[
                "enqueue",
                "--kind",
                "k",
                "--input",
                "{}",
                "--priority",
                "high",
            ],
            "--priority",
        ),
        (&["enqueue", "--input", "{}"], "--kind"),
        (
            &["items", "--status", "running"],
            "unknown status \"running\"",
        ),
        (&["items", "--limit", "0"], "--limit"),
        (&["items", "--limit", "-1"], "--limit"),
        (&["items", "--kind", ""], "--kind"),
        (&["reap", "--batch", "0"], "--batch"),
        (&["reap", "--batch", "-3"], "--batch"),
        (&["reap", "--stale-after", "0"], "--stale-after"),
        (&["reap", "--stale-after", "-60"], "--stale-after"),
        (&["reap", "--max-attempts", "0"], "--max-attempts"),
        (
            &["reap", "--dry-run", "--max-attempts", "-1"],
            "--max-attempts",
        ),
        (&["frobnicate"], "frobnicate"),
        (&["status", "--bogus"], "--bogus"),
    ];
    for (args, needle) in cases {
        let out = db.run(args);
        assert_error(&out, 2, needle);
        assert_eq!(db.status(), before, "{args:?} changed the store");
    }

    // Bad configuration from the environment names the variable.
    let out = db.run_env(
        &["enqueue", "--kind", "k", "--input", "{}"],
        &[("LEASEHOLD_MAX_ATTEMPTS", "0")],
    );
    assert_error(&out, 2, "LEASEHOLD_MAX_ATTEMPTS");
    let out = db.run_env(&["reap"], &[("TASK_REAP_BATCH", "-1")]);
    assert_error(&out, 2, "TASK_REAP_BATCH");
    assert_eq!(db.status(), before);
}

#[test]
fn bad_input_does_not_create_a_database() {
    let db = TestDb::new();
    let out = db.run(&["enqueue", "--kind", "k", "--input", "nope"]);
    assert_error(&out, 2, "--input is not valid JSON");
    assert!(!db.path.exists(), "a refused enqueue created the database");
}

#[test]
fn enqueue_reads_its_input_from_a_file_or_standard_input() {
    let db = TestDb::new();
    // Larger than a typical single argument would comfortably carry.
    let big = json!({"blob": "x".repeat(300_000), "n": 7});
    let file = db._dir.path().join("input.json");
    std::fs::write(&file, big.to_string()).expect("write input file");
    let file_arg = file.display().to_string();
    let v = db.json(&["enqueue", "--kind", "k", "--input-file", &file_arg]);
    let from_file = v["id"].as_i64().expect("id");

    let mut child = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    for var in CONFIG_VARS {
        child.env_remove(var);
    }
    let mut child = child
        .args(["--db", &db.url(), "enqueue", "--kind", "k", "--json"])
        .args(["--input-file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn leasehold");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(br#"[1, "two"]"#).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait leasehold");
    assert_success(&out, &["enqueue", "--input-file", "-"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("json stdout");
    let from_stdin = v["id"].as_i64().expect("id");

    let items = db.json(&["items"]);
    assert_eq!(items[0]["id"], json!(from_file));
    assert_eq!(items[0]["input"], big);
    assert_eq!(items[1]["id"], json!(from_stdin));
    assert_eq!(items[1]["input"], json!([1, "two"]));
}

#[test]
fn enqueue_input_file_refusals_name_the_problem_and_write_nothing() {
    let db = TestDb::new();
    let missing = db._dir.path().join("missing.json").display().to_string();
    let bad = db._dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").expect("write bad file");
    let bad = bad.display().to_string();

    // Before the database exists: a refusal must not create it.
    let out = db.run(&["enqueue", "--kind", "k", "--input-file", &missing]);
    let line = assert_error(&out, 2, &missing);
    assert!(line.contains("cannot read"), "{line}");
    assert!(!db.path.exists(), "a refused enqueue created the database");

    db.enqueue("email", &[]);
    let before = db.status();
    let cases: &[(&[&str], &str)] = &[
        (
            &["enqueue", "--kind", "k", "--input-file", &missing],
            &missing,
        ),
        (
            &["enqueue", "--kind", "k", "--input-file", &bad],
            "is not valid JSON",
        ),
        (&["enqueue", "--kind", "k", "--input-file", &bad], &bad),
        (
            &[
                "enqueue",
                "--kind",
                "k",
                "--input",
                "{}",
                "--input-file",
                &bad,
            ],
            "--input-file",
        ),
        (&["enqueue", "--kind", "k"], "--input"),
    ];
    for (args, needle) in cases {
        let out = db.run(args);
        assert_error(&out, 2, needle);
        assert_eq!(db.status(), before, "{args:?} changed the store");
    }
}

#[test]
fn read_only_commands_refuse_a_missing_database() {
    let db = TestDb::new();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["items"],
        &["reap", "--dry-run"],
    ] {
        let out = db.run(args);
        let line = assert_error(&out, 2, "no database at");
        assert!(line.contains(&db.url()), "{line}");
        assert!(!db.path.exists(), "{args:?} created the database");
    }
    // `sqlite://` URLs are judged the same way.
    let url = format!("sqlite://{}", db.url());
    assert_error(&run_bin(&url, &["status"], &[]), 2, "no database at");
    assert!(!db.path.exists());

    // enqueue creates it.
    db.enqueue("k", &[]);
    assert!(db.path.exists());
    let out = run_bin(&url, &["status", "--json"], &[]);
    assert_success(&out, &["status"]);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_untouched() {
    let db = TestDb::new();
    let junk: Vec<u8> = b"this is not a SQLite database, just some text\n"
        .iter()
        .copied()
        .cycle()
        .take(8_192)
        .collect();
    std::fs::write(&db.path, &junk).expect("write junk");
    for args in [
        &["status"][..],
        &["items", "--json"],
        &["enqueue", "--kind", "k", "--input", "{}"],
        &["reap"],
        &["reap", "--dry-run"],
    ] {
        let out = db.run(args);
        assert!(!out.status.success(), "{args:?} succeeded on a junk file");
        assert_error(&out, 2, "not a leasehold database");
        assert_eq!(
            std::fs::read(&db.path).expect("read"),
            junk,
            "{args:?} wrote to it"
        );
    }
    assert_eq!(
        dir_entries(db.path.parent().expect("dir")),
        vec!["leasehold.db"]
    );
}

#[tokio::test]
async fn a_database_of_a_newer_schema_is_refused() {
    let db = TestDb::new();
    db.enqueue("k", &[]);
    {
        // Open once through the store so the schema is current, then claim a future version.
        let store = db.store().await;
        store.ping().await.expect("ping");
    }
    let conn = rusqlite::Connection::open(&db.path).expect("rusqlite open");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert!(
        version > 0,
        "the sqlite store does not record a schema version in user_version"
    );
    conn.pragma_update(None, "user_version", version + 100)
        .expect("raise user_version");
    // Everything into the main file now: the store's connection closes on a thread of its own
    // some time after the drop above, and a checkpoint it ran then would change the file under
    // the comparison below.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(conn);
    let bytes = std::fs::read(&db.path).expect("read");

    for args in [
        &["status"][..],
        &["items"],
        &["enqueue", "--kind", "k", "--input", "{}"],
        &["reap"],
    ] {
        let out = db.run(args);
        assert_error(&out, 1, "newer");
        assert_eq!(
            std::fs::read(&db.path).expect("read"),
            bytes,
            "{args:?} wrote to it"
        );
    }
}

#[test]
fn json_stdout_stays_clean_with_logging_on() {
    let db = TestDb::new();
    db.enqueue("k", &[]);
    let out = db.run_env(&["status", "--json"], &[("RUST_LOG", "trace")]);
    assert_success(&out, &["status"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(v, counts(1, 0, 0, 0, 0));
}

#[test]
fn help_and_version_succeed() {
    let db = TestDb::new();
    for args in [&["--help"][..], &["--version"], &["reap", "--help"]] {
        let out = db.run(args);
        assert_success(&out, args);
        assert!(!out.stdout.is_empty());
    }
    assert!(!db.path.exists());
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn db_help_names_every_accepted_form() {
    let db = TestDb::new();
    let help = db.ok(&["--help"]);
    for form in [
        "SQLite file path",
        "sqlite://",
        "postgres://",
        "postgresql://",
    ] {
        assert!(help.contains(form), "--db help should name {form}: {help}");
    }
}

#[tokio::test]
async fn status_shows_schedules_with_their_next_run() {
    let db = TestDb::new();
    db.enqueue("email", &[]);
    // Without schedules the output is what it always was.
    assert_eq!(db.status(), counts(1, 0, 0, 0, 0));
    let now = SystemClock.now();
    let next = now.plus(Duration::from_secs(300));
    db.store()
        .await
        .schedule_upsert(
            &leasehold_core::ScheduleSpec {
                name: "digest".into(),
                cron: "0 */5 * * * *".into(),
                kind: "send-digest".into(),
                input: json!({}),
                catch_up: leasehold_core::CatchUp::All { max: 3 },
                first_run_at: next,
            },
            now,
        )
        .await
        .expect("register a schedule");
    let status = db.status();
    assert_eq!(status["pending"], json!(1));
    let schedules = status["schedules"].as_array().expect("schedules listed");
    assert_eq!(schedules.len(), 1, "{status}");
    assert_eq!(schedules[0]["name"], json!("digest"));
    assert_eq!(schedules[0]["cron"], json!("0 */5 * * * *"));
    assert_eq!(schedules[0]["next_run_at"], json!(next.as_millis()));
    assert_eq!(schedules[0]["last_run_at"], Value::Null);
    assert_eq!(
        schedules[0]["catch_up"],
        json!({ "policy": "all", "max": 3 })
    );
    let text = db.ok(&["status"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("digest"))
        .unwrap_or_else(|| panic!("a line for the schedule: {text}"));
    assert!(
        line.contains("send-digest") && line.contains("all (max 3)") && line.contains("in 4m"),
        "{line}"
    );
}
