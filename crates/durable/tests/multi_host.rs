//! What only several nodes can show, on every backend: two nodes with their own connection
//! (SQLite) or their own pool (PostgreSQL, as two hosts have) racing on one LLM cache key, and a
//! tool call recorded by a node whose process is then SIGKILLed, replayed by another node that
//! takes the item over — with the dead node's cache claim taken over once it lapsed.
//!
//! The killed node is a real process: this test binary re-run with only
//! `node_a_child_process` selected, its instructions in [`CHILD_ENV`].

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Env, NowTs, LEASE, T0};
use leasehold_core::durable::CacheClaim;
use leasehold_core::{
    AcquireRequest, Clock, ItemStatus, LeaseRef, ManualClock, NewItem, NoLiveness, ReapRequest,
    Store, SystemClock, Timestamp,
};
use leasehold_durable::{cache_key, DurableError, LlmCache, ToolLedger, ToolOutput};
use leasehold_postgres::PgStore;
use leasehold_sqlite::SqliteStore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

/// The environment variable that carries the child node's instructions (JSON [`ChildSpec`]).
const CHILD_ENV: &str = "LEASEHOLD_DURABLE_NODE_A";

/// How long the dead node's cache claim runs (shorter than its lease, so it lapses first).
const CLAIM: Duration = Duration::from_secs(30);

/// The tool call the killed node makes, and the node that takes over repeats.
const TOOL: (&str, &str, &str) = ("bash", "deploy --prod", "0");

/// The cache key the killed node claims and never fills.
fn dead_key() -> String {
    cache_key("plan", "the killed node's prompt", "model-a", "task-1")
}

/// What the child node is to do.
#[derive(Serialize, Deserialize)]
struct ChildSpec {
    backend: String,
    url: String,
    /// A file the tool appends a line to each time it really runs (in any process).
    marker: String,
}

/// A clock that counts how often it is read and reports the count: a cache that was told the
/// key is busy reads it again before each new ask, so a second read means it is waiting.
#[derive(Debug)]
struct CountingClock {
    reads: watch::Sender<usize>,
}

impl Clock for CountingClock {
    fn now(&self) -> Timestamp {
        self.reads.send_modify(|n| *n += 1);
        SystemClock.now()
    }
}

async fn leased_on<S: Store>(store: &S, owner: &str, now: Timestamp) -> LeaseRef {
    store
        .item_enqueue(NewItem::new("task", json!({})), now)
        .await
        .expect("enqueue");
    store
        .item_acquire(&AcquireRequest::new(owner, LEASE), now)
        .await
        .expect("acquire")
        .expect("an item to lease")
        .lease
}

