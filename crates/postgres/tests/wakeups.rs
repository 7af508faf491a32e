//! LISTEN/NOTIFY reaches the runtime: a node whose idle workers have backed off towards a long
//! poll interval picks up an item that another process (here: another `PgStore`, with its own
//! pool) enqueued, at once, because the node listens to its store's wake-ups. Each test works in
//! its own schema; without `LEASEHOLD_PG_URL` each prints why it was skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_core::store::Wakeups;
use leasehold_core::{Clock, ItemStatus, NewItem, Store, SystemClock};
use leasehold_postgres::testing::{store_or_skip, TestSchema};
use leasehold_postgres::{PgStore, WAKE_ALL};
use leasehold_runtime::faults::FaultyStore;
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};
use serde_json::json;
use tokio::sync::broadcast;

/// The node's poll interval: far longer than any pickup the test accepts.
const POLL_INTERVAL: Duration = Duration::from_secs(30);
/// The test enqueues once an idle worker's empty polls are at least this far apart: its next
/// timed poll is then at least this far off (idle back-off only grows), so a pickup sooner
/// than [`PROMPT`] can only come from a wake-up.
const QUIET_GAP: Duration = Duration::from_secs(2);
/// The longest a woken pickup may take (NOTIFY, the listener, the worker's acquire), with room
/// for two shared cores under load.
const PROMPT: Duration = Duration::from_secs(1);
/// A bound on every wait, so a broken build fails instead of hanging.
const GIVE_UP: Duration = Duration::from_secs(90);

async fn next_event(
    rx: &mut broadcast::Receiver<NodeEvent>,
    pick: impl Fn(&NodeEvent) -> bool,
) -> Instant {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if pick(&e) => return Instant::now(),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the event stream closed"),
            }
        }
    };
    tokio::time::timeout(GIVE_UP, wait)
        .await
        .expect("no matching event in time")
}

/// A store listening to its wake-ups, and a second store (its own pool) on the same schema
/// whose writes the first should hear; `None` when the test is skipped.
async fn listener_and_writer(
    test: &str,
) -> Option<(PgStore, Box<dyn Wakeups>, PgStore, TestSchema)> {
    let (store, schema) = store_or_skip(test, "lh_wake").await?;
    let wakeups = store
        .wakeups()
        .await
        .expect("listen")
        .expect("PostgreSQL has wake-ups");
    let other = PgStore::open(&schema.url())
        .await
        .expect("open a second store");
    Some((store, wakeups, other, schema))
}

