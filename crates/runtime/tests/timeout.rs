//! Execution timeouts against a real SQLite file: a handler that hangs (and ignores its
//! cancellation) has each attempt failed as timed out, cannot write once its deadline passed,
//! is aborted after the grace period, and is dead-lettered when its budget is spent; an item's
//! timeout beats its kind's, which beats the node's; and a timed-out attempt whose failure
//! cannot be written is no longer vouched for, so the reaper takes it back; a bad timeout is
//! refused at start, naming the setting.
//!
//! Timeouts run on tokio timers in real time (the SQLite store answers from its own thread, so
//! paused time would jump past a timeout while a store call is on its way); they are short,
//! and tests wait on the node's events and the store's renewals and acquisitions, never on
//! sleeps.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use leasehold_core::{
    Backoff, Clock, Item, ItemId, ItemStatus, ManualClock, NewItem, Store, StoreError, SystemClock,
};
use leasehold_runtime::faults::FaultyStore;
use leasehold_runtime::{
    JobContext, JobError, Leasehold, LeaseholdBuilder, NodeEvent, NodeHandle, SweepOutcome,
};
use leasehold_sqlite::SqliteStore;

mod common;
use common::{wait_for, WAIT};

async fn store(dir: &tempfile::TempDir) -> Arc<FaultyStore> {
    let sqlite: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("timeout.db"))
            .await
            .expect("open store"),
    );
    Arc::new(FaultyStore::new(sqlite))
}

/// A node whose leases never lapse on their own under the test (60 s of the store's clock,
/// renewed every 50 ms) and whose reaper never sweeps unasked: only timeouts end attempts.
fn builder(store: Arc<FaultyStore>, node: &str) -> LeaseholdBuilder {
    Leasehold::builder(store)
        .node_id(node)
        .lease(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(50))
        .sweep(Duration::from_secs(3600))
        .stale(Duration::from_secs(3600))
        .poll_interval(Duration::from_millis(50))
        .cancel_grace(Duration::from_millis(100))
        .backoff(quick_retry())
}

/// Retries at once, so a test waits only for the timeouts themselves.
fn quick_retry() -> Backoff {
    Backoff {
        initial: Duration::from_millis(1),
        factor: 1.0,
        max: Duration::from_millis(1),
        jitter: 0.0,
    }
}

/// Sends on drop: tells the test that a handler's future was dropped (aborted).
struct DropSignal(mpsc::UnboundedSender<u32>, u32);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

