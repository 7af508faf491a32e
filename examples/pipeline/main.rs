//! The lead-list pipeline (seeds 002 and 004), leasehold's main job: three stages — lead list,
//! company research, contact research — over simulated model and tool calls with random
//! latency, injected timeouts and rate-limit errors (all from `--seed`). Lead-list items are
//! batches of leads; from there each lead flows through the stages on its own: a lead-list
//! batch completes with one company-research follow-up per good lead, and a company-research
//! item completes with its contact-research follow-up, each committed with the completion
//! (`JobContext::follow_up`), so no loop in `main` feeds one stage to the next. Inside an item
//! every lead is one step of `run_job`, checkpointed when it finishes, its tool calls recorded
//! in the tool ledger and its model calls in the LLM output cache. Transient errors are retried
//! with backoff; permanent ones mark the lead failed. A lead whose contacts were not found is
//! parked until someone decides (`keep` it without a contact, or `skip` it): `--auto-decide
//! ANSWER` answers every parked lead; without it the run prints the `leasehold decide` command
//! and waits. When every lead's chain has finished, one summary item counts the results.
//!
//! Run with `cargo run --release --example pipeline -- --auto-decide keep` (flags: `--db
//! PATH|URL --leads N --workers W --seed S --crash-after N --json --node-id ID --join
//! --criteria JSON --output-dir DIR --auto-decide keep|skip`). To see recovery, crash it and
//! run it again on the same database:
//!
//! ```sh
//! cargo run --release --example pipeline -- --db demo.db --auto-decide keep --crash-after 25
//! cargo run --release --example pipeline -- --db demo.db --auto-decide keep   # resumes, finishes
//! ```
//!
//! The same runs on PostgreSQL (`--db postgres://postgres@127.0.0.1:5432/test?schema=demo`),
//! where several processes can share one run: start one as usual, and others with `--join
//! --node-id pipeline-2` (a node id of their own): they take items from the same queue and
//! share the LLM cache and the tool ledger; only the first enqueues the lead lists and the
//! summary. Their counts of calls add up to a single clean run's.
//!
//! With `--json` the last line is one JSON object: completed, failed, retries,
//! llm_cache_hits, llm_calls, tool_executions, tool_replays, resumed_from_checkpoint,
//! elapsed_ms (and the run's parameters). Counts of calls are this run's; completed and failed
//! are the database's totals, so a rerun after a crash ends with a clean run's numbers.

mod report;
mod sim;
mod stages;

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

use leasehold::durable::{CheckpointManager, LlmCache, RetryPolicies, RetryPolicy, ToolLedger};
use leasehold::runtime::{JobContext, Leasehold, NodeHandle, RuntimeError};
use leasehold::{
    Backoff, Clock, Item, ItemId, ItemStatus, NewItem, NodeEvent, Store, StoreError, SystemClock,
};

use report::Progress;
use sim::Sim;
use stages::{
    Counters, Ctx, Lead, Stage, StageInput, DECISION_ANSWERS, GROUP, STAGES, SUMMARY_KIND,
};