/// Two nodes, each with its own handle on the database and its own lease, ask for the same
/// key at the same instant, many times over — a fresh key, or one whose claim lapsed: the
/// store lets exactly one claim it and tells the other who holds it; then, through `LlmCache`, exactly one generates and the other waits
/// for and reads its output.
async fn two_nodes_racing_on_one_cache_key_generate_it_once<S: Backend>(env: Env<S>) {
    let (a, b) = (env.store.clone(), env.another_node().await);
    let now = SystemClock.now();
    let lease_a = leased_on(&*a, "node-a/w0", now).await;
    let lease_b = leased_on(&*b, "node-b/w0", now).await;

    // A third node's claims, lapsed: the even rounds race to take one over, the odd ones race
    // on a key no one has claimed yet.
    let lease_c = leased_on(&*a, "node-c/w0", now).await;
    let earlier = Timestamp(now.0 - 10_000);

    // The raw claim, raced 80 times on 80 keys.
    for round in 0..80 {
        let key = cache_key("plan", &format!("prompt {round}"), "model-a", "task-1");
        if round % 2 == 0 {
            let lapsed = a
                .cache_claim(&key, &lease_c, Duration::from_secs(1), earlier)
                .await
                .expect("a claim that lapses");
            assert!(matches!(lapsed, CacheClaim::Claimed { .. }), "{lapsed:?}");
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let ask = |store: Arc<S>, lease: LeaseRef| {
            let (key, barrier) = (key.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .cache_claim(&key, &lease, CLAIM, now)
                    .await
                    .expect("claim")
            })
        };
        let ta = ask(a.clone(), lease_a.clone());
        let tb = ask(b.clone(), lease_b.clone());
        let (ca, cb) = (ta.await.expect("join"), tb.await.expect("join"));
        let (winner, loser_saw) = match (&ca, &cb) {
            (CacheClaim::Claimed { .. }, other) => (&lease_a, other),
            (other, CacheClaim::Claimed { .. }) => (&lease_b, other),
            _ => panic!("round {round}: nobody claimed the key: {ca:?} / {cb:?}"),
        };
        match loser_saw {
            CacheClaim::Busy { holder, .. } => assert_eq!(holder, winner, "round {round}"),
            other => panic!("round {round}: both claimed the key, the other got {other:?}"),
        }
    }

    // Through the cache, as two processes would use it (each its own in-process locks).
    let key_task = "task-shared";
    let (reads_a, mut watch_a) = watch::channel(0);
    let (reads_b, mut watch_b) = watch::channel(0);
    let cache_a = LlmCache::new(a.clone(), Arc::new(CountingClock { reads: reads_a }))
        .with_claim(CLAIM, Duration::from_millis(5))
        .expect("claim settings");
    let cache_b = LlmCache::new(b.clone(), Arc::new(CountingClock { reads: reads_b }))
        .with_claim(CLAIM, Duration::from_millis(5))
        .expect("claim settings");
    let generations = Arc::new(AtomicUsize::new(0));
    let (open, gate) = watch::channel(false);
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let ask = |cache: LlmCache, lease: LeaseRef, node: &'static str| {
        let (generations, mut gate, barrier) = (generations.clone(), gate.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            cache
                .get_or_generate(
                    &lease,
                    "plan",
                    "the shared prompt",
                    "model-a",
                    key_task,
                    || async move {
                        generations.fetch_add(1, Ordering::SeqCst);
                        // Held until the other node is seen waiting on this claim.
                        gate.wait_for(|open| *open).await.expect("gate");
                        Ok::<_, DurableError>(json!({ "generated_by": node }))
                    },
                )
                .await
                .expect("get_or_generate")
        })
    };
    let ta = ask(cache_a.clone(), lease_a.clone(), "node-a");
    let tb = ask(cache_b.clone(), lease_b.clone(), "node-b");
    tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            r = watch_a.wait_for(|n| *n >= 2) => r.map(|_| ()),
            r = watch_b.wait_for(|n| *n >= 2) => r.map(|_| ()),
        }
    })
    .await
    .expect("one node waits on the other's claim")
    .expect("clock reads");
    open.send(true).expect("open the gate");
    let (ra, rb) = (ta.await.expect("join"), tb.await.expect("join"));
    assert_eq!(
        generations.load(Ordering::SeqCst),
        1,
        "generated more than once"
    );
    assert_eq!(ra.output, rb.output, "both nodes read the one output");
    assert_eq!(
        usize::from(ra.hit) + usize::from(rb.hit),
        1,
        "one generated, the other read its output: {ra:?} / {rb:?}"
    );
    let (sa, sb) = (cache_a.stats(), cache_b.stats());
    assert_eq!((sa.misses + sb.misses, sa.hits + sb.hits), (1, 1));
}

