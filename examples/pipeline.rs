//! The lead-list pipeline (seeds 002 and 004), leasehold's main job: three stages — lead list,
//! company research, contact research — over simulated model and tool calls with random
//! latency, injected timeouts and rate-limit errors (all from `--seed`). Each stage runs as
//! batch items on a supervised tree; inside a batch a `batch-start` step checkpoints first, then
//! every lead is one step of `run_with_recovery`, checkpointed when it finishes, its tool calls
//! recorded in the tool ledger and its model calls in the LLM output cache. Transient errors
//! are retried with backoff; permanent ones mark the lead failed.
//!
//! Run with `cargo run --release --example pipeline` (flags: `--db PATH|URL --leads N --workers W
//! --seed S --crash-after N --json --node-id ID --join`). To see recovery, crash it and run it
//! again on the same database:
//!
//! ```sh
//! cargo run --release --example pipeline -- --db demo.db --crash-after 25
//! cargo run --release --example pipeline -- --db demo.db   # resumes, replays, finishes
//! ```
//!
//! The same runs on PostgreSQL (`--db postgres://postgres@127.0.0.1:5432/test?schema=demo`),
//! where several processes can share one run: start one as usual, and others with `--join
//! --node-id pipeline-2` (a node id of their own): they take batches from the same queue and
//! share the LLM cache and the tool ledger, and only the first feeds each finished stage's leads
//! to the next. Their counts of calls add up to a single clean run's.
//!
//! With `--json` the last line is one JSON object: completed, failed, retries,
//! llm_cache_hits, llm_calls, tool_executions, tool_replays, resumed_from_checkpoint,
//! elapsed_ms (and the run's parameters). Counts of calls are this run's; completed and failed
//! are the database's totals, so a rerun after a crash ends with a clean run's numbers.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use leasehold::durable::{
    evidence, retry_with, CheckpointManager, DurableError, LlmCache, RetryPolicies, RetryPolicy,
    Task, TaskRunner, ToolLedger, ToolOutput,
};
use leasehold::runtime::{JobContext, JobError, Leasehold};
use leasehold::{
    Backoff, Clock, Item, ItemFilter, ItemStatus, NewItem, NodeEvent, Store, SystemClock,
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
        Ok(())
    }
}

/// The three stages, in order.
const STAGES: [Stage; 3] = [Stage::LeadList, Stage::Company, Stage::Contact];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stage {
    LeadList,
    Company,
    Contact,
}

impl Stage {
    fn kind(self) -> &'static str {
        match self {
            Stage::LeadList => "lead_list",
            Stage::Company => "company_research",
            Stage::Contact => "contact_research",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Stage::LeadList => "lead list",
            Stage::Company => "company research",
            Stage::Contact => "contact research",
        }
    }
    fn tool(self) -> &'static str {
        match self {
            Stage::LeadList => "directory_search",
            Stage::Company => "web_fetch",
            Stage::Contact => "email_verify",
        }
    }
    fn index(self) -> u64 {
        match self {
            Stage::LeadList => 1,
            Stage::Company => 2,
            Stage::Contact => 3,
        }
    }
}

/// One lead as it moves through the stages.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lead {
    id: u32,
    #[serde(default)]
    company: Option<String>,
    #[serde(default)]
    domain: Option<String>,
}

/// A batch item's input.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct BatchInput {
    stage: Stage,
    batch: u32,
    seed: u64,
    total_leads: u32,
    leads: Vec<Lead>,
}

/// One lead's result in a batch's output.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LeadResult {
    lead: Lead,
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Value,
}

