//! The queue's retry delays against a real SQLite file: a handler's `retry_after` beats its
//! kind's backoff, which beats the node's; the node's default jitters reproducibly from the
//! node's seed; the retry budget still dead-letters. Time is a ManualClock that only the test
//! moves, so a retried item waits, pending, exactly where its `run_at` puts it; tests wait on
//! the node's events (with an overall timeout), never on sleeps.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast;

use leasehold_core::{
    Backoff, Clock, Item, ItemId, ItemStatus, ManualClock, NewItem, Store, SystemClock,
};
use leasehold_runtime::{JobContext, JobError, Leasehold, LeaseholdBuilder, NodeEvent, NodeHandle};
use leasehold_sqlite::SqliteStore;

mod common;
use common::{wait_for, WAIT};
const SEED: u64 = 42;

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(dir.path().join("backoff.db"))
            .await
            .expect("open store"),
    )
}

/// A node on `clock` whose leases never lapse under the test and whose reaper never sweeps on
/// its own: only the handlers' failures move items. The node's backoff is the default (1 s,
/// 2 s, 4 s, … with 10 % jitter), its jitter seeded.
fn builder(store: Arc<dyn Store>, node: &str, clock: &ManualClock) -> LeaseholdBuilder {
    Leasehold::builder(store)
        .node_id(node)
        .lease(Duration::from_secs(600))
        .heartbeat(Duration::from_millis(100))
        .sweep(Duration::from_secs(3600))
        .stale(Duration::from_secs(3600))
        .poll_interval(Duration::from_millis(50))
        .backoff(Backoff::default())
        .jitter_seed(SEED)
        .clock(Arc::new(clock.clone()))
}

/// A kind's own schedule, without jitter so its delays read plainly.
fn slow() -> Backoff {
    Backoff {
        initial: Duration::from_secs(30),
        factor: 3.0,
        max: Duration::from_secs(600),
        jitter: 0.0,
    }
}

async fn fails(_ctx: JobContext) -> Result<(), JobError> {
    Err(JobError::retryable("flaky dependency"))
}

async fn rate_limited(_ctx: JobContext) -> Result<(), JobError> {
    Err(JobError::retryable("429 Too Many Requests").retry_after(Duration::from_millis(4321)))
}

/// Waits for the next failed attempt of `id`; returns whether it dead-lettered the item.
async fn attempt_failed(rx: &mut broadcast::Receiver<NodeEvent>, id: ItemId) -> bool {
    wait_for(rx, &format!("a failed attempt of item {id}"), |e| match e {
        NodeEvent::AttemptFailed {
            item,
            dead_lettered,
        } if *item == id => Some(*dead_lettered),
        _ => None,
    })
    .await
}

async fn item(node: &NodeHandle, id: ItemId) -> Item {
    node.store()
        .item_get(id)
        .await
        .unwrap()
        .expect("item exists")
}

