//! One live process per node id, with real `leasehold work` processes on one SQLite file and
//! one `LEASEHOLD_WORKER_ID` (a deployment that copied one environment to every replica): the
//! second exits non-zero with a one-line error naming the first (host, pid, last beat) while
//! the first lives, and runs nothing; once the first is SIGKILLed and its registry row is
//! stale, a start under the same id proceeds and recovers its items at once. With
//! `--takeover` the second waits instead, then takes over. A first process stalled (SIGSTOP)
//! past the window and replaced exits superseded when it resumes. Every command logs the item
//! and epoch it ran, so a run twice shows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use leasehold_core::{Clock, ItemId, NewItem, Store, SystemClock, WorkerState};
use leasehold_runtime::faults::check_invariants;
use leasehold_sqlite::SqliteStore;

const BIN: &str = env!("CARGO_BIN_EXE_leasehold");
const ID: &str = "replica";
/// The CLI's default: a node is dead after this many missed heartbeats.
const MISSED: u32 = 3;

struct Setup {
    _dir: tempfile::TempDir,
    db: PathBuf,
    log: PathBuf,
    store: Arc<dyn Store>,
    ids: Vec<ItemId>,
}

async fn setup(n: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("identity.db");
    let log = dir.path().join("runs.log");
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
    Setup {
        _dir: dir,
        db,
        log,
        store,
        ids,
    }
}

/// `leasehold work` under [`ID`]; each command appends "item epoch" to `log` before it works.
fn work(db: &Path, log: &Path, extra: &[&str]) -> Command {
    let exec = format!(
        r#"echo "$LEASEHOLD_ITEM_ID $LEASEHOLD_EPOCH" >> '{}'; sleep 0.1; cat"#,
        log.display()
    );
    let mut cmd = Command::new(BIN);
    cmd.arg("--db")
        .arg(db)
        .args(["work", "--workers", "3", "--exec", &exec])
        .args(extra)
        .env_remove("LEASEHOLD_DB")
        .env_remove("LEASEHOLD_TAKEOVER")
        .env("LEASEHOLD_WORKER_ID", ID)
        .env("LEASEHOLD_LEASE_S", "5")
        .env("LEASEHOLD_HEARTBEAT_S", "0.2")
        .env("LEASEHOLD_SWEEP_S", "0.3")
        .env("LEASEHOLD_MAX_ATTEMPTS", "5")
        .stdin(Stdio::null());
    cmd
}

/// A `leasehold work` process, SIGKILLed if the test ends (or fails) without reaping it.
struct Proc(Option<Child>);

impl Proc {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not yet reaped")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(mut cmd: Command) -> Proc {
    Proc(Some(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start leasehold work"),
    ))
}

/// Observes the store from outside until `pred` holds, failing after a minute.
async fn wait_until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = probe().await {
            return t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node id's row as judged now.
async fn row_state(store: &Arc<dyn Store>) -> Option<(leasehold_core::NodeRecord, WorkerState)> {
    let row = store.node_get(ID).await.unwrap()?;
    let state = row.state(SystemClock.now(), MISSED);
    Some((row, state))
}

/// Waits for the process to exit (off the async runtime); after a minute, kills it and fails.
async fn finish(mut p: Proc) -> std::process::Output {
    let child = p.0.take().expect("not yet reaped");
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(Duration::from_secs(60), waiting).await {
        Ok(out) => out.unwrap().expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("process {pid} did not exit within a minute (killed)");
        }
    }
}

/// Every run the commands logged: item → the epochs it ran under, in order.
fn runs(log: &Path) -> BTreeMap<i64, Vec<i64>> {
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let mut parts = line.split_whitespace().map(|p| p.parse::<i64>().unwrap());
        let (item, epoch) = (parts.next().unwrap(), parts.next().unwrap());
        out.entry(item).or_default().push(epoch);
    }
    out
}

/// The items of this node id in progress now.
async fn in_flight(store: &Arc<dyn Store>) -> BTreeSet<i64> {
    leasehold_core::leased_items(store.as_ref())
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.owner_node.as_deref() == Some(ID))
        .map(|i| i.id.0)
        .collect()
}

/// Starts the first process and waits until it beats and works.
async fn first_running(s: &Setup) -> Proc {
    let first = spawn(work(&s.db, &s.log, &[]));
    let store = s.store.clone();
    wait_until("the first process at work", async || {
        let alive = matches!(row_state(&store).await, Some((_, WorkerState::Alive)));
        (alive && !in_flight(&store).await.is_empty()).then_some(())
    })
    .await;
    first
}

/// Every item completed, none lost, none completed twice.
async fn all_completed_once(s: &Setup) {
    let report = check_invariants(s.store.as_ref(), &s.ids, None)
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.counts.completed, s.ids.len() as u64);
}

