//! The seeded chaos run as a test: a tree on a real SQLite file works through items while
//! workers, heartbeats and the reaper are killed at random; the invariant checker then reads
//! the store. Several seeds; a failure prints the seed to replay it with the chaos example
//! (`cargo run --release --example chaos -- --seed S`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use leasehold::runtime::chaos::{run_chaos, ChaosOptions};
use leasehold::runtime::{JobContext, JobError, Leasehold};
use leasehold::SqliteStore;

async fn chaos(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("chaos.db"))
            .await
            .unwrap(),
    );
    let builder = Leasehold::builder(store)
        .node_id(format!("chaos-test-{seed}"))
        .workers(4)
        .lease(Duration::from_secs(2))
        .heartbeat(Duration::from_millis(200))
        .sweep(Duration::from_millis(300))
        .stale(Duration::from_secs(30))
        .restart_intensity(1_000_000, Duration::from_secs(1))
        .backoff(leasehold::Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(10),
            ..leasehold::Backoff::default()
        })
        .handler("noop", |ctx: JobContext| async move {
            // Long enough that kills land mid-handler, not only mid-commit.
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<_, JobError>(json!({ "n": ctx.input()["n"] }))
        });
    let report = run_chaos(
        builder,
        ChaosOptions {
            items: 2000,
            kill_every: Duration::from_millis(10),
            seed,
            pickup_samples: 0,
            deadline: Duration::from_secs(60),
            ..ChaosOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("chaos seed {seed}: the run failed: {e}"));
    eprintln!(
        "chaos seed {seed}: {} kills ({} of busy workers), {} restarts, {} recovered on start, recovery p99 {:.1} ms over {} samples, {} ms",
        report.kills,
        report.kills_of_busy_workers,
        report.restarts,
        report.recovered_on_start,
        report.recovery_p99_ms,
        report.recovery_samples,
        report.elapsed_ms
    );
    assert!(
        report.is_clean(),
        "chaos seed {seed} violated an invariant: {report:?}"
    );
    assert!(
        report.kills > 0,
        "chaos seed {seed}: nothing was killed, so nothing was tested: {report:?}"
    );
    // Ten attempts each and a few dozen kills: no item can honestly spend its budget.
    assert_eq!(
        report.completed, report.items as u64,
        "chaos seed {seed}: every item completes: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_lose_nothing_and_complete_nothing_twice() {
    for seed in [1, 2, 3] {
        chaos(seed).await;
    }
}