/// The delay the store applied: the failure wrote `updated_at` = the (unmoving) clock's now
/// and `run_at` = now + delay, both in the store's milliseconds.
fn assert_waits(it: &Item, delay: Duration, what: &str) {
    assert_eq!(it.status, ItemStatus::Pending, "{what}: back to pending");
    assert_eq!(
        it.run_at,
        it.updated_at.plus(delay),
        "{what}: run_at should be {delay:?} after the failure, is {:?}",
        it.run_at.since(it.updated_at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_beats_the_kinds_backoff_which_beats_the_nodes_jittered_default() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let node = builder(store(&dir).await, "precedence", &clock)
        .workers(2)
        .handler("plain", fails)
        .handler("slow", fails)
        .handler("limited", rate_limited)
        // The kind has a schedule of its own, but its handler's retry_after wins.
        .kind_backoff("slow", slow())
        .kind_backoff("limited", slow())
        .start()
        .await
        .unwrap();
    let mut events = node.events();
    let plain = node.enqueue(node.item("plain", json!({}))).await.unwrap();
    let slowed = node.enqueue(node.item("slow", json!({}))).await.unwrap();
    let limited = node.enqueue(node.item("limited", json!({}))).await.unwrap();
    // Two workers fail the three in whatever order: collect them as they come.
    let mut left: HashSet<ItemId> = [plain, slowed, limited].into();
    let all_failed = async {
        while !left.is_empty() {
            match events.recv().await {
                Ok(NodeEvent::AttemptFailed {
                    item,
                    dead_lettered,
                }) => {
                    assert!(!dead_lettered, "item {item} retries");
                    left.remove(&item);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream closed: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, all_failed)
        .await
        .expect("timed out waiting for the three failed attempts");

    let it = item(&node, limited).await;
    assert_eq!(it.attempts, 1);
    assert!(
        it.error.as_deref().unwrap().contains("429"),
        "{:?}",
        it.error
    );
    assert_waits(&it, Duration::from_millis(4321), "retry_after");

    assert_waits(
        &item(&node, slowed).await,
        Duration::from_secs(30),
        "kind backoff",
    );

    // The node's default, jittered by the sample its seed gives this item's first attempt.
    let sample = Backoff::seeded_sample(SEED, plain.0 as u64, 1);
    let jittered = Backoff::default().delay(1, sample);
    assert_waits(&item(&node, plain).await, jittered, "node default");
    assert!(
        jittered < Duration::from_secs(1) && jittered >= Duration::from_millis(900),
        "the default takes up to 10 % off 1 s: {jittered:?}"
    );
    assert_eq!(node.stats().retried, 3);
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_kinds_schedule_until_the_spent_budget_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now());
    let node = builder(store(&dir).await, "budget", &clock)
        .workers(1)
        .handler("slow", fails)
        .handler("limited", rate_limited)
        .kind_backoff("slow", slow())
        .start()
        .await
        .unwrap();
    let mut events = node.events();
    let id = node
        .enqueue(NewItem::new("slow", json!({})).max_attempts(3))
        .await
        .unwrap();
    for (attempt, delay) in [(1, 30), (2, 90)] {
        assert!(
            !attempt_failed(&mut events, id).await,
            "attempt {attempt} retries"
        );
        let it = item(&node, id).await;
        assert_eq!(it.attempts, attempt);
        assert_waits(
            &it,
            Duration::from_secs(delay),
            &format!("attempt {attempt}"),
        );
        // Due now: the idle worker's next poll takes it for the next attempt.
        clock.advance(Duration::from_secs(delay));
    }
    assert!(
        attempt_failed(&mut events, id).await,
        "the third attempt spends the budget"
    );
    let it = item(&node, id).await;
    assert_eq!((it.status, it.attempts), (ItemStatus::Failed, 3));
    assert_eq!(it.error.as_deref(), Some("flaky dependency"));

    // A requested delay does not buy attempts beyond the budget either.
    let last = node
        .enqueue(NewItem::new("limited", json!({})).max_attempts(1))
        .await
        .unwrap();
    assert!(
        attempt_failed(&mut events, last).await,
        "dead-lettered at once"
    );
    let it = item(&node, last).await;
    assert_eq!((it.status, it.attempts), (ItemStatus::Failed, 1));
    assert_eq!(node.stats().dead_lettered, 2);
    assert_eq!(node.stats().retried, 2);
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_kind_backoff_is_refused_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let clock = ManualClock::new(SystemClock.now());
    let bad = Backoff {
        jitter: 1.5,
        ..Backoff::default()
    };
    let err = builder(s.clone(), "bad", &clock)
        .handler("slow", fails)
        .kind_backoff("slow", bad)
        .start()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("kind_backoff") && msg.contains("\"slow\"") && msg.contains("jitter"),
        "{msg}"
    );

    let err = builder(s.clone(), "typo", &clock)
        .handler("slow", fails)
        .kind_backoff("slwo", slow())
        .start()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("kind_backoff") && msg.contains("no handler") && msg.contains("slwo"),
        "{msg}"
    );

    // With a fallback handler every kind runs here, so any kind may have a schedule.
    let node = builder(s, "fallback", &clock)
        .fallback_handler(fails)
        .kind_backoff("anything", slow())
        .start()
        .await
        .unwrap();
    assert_eq!(node.config().backoff_for("anything"), &slow());
    assert_eq!(node.config().backoff_for("other"), &Backoff::default());
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}