/// Deterministic simulated calls: every latency and failure is a function of the seed and
/// the call, so a rerun sees the same world.
#[derive(Clone, Debug)]
struct Sim {
    seed: u64,
    latency_ms: u64,
    failure_rate: f64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Sim {
    fn roll(&self, parts: &[u64]) -> f64 {
        let h = parts.iter().fold(mix(self.seed), |h, p| mix(h ^ p));
        (h >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One call attempt: waits its latency, then fails transiently with the failure rate.
    async fn call(
        &self,
        stage: Stage,
        lead: u32,
        what: u64,
        attempt: u32,
    ) -> Result<(), DurableError> {
        let key = [stage.index(), u64::from(lead), what, u64::from(attempt)];
        let latency =
            (self.roll(&[key[0], key[1], key[2], key[3], 1]) * self.latency_ms as f64) as u64;
        tokio::time::sleep(Duration::from_millis(latency)).await;
        if self.roll(&[key[0], key[1], key[2], key[3], 2]) < self.failure_rate {
            let why = if attempt.is_multiple_of(2) {
                "model call timed out"
            } else {
                "429 rate limited"
            };
            return Err(DurableError::transient(why));
        }
        Ok(())
    }

    /// Whether a lead's domain is bad: a permanent failure in company research.
    fn bad_domain(&self, lead: u32) -> bool {
        self.roll(&[99, u64::from(lead)]) < 0.07
    }

    fn company(&self, lead: u32) -> (String, String) {
        const A: [&str; 8] = [
            "Oak", "Harbor", "Summit", "Maple", "Cedar", "Pine", "River", "Stone",
        ];
        const B: [&str; 6] = [
            "Property", "Realty", "Rentals", "Homes", "Estates", "Living",
        ];
        let a = A[(self.roll(&[7, u64::from(lead)]) * A.len() as f64) as usize % A.len()];
        let b = B[(self.roll(&[8, u64::from(lead)]) * B.len() as f64) as usize % B.len()];
        let name = format!("{a} {b} {lead}");
        let domain = format!("{}{}{lead}.example", a.to_lowercase(), b.to_lowercase());
        (name, domain)
    }
}

/// This run's counters.
#[derive(Debug, Default)]
struct Counters {
    retries: AtomicU64,
    resumed: AtomicU64,
    tool_executions: AtomicU64,
}

/// What each handler needs.
struct Ctx {
    runner: TaskRunner,
    sim: Sim,
    /// Retry policies: the default, and contact research's own (one more attempt); an item may
    /// override its kind's with `input.retry`.
    retry: RetryPolicies,
    counters: Counters,
    crash_after: Option<u64>,
}

type Shared = Arc<Ctx>;

async fn handle_batch(ctx: JobContext, shared: Shared) -> Result<Value, JobError> {
    let input: BatchInput = ctx.input_as()?;
    let policy = shared
        .retry
        .for_item(ctx.item())
        .map_err(DurableError::into_job_error)?;
    let job = ctx.clone();
    let done = shared
        .runner
        .clone()
        .run_job(&ctx, |task| async move {
            if task.resumed_from().is_some() {
                shared.counters.resumed.fetch_add(1, Ordering::Relaxed);
            }
            // The batch's first checkpoint, committed before any lead's tool runs (seed 004's
            // checkpoint between batches): a crash after any tool execution leaves the batch at
            // least this checkpoint to resume from.
            let (stage, batch, count) = (input.stage, input.batch, input.leads.len());
            task.step("batch-start", move |_| async move {
                Ok::<_, DurableError>(json!({ "stage": stage, "batch": batch, "leads": count }))
            })
            .await?;
            let mut results = Vec::with_capacity(input.leads.len());
            for (done, lead) in input.leads.iter().enumerate() {
                let (s, l, p) = (shared.clone(), lead.clone(), policy.clone());
                let stage = input.stage;
                let out = task
                    .step(&format!("lead-{}", lead.id), move |t| {
                        process_lead(t, s, p, stage, l)
                    })
                    .await?;
                results.push(out);
                // Progress is informational: a lost lease shows up on the next fenced write.
                let _ = job
                    .progress(json!({ "done": done + 1, "of": input.leads.len() }))
                    .await;
            }
            Ok(json!({ "stage": input.stage, "batch": input.batch, "results": results }))
        })
        .await?;
    Ok(done.output)
}

/// One lead through one stage: a model call (cached) and a tool call (ledger), each retried
/// on transient errors. A permanent error, or retries spent, marks the lead failed.
async fn process_lead(
    task: Task,
    shared: Shared,
    policy: RetryPolicy,
    stage: Stage,
    lead: Lead,
) -> Result<Value, DurableError> {
    let sim = shared.sim.clone();
    let subject = lead
        .domain
        .clone()
        .unwrap_or_else(|| format!("lead #{}", lead.id));
    let prompt = format!("{} for {subject}", stage.title());

    let attempts = AtomicU32::new(0);
    // Counts retries: failed attempts followed by another one (not permanent or final failures).
    let observe = |f: &leasehold::durable::FailedAttempt<'_, DurableError>| {
        if f.next_delay.is_some() {
            shared.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
    };
    let llm = retry_with(&policy, DurableError::is_transient, observe, || {
        let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let (task, sim, prompt) = (task.clone(), sim.clone(), prompt.clone());
        let id = lead.id;
        async move {
            let summary = format!("notes on {prompt}");
            task.llm(stage.kind(), &prompt, "sim-model-1", || async move {
                sim.call(stage, id, 1, attempt).await?;
                Ok(json!({ "summary": summary }))
            })
            .await
        }
    })
    .await;
    let llm = match llm {
        Ok(v) => v,
        Err(e) if e.is_lease_lost() || matches!(e, DurableError::Store(_)) => return Err(e),
        Err(e) => return Ok(failed(&lead, &e)),
    };

    let command = format!("{} {subject}", stage.tool());
    let attempts = AtomicU32::new(0);
    let tool = retry_with(&policy, DurableError::is_transient, observe, || {
        let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let (task, sim, command) = (task.clone(), sim.clone(), command.clone());
        let lead = lead.clone();
        let ran = command.clone();
        async move {
            task.tool(stage.tool(), &command, || async move {
                sim.call(stage, lead.id, 2, attempt).await?;
                if stage == Stage::Company && sim.bad_domain(lead.id) {
                    return Err(DurableError::permanent(format!(
                        "{} does not resolve",
                        lead.domain.clone().unwrap_or_default()
                    )));
                }
                let result = match stage {
                    Stage::LeadList => {
                        let (company, domain) = sim.company(lead.id);
                        json!({ "company": company, "domain": domain })
                    }
                    Stage::Company => json!({ "units": 50 + lead.id * 7 % 400, "pms": "Buildium" }),
                    Stage::Contact => json!({ "contact": format!("owner@{}", lead.domain.clone().unwrap_or_default()), "verified": true }),
                };
                // The simulated command "exited 0": evidence on its tool_executed checkpoint.
                Ok::<_, DurableError>(ToolOutput {
                    result,
                    evidence: vec![evidence::command_exit(ran, 0, 0)],
                })
            })
            .await
        }
    })
    .await;
    let tool = match tool {
        Ok(t) => t,
        Err(e) if e.is_lease_lost() || matches!(e, DurableError::Store(_)) => return Err(e),
        Err(e) => return Ok(failed(&lead, &e)),
    };
    if !tool.replayed {
        let n = shared
            .counters
            .tool_executions
            .fetch_add(1, Ordering::SeqCst)
            + 1;
        if shared.crash_after == Some(n) {
            // The tool's result is committed; the lead's step and the item are not.
            eprintln!("pipeline: --crash-after {n}: aborting after tool execution {n}");
            std::process::abort();
        }
    }
    let mut next = lead.clone();
    if stage == Stage::LeadList {
        next.company = tool.result["company"].as_str().map(str::to_owned);
        next.domain = tool.result["domain"].as_str().map(str::to_owned);
    }
    let result = LeadResult {
        lead: next,
        ok: true,
        error: None,
        data: json!({ "llm": llm, "tool": tool.result }),
    };
    Ok(serde_json::to_value(result).unwrap_or(Value::Null))
}

fn failed(lead: &Lead, e: &DurableError) -> Value {
    serde_json::to_value(LeadResult {
        lead: lead.clone(),
        ok: false,
        error: Some(e.to_string()),
        data: Value::Null,
    })
    .unwrap_or(Value::Null)
}

/// Every item of one kind, by id.
async fn items_of(store: &dyn Store, kind: &str) -> Result<Vec<Item>, Box<dyn std::error::Error>> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .items_list(&ItemFilter {
                kind: Some(kind.into()),
                group_id: Some("pipeline".into()),
                after,
                limit: 1000,
                ..ItemFilter::default()
            })
            .await?;
        let full = page.len() == 1000;
        after = page.last().map(|i| i.id);
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// One stage's state in the database.
#[derive(Debug, Default, Clone)]
struct StageView {
    items: usize,
    terminal: usize,
    leads: usize,
    done: usize,
    ok: Vec<Lead>,
    failed: usize,
}

fn view(items: &[Item]) -> StageView {
    let mut v = StageView {
        items: items.len(),
        ..StageView::default()
    };
    for it in items {
        let leads = it.input["leads"].as_array().map_or(0, Vec::len);
        v.leads += leads;
        match it.status {
            ItemStatus::Completed => {
                v.terminal += 1;
                v.done += leads;
                let results = it
                    .output
                    .as_ref()
                    .and_then(|o| o["results"].as_array().cloned());
                for r in results.unwrap_or_default() {
                    match serde_json::from_value::<LeadResult>(r) {
                        Ok(r) if r.ok => v.ok.push(r.lead),
                        _ => v.failed += 1,
                    }
                }
            }
            ItemStatus::Failed | ItemStatus::Cancelled => {
                v.terminal += 1;
                v.done += leads;
                v.failed += leads;
            }
            ItemStatus::InProgress => {
                v.done += it
                    .progress
                    .as_ref()
                    .and_then(|p| p["done"].as_u64())
                    .unwrap_or(0) as usize;
            }
            ItemStatus::Pending | ItemStatus::Awaiting | ItemStatus::Blocked => {}
        }
    }
    v.ok.sort_by_key(|l| l.id);
    v
}

/// Enqueues `leads` as batch items of `stage`, all in one transaction.
async fn enqueue_stage(
    store: &dyn Store,
    clock: &dyn Clock,
    args: &Args,
    stage: Stage,
    leads: Vec<Lead>,
) -> Result<(), Box<dyn std::error::Error>> {
    let items: Vec<NewItem> = leads
        .chunks(args.batch as usize)
        .enumerate()
        .map(|(i, chunk)| {
            let input = BatchInput {
                stage,
                batch: i as u32,
                seed: args.seed,
                total_leads: args.leads,
                leads: chunk.to_vec(),
            };
            NewItem::new(
                stage.kind(),
                serde_json::to_value(input).unwrap_or_default(),
            )
            .max_attempts(5)
            .group("pipeline")
        })
        .collect();
    if !items.is_empty() {
        store.items_enqueue(items, clock.now()).await?;
    }
    Ok(())
}

/// Refuses to mix runs: a database holds one pipeline run of one size and seed.
async fn check_same_run(store: &dyn Store, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let first = items_of(store, Stage::LeadList.kind()).await?;
    if let Some(it) = first.first() {
        let (seed, leads) = (it.input["seed"].as_u64(), it.input["total_leads"].as_u64());
        if seed != Some(args.seed) || leads != Some(u64::from(args.leads)) {
            return Err(format!(
                "{} holds a pipeline run with --leads {} --seed {}; rerun with those flags or use another --db",
                args.db,
                leads.unwrap_or(0),
                seed.unwrap_or(0)
            )
            .into());
        }
    }
    Ok(())
}

/// Progress display: a bar per stage on a terminal, plain lines otherwise.
struct Progress {
    tty: bool,
    drawn: bool,
    last_line: String,
}

impl Progress {
    fn show(&mut self, views: &[StageView; 3]) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            if self.drawn {
                let _ = write!(out, "\x1b[{}A", STAGES.len());
            }
            for (stage, v) in STAGES.iter().zip(views) {
                let total = v.leads.max(1);
                let filled = v.done * 30 / total;
                let _ = writeln!(
                    out,
                    "\x1b[2K{:<17} [{}{}] {:>5}/{:<5} failed {}",
                    stage.title(),
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    v.done,
                    v.leads,
                    v.failed
                );
            }
            self.drawn = true;
        } else {
            let line = STAGES
                .iter()
                .zip(views)
                .map(|(s, v)| format!("{} {}/{}", s.kind(), v.done, v.leads))
                .collect::<Vec<_>>()
                .join("  ");
            if line != self.last_line {
                let _ = writeln!(out, "progress: {line}");
                self.last_line = line;
            }
        }
        let _ = out.flush();
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
    let started = Instant::now();
    let (store, durable) = leasehold::open_durable_store(&args.db).await?;
    // The clock a node on this store would choose (the database server's on PostgreSQL), shared
    // by the node and the durable layer so that leases, cache claims and ledger expiries are
    // judged by one clock.
    let clock: Arc<dyn Clock> = match store.clock_sync().await? {
        Some(shared) => shared.as_clock(),
        None => Arc::new(SystemClock),
    };
    check_same_run(&*store, &args).await?;

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
        runner: TaskRunner::from_parts(
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
            handle_batch(ctx, shared.clone())
        });
    }
    let node = builder.start().await?;
    let mut events = node.events();