#[derive(Parser, Debug)]
#[command(about = "Run the three-stage lead pipeline on a leasehold tree with durable execution.")]
pub(crate) struct Args {
    /// SQLite database file, or a `postgres://` URL (created if missing; rerun on it to
    /// resume).
    #[arg(long, default_value = "pipeline.db")]
    db: String,
    /// This process's node id; processes sharing one run need one each.
    #[arg(long, default_value = "pipeline")]
    node_id: String,
    /// Join a run another process leads: take work, but enqueue nothing.
    #[arg(long)]
    join: bool,
    /// Leads to generate and research.
    #[arg(long, default_value_t = 30)]
    leads: u32,
    /// Workers in the tree.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seed of every simulated latency and failure.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Abort the process after this many tool executions (to show recovery).
    #[arg(long)]
    crash_after: Option<u64>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Leads per batch item (seed 004's batches of 10).
    #[arg(long, default_value_t = 10)]
    batch: u32,
    /// Largest simulated latency of one model or tool call, in milliseconds.
    #[arg(long, default_value_t = 40)]
    latency_ms: u64,
    /// Probability that one call fails transiently (timeout or rate limit).
    #[arg(long, default_value_t = 0.15)]
    failure_rate: f64,
    /// First retry delay in milliseconds (doubling per attempt, capped at 20×; seed 004's
    /// 1 s → 2 s → 4 s is scaled down so the demo runs in seconds).
    #[arg(long, default_value_t = 50)]
    retry_base_ms: u64,
    /// What stage 1 searches the directory for: a JSON object (seed 004's `--criteria
    /// '{"pms": "Buildium", "state": "TX"}'`).
    #[arg(long, default_value = "{}")]
    criteria: String,
    /// Write the results here: one JSON file per stage and `leads.csv` (created if missing).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Answer every lead parked for a decision with this answer (`keep` or `skip`), so the
    /// run needs nobody; without it the run prints the `leasehold decide` command and waits.
    #[arg(long, value_name = "ANSWER")]
    auto_decide: Option<String>,
}

impl Args {
    fn validate(&self) -> Result<(), String> {
        if self.leads == 0 || self.leads > 100_000 {
            return Err(format!("--leads must be 1..=100000, got {}", self.leads));
        }
        if self.workers == 0 || self.workers > 256 {
            return Err(format!("--workers must be 1..=256, got {}", self.workers));
        }
        if self.batch == 0 || self.batch > 1000 {
            return Err(format!("--batch must be 1..=1000, got {}", self.batch));
        }
        if self.crash_after == Some(0) {
            return Err("--crash-after must be at least 1".into());
        }
        if !(0.0..0.9).contains(&self.failure_rate) {
            return Err(format!(
                "--failure-rate must be in [0, 0.9), got {}",
                self.failure_rate
            ));
        }
        if self.latency_ms > 10_000 || self.retry_base_ms == 0 || self.retry_base_ms > 10_000 {
            return Err("--latency-ms must be <= 10000 and --retry-base-ms 1..=10000".into());
        }
        if self.db.trim().is_empty() {
            return Err("--db must not be empty".into());
        }
        if self.node_id.trim().is_empty() {
            return Err("--node-id must not be empty".into());
        }
        self.criteria()?;
        if let Some(a) = &self.auto_decide {
            if !DECISION_ANSWERS.contains(&a.as_str()) {
                return Err(format!(
                    "--auto-decide must be one of {}, got {a:?}",
                    DECISION_ANSWERS.join(", ")
                ));
            }
        }
        if let Some(dir) = &self.output_dir {
            if dir.exists() && !dir.is_dir() {
                return Err(format!(
                    "--output-dir {} exists and is not a directory",
                    dir.display()
                ));
            }
        }
        Ok(())
    }

    /// `--criteria` parsed: a JSON object.
    fn criteria(&self) -> Result<Value, String> {
        match serde_json::from_str::<Value>(&self.criteria) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(other) => Err(format!("--criteria must be a JSON object, got {other}")),
            Err(e) => Err(format!("--criteria is not JSON ({e}): {}", self.criteria)),
        }
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("pipeline: {e}");
        std::process::exit(1);
    }
}