async fn item(node: &NodeHandle, id: ItemId) -> Item {
    node.store()
        .item_get(id)
        .await
        .unwrap()
        .expect("item exists")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_handler_times_out_cannot_write_late_is_aborted_and_dead_letters_after_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let late_writes: Arc<Mutex<Vec<Result<(), StoreError>>>> = Arc::default();
    let (late, started) = (late_writes.clone(), Arc::new(AtomicU32::new(0)));
    let starts = started.clone();
    let builder = builder(store(&dir).await, "hung")
        .workers(1)
        .kind_timeout("hang", Duration::from_millis(200))
        .handler("hang", move |ctx: JobContext| {
            let (late, dropped_tx) = (late.clone(), dropped_tx.clone());
            starts.fetch_add(1, Ordering::SeqCst);
            async move {
                let _signal = DropSignal(dropped_tx, ctx.attempt());
                assert_eq!(ctx.timeout(), Some(Duration::from_millis(200)));
                // Hangs until cancelled, then misbehaves: writes anyway and never returns.
                ctx.cancelled().await;
                let r = ctx.progress(json!({"late": ctx.attempt()})).await;
                late.lock().unwrap().push(r);
                std::future::pending::<()>().await;
                Ok::<_, JobError>(json!("never"))
            }
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();
    let id = node
        .enqueue(NewItem::new("hang", json!({})).max_attempts(2))
        .await
        .unwrap();

    for attempt in 1..=2 {
        let (epoch, timeout_ms) =
            wait_for(&mut events, &format!("timeout {attempt}"), |e| match e {
                NodeEvent::TimedOut {
                    item,
                    epoch,
                    timeout_ms,
                } if *item == id => Some((*epoch, *timeout_ms)),
                _ => None,
            })
            .await;
        assert_eq!((epoch, timeout_ms), (attempt as i64, 200));
        let dead = attempt_failed(&mut events, id).await;
        assert_eq!(
            dead,
            attempt == 2,
            "attempt {attempt}: dead-lettered only at the end"
        );
        // The handler ignored its cancellation: it is aborted after the grace period.
        let which = tokio::time::timeout(WAIT, dropped.recv())
            .await
            .expect("the hung handler was aborted after the grace period")
            .unwrap();
        assert_eq!(which, attempt);
    }

    let it = item(&node, id).await;
    assert_eq!(it.status, ItemStatus::Failed, "dead-lettered: {it:?}");
    assert_eq!(it.attempts, 2);
    assert_eq!(
        it.error.as_deref(),
        Some("timed out after 0.2 s: the handler was cancelled")
    );
    assert_eq!(it.progress, None, "no late write landed");
    let late = std::mem::take(&mut *late_writes.lock().unwrap());
    assert_eq!(late.len(), 2, "each attempt saw its cancellation: {late:?}");
    for r in late.iter() {
        assert!(
            r.as_ref().is_err_and(StoreError::is_lease_lost),
            "a write after the deadline is refused: {r:?}"
        );
    }
    assert_eq!(started.load(Ordering::SeqCst), 2);
    let stats = node.stats();
    assert_eq!(
        (stats.timed_out, stats.retried, stats.dead_lettered),
        (2, 1, 1)
    );
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_timeout_beats_the_kinds_which_beats_the_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let hang = |_ctx: JobContext| async move {
        std::future::pending::<()>().await;
        Ok::<_, JobError>(json!(null))
    };
    let builder = builder(store(&dir).await, "precedence")
        .workers(4)
        .timeout(Duration::from_millis(450))
        .kind_timeout("own", Duration::from_millis(300))
        .handler("own", hang)
        .handler("plain", hang)
        .handler("quick", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!("done"))
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();
    let ids = node
        .enqueue_many(vec![
            NewItem::new("own", json!("item's"))
                .timeout(Duration::from_millis(150))
                .max_attempts(1),
            NewItem::new("own", json!("kind's")).max_attempts(1),
            NewItem::new("plain", json!("node's")).max_attempts(1),
            NewItem::new("quick", json!("none needed")).max_attempts(1),
        ])
        .await
        .unwrap();
    for id in &ids[..3] {
        assert!(attempt_failed(&mut events, *id).await, "one attempt each");
    }
    let errors: Vec<_> = dead_letter_errors(&node, &ids[..3]).await;
    assert_eq!(
        errors,
        [
            "timed out after 0.15 s: the handler was cancelled",
            "timed out after 0.3 s: the handler was cancelled",
            "timed out after 0.45 s: the handler was cancelled",
        ]
    );
    let quick = item(&node, ids[3]).await;
    assert_eq!(quick.status, ItemStatus::Completed);
    assert_eq!(quick.timeout, None);
    assert_eq!(
        item(&node, ids[0]).await.timeout,
        Some(Duration::from_millis(150)),
        "the item's own timeout is stored on it"
    );
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

async fn dead_letter_errors(node: &NodeHandle, ids: &[ItemId]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let it = item(node, *id).await;
        assert_eq!(it.status, ItemStatus::Failed, "{it:?}");
        out.push(it.error.unwrap_or_default());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_attempt_whose_failure_cannot_be_written_is_not_renewed_and_the_reaper_takes_it()
{
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let clock = ManualClock::new(SystemClock.now());
    let builder = builder(store.clone(), "unwritten")
        .workers(1)
        .clock(Arc::new(clock.clone()))
        // Renewals that fail while the store is down must not end the lease on their own.
        .max_heartbeat_failures(1000)
        .timeout(Duration::from_millis(200))
        .handler("hang", |_ctx: JobContext| async move {
            std::future::pending::<()>().await;
            Ok::<_, JobError>(json!(null))
        });
    let mut events = builder.subscribe();
    let mut renewals = store.renewals();
    let mut acquisitions = store.acquisitions();
    let node = builder.start().await.unwrap();
    let id = node
        .enqueue(NewItem::new("hang", json!({})).max_attempts(2))
        .await
        .unwrap();
    let epoch = wait_for(&mut events, "the acquisition", |e| match e {
        NodeEvent::Acquired { item, epoch, .. } if *item == id => Some(*epoch),
        _ => None,
    })
    .await;
    wait_for(&mut renewals, "a renewal before the deadline", |(l, _)| {
        (l.item == id && l.epoch == epoch).then_some(())
    })
    .await;

    // The store goes down across the deadline, for longer than the worker retries the failure.
    store.fail_for(Duration::from_secs(3));
    wait_for(&mut events, "the timeout", |e| {
        matches!(e, NodeEvent::TimedOut { item, .. } if *item == id).then_some(())
    })
    .await;
    // What came before the store went down (the busy worker does not poll meanwhile).
    while renewals.try_recv().is_ok() {}
    while acquisitions.try_recv().is_ok() {}
    let before = clock.now();
    // The worker polls again only after it gave the failure up; its first answered poll means
    // the store is back. Then let several heartbeat intervals pass with the store healthy.
    let (healed_at, _) = wait_for(&mut acquisitions, "the store's recovery", |a| Some(*a)).await;
    wait_for(&mut acquisitions, "four heartbeat intervals", |(at, _)| {
        (at.duration_since(healed_at) >= Duration::from_millis(200)).then_some(())
    })
    .await;
    let it = item(&node, id).await;
    assert_eq!(
        (it.status, it.epoch, it.error.as_deref()),
        (ItemStatus::InProgress, epoch, None),
        "the failure was not written"
    );
    let mut renewed = Vec::new();
    while let Ok((lease, at)) = renewals.try_recv() {
        renewed.push((lease, at));
    }
    assert!(
        renewed.iter().all(|(l, _)| l.item != id),
        "the lease was renewed past its deadline: {renewed:?}"
    );

    // The lease lapses; the owner no longer vouches for the item, so the reaper takes it back.
    clock.set(before.plus(Duration::from_secs(61)));
    let outcome = node.sweep_now().await.unwrap();
    let SweepOutcome::Swept(stats) = outcome else {
        panic!("reaper stood down: {outcome:?}")
    };
    assert_eq!((stats.recovered, stats.skipped_alive), (1, 0), "{stats:?}");
    // The second and last attempt times out too, and this failure is written.
    assert!(attempt_failed(&mut events, id).await);
    let it = item(&node, id).await;
    assert_eq!((it.status, it.attempts), (ItemStatus::Failed, 2), "{it:?}");
    assert_eq!(
        it.error.as_deref(),
        Some("timed out after 0.2 s: the handler was cancelled")
    );
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_timeouts_are_refused_at_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let ok = |_ctx: JobContext| async move { Ok::<_, JobError>(json!(null)) };
    let cases: Vec<(LeaseholdBuilder, &str)> = vec![
        (
            builder(store.clone(), "bad-node").timeout(Duration::ZERO),
            "LEASEHOLD_TIMEOUT_S",
        ),
        (
            builder(store.clone(), "bad-kind").kind_timeout("job", Duration::from_micros(10)),
            "kind_timeout",
        ),
        (
            builder(store.clone(), "unknown-kind").kind_timeout("nobody", Duration::from_secs(1)),
            "kind_timeout",
        ),
    ];
    for (b, needle) in cases {
        let err = b.handler("job", ok).start().await.unwrap_err();
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    assert_eq!(
        store.items_count().await.unwrap(),
        Default::default(),
        "nothing was written"
    );
}