#[tokio::test]
async fn an_idle_node_picks_up_an_item_another_store_enqueued_without_waiting_for_its_poll() {
    let test = "an_idle_node_picks_up_an_item_another_store_enqueued_without_waiting_for_its_poll";
    let Some((store, schema)) = store_or_skip(test, "lh_wake").await else {
        return;
    };
    // The node's store reports every acquisition: the test's signal that an idle worker
    // polled and found nothing.
    let observed = Arc::new(FaultyStore::new(Arc::new(store)));
    let mut polls = observed.acquisitions();
    let builder = Leasehold::builder(observed.clone())
        .node_id("listener")
        .workers(1)
        .poll_interval(POLL_INTERVAL)
        .handler("echo", |ctx: JobContext| async move {
            Ok::<_, JobError>(ctx.input().clone())
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.expect("start");

    // Wait (on the store's reports, not a timer) until the idle worker's empty polls are
    // QUIET_GAP apart.
    let mut last: Option<Instant> = None;
    let (quiet_since, gap) = loop {
        let (at, found) = match tokio::time::timeout(GIVE_UP, polls.recv())
            .await
            .expect("the worker kept polling")
        {
            Ok(poll) => poll,
            // Missed reports only lose a gap to measure: start measuring again.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                last = None;
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => panic!("the store went away"),
        };
        assert_eq!(found, 0, "nothing was enqueued yet");
        if let Some(gap) = last.map(|prev| at.duration_since(prev)) {
            if gap >= QUIET_GAP {
                break (at, gap);
            }
        }
        last = Some(at);
    };

    // Another process's enqueue: a second store with its own pool, not the node's handle.
    let other = PgStore::open(&schema.url())
        .await
        .expect("open a second store");
    let enqueued = Instant::now();
    let id = other
        .item_enqueue(
            NewItem::new("echo", json!({ "from": "elsewhere" })),
            SystemClock.now(),
        )
        .await
        .expect("enqueue");
    let acquired = next_event(
        &mut events,
        |e| matches!(e, NodeEvent::Acquired { item, .. } if *item == id),
    )
    .await;
    next_event(
        &mut events,
        |e| matches!(e, NodeEvent::Completed { item, .. } if *item == id),
    )
    .await;
    let pickup = acquired.duration_since(enqueued);
    println!(
        "{test}: enqueued {:?} after the worker's last empty poll (its polls were {:?} apart); \
         picked up {:?} after the enqueue (poll interval {:?})",
        enqueued.duration_since(quiet_since),
        gap,
        pickup,
        POLL_INTERVAL
    );
    assert!(
        pickup < PROMPT,
        "picked up after {pickup:?}: that is the worker's timed poll, not a wake-up"
    );
    let item = other.item_get(id).await.expect("read").expect("the item");
    assert_eq!(item.status, ItemStatus::Completed);
    assert_eq!(item.output, Some(json!({ "from": "elsewhere" })));
    let report = node
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    assert!(report.registry_marked_stopped);
}

#[tokio::test]
async fn wakeups_carry_the_counts_of_ready_items_other_stores_commit() {
    let test = "wakeups_carry_the_counts_of_ready_items_other_stores_commit";
    let Some((store, mut wakeups, other, _schema)) = listener_and_writer(test).await else {
        return;
    };
    let now = SystemClock.now();
    let items = (0..3).map(|i| NewItem::new("k", json!(i))).collect();
    other.items_enqueue(items, now).await.expect("enqueue");
    let count = tokio::time::timeout(GIVE_UP, wakeups.next())
        .await
        .expect("a wake-up");
    assert_eq!(count, Some(3));
    assert_ne!(count, Some(WAKE_ALL));
    // The listener belongs to the store: once every clone is gone, the wake-ups end.
    drop(store);
    let end = tokio::time::timeout(GIVE_UP, wakeups.next())
        .await
        .expect("the stream ends");
    assert_eq!(end, None);
    println!("{test}: one wake-up of 3 for a batch of 3, then the end when the store went");
}

/// Resuming a paused kind wakes every listening node's idle workers (its items may have
/// waited while their polls backed off); pausing, and resuming a kind that was not paused,
/// wake nobody.
#[tokio::test]
async fn resuming_a_paused_kind_wakes_every_listening_node() {
    let test = "resuming_a_paused_kind_wakes_every_listening_node";
    let Some((_store, mut wakeups, other, _schema)) = listener_and_writer(test).await else {
        return;
    };
    let now = SystemClock.now();
    assert!(other.kind_pause("mail", now).await.expect("pause"));
    assert!(
        !other.kind_resume("sms").await.expect("resume"),
        "sms was not paused"
    );
    assert!(other.kind_resume("mail").await.expect("resume"));
    let first = tokio::time::timeout(GIVE_UP, wakeups.next())
        .await
        .expect("a wake-up");
    assert_eq!(first, Some(WAKE_ALL), "the resume's, and nothing before it");
    // Nothing else was sent: an enqueue of two is the next wake-up.
    let items = (0..2).map(|i| NewItem::new("k", json!(i))).collect();
    other.items_enqueue(items, now).await.expect("enqueue");
    let next = tokio::time::timeout(GIVE_UP, wakeups.next())
        .await
        .expect("a wake-up");
    assert_eq!(next, Some(2));
}