/// Node A (a child process) runs a tool under its lease, which the ledger records, and claims
/// a cache key; then it is SIGKILLed. Node B (this process, its own handle on the database):
/// the dead node's claim holds the key until it lapses, then B takes it over; once A's lease
/// has expired the reaper requeues the item, B leases it and asks for the same tool call — and
/// gets A's recorded result replayed, the tool not run again.
async fn a_ledger_entry_written_by_a_killed_node_is_replayed_by_another<S: Backend>(env: Env<S>) {
    let node_b = env.another_node().await;
    let marker = env.dir.path().join("tool-runs.log");
    let now = env.clock.now_ts();
    let item = node_b
        .item_enqueue(NewItem::new("task", json!({})), now)
        .await
        .expect("enqueue");

    let mut child = spawn_node_a(&ChildSpec {
        backend: S::NAME.to_owned(),
        url: env.location.url(),
        marker: marker.display().to_string(),
    });
    let (a_item, a_epoch) = wait_ready(&mut child).await;
    assert_eq!(a_item, item.0);
    child.kill().expect("SIGKILL node A");
    let status = child.wait().expect("reap node A");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "node A died of SIGKILL: {status:?}"
        );
    }
    let node_a_lease = LeaseRef {
        item,
        owner: "node-a/w0".into(),
        epoch: a_epoch,
    };
    assert_eq!(runs(&marker), 1, "node A ran the tool once");

    // The dead node's claim: busy while it lasts (its lease is still current), taken over after.
    let other = leased_on(&*node_b, "node-b/w0", now).await;
    match node_b
        .cache_claim(&dead_key(), &other, CLAIM, env.clock.now_ts())
        .await
        .expect("claim")
    {
        CacheClaim::Busy { holder, .. } => assert_eq!(holder, node_a_lease),
        c => panic!("the dead node's live claim must hold the key, got {c:?}"),
    }
    env.clock.advance(CLAIM + Duration::from_secs(1));
    let claim = node_b
        .cache_claim(&dead_key(), &other, CLAIM, env.clock.now_ts())
        .await
        .expect("claim");
    assert!(
        matches!(claim, CacheClaim::Claimed { .. }),
        "a lapsed claim of a dead node is taken over: {claim:?}"
    );
    node_b
        .item_complete(&other, json!("done"), env.clock.now_ts())
        .await
        .expect("complete the other item");

    // A's lease expires; B's reaper, which hears nothing from A, requeues the item.
    env.clock.advance(LEASE);
    let stats = node_b
        .items_reap_expired(
            &ReapRequest::new(10, Duration::from_secs(900)),
            &NoLiveness,
            env.clock.now_ts(),
        )
        .await
        .expect("reap");
    assert_eq!(stats.recovered, 1, "{stats:?}");
    let lease = node_b
        .item_acquire(&AcquireRequest::new("node-b/w1", LEASE), env.clock.now_ts())
        .await
        .expect("acquire")
        .expect("the requeued item")
        .lease;
    assert_eq!(lease.item, item);
    assert!(lease.epoch > a_epoch);

    let ledger = ToolLedger::new(node_b.clone(), env.clock());
    let marker_b = marker.clone();
    let replayed = ledger
        .execute_or_replay(&lease, TOOL.0, TOOL.1, TOOL.2, || async move {
            run_tool(&marker_b, "node-b")
        })
        .await
        .expect("execute or replay");
    assert!(replayed.replayed, "node B ran the tool again: {replayed:?}");
    assert_eq!(replayed.result, json!({ "deployed_by": "node-a" }));
    assert_eq!(runs(&marker), 1, "the tool ran once in all");
    let history = ledger.history(item, 10).await.expect("history");
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!((history[0].epoch, history[0].replays), (a_epoch, 1));
    // The dead holder's stale lease can neither replay nor record.
    let zombie = ledger
        .execute_or_replay(&node_a_lease, TOOL.0, TOOL.1, TOOL.2, || async {
            Ok::<_, DurableError>(json!("zombie"))
        })
        .await
        .expect_err("a stale lease");
    assert!(zombie.is_lease_lost(), "{zombie:?}");
    node_b
        .item_complete(&lease, replayed.result, env.clock.now_ts())
        .await
        .expect("complete");
    let done = node_b.item_get(item).await.expect("get").expect("item");
    assert_eq!(done.status, ItemStatus::Completed);
}

