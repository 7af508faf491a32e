//! The SQLite store's hot path, measured with criterion on a real file: batch enqueue, the
//! acquire/complete cycle of 16 concurrent workers (group commit), renewing many leases at
//! once, a reaper sweep over 100k expired leases, and the latency of one acquisition at queue
//! depths 1k, 100k and 1M.
//!
//! Run with `cargo bench --bench hot_path` (one group: `cargo bench --bench hot_path -- acquire_at_depth`).
//! The 1M-deep queue takes several seconds to build (batch enqueue, once per run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use serde_json::json;
use tokio::runtime::Runtime;

use leasehold::{
    AcquireRequest, Leased, NewItem, NoLiveness, ReapRequest, SqliteStore, Store, Timestamp,
};

/// Items per enqueue transaction when building queues.
const BATCH: usize = 1000;
const LEASE: Duration = Duration::from_secs(300);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A store on a fresh file in `dir`.
async fn store(dir: &tempfile::TempDir, name: &str) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(dir.path().join(name))
            .await
            .expect("open store"),
    )
}

/// Items with a retry budget no benchmark spends (the reaper bench requeues them again and
/// again).
fn items(n: usize) -> Vec<NewItem> {
    (0..n)
        .map(|i| NewItem::new("bench", json!({ "n": i })).max_attempts(1_000_000))
        .collect()
}

/// Enqueues `n` items in batches.
async fn fill(store: &dyn Store, n: usize, now: Timestamp) {
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        store.items_enqueue(items(k), now).await.expect("enqueue");
        left -= k;
    }
}

fn request(owner: String) -> AcquireRequest {
    AcquireRequest::new(owner, LEASE)
}

fn batch_enqueue(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = rt.block_on(store(&dir, "enqueue.db"));
    let mut g = c.benchmark_group("batch_enqueue");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("1000_items_per_transaction", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let batch = items(BATCH);
                    let t = Instant::now();
                    store
                        .items_enqueue(batch, Timestamp(1_000))
                        .await
                        .expect("enqueue");
                    spent += t.elapsed();
                }
                spent
            })
        })
    });
    g.finish();
}

/// 16 concurrent callers each complete an item and acquire the next together, as workers do:
/// the store group-commits what arrives together.
fn acquire_complete_cycle(c: &mut Criterion) {
    const WORKERS: usize = 16;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = rt.block_on(store(&dir, "cycle.db"));
    let mut g = c.benchmark_group("acquire_complete_cycle");
    g.throughput(Throughput::Elements(WORKERS as u64));
    g.bench_function("16_workers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                fill(
                    store.as_ref(),
                    WORKERS * (iters as usize + 1),
                    Timestamp(1_000),
                )
                .await;
                let t = Instant::now();
                let runs = (0..WORKERS).map(|w| {
                    let store = store.clone();
                    async move {
                        let req = request(format!("bench/w{w}"));
                        let mut held = store
                            .item_acquire(&req, Timestamp(2_000))
                            .await
                            .expect("acquire");
                        for _ in 0..iters {
                            let Some(leased) = held.take() else { break };
                            let (done, next) = tokio::join!(
                                store.item_complete(&leased.lease, json!(null), Timestamp(2_000)),
                                store.item_acquire(&req, Timestamp(2_000)),
                            );
                            done.expect("complete");
                            held = next.expect("acquire");
                        }
                    }
                });
                join_all(runs).await;
                t.elapsed()
            })
        })
    });
    g.finish();
}

/// Renews 1000 leases at once (one heartbeat tick of 1000 busy workers).
fn renew_many(c: &mut Criterion) {
    const LEASES: usize = 1000;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = rt.block_on(store(&dir, "renew.db"));
    let leases: Vec<Leased> = rt.block_on(async {
        fill(store.as_ref(), LEASES, Timestamp(1_000)).await;
        let mut out = Vec::new();
        for w in 0..LEASES {
            let leased = store
                .item_acquire(&request(format!("bench/w{w}")), Timestamp(2_000))
                .await
                .expect("acquire")
                .expect("an item");
            out.push(leased);
        }
        out
    });
    let mut g = c.benchmark_group("renew_many");
    g.throughput(Throughput::Elements(LEASES as u64));
    g.bench_function("1000_leases_at_once", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for i in 0..iters {
                    let now = Timestamp(3_000 + i as i64);
                    let renewals = leases
                        .iter()
                        .map(|l| store.lease_renew(&l.lease, LEASE, now));
                    for r in join_all(renewals).await {
                        r.expect("renew");
                    }
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

/// One sweep that requeues 100k expired leases (their owners are judged dead).
fn reaper_sweep(c: &mut Criterion) {
    const EXPIRED: usize = 100_000;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = rt.block_on(store(&dir, "reap.db"));
    rt.block_on(fill(store.as_ref(), EXPIRED, Timestamp(1_000)));
    let mut g = c.benchmark_group("reaper_sweep");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EXPIRED as u64));
    g.bench_function("100k_expired_leases", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut spent = Duration::ZERO;
                for i in 0..iters {
                    // Untimed: lease every item with a lease that has run out by `now`.
                    let start = 2_000 + i as i64 * 1_000_000;
                    let mut req = request(format!("bench/dead{i}"));
                    req.limit = EXPIRED as u32;
                    let leased = store
                        .items_acquire(&req, Timestamp(start))
                        .await
                        .expect("acquire");
                    assert_eq!(leased.len(), EXPIRED);
                    let now = Timestamp(start + 600_000);
                    let sweep = ReapRequest::new(EXPIRED as u32, Duration::from_secs(3600));
                    let t = Instant::now();
                    let stats = store
                        .items_reap_expired(&sweep, &NoLiveness, now)
                        .await
                        .expect("sweep");
                    spent += t.elapsed();
                    assert_eq!(
                        stats.recovered as usize, EXPIRED,
                        "requeued {} of {EXPIRED} (dead-lettered {})",
                        stats.recovered, stats.failed
                    );
                }
                spent
            })
        })
    });
    g.finish();
}

/// The latency of one acquisition with `depth` ready items queued (each acquired item is
/// released again, untimed, so the depth stays put).
fn acquire_at_depth(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut g = c.benchmark_group("acquire_at_depth");
    for depth in [1_000usize, 100_000, 1_000_000] {
        let store = rt.block_on(async {
            let s = store(&dir, &format!("depth{depth}.db")).await;
            fill(s.as_ref(), depth, Timestamp(1_000)).await;
            s
        });
        let req = request("bench/w0".into());
        g.bench_with_input(BenchmarkId::from_parameter(depth), &depth, |b, _| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let leased = store
                            .item_acquire(&req, Timestamp(2_000))
                            .await
                            .expect("acquire")
                            .expect("an item");
                        spent += t.elapsed();
                        store
                            .item_release(&leased.lease, None, Timestamp(2_000))
                            .await
                            .expect("release");
                    }
                    spent
                })
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    batch_enqueue,
    acquire_complete_cycle,
    renew_many,
    reaper_sweep,
    acquire_at_depth
);
criterion_main!(benches);