/// SIGKILLs `first` (std's kill is SIGKILL on Unix) and returns what it held.
async fn kill(s: &Setup, mut first: Proc) -> BTreeSet<i64> {
    first.child().kill().expect("SIGKILL");
    first.child().wait().unwrap();
    in_flight(&s.store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_process_under_a_live_node_id_exits_with_the_error_and_runs_nothing() {
    let s = setup(60).await;
    let mut first = first_running(&s).await;
    let (row, _) = row_state(&s.store).await.unwrap();
    let first_pid = first.child().id();
    assert_eq!(row.pid(), Some(first_pid), "the row records the process");
    let host = row.host().expect("the row records the host").to_string();

    let second = finish(spawn(work(&s.db, &s.log, &[]))).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "stderr: {stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {stderr}");
    for part in [
        "error: node id \"replica\" is in use",
        &format!("on host {host}, pid {first_pid}"),
        "last beat",
        "s ago",
        "--takeover",
    ] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }
    assert!(
        first.child().try_wait().unwrap().is_none(),
        "the first process lives on"
    );
    let (row, state) = row_state(&s.store).await.unwrap();
    assert_eq!(
        (row.pid(), state),
        (Some(first_pid), WorkerState::Alive),
        "the row is still the first's"
    );
    let before_kill = runs(&s.log);
    assert!(
        before_kill.values().all(|epochs| epochs == &[1]),
        "while the first lived, every item ran once, at its first epoch: {before_kill:?}"
    );

    // The first dies. While its row is fresh, a restart is still refused; once the row is
    // stale, the restart proceeds and its recover_mine takes the stranded items at once.
    let stranded = kill(&s, first).await;
    assert!(!stranded.is_empty(), "the kill left leases behind");
    let dead_at = wait_until("the killed process's row to go stale", async || {
        let (row, state) = row_state(&s.store).await.unwrap();
        (state == WorkerState::Dead).then_some(row)
    })
    .await;
    let third = finish(spawn(work(&s.db, &s.log, &["--exit-when-done", "--json"]))).await;
    assert!(
        third.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&third.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&third.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert!(
        summary["stats"]["recovered_on_start"].as_u64().unwrap() >= stranded.len() as u64,
        "recover_mine took back the {} stranded items at once: {summary}",
        stranded.len()
    );
    assert!(summary["incarnation"].as_i64().unwrap() > dead_at.incarnation);

    all_completed_once(&s).await;
    // Only the items the kill interrupted ran again, each under a newer epoch.
    for (item, epochs) in runs(&s.log) {
        if epochs.len() > 1 {
            assert!(
                stranded.contains(&item),
                "item {item} ran {epochs:?} though no kill interrupted it"
            );
            assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{item}: {epochs:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_process_waits_for_the_live_one_to_die_then_takes_over() {
    let s = setup(60).await;
    let mut first = first_running(&s).await;
    let first_pid = first.child().id();
    let mut second = spawn(work(&s.db, &s.log, &["--takeover", "--exit-when-done"]));
    // Its stderr says it waits; read it off the runtime.
    let stderr = second.child().stderr.take().unwrap();
    let (said, mut heard) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if said.send(line).is_err() {
                return;
            }
        }
    });
    let waiting = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let line = heard.recv().await.expect("stderr open");
            if line.contains("waiting until it is dead (--takeover)") {
                return line;
            }
        }
    })
    .await
    .expect("the takeover says it waits");
    assert!(waiting.contains("node id replica is in use"), "{waiting}");
    assert!(
        second.child().try_wait().unwrap().is_none(),
        "it waits, not exits"
    );
    let (row, state) = row_state(&s.store).await.unwrap();
    assert_eq!((row.pid(), state), (Some(first_pid), WorkerState::Alive));
    let before_kill = runs(&s.log);
    assert!(
        before_kill.values().all(|epochs| epochs == &[1]),
        "nothing ran twice while both processes were up: {before_kill:?}"
    );

    let stranded = kill(&s, first).await;
    let out = finish(second).await;
    assert!(out.status.success(), "{out:?}");
    all_completed_once(&s).await;
    for (item, epochs) in runs(&s.log) {
        assert!(
            epochs.len() == 1 || stranded.contains(&item),
            "item {item} ran {epochs:?} though no kill interrupted it"
        );
    }
}

/// Sends `signal` (`STOP`, `CONT`) to the process.
fn signal(p: &mut Proc, signal: &str) {
    let pid = p.child().id().to_string();
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{signal} {pid}");
}

/// A real stall: the first process is stopped (SIGSTOP) until its row is stale, a second
/// process starts under the id and works; when the first resumes (SIGCONT), its next registry
/// write tells it another incarnation holds the id, and it exits 1 saying so instead of working
/// on beside the second. Every item is completed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_process_that_resumes_after_its_id_was_taken_over_exits_superseded() {
    let s = setup(60).await;
    let mut first = first_running(&s).await;
    let first_incarnation = row_state(&s.store).await.unwrap().0.incarnation;
    signal(&mut first, "STOP");
    wait_until("the stalled process's row to go stale", async || {
        let (_, state) = row_state(&s.store).await.unwrap();
        (state == WorkerState::Dead).then_some(())
    })
    .await;
    let second = spawn(work(&s.db, &s.log, &["--exit-when-done", "--json"]));
    let second_incarnation = wait_until("the second process at work", async || {
        match row_state(&s.store).await {
            Some((row, WorkerState::Alive)) if row.incarnation > first_incarnation => {
                Some(row.incarnation)
            }
            _ => None,
        }
    })
    .await;

    signal(&mut first, "CONT");
    let out = finish(first).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let expected = format!(
        "error: this node stopped: node \"{ID}\": incarnation {first_incarnation} was \
         superseded by incarnation {second_incarnation}"
    );
    assert!(
        stderr.contains(&expected),
        "{expected:?} missing from: {stderr}"
    );

    let out = finish(second).await;
    assert!(
        out.status.success(),
        "the second process: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = s.store.node_get(ID).await.unwrap().unwrap();
    assert_eq!(
        row.incarnation, second_incarnation,
        "the row stays the second's"
    );
    all_completed_once(&s).await;
    for (item, epochs) in runs(&s.log) {
        assert!(
            epochs.windows(2).all(|w| w[0] < w[1]),
            "item {item} ran twice under one lease: {epochs:?}"
        );
    }
}
