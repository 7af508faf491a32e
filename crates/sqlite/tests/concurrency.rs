//! Concurrency against one SQLite file: many tasks on one store, and two stores (two
//! connections, each on its own thread) driven from two OS threads at once. Every lease handed
//! out is recorded as (item, epoch, owner); with nothing failing, each item must be leased
//! exactly once (invariant 2), every item must end completed by its one holder (invariant 1),
//! and the counts must add up.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use leasehold_conformance::support::T0;
use leasehold_core::{
    AcquireRequest, ItemFilter, ItemId, ItemStatus, Leased, NewItem, Store, Timestamp,
};
use leasehold_sqlite::SqliteStore;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Long enough that no lease expires during a test; nothing reaps here anyway.
const LEASE: Duration = Duration::from_secs(300);

/// Every lease handed out: (item, epoch, owner).
type Ledger = Arc<Mutex<Vec<(ItemId, i64, String)>>>;

async fn open(path: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(path)
            .await
            .expect("open the SQLite store"),
    )
}

async fn enqueue(store: &dyn Store, n: usize) -> Vec<ItemId> {
    let mut ids = Vec::with_capacity(n);
    // In chunks: one transaction each, as a producer would.
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let items = chunk
            .iter()
            .map(|i| NewItem::new("job", json!({ "n": i })).priority((*i % 3) as i32))
            .collect();
        ids.extend(store.items_enqueue(items, T0).await.expect("items_enqueue"));
    }
    ids
}

/// One worker: acquires (alternating single and batch acquisitions of random size), records
/// each lease, renews some, completes all, until nothing is left. The clock moves a
/// millisecond per round so that timestamps differ.
async fn worker(store: Arc<dyn Store>, owner: String, seed: u64, ledger: Ledger) -> usize {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut done = 0;
    let mut round: i64 = 0;
    loop {
        round += 1;
        let now = Timestamp(T0.0 + round);
        let request = AcquireRequest::new(owner.clone(), LEASE).node(owner.clone(), 1);
        let leased: Vec<Leased> = if rng.random_bool(0.5) {
            store
                .item_acquire(&request, now)
                .await
                .expect("item_acquire")
                .into_iter()
                .collect()
        } else {
            let limit = rng.random_range(2..=8);
            store
                .items_acquire(&request.limit(limit), now)
                .await
                .expect("items_acquire")
        };
        if leased.is_empty() {
            return done;
        }
        ledger.lock().expect("ledger").extend(
            leased
                .iter()
                .map(|l| (l.item.id, l.lease.epoch, l.lease.owner.clone())),
        );
        for l in leased {
            if rng.random_ratio(1, 3) {
                store
                    .lease_renew(&l.lease, LEASE, now)
                    .await
                    .expect("the holder renews");
            }
            store
                .item_complete(
                    &l.lease,
                    json!({ "by": owner, "epoch": l.lease.epoch }),
                    now,
                )
                .await
                .expect("the holder completes");
            done += 1;
        }
    }
}

/// Each item leased exactly once, at epoch 1; each completed by that holder; counts add up.
async fn check(store: &dyn Store, ids: &[ItemId], ledger: &Ledger, completions: usize) {
    let ledger = ledger.lock().expect("ledger").clone();
    let mut holders: BTreeMap<ItemId, (i64, String)> = BTreeMap::new();
    for (id, epoch, owner) in &ledger {
        if let Some(first) = holders.insert(*id, (*epoch, owner.clone())) {
            panic!(
                "item {id} was leased twice: {first:?} and {:?}",
                (epoch, owner)
            );
        }
        assert_eq!(*epoch, 1, "item {id}: the first acquisition has epoch 1");
    }
    assert_eq!(holders.len(), ids.len(), "every item was leased");
    assert_eq!(completions, ids.len(), "every lease was completed once");

    let counts = store.items_count().await.expect("items_count");
    assert_eq!(counts.completed, ids.len() as u64, "{counts:?}");
    assert_eq!(counts.total(), ids.len() as u64, "{counts:?}");

    let mut after = None;
    let mut seen = 0;
    loop {
        let page = store
            .items_list(&ItemFilter {
                after,
                limit: 1000,
                ..ItemFilter::default()
            })
            .await
            .expect("items_list");
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for item in page {
            seen += 1;
            assert_eq!(item.status, ItemStatus::Completed, "item {}", item.id);
            assert_eq!((item.epoch, item.attempts), (1, 1), "item {}", item.id);
            let (_, owner) = &holders[&item.id];
            assert_eq!(
                item.output,
                Some(json!({ "by": owner, "epoch": 1 })),
                "item {} was completed by its one holder",
                item.id
            );
        }
    }
    assert_eq!(seen, ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_on_one_store_lease_each_item_exactly_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open(&dir.path().join("many-tasks.db")).await;
    let ids = enqueue(&*store, 3000).await;
    let ledger: Ledger = Arc::default();

    let tasks: Vec<_> = (0..16)
        .map(|w| {
            tokio::spawn(worker(
                Arc::clone(&store),
                format!("node-a/w{w}"),
                w,
                Arc::clone(&ledger),
            ))
        })
        .collect();
    let mut completions = 0;
    for t in tasks {
        completions += t.await.expect("worker task");
    }
    check(&*store, &ids, &ledger, completions).await;
}

#[test]
fn two_stores_on_one_file_from_two_threads_lease_each_item_exactly_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("two-connections.db");
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ids = setup.block_on(async { enqueue(&*open(&path).await, 3000).await });

    let ledger: Ledger = Arc::default();
    let start = Arc::new(Barrier::new(2));
    let threads: Vec<_> = ["node-a", "node-b"]
        .into_iter()
        .enumerate()
        .map(|(n, node)| {
            let (path, ledger, start) = (path.clone(), Arc::clone(&ledger), Arc::clone(&start));
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    // Each thread opens its own store: its own connection and connection thread.
                    let store = open(&path).await;
                    start.wait();
                    let tasks: Vec<_> = (0..4)
                        .map(|w| {
                            tokio::spawn(worker(
                                Arc::clone(&store),
                                format!("{node}/w{w}"),
                                (n * 100 + w) as u64,
                                Arc::clone(&ledger),
                            ))
                        })
                        .collect();
                    let mut completions = 0;
                    for t in tasks {
                        completions += t.await.expect("worker task");
                    }
                    completions
                })
            })
        })
        .collect();
    let per_thread: Vec<usize> = threads
        .into_iter()
        .map(|t| t.join().expect("driver thread"))
        .collect();
    println!("completions per store: {per_thread:?}");
    assert!(
        per_thread.iter().all(|n| *n > 0),
        "both stores took part: {per_thread:?}"
    );

    setup.block_on(async {
        let store = open(&path).await;
        check(&*store, &ids, &ledger, per_thread.iter().sum()).await;
    });
}
