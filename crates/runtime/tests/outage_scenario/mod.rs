//! The store-outage scenario both backends run (crates/runtime/tests/store_outage.rs on SQLite,
//! crates/postgres/tests/store_outage.rs on PostgreSQL): a store that is down when the tree
//! starts. The workers' `recover_mine` fails for a minute; they back off and retry instead of
//! failing, so the supervisor's restart intensity is never spent and the tree does not
//! escalate; once the store returns, every item (the ones a crashed predecessor held included)
//! completes exactly once.
//!
//! The outage passes on tokio's paused clock, so the minute costs no wall time; the clock runs
//! for real again once the store is back. The store is a real one behind a [`FaultyStore`] that
//! fails every call until the minute has passed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast;

use leasehold_core::{AcquireRequest, Clock, ItemId, NewItem, Store, TokioClock};
use leasehold_runtime::faults::{check_invariants, FaultyStore};
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};

/// How long the store is down.
const OUTAGE: Duration = Duration::from_secs(60);
/// After the outage, far longer than the slowest recovery backoff (5 s) plus the work: a test
/// that waits this long has failed.
const PATIENCE: Duration = Duration::from_secs(120);

/// Runs the outage scenario against `real` (an empty store) and checks that nothing was lost
/// or escalated. Call it on a current-thread runtime (`#[tokio::test]`): it pauses the clock.
pub(crate) async fn tree_survives_a_store_down_at_start(real: Arc<dyn Store>, node_id: &str) {
    let clock = TokioClock::new();
    let started = tokio::time::Instant::now();
    let mut ids: Vec<ItemId> = real
        .items_enqueue(
            (0..20)
                .map(|i| NewItem::new("job", json!({ "n": i })).max_attempts(3))
                .collect(),
            clock.now(),
        )
        .await
        .unwrap();
    // A predecessor of this node crashed holding two items: recover_mine must take them back.
    for w in 0..2 {
        let crashed = AcquireRequest::new(format!("{node_id}/w{w}"), Duration::from_secs(3600))
            .node(node_id, 1);
        real.item_acquire(&crashed, clock.now())
            .await
            .unwrap()
            .expect("an item for the crashed predecessor");
    }
    let faulty = Arc::new(FaultyStore::new(real.clone()));
    // The node's registration gets through (its start would otherwise wait out the outage on
    // the real clock, before the workers ever ran); everything the running tree does fails.
    faulty.spare_registration(true);
    faulty.fail_for(OUTAGE);
    let builder = Leasehold::builder(faulty.clone())
        .node_id(node_id)
        .workers(2)
        .clock(Arc::new(clock))
        .lease(Duration::from_secs(300))
        .heartbeat(Duration::from_secs(10))
        .sweep(Duration::from_secs(30))
        .stale(Duration::from_secs(900))
        .poll_interval(Duration::from_secs(1))
        // Tight on purpose: a worker that failed on every failed recover_mine would spend
        // this within seconds of the outage.
        .restart_intensity(3, Duration::from_secs(60))
        .record_completions(true)
        .handler("job", |ctx: JobContext| async move {
            Ok::<_, JobError>(json!({ "done": ctx.item().id.0 }))
        });
    let mut events = builder.subscribe();
    let node = builder
        .start()
        .await
        .expect("the tree starts with its store down");
    // Paused only now: the store was set up, and the node started, on the real clock (a
    // paused clock leaps to the next timer, a connect timeout say, while it waits on I/O).
    tokio::time::pause();
    // The outage passes in paused time: every call fails at once without reaching SQLite, so
    // tokio jumps from one backoff timer to the next. Then the clock runs for real again,
    // because with SQLite answering from its own thread a paused clock would leap ahead to the
    // next timer during every statement.
    tokio::time::sleep(OUTAGE).await;
    tokio::time::resume();
    let waited = tokio::time::timeout(PATIENCE, async {
        let mut left: std::collections::HashSet<ItemId> = ids.iter().copied().collect();
        let mut first_start = None;
        while !left.is_empty() {
            match events.recv().await {
                Ok(NodeEvent::Completed { item, .. }) => {
                    left.remove(&item);
                }
                Ok(NodeEvent::WorkerStarted { .. }) => {
                    first_start.get_or_insert_with(tokio::time::Instant::now);
                }
                Ok(NodeEvent::Escalated { reason }) => panic!("the tree escalated: {reason}"),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream closed: {e}"),
            }
        }
        first_start
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "not every item completed within {PATIENCE:?} of a {OUTAGE:?} outage; exit: {:?}, stats: {:?}",
            node.exit_status(),
            node.stats()
        )
    });
    let first_start = waited.expect("workers announced their start");
    assert!(
        first_start.duration_since(started) >= OUTAGE,
        "no worker may start work before recover_mine succeeded (the store was down)"
    );
    assert_eq!(node.exit_status(), None, "the node is still running");
    let stats = node.stats();
    assert_eq!(stats.restarts, 0, "no child was restarted: {stats:?}");
    assert_eq!(stats.recovered_on_start, 2, "{stats:?}");
    ids.sort();
    let report = check_invariants(real.as_ref(), &ids, node.faults().completions().as_deref())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.counts.completed, ids.len() as u64, "{report:?}");
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}
