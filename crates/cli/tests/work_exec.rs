//! `leasehold work --exec` as a real child process: a command that hangs is killed with its
//! whole process group at its timeout (a `sleep` it started in the background included) and is
//! dead-lettered with a timed-out error once its budget is spent; an item's own timeout, given
//! to `enqueue --timeout-s`, wins over `work --timeout-s`, which wins over
//! `LEASEHOLD_TIMEOUT_S`; and a megabyte goes through the command's stdin and stdout without
//! the pipes deadlocking; `work --group` runs only its group's items and `--exit-when-done` then
//! waits for that group alone. The store is observed from outside through the same SQLite file.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use leasehold_core::{Clock, Item, ItemId, ItemStatus, NewItem, Store, SystemClock};
use leasehold_sqlite::SqliteStore;

const BIN: &str = env!("CARGO_BIN_EXE_leasehold");

/// The binary with none of the caller's configuration, and quick heartbeats.
fn leasehold(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("LEASEHOLD_") || k.starts_with("TASK_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--db")
        .arg(db)
        .args(args)
        .env("LEASEHOLD_LEASE_S", "5")
        .env("LEASEHOLD_HEARTBEAT_S", "0.2")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

/// Runs `work` with one worker until the queue is empty.
fn work(db: &Path, exec: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "work",
        "--workers",
        "1",
        "--exec",
        exec,
        "--exit-when-done",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = leasehold(db, &args, env)
        .output()
        .expect("run leasehold work");
    assert!(
        out.status.success(),
        "work failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn open(db: &Path) -> SqliteStore {
    SqliteStore::open(db).await.expect("open store")
}

async fn get(store: &SqliteStore, id: ItemId) -> Item {
    store.item_get(id).await.unwrap().expect("item exists")
}

/// Whether `pid` is gone: no such process, or one that has exited and waits to be reaped
/// (state `Z`; in a container nothing may reap an orphan).
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) state …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
    }
}

/// A SIGKILL takes effect at once, but the process is not gone until the kernel has run it
/// out: allow a moment, failing after a bound.
fn assert_gone(pid: u32) {
    let start = Instant::now();
    while !is_gone(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "process {pid}, started in the background by the timed-out command, survived it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_command_is_killed_with_its_process_group_at_the_timeout_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("work.db");
    let pids = dir.path().join("pids");
    let store = open(&db).await;
    let id = store
        .item_enqueue(
            NewItem::new("job", json!({})).max_attempts(2),
            SystemClock.now(),
        )
        .await
        .unwrap();
    // The shell starts a sleep in the background, records its pid, and waits for it: both
    // hang, and the sleep holds the stdout pipe open too.
    let exec = format!("sleep 1000 & echo $! >> '{}'; wait", pids.display());
    // The flag wins over the environment's 600 s.
    let out = work(
        &db,
        &exec,
        &["--timeout-s", "0.5"],
        &[("LEASEHOLD_TIMEOUT_S", "600")],
    );

    let it = get(&store, id).await;
    assert_eq!((it.status, it.attempts), (ItemStatus::Failed, 2), "{it:?}");
    assert_eq!(
        it.error.as_deref(),
        Some("timed out after 0.5 s: the handler was cancelled")
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["stats"]["timed_out"], 2, "{summary}");
    let started: Vec<u32> = std::fs::read_to_string(&pids)
        .expect("the command recorded its background pids")
        .lines()
        .map(|l| l.trim().parse().expect("a pid"))
        .collect();
    assert_eq!(started.len(), 2, "one background sleep per attempt");
    for pid in started {
        assert_gone(pid);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_timeout_from_enqueue_wins_over_the_work_flag_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("work.db");
    let db_arg = db.to_str().unwrap();
    let out = leasehold(
        &db,
        &[
            "enqueue",
            "--kind",
            "job",
            "--input",
            "{}",
            "--max-attempts",
            "1",
            "--timeout-s",
            "0.3",
            "--json",
        ],
        &[],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{db_arg}: {out:?}");
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = ItemId(id["id"].as_i64().unwrap());
    work(
        &db,
        "sleep 1000",
        &["--timeout-s", "600"],
        &[("LEASEHOLD_TIMEOUT_S", "900")],
    );
    let store = open(&db).await;
    let it = get(&store, id).await;
    assert_eq!(it.timeout, Some(Duration::from_millis(300)));
    assert_eq!(it.status, ItemStatus::Failed);
    assert_eq!(
        it.error.as_deref(),
        Some("timed out after 0.3 s: the handler was cancelled")
    );
}

#[test]
fn bad_timeouts_are_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("work.db");
    for (args, env, needle) in [
        (
            &["work", "--exec", "cat", "--timeout-s", "0"][..],
            &[][..],
            "--timeout-s",
        ),
        (
            &["work", "--exec", "cat"][..],
            &[("LEASEHOLD_TIMEOUT_S", "soon")][..],
            "LEASEHOLD_TIMEOUT_S",
        ),
        (
            &[
                "enqueue",
                "--kind",
                "k",
                "--input",
                "{}",
                "--timeout-s",
                "-1",
            ][..],
            &[][..],
            "--timeout-s",
        ),
    ] {
        let out = leasehold(&db, args, env).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert!(!db.exists(), "bad input created the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_in_and_a_megabyte_out_stream_through_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("work.db");
    let store = open(&db).await;
    // Far more than a pipe holds (64 KiB): writing it all before reading would deadlock
    // against `cat`, which writes as it reads.
    let data: String = (0..1 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let input = json!({ "data": data });
    let id = store
        .item_enqueue(
            NewItem::new("echo", input.clone()).max_attempts(1),
            SystemClock.now(),
        )
        .await
        .unwrap();
    // A deadlock would end as a timed-out attempt instead of hanging the test.
    work(&db, "cat", &["--timeout-s", "20"], &[]);
    let it = get(&store, id).await;
    assert_eq!(it.status, ItemStatus::Completed, "{:?}", it.error);
    assert_eq!(it.output.as_ref(), Some(&input), "the output is the input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_with_a_group_runs_only_that_groups_items_and_exits_when_they_are_done() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("work.db");
    let store = open(&db).await;
    let now = SystemClock.now();
    let mut ours = Vec::new();
    for n in 0..2 {
        let item = NewItem::new("job", json!({"n": n})).group("a");
        ours.push(store.item_enqueue(item, now).await.unwrap());
    }
    // Higher priority than ours: an unfiltered worker would take them first.
    let other = NewItem::new("job", json!({})).group("b").priority(10);
    let other = store.item_enqueue(other, now).await.unwrap();
    let none = NewItem::new("job", json!({})).priority(10);
    let none = store.item_enqueue(none, now).await.unwrap();

    // --exit-when-done waits for group a only: the others stay pending and it still returns.
    work(&db, "cat", &["--group", "a"], &[]);
    for id in ours {
        assert_eq!(
            get(&store, id).await.status,
            ItemStatus::Completed,
            "{id:?}"
        );
    }
    for id in [other, none] {
        let it = get(&store, id).await;
        assert_eq!((it.status, it.attempts), (ItemStatus::Pending, 0), "{id:?}");
    }

    let out = leasehold(&db, &["work", "--exec", "cat", "--group", " "], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("--group"),
        "{stderr}"
    );
}