/// The tool: appends a line to `marker` (so runs are counted across processes), in one
/// `write` so that lines from two processes never interleave.
fn run_tool(marker: &std::path::Path, node: &str) -> Result<ToolOutput, DurableError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(marker)
        .map_err(DurableError::permanent)?;
    f.write_all(format!("{node}\n").as_bytes())
        .map_err(DurableError::permanent)?;
    f.sync_all().map_err(DurableError::permanent)?;
    Ok(ToolOutput {
        result: json!({ "deployed_by": node }),
        evidence: vec![leasehold_durable::evidence::command_exit(TOOL.1, 0, 0)],
    })
}

fn runs(marker: &std::path::Path) -> usize {
    std::fs::read_to_string(marker)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn spawn_node_a(spec: &ChildSpec) -> Child {
    Command::new(std::env::current_exe().expect("test executable"))
        .args([
            "node_a_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, serde_json::to_string(spec).expect("spec"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node A")
}

/// Waits for node A's `READY <item> <epoch>` line: it has recorded its tool call and claimed
/// the cache key.
async fn wait_ready(child: &mut Child) -> (i64, i64) {
    let stdout = child.stdout.take().expect("node A's stdout");
    let read = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read node A");
            // The harness may have written the test's name on the same line.
            if let Some((_, rest)) = line.split_once("READY ") {
                let mut parts = rest.split_whitespace().map(|p| p.parse::<i64>());
                if let (Some(Ok(item)), Some(Ok(epoch))) = (parts.next(), parts.next()) {
                    return Some((item, epoch));
                }
            }
        }
        None
    });
    match tokio::time::timeout(Duration::from_secs(60), read).await {
        Ok(Ok(Some(ready))) => ready,
        other => {
            let _ = child.kill();
            panic!("node A never became ready: {other:?}");
        }
    }
}

/// Node A's body, in a child process: lease the item, run the tool through the ledger, claim
/// a cache key, say so, and wait to be killed.
async fn node_a<S: Backend>(spec: ChildSpec) {
    let store = Arc::new(S::open_at(&spec.url).await);
    let clock = ManualClock::new(T0);
    let lease = store
        .item_acquire(&AcquireRequest::new("node-a/w0", LEASE), clock.now_ts())
        .await
        .expect("acquire")
        .expect("the parent's item")
        .lease;
    let marker = std::path::PathBuf::from(&spec.marker);
    let ledger = ToolLedger::new(store.clone(), Arc::new(clock.clone()));
    let r = ledger
        .execute_or_replay(&lease, TOOL.0, TOOL.1, TOOL.2, || async move {
            run_tool(&marker, "node-a")
        })
        .await
        .expect("run the tool");
    assert!(!r.replayed);
    let claim = store
        .cache_claim(&dead_key(), &lease, CLAIM, clock.now_ts())
        .await
        .expect("claim");
    assert!(matches!(claim, CacheClaim::Claimed { .. }), "{claim:?}");
    println!("READY {} {}", lease.item.0, lease.epoch);
    use std::io::Write;
    std::io::stdout().flush().expect("flush");
    std::future::pending::<()>().await;
}

/// The child-process entry of `a_ledger_entry_written_by_a_killed_node_is_replayed_by_another`.
#[test]
#[ignore = "the child-process entry of a_ledger_entry_written_by_a_killed_node_is_replayed_by_another"]
fn node_a_child_process() {
    let raw = std::env::var(CHILD_ENV).expect("run only as a child process");
    let spec: ChildSpec = serde_json::from_str(&raw).expect("child spec");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    match spec.backend.as_str() {
        SqliteStore::NAME => rt.block_on(node_a::<SqliteStore>(spec)),
        PgStore::NAME => rt.block_on(node_a::<PgStore>(spec)),
        other => panic!("unknown backend {other}"),
    }
}

durable_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    two_nodes_racing_on_one_cache_key_generate_it_once,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_ledger_entry_written_by_a_killed_node_is_replayed_by_another,
);