    if !args.join && items_of(&*store, Stage::LeadList.kind()).await?.is_empty() {
        let leads = (0..args.leads)
            .map(|id| Lead {
                id,
                company: None,
                domain: None,
            })
            .collect();
        enqueue_stage(&*store, &*clock, &args, Stage::LeadList, leads).await?;
    }

    let mut progress = Progress {
        tty: std::io::stdout().is_terminal(),
        drawn: false,
        last_line: String::new(),
    };
    let mut tick =
        tokio::time::interval(Duration::from_millis(if progress.tty { 100 } else { 250 }));
    let views = loop {
        let mut views: [StageView; 3] = Default::default();
        for (i, stage) in STAGES.iter().enumerate() {
            views[i] = view(&items_of(&*store, stage.kind()).await?);
        }
        // Feed each finished stage's good leads to the next one, once (one transaction).
        for i in 0..2 {
            let (prev, next) = (&views[i], &views[i + 1]);
            if !args.join
                && prev.items > 0
                && prev.terminal == prev.items
                && next.items == 0
                && !prev.ok.is_empty()
            {
                enqueue_stage(&*store, &*clock, &args, STAGES[i + 1], prev.ok.clone()).await?;
            }
        }
        progress.show(&views);
        let finished = views.iter().enumerate().all(|(i, v)| {
            v.terminal == v.items && (i == 0 || v.items > 0 || views[i - 1].ok.is_empty())
        }) && views[0].items > 0;
        if finished {
            break views;
        }
        tokio::select! {
            ev = events.recv() => {
                if let Ok(NodeEvent::Completed { .. }) | Ok(NodeEvent::AttemptFailed { .. }) | Err(_) = ev {}
            }
            _ = tick.tick() => {}
        }
    };
    node.shutdown(Duration::from_secs(10)).await?;

