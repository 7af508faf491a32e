//! Schedules: three nodes on one SQLite file (three connections) run one schedule and every
//! tick is enqueued exactly once; after a gap with no node, `Skip` enqueues the latest missed
//! tick and `All { max }` the latest `max`; a bad cron expression refuses the start, naming
//! it. Tokio's clock is paused and a `TokioClock` follows it, so the test moves through ticks
//! without sleeping; it synchronises on `ScheduleFired` events and checks the store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use leasehold_core::{CatchUp, ItemFilter, Store, Timestamp, TokioClock};
use leasehold_runtime::{
    JobContext, JobError, Leasehold, LeaseholdBuilder, NodeEvent, RuntimeError, Schedule,
};
use leasehold_sqlite::SqliteStore;
use tokio::sync::{broadcast, mpsc};

/// 2026-01-01T00:00:05Z: five seconds after a minute's tick.
const START: Timestamp = Timestamp(1_767_225_605_000);

fn node(store: Arc<dyn Store>, id: &str, clock: &Arc<TokioClock>) -> LeaseholdBuilder {
    Leasehold::builder(store)
        .node_id(id)
        .workers(1)
        .monitor(false)
        .clock(clock.clone())
        .handler("digest", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(null))
        })
}

async fn open(path: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(path).await.expect("open"))
}

/// Forwards every `ScheduleFired` of a node to `tx`, tagged with the node's id.
fn forward(
    builder: &LeaseholdBuilder,
    id: &str,
    tx: &mpsc::UnboundedSender<(String, String, Vec<Timestamp>)>,
) {
    let mut events = builder.subscribe();
    let (tx, id) = (tx.clone(), id.to_string());
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(NodeEvent::ScheduleFired { name, ticks, .. }) => {
                    let _ = tx.send((id.clone(), name, ticks));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

/// The items of one schedule in the store, by the tick their unique key names.
async fn items_by_tick(store: &dyn Store, schedule: &str) -> BTreeMap<i64, usize> {
    let prefix = format!("schedule:{schedule}:");
    let mut by_tick = BTreeMap::new();
    for item in store
        .items_list(&ItemFilter {
            kind: Some("digest".into()),
            limit: 10_000,
            ..ItemFilter::default()
        })
        .await
        .unwrap()
    {
        let key = item
            .unique_key
            .clone()
            .expect("a scheduled item has its tick's key");
        if let Some(t) = key.strip_prefix(&prefix) {
            *by_tick.entry(t.parse::<i64>().expect("tick")).or_default() += 1;
        }
    }
    by_tick
}

/// Keeps the paused runtime busy, so tokio never auto-advances its clock while every task
/// waits on the store's connection thread: time moves only when the test advances it.
struct Spinner(tokio::task::JoinHandle<()>);

impl Spinner {
    fn start() -> Self {
        Spinner(tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        }))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next event forwarded to `rx`, failing the test after 30 s of real time (tokio's
/// clock does not move while the test waits).
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match rx.try_recv() {
            Ok(t) => return t,
            Err(mpsc::error::TryRecvError::Empty) if std::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("no {what} within 30 s: {e}"),
        }
    }
}

/// Three nodes share one schedule; the test moves tokio's clock one tick at a time, and each
/// tick is claimed by exactly one node, its one item enqueued once.
#[tokio::test(start_paused = true)]
async fn three_nodes_enqueue_each_tick_exactly_once() {
    const TICKS: usize = 12;
    let _spin = Spinner::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.db");
    let clock = Arc::new(TokioClock::starting_at(START));
    let every_10s = || Schedule::new("digest", "*/10 * * * * *", "digest").input(json!({"n": 1}));
    let (tx, mut fired) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        let builder = node(open(&path).await, id, &clock).schedule(every_10s());
        forward(&builder, id, &tx);
        nodes.push(builder.start().await.expect("start"));
    }
    // Every claim any node won, by tick: a tick claimed twice shows as a second entry.
    let mut claims: BTreeMap<Timestamp, Vec<String>> = BTreeMap::new();
    let mut record = |(id, _, ticks): (String, String, Vec<Timestamp>)| {
        assert_eq!(ticks.len(), 1, "one tick at a time, no catch-up: {ticks:?}");
        claims.entry(ticks[0]).or_default().push(id);
    };
    tokio::time::advance(Duration::from_secs(5)).await;
    for k in 0..TICKS {
        if k > 0 {
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        record(next(&mut fired, "claim of the tick").await);
    }
    for node in nodes {
        node.shutdown(Duration::from_secs(5)).await.unwrap();
    }
    drop(tx);
    while let Some(got) = fired.recv().await {
        record(got);
    }
    let twice: Vec<_> = claims.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "ticks claimed more than once: {twice:?}");
    let ticks: Vec<i64> = claims.keys().map(|t| t.0).collect();
    let expected: Vec<i64> = (0..TICKS as i64)
        .map(|k| START.0 + 5_000 + k * 10_000)
        .collect();
    assert_eq!(ticks, expected, "every tick once, none skipped");
    let winners: BTreeSet<&String> = claims.values().flatten().collect();
    println!("{} ticks claimed by {winners:?}", claims.len());
    // The store agrees: one item per tick, and no item for a tick nobody claimed.
    let store = open(&path).await;
    let stored = items_by_tick(store.as_ref(), "digest").await;
    assert!(
        stored.values().all(|n| *n == 1),
        "one item per tick: {stored:?}"
    );
    assert_eq!(stored.keys().copied().collect::<Vec<_>>(), ticks);
    let row = &store.schedules_list().await.unwrap()[0];
    assert_eq!(row.last_run_at.map(|t| t.0), ticks.last().copied());
    assert_eq!(row.next_run_at.0, ticks[TICKS - 1] + 10_000);
}