/// The whole run; `tests/pipeline.rs` calls it in child processes of its own.
pub(crate) async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    args.validate()?;
    let criteria = args.criteria()?;
    let started = Instant::now();
    let (store, durable) = leasehold::open_durable_store(&args.db).await?;
    // The clock a node on this store would choose (the database server's on PostgreSQL), shared
    // by the node and the durable layer so that leases, cache claims and ledger expiries are
    // judged by one clock.
    let clock: Arc<dyn Clock> = match store.clock_sync().await? {
        Some(shared) => shared.as_clock(),
        None => Arc::new(SystemClock),
    };
    check_same_run(&*store, &args, &criteria).await?;

    let base = Duration::from_millis(args.retry_base_ms);
    let default_retry = RetryPolicy::new(
        Backoff {
            initial: base,
            factor: 2.0,
            max: base * 20,
            jitter: 0.1,
        },
        3,
    )
    .seeded(args.seed);
    let shared = Arc::new(Ctx {
        // Short cache claims: after a crash, a claim the dead process held on a model call
        // lapses within 2 s instead of the default 15 s.
        runner: leasehold::durable::TaskRunner::from_parts(
            CheckpointManager::new(durable.clone(), clock.clone()),
            LlmCache::new(durable.clone(), clock.clone())
                .with_claim(Duration::from_secs(2), Duration::from_millis(20))?,
            ToolLedger::new(durable.clone(), clock.clone()),
        ),
        sim: Sim {
            seed: args.seed,
            latency_ms: args.latency_ms,
            failure_rate: args.failure_rate,
        },
        retry: RetryPolicies::new(default_retry.clone())?.kind(
            Stage::Contact.kind(),
            RetryPolicy {
                max_attempts: 4,
                ..default_retry
            },
        )?,
        counters: Counters::default(),
        crash_after: args.crash_after,
    });

    // A stable node id: after a crash, the rerun waits until the crashed process's registry
    // row is stale (3 heartbeats: `takeover`; a live one would be refused, not joined), then the
    // restarted workers' recover_mine takes back at once what their predecessors held (the
    // reaper covers a rerun with fewer workers).
    let mut builder = Leasehold::builder(store.clone())
        .node_id(args.node_id.as_str())
        .clock(clock.clone())
        .takeover(true)
        .workers(args.workers)
        .lease(Duration::from_secs(5))
        .heartbeat(Duration::from_secs(1))
        .sweep(Duration::from_secs(2))
        .backoff(Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(2),
            jitter: 0.1,
        });
    for stage in STAGES {
        let shared = shared.clone();
        builder = builder.handler(stage.kind(), move |ctx: JobContext| {
            stages::handle_stage(ctx, shared.clone())
        });
    }
    let summary_store = store.clone();
    builder = builder.handler(SUMMARY_KIND, move |_ctx: JobContext| {
        stages::handle_summary(summary_store.clone())
    });
    let node = builder.start().await?;
    let mut events = node.events();

    if !args.join
        && report::items_of(&*store, Stage::LeadList.kind())
            .await?
            .is_empty()
    {
        enqueue_lead_lists(&*store, &*clock, &args, &criteria).await?;
    }

    // No stage barrier here: the follow-ups move every lead along. This loop only shows
    // progress, answers (or announces) parked leads, and enqueues the summary at the end.
    let mut progress = Progress::new(std::io::stdout().is_terminal());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut told = HashSet::new();
    let (views, summary) = loop {
        let views = report::stage_views(&*store).await?;
        progress.show(args.leads, &views);
        for item in views.iter().flat_map(|v| &v.awaiting) {
            let question = item.decision.as_ref().map(|d| d.question.clone());
            parked(
                &node,
                &args,
                &progress,
                &mut told,
                item.id,
                question.unwrap_or_default(),
            )
            .await?;
        }
        if report::chains_finished(&views) {
            match report::items_of(&*store, SUMMARY_KIND).await?.first() {
                None if !args.join => enqueue_summary(&*store, &*clock, &args).await?,
                Some(Item {
                    status: ItemStatus::Completed,
                    output: Some(output),
                    ..
                }) => break (views, output.clone()),
                Some(it) if it.status.is_terminal() => {
                    return Err(format!(
                        "the summary item {} ended {}: {}",
                        it.id,
                        it.status.as_str(),
                        it.error.clone().unwrap_or_default()
                    )
                    .into())
                }
                _ => {}
            }
        }
        // Until the next tick, answer parked leads as the node reports them.
        loop {
            tokio::select! {
                ev = events.recv() => {
                    if let Ok(NodeEvent::Parked { item, question }) = ev {
                        parked(&node, &args, &progress, &mut told, item, question).await?;
                    }
                }
                _ = tick.tick() => break,
            }
        }
    };
    progress.show(args.leads, &views);
    progress.finish();
    node.shutdown(Duration::from_secs(10)).await?;

    let cache = shared.runner.cache().stats();
    let ledger = shared.runner.ledger().stats();
    let c = &shared.counters;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let completed = summary["completed"].as_u64().unwrap_or(0);
    let failed = summary["failed"].as_u64().unwrap_or(0);

    let mut totals = BTreeMap::new();
    totals.insert("retries", c.retries.load(Ordering::Relaxed));
    totals.insert("llm calls", cache.misses);
    totals.insert("llm cache hits", cache.hits);
    totals.insert("tool executions", ledger.executions);
    totals.insert("tool replays", ledger.replays);
    totals.insert("resumed from checkpoint", c.resumed.load(Ordering::Relaxed));
    report::print_table(&summary, &totals);
    println!(
        "{completed} of {} leads completed, {failed} failed, in {:.2}s ({})",
        args.leads,
        elapsed_ms as f64 / 1000.0,
        args.db
    );
    if let Some(dir) = &args.output_dir {
        for path in report::write_output_dir(dir, &views, &summary)? {
            println!("wrote {path}");
        }
    }
    if args.json {
        let line = json!({
            "completed": completed,
            "failed": failed,
            "retries": c.retries.load(Ordering::Relaxed),
            "llm_cache_hits": cache.hits,
            "llm_calls": cache.misses,
            "tool_executions": ledger.executions,
            "tool_replays": ledger.replays,
            "resumed_from_checkpoint": c.resumed.load(Ordering::Relaxed),
            "elapsed_ms": elapsed_ms,
            "leads": args.leads,
            "workers": args.workers,
            "seed": args.seed,
            "db": args.db,
        });
        println!("{line}");
    }
    Ok(())
}

