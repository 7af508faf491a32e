//! A seeded chaos run: a tree works through N items while actors are killed at random; the
//! invariant checker reads the store afterwards. Used by `examples/chaos.rs` and the chaos test.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use leasehold_core::{ItemId, ItemStatus, NewItem};

use crate::builder::LeaseholdBuilder;
use crate::error::RuntimeError;
use crate::events::NodeEvent;
use crate::faults::{check_invariants, InvariantReport};

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// Items to work through.
    pub items: usize,
    /// The kind to enqueue (the builder must have a handler for it).
    pub kind: String,
    /// Retry budget per item.
    pub max_attempts: u32,
    /// Time between kills.
    pub kill_every: Duration,
    /// The seed of every random choice.
    pub seed: u64,
    /// Single-item enqueues through the handle, timed from enqueue to acquisition, before the
    /// chaos starts (0 to skip).
    pub pickup_samples: usize,
    /// Give up (and report what is left) after this long.
    pub deadline: Duration,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            items: 2000,
            kind: "noop".into(),
            max_attempts: 10,
            kill_every: Duration::from_millis(50),
            seed: 1,
            pickup_samples: 200,
            deadline: Duration::from_secs(300),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// Items enqueued.
    pub items: usize,
    /// Items completed.
    pub completed: u64,
    /// Items dead-lettered.
    pub failed: u64,
    /// Items missing from the store.
    pub lost: usize,
    /// Items whose completion was acknowledged twice.
    pub double_completions: usize,
    /// Items still pending or in progress when the run ended.
    pub unfinished: usize,
    /// Attempts over budget.
    pub over_budget: usize,
    /// Actors killed (workers, heartbeats, reaper).
    pub kills: u64,
    /// Of which workers holding an item.
    pub kills_of_busy_workers: u64,
    /// Restarts the supervisor performed.
    pub restarts: u64,
    /// Items recover_mine took back on worker restarts.
    pub recovered_on_start: u64,
    /// Median time from killing a busy worker to the completion of the item it held.
    pub recovery_p50_ms: f64,
    /// 99th percentile of the same.
    pub recovery_p99_ms: f64,
    /// Recovery samples measured.
    pub recovery_samples: usize,
    /// Median time from an enqueue through the handle to an idle worker's acquisition.
    pub pickup_p50_ms: f64,
    /// 99th percentile of the same.
    pub pickup_p99_ms: f64,
    /// Wall time of the chaos phase.
    pub elapsed_ms: u128,
    /// The invariant checker's full report.
    pub invariants: InvariantReport,
}

impl ChaosReport {
    /// Every invariant held and every item finished.
    pub fn is_clean(&self) -> bool {
        self.invariants.is_clean() && self.unfinished == 0
    }
}

/// Runs the chaos described by `opts` on a node built from `builder` (which must record
/// completions and have a handler for `opts.kind`), then shuts it down and checks invariants.
pub async fn run_chaos(
    builder: LeaseholdBuilder,
    opts: ChaosOptions,
) -> Result<ChaosReport, RuntimeError> {
    let mut rng = SmallRng::seed_from_u64(opts.seed);
    let node = builder.record_completions(true).start().await?;
    let mut events = node.events();
    let mut all_ids = Vec::new();

    // Pickup latency: one item at a time into an idle tree.
    let mut pickups = Vec::with_capacity(opts.pickup_samples);
    for _ in 0..opts.pickup_samples {
        let t0 = Instant::now();
        let id = node
            .enqueue(
                NewItem::new(&opts.kind, json!({"pickup": true})).max_attempts(opts.max_attempts),
            )
            .await?;
        all_ids.push(id);
        let acquired = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Acquired { item, .. }) if item == id => {
                        return Some(t0.elapsed())
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        })
        .await;
        if let Ok(Some(d)) = acquired {
            pickups.push(d);
        }
        // Let the worker settle and go idle again.
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Completed { item, .. }) if item == id => return,
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                }
            }
        })
        .await
        .ok();
    }

    let started = Instant::now();
    let batch: Vec<NewItem> = (0..opts.items)
        .map(|i| NewItem::new(&opts.kind, json!({ "n": i })).max_attempts(opts.max_attempts))
        .collect();
    for chunk in batch.chunks(1000) {
        all_ids.extend(node.enqueue_many(chunk.to_vec()).await?);
    }
    let total = all_ids.len() as u64;

    let faults = node.faults();
    let mut kills = 0u64;
    let mut busy_kills = 0u64;
    let mut killed_at: HashMap<ItemId, Instant> = HashMap::new();
    let mut recoveries = Vec::new();
    let mut next_kill = tokio::time::Instant::now() + opts.kill_every;
    let deadline = tokio::time::Instant::now() + opts.deadline;
    let mut check = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_kill) => {
                next_kill += opts.kill_every;
                kills += 1;
                match rng.random_range(0..10u32) {
                    // Mostly workers: the fault that recover_mine answers.
                    0..=7 => {
                        let (_, held) = faults.kill_random_worker(|n| rng.random_range(0..n));
                        if let Some(item) = held {
                            busy_kills += 1;
                            let t = Instant::now();
                            // A worker is still "busy" for a moment after its item committed;
                            // only an item that was really in progress measures recovery.
                            let still_held = node
                                .store()
                                .item_get(item)
                                .await?
                                .is_some_and(|it| it.status == ItemStatus::InProgress);
                            if still_held {
                                killed_at.insert(item, t);
                            }
                        }
                    }
                    8 => {
                        let w = rng.random_range(0..faults.workers());
                        faults.kill_heartbeat(w).await;
                    }
                    _ => {
                        faults.kill_reaper();
                    }
                }
            }
            e = events.recv() => {
                if let Ok(NodeEvent::Completed { item, .. }) = e {
                    if let Some(t) = killed_at.remove(&item) {
                        recoveries.push(t.elapsed());
                    }
                }
            }
            _ = check.tick() => {
                let c = node.status().await?;
                if c.completed + c.failed + c.cancelled >= total {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    tracing::error!(?c, "chaos run gave up at its deadline");
                    break;
                }
                // Heartbeat kills leave leases to lapse; sweep so they come back promptly.
                let _ = node.sweep_now().await;
            }
        }
    }
    let elapsed = started.elapsed();
    let stats = node.stats();
    let completions = faults.completions();
    node.shutdown(Duration::from_secs(10)).await?;
    let invariants =
        check_invariants(node.store().as_ref(), &all_ids, completions.as_deref()).await?;
    Ok(ChaosReport {
        seed: opts.seed,
        items: all_ids.len(),
        completed: invariants.counts.completed,
        failed: invariants.counts.failed,
        lost: invariants.lost.len(),
        double_completions: invariants.double_completions.len(),
        unfinished: invariants.pending.len() + invariants.stuck_in_progress.len(),
        over_budget: invariants.over_budget.len(),
        kills,
        kills_of_busy_workers: busy_kills,
        restarts: stats.restarts,
        recovered_on_start: stats.recovered_on_start,
        recovery_p50_ms: percentile_ms(&mut recoveries, 0.50),
        recovery_p99_ms: percentile_ms(&mut recoveries, 0.99),
        recovery_samples: recoveries.len(),
        pickup_p50_ms: percentile_ms(&mut pickups, 0.50),
        pickup_p99_ms: percentile_ms(&mut pickups, 0.99),
        elapsed_ms: elapsed.as_millis(),
        invariants,
    })
}

/// The `p` quantile (nearest rank) in milliseconds; 0 when there are no samples.
pub fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort();
    let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1].as_secs_f64() * 1000.0
}