/// A node runs two minutely schedules, stops, and ten minutes pass with no node; restarted,
/// the `Skip` schedule enqueues one item, for the latest missed tick, and the `All { max: 3 }`
/// one the latest three; both resume with the next tick after now.
#[tokio::test(start_paused = true)]
async fn after_a_gap_skip_enqueues_the_latest_tick_and_all_catches_up_to_max() {
    let _spin = Spinner::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gap.db");
    let clock = Arc::new(TokioClock::starting_at(START));
    let minutely =
        |name: &str, policy| Schedule::new(name, "0 * * * * *", "digest").catch_up(policy);
    let run = |policies: [CatchUp; 2], wait: Duration| {
        let path = path.clone();
        let clock = clock.clone();
        async move {
            let builder = node(open(&path).await, "node-a", &clock)
                .schedule(minutely("skip", policies[0]))
                .schedule(minutely("all", policies[1]));
            let (tx, mut fired) = mpsc::unbounded_channel();
            forward(&builder, "node-a", &tx);
            let node = builder.start().await.expect("start");
            tokio::time::advance(wait).await;
            let mut first: BTreeMap<String, Vec<Timestamp>> = BTreeMap::new();
            while first.len() < 2 {
                let (_, name, ticks) = next(&mut fired, "both schedules' claims").await;
                assert!(first.insert(name, ticks).is_none(), "one claim each");
            }
            node.shutdown(Duration::from_secs(5)).await.unwrap();
            first
        }
    };
    let minute = |k: i64| Timestamp(START.0 - 5_000 + k * 60_000);
    let before = run([CatchUp::Skip, CatchUp::Skip], Duration::from_secs(55)).await;
    assert_eq!(before["skip"], vec![minute(1)]);
    assert_eq!(before["all"], vec![minute(1)]);
    // Ten minutes with no node running: the ticks of minutes 2 to 11 fall due unclaimed.
    tokio::time::advance(Duration::from_secs(600)).await;
    let after = run([CatchUp::Skip, CatchUp::All { max: 3 }], Duration::ZERO).await;
    assert_eq!(
        after["skip"],
        vec![minute(11)],
        "skip: the latest missed tick"
    );
    assert_eq!(
        after["all"],
        vec![minute(9), minute(10), minute(11)],
        "all: the latest three missed ticks"
    );
    let store = open(&path).await;
    for row in store.schedules_list().await.unwrap() {
        assert_eq!(row.next_run_at, minute(12), "resumes after now: {row:?}");
        assert_eq!(row.last_run_at, Some(minute(11)), "{row:?}");
    }
    let skip = items_by_tick(store.as_ref(), "skip").await;
    let all = items_by_tick(store.as_ref(), "all").await;
    let ticks = |m: &BTreeMap<i64, usize>| m.keys().map(|t| Timestamp(*t)).collect::<Vec<_>>();
    assert_eq!(ticks(&skip), vec![minute(1), minute(11)]);
    assert_eq!(
        ticks(&all),
        vec![minute(1), minute(9), minute(10), minute(11)]
    );
    assert!(skip.values().chain(all.values()).all(|n| *n == 1));
}

#[tokio::test]
async fn a_bad_cron_expression_refuses_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("bad.db")).await;
    let clock = Arc::new(TokioClock::new());
    let refused = node(store.clone(), "node-a", &clock)
        .schedule(Schedule::new("digest", "61 * * * *", "digest"))
        .start()
        .await
        .expect_err("a bad expression refuses the start");
    let text = refused.to_string();
    assert!(
        matches!(&refused, RuntimeError::Schedule { name, .. } if name == "digest"),
        "{refused:?}"
    );
    assert!(
        text.contains("digest") && text.contains("61 * * * *"),
        "{text}"
    );
    assert!(
        store.schedules_list().await.unwrap().is_empty(),
        "nothing registered"
    );
    assert!(
        store.nodes_list().await.unwrap().is_empty(),
        "no node registered"
    );
    let twice = node(store.clone(), "node-a", &clock)
        .schedule(Schedule::new("digest", "0 * * * * *", "digest"))
        .schedule(Schedule::new("digest", "30 * * * * *", "digest"))
        .start()
        .await
        .expect_err("two schedules of one name");
    assert!(twice.to_string().contains("share the name"), "{twice}");
}
