//! Quickstart: enqueue work into the embedded SQLite store, run a supervised tree over it until
//! every item is done, and print the counts. Leases, heartbeats, the reaper and recover_mine are
//! all running underneath.
//!
//! Run with `cargo run --example quickstart` (optionally `-- --db URL --items N --workers W`;
//! the URL is a SQLite path or `postgres://…`, as `leasehold --db` takes).
//! Run it twice: the second run adds N more items to the same database.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use leasehold::runtime::{JobContext, JobError, Leasehold};
use leasehold::{NodeEvent, Store};

#[derive(Parser, Debug)]
#[command(about = "Enqueue work, run a leasehold tree over it, print the counts.")]
struct Args {
    /// SQLite database file.
    #[arg(long, default_value = "leasehold.db")]
    db: String,
    /// Items to enqueue.
    #[arg(long, default_value_t = 100)]
    items: usize,
    /// Workers in the tree.
    #[arg(long, default_value_t = 4)]
    workers: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.items == 0 || args.workers == 0 {
        return Err("--items and --workers must be at least 1".into());
    }
    let store: Arc<dyn Store> = leasehold::open_store(&args.db).await?;

    let node = Leasehold::builder(store.clone())
        .workers(args.workers)
        .handler("square", |ctx: JobContext| async move {
            let n = ctx.input()["n"]
                .as_i64()
                .ok_or_else(|| JobError::permanent("input needs an integer n"))?;
            Ok::<_, JobError>(json!({ "n": n, "square": n * n }))
        })
        .start()
        .await?;
    let mut events = node.events();

    let items = (0..args.items as i64)
        .map(|n| node.item("square", json!({ "n": n })))
        .collect();
    let ids = node.enqueue_many(items).await?;
    println!("enqueued {} items into {}", ids.len(), args.db);

    // Wait until everything this run enqueued has finished.
    let mut left: std::collections::HashSet<_> = ids.iter().copied().collect();
    while !left.is_empty() {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Ok(NodeEvent::Completed { item, .. })) => {
                left.remove(&item);
            }
            Ok(Ok(NodeEvent::AttemptFailed {
                item,
                dead_lettered: true,
            })) => {
                left.remove(&item);
            }
            Ok(Ok(_)) => {}
            // Missed events (a slow terminal): fall back to reading the store.
            Ok(Err(_)) | Err(_) => {
                let mut still = std::collections::HashSet::new();
                for id in &left {
                    if let Some(it) = store.item_get(*id).await? {
                        if !it.status.is_terminal() {
                            still.insert(*id);
                        }
                    }
                }
                left = still;
            }
        }
    }
    let report = node.shutdown(Duration::from_secs(10)).await?;
    let last = store.item_get(*ids.last().unwrap()).await?.unwrap();
    println!("last output: {}", last.output.unwrap_or_default());
    let c = store.items_count().await?;
    println!(
        "counts: pending {} in_progress {} completed {} failed {} cancelled {}",
        c.pending, c.in_progress, c.completed, c.failed, c.cancelled
    );
    println!(
        "node {}: {} completed by this run, shutdown in {:?}",
        node.node_id(),
        node.stats().completed,
        report.elapsed
    );
    Ok(())
}
