//! Chaos: a supervised tree works through N no-op items while actors are killed at random
//! every M ms (mostly workers, sometimes a heartbeat or the reaper); then the invariant checker
//! reads the store and the run prints a summary: lost items, double completions, kills,
//! restarts, and the time from a worker kill to the completion of the item it held.
//!
//! Run with `cargo run --release --example chaos -- --items 5000 --kill-every-ms 20 --workers 8 --work-ms 2 --seed 7`
//! (add `--json` for one JSON object on the last line).

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use leasehold::runtime::chaos::{run_chaos, ChaosOptions};
use leasehold::runtime::{JobContext, JobError, Leasehold};
use leasehold::SqliteStore;

#[derive(Parser, Debug)]
#[command(about = "Kill actors at random while a tree works; check nothing is lost.")]
struct Args {
    /// Items to process.
    #[arg(long, default_value_t = 2000)]
    items: usize,
    /// Milliseconds between kills.
    #[arg(long, default_value_t = 50)]
    kill_every_ms: u64,
    /// Workers in the tree.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Milliseconds each item's handler works (so kills land mid-handler, not mid-commit).
    #[arg(long, default_value_t = 2)]
    work_ms: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Database file (default: a fresh temporary file).
    #[arg(long)]
    db: Option<std::path::PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.items == 0 || args.workers == 0 || args.kill_every_ms == 0 {
        return Err("--items, --workers and --kill-every-ms must be at least 1".into());
    }
    let dir = tempfile::tempdir()?;
    let path = args
        .db
        .clone()
        .unwrap_or_else(|| dir.path().join("chaos.db"));
    let store = Arc::new(SqliteStore::open(&path).await?);
    let work = Duration::from_millis(args.work_ms);
    let builder = Leasehold::builder(store)
        .node_id(format!("chaos-{}", args.seed))
        .workers(args.workers)
        .lease(Duration::from_secs(2))
        .heartbeat(Duration::from_millis(200))
        .sweep(Duration::from_millis(500))
        .stale(Duration::from_secs(30))
        .restart_intensity(1_000_000, Duration::from_secs(1))
        .backoff(leasehold::Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(20),
            ..leasehold::Backoff::default()
        })
        .handler("noop", move |ctx: JobContext| async move {
            tokio::time::sleep(work).await;
            Ok::<_, JobError>(json!({ "n": ctx.input()["n"] }))
        });
    let report = run_chaos(
        builder,
        ChaosOptions {
            items: args.items,
            kill_every: Duration::from_millis(args.kill_every_ms),
            seed: args.seed,
            ..ChaosOptions::default()
        },
    )
    .await?;
    println!(
        "chaos seed {}: {} items, {} completed, {} failed, {} lost, {} double completions, {} unfinished",
        report.seed,
        report.items,
        report.completed,
        report.failed,
        report.lost,
        report.double_completions,
        report.unfinished
    );
    println!(
        "{} kills ({} of busy workers), {} restarts, {} items recovered on restart",
        report.kills, report.kills_of_busy_workers, report.restarts, report.recovered_on_start
    );
    println!(
        "recovery kill→completion: p50 {:.2} ms, p99 {:.2} ms over {} samples; pickup enqueue→acquire: p50 {:.3} ms, p99 {:.3} ms; {} ms",
        report.recovery_p50_ms,
        report.recovery_p99_ms,
        report.recovery_samples,
        report.pickup_p50_ms,
        report.pickup_p99_ms,
        report.elapsed_ms
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    if !report.is_clean() {
        return Err(format!(
            "invariants violated (seed {}): {:?}",
            report.seed, report.invariants
        )
        .into());
    }
    Ok(())
}