/// A parked lead: answered with `--auto-decide` (through the node, as `leasehold decide`
/// would), else announced once with the command that answers it.
async fn parked(
    node: &NodeHandle,
    args: &Args,
    progress: &Progress,
    told: &mut HashSet<ItemId>,
    item: ItemId,
    question: String,
) -> Result<(), Box<dyn std::error::Error>> {
    if !told.insert(item) {
        return Ok(());
    }
    match &args.auto_decide {
        Some(answer) => match node.decide(item, answer).await {
            Ok(_) => {}
            // Another process (or a person) answered it first.
            Err(RuntimeError::Store(StoreError::InvalidState { .. })) => {}
            Err(e) => return Err(e.into()),
        },
        None => progress.note(&format!(
            "pipeline: item {item} awaits a decision: {question}\n  answer it with: leasehold --db '{}' decide {item} --answer {}",
            args.db,
            DECISION_ANSWERS.join("|")
        )),
    }
    Ok(())
}

/// Enqueues the lead list: `--leads` leads in batch items of `--batch`, one transaction.
async fn enqueue_lead_lists(
    store: &dyn Store,
    clock: &dyn Clock,
    args: &Args,
    criteria: &Value,
) -> Result<(), Box<dyn std::error::Error>> {
    let leads: Vec<Lead> = (0..args.leads)
        .map(|id| Lead {
            id,
            company: None,
            domain: None,
        })
        .collect();
    let items = leads
        .chunks(args.batch as usize)
        .enumerate()
        .map(|(i, chunk)| {
            StageInput {
                stage: Stage::LeadList,
                batch: i as u32,
                seed: args.seed,
                total_leads: args.leads,
                criteria: criteria.clone(),
                leads: chunk.to_vec(),
            }
            .into_item()
        })
        .collect();
    store.items_enqueue(items, clock.now()).await?;
    Ok(())
}

/// Enqueues the run's summary item, once every lead's chain has finished.
async fn enqueue_summary(
    store: &dyn Store,
    clock: &dyn Clock,
    args: &Args,
) -> Result<(), Box<dyn std::error::Error>> {
    // The summary is enqueued here once no stage item of the run is open
    // (`report::chains_finished`, checked by the caller), not with `NewItem::after`: a
    // dependency that fails permanently cancels its dependants, and the summary must count the
    // leads that failed too. (Its unique key makes a second enqueue, after a crash, a no-op.)
    let item = NewItem::new(
        SUMMARY_KIND,
        json!({ "seed": args.seed, "total_leads": args.leads }),
    )
    .group(GROUP)
    .max_attempts(5)
    .unique_key(format!("{GROUP}:{SUMMARY_KIND}"));
    store.item_enqueue(item, clock.now()).await?;
    Ok(())
}

/// Refuses to mix runs: a database holds one pipeline run of one size, seed and criteria.
async fn check_same_run(
    store: &dyn Store,
    args: &Args,
    criteria: &Value,
) -> Result<(), Box<dyn std::error::Error>> {
    let first = report::items_of(store, Stage::LeadList.kind()).await?;
    if let Some(it) = first.first() {
        let (seed, leads) = (it.input["seed"].as_u64(), it.input["total_leads"].as_u64());
        let theirs = it.input.get("criteria").cloned().unwrap_or(json!({}));
        if seed != Some(args.seed) || leads != Some(u64::from(args.leads)) || &theirs != criteria {
            return Err(format!(
                "{} holds a pipeline run with --leads {} --seed {} --criteria '{theirs}'; rerun with those flags or use another --db",
                args.db,
                leads.unwrap_or(0),
                seed.unwrap_or(0)
            )
            .into());
        }
    }
    Ok(())
}