    let completed = views[2].ok.len();
    let failed: usize = views.iter().map(|v| v.failed).sum();
    let cache = shared.runner.cache().stats();
    let ledger = shared.runner.ledger().stats();
    let c = &shared.counters;
    let elapsed_ms = started.elapsed().as_millis() as u64;

    println!();
    println!(
        "{:<17} {:>8} {:>8} {:>8}",
        "stage", "batches", "ok", "failed"
    );
    for (stage, v) in STAGES.iter().zip(&views) {
        println!(
            "{:<17} {:>8} {:>8} {:>8}",
            stage.title(),
            v.items,
            v.ok.len(),
            v.failed
        );
    }
    let mut totals = BTreeMap::new();
    totals.insert("retries", c.retries.load(Ordering::Relaxed));
    totals.insert("llm calls", cache.misses);
    totals.insert("llm cache hits", cache.hits);
    totals.insert("tool executions", ledger.executions);
    totals.insert("tool replays", ledger.replays);
    totals.insert("resumed from checkpoint", c.resumed.load(Ordering::Relaxed));
    for (k, v) in &totals {
        println!("{k:<24} {v:>8}");
    }
    println!(
        "{completed} of {} leads completed, {failed} failed, in {:.2}s ({})",
        args.leads,
        elapsed_ms as f64 / 1000.0,
        args.db
    );
    if args.json {
        let summary = json!({
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
        println!("{summary}");
    }
    Ok(())
}
