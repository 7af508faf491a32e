//! Throughput against the raw floor of its database, in one process and one run; on SQLite or
//! PostgreSQL, with one node or several sharing the queue.
//!
//! 1. Enqueues `--jobs` no-op items in batches (timed: `enqueue_per_s`).
//! 2. Runs `--nodes` full trees on them (heartbeat children on, fencing on, default
//!    durability), each its own node id and its own store (its own SQLite connection, or its
//!    own PostgreSQL pool and listener), with `--workers` workers each, until every item is
//!    completed (timed from the first `start()`: `process_per_s`).
//! 3. Measures pickup: single items enqueued through the first node's handle into the idle
//!    trees, timed from the enqueue call to the acquisition by whichever worker of any node
//!    takes it (`p50_pickup_ms`, `p99_pickup_ms`).
//! 4. With `--store-loop`, the store alone: as many more items, processed by `--workers` plain
//!    tasks on the first node's store that do what a worker does with a no-op handler (acquire;
//!    then complete and acquire the next together) without the actor tree, its heartbeats and
//!    its handler tasks (`store_loop_per_s`; 0 without the flag). Between the floor and the full
//!    tree, it says which of the two the gap is in.
//! 5. The floor (`floor_per_s`, and `ratio_to_floor` = `process_per_s / floor_per_s`). On
//!    SQLite: a raw rusqlite loop over a minimal table on its own file, WAL and
//!    `synchronous=NORMAL` like the store, leasing 64 pending rows with one `UPDATE … RETURNING`
//!    per transaction and completing them in one transaction. On PostgreSQL: one tokio-postgres
//!    connection to the same server, with its settings, on a minimal table in the run's schema
//!    (`id, status, owner, epoch, lease_expires_at, payload`, one partial index on pending
//!    rows), leasing 64 rows per transaction with one
//!    `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT 64) RETURNING` and completing
//!    them with one `UPDATE … WHERE id = ANY($1)`, prepared statements. Then the same floor in
//!    the shape of the tree's batches (`floor_at_workers_per_s`, `ratio_to_floor_at_workers`):
//!    each transaction completes what the previous one leased and leases `--workers` rows, all
//!    pipelined in one round trip, which is as many items as one node's batch may carry. The
//!    output says
//!    whether the server runs autovacuum (`autovacuum` in the JSON line); neither the floor nor
//!    the store relies on it (both take fresh statistics themselves after their bulk load, and
//!    neither vacuums).
//!
//! `--db` takes a new SQLite file (default: a temporary one) or a `postgres://` URL: the run
//! then works in a fresh schema of its own (`throughput_<pid>_…`), dropped when it ends.
//! `--analyze` refreshes the planner's statistics after the enqueue (untimed), as autovacuum
//! would; `--workers` counts each node's workers. The JSON line also says `nodes` and `backend`.
//! `group_commits` and `writes_per_group` count the transactions that carried the hot path's
//! writes during the bulk run: SQLite's group commits, PostgreSQL's batches.
//!
//! With `--idle-workers N` it instead starts a tree of N workers (each with its heartbeat child),
//! waits until every worker is idle and reports the process's resident memory.
//!
//! Run with `cargo run --release --example throughput -- --jobs 20000 --workers 16 --json`
//! (the last line is then one JSON object), with
//! `-- --db postgres://postgres@127.0.0.1:5432/test --jobs 20000 --workers 16 --nodes 3 --json`
//! on PostgreSQL, or `cargo run --release --example throughput -- --idle-workers 1000 --json`.
//! The SQLite store honours `LEASEHOLD_SQLITE_SYNC` (`normal`, the default, or `full`): prefix
//! the command with `LEASEHOLD_SQLITE_SYNC=full` to measure full durability.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rusqlite::{params, Connection};
use serde_json::json;
use tokio::sync::broadcast::{error::RecvError, Receiver};
use tokio::sync::mpsc;

use leasehold::postgres::testing::TestSchema;
use leasehold::runtime::chaos::percentile_ms;
use leasehold::runtime::{JobContext, JobError, Leasehold, NodeEvent, NodeHandle};
use leasehold::{
    AcquireRequest, Clock, NewItem, PgStore, SqliteStore, Store, StoreError, SystemClock,
};
use tokio_postgres::NoTls;

/// Items per enqueue transaction.
const ENQUEUE_BATCH: usize = 1000;
/// Rows the floor leases per transaction (written into its SQL: a bound `LIMIT ?` would make
/// SQLite recompile the statement on every run, and the floor must not pay for that).
const FLOOR_LEASE: &str = "UPDATE jobs SET status = 1, owner = ?1, lease_expires_at = ?2 \
     WHERE id IN (SELECT id FROM jobs WHERE status = 0 ORDER BY id LIMIT 64) \
     RETURNING id, payload";
/// Single-item pickups measured after the bulk run.
const PICKUP_SAMPLES: usize = 200;
/// The longest the bulk run may take before the example gives up.
const DEADLINE: Duration = Duration::from_secs(1800);

#[derive(Parser, Debug)]
#[command(about = "leasehold's throughput against the raw SQLite floor.")]
struct Args {
    /// Items to enqueue and process.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Workers in each tree.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Trees (nodes) in this process, each with its own node id and its own store, all on the
    /// one queue.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// A SQLite file for the trees (must not exist yet; default: a fresh temporary file; the
    /// floor uses a file beside it with `.floor` appended), or a `postgres://` URL (the run
    /// works in a fresh schema of its own there, floor included, dropped at the end).
    #[arg(long)]
    db: Option<String>,
    /// Instead of the throughput run: start this many idle workers and report memory.
    #[arg(long)]
    idle_workers: Option<usize>,
    /// Also time the store alone, driven by plain tasks instead of the tree (`store_loop_per_s`).
    #[arg(long)]
    store_loop: bool,
    /// Skip the raw floor (its fields are then 0).
    #[arg(long)]
    no_floor: bool,
    /// On PostgreSQL, refresh the planner's statistics (`ANALYZE`) after the enqueue, untimed,
    /// as autovacuum would before long. Without it, on a server without autovacuum the planner
    /// judges the fresh table empty and its acquire plan sorts every pending item.
    #[arg(long)]
    analyze: bool,
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
    let dir = tempfile::tempdir()?;
    let target = match args.db.as_deref() {
        Some(url) if leasehold::postgres::is_postgres_url(url) => {
            if url.contains("schema=") {
                return Err(format!(
                    "--db {url}: the run makes a fresh schema of its own; leave schema= out"
                )
                .into());
            }
            Target::Postgres(TestSchema::at(url, "throughput").await?)
        }
        Some(p) => {
            let p = PathBuf::from(p.strip_prefix("sqlite://").unwrap_or(p));
            if p.exists() {
                return Err(format!(
                    "--db {}: the file already exists; give a new path so the counts start at zero",
                    p.display()
                )
                .into());
            }
            Target::Sqlite(p)
        }
        None => Target::Sqlite(dir.path().join("throughput.db")),
    };
    match args.idle_workers {
        Some(0) => Err("--idle-workers must be at least 1".into()),
        Some(n) => idle(&target, n, args.json).await,
        None => {
            if args.jobs == 0 || args.workers == 0 || args.nodes == 0 {
                return Err("--jobs, --workers and --nodes must be at least 1".into());
            }
            throughput(&args, &target).await
        }
    }
    // A PostgreSQL run's schema is dropped here, when `target` goes.
}

/// Where the run's items live.
enum Target {
    /// A new SQLite file.
    Sqlite(PathBuf),
    /// A fresh schema on a PostgreSQL server, dropped (with everything in it) when this goes.
    Postgres(TestSchema),
}

impl Target {
    fn backend(&self) -> &'static str {
        match self {
            Target::Sqlite(_) => "sqlite",
            Target::Postgres(_) => "postgres",
        }
    }

    /// A store of its own on the target (one per node: its own SQLite connection, or its own
    /// PostgreSQL pool). On SQLite, `hook` counts the store's group commits (and the writes
    /// they carried); a PostgreSQL store is kept in `hook` to read its batch counts from.
    async fn open(&self, hook: &GroupCounts) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
        Ok(match self {
            Target::Sqlite(path) => {
                let sqlite = SqliteStore::open(path).await?;
                let (g, o) = (hook.groups.clone(), hook.ops.clone());
                sqlite.set_group_commit_hook(Some(Arc::new(move |ops: &[&'static str]| {
                    g.fetch_add(1, Ordering::Relaxed);
                    o.fetch_add(ops.len() as u64, Ordering::Relaxed);
                })));
                Arc::new(sqlite)
            }
            Target::Postgres(schema) => {
                let pg = PgStore::open(&schema.url()).await?;
                hook.pg.lock().unwrap().push(pg.clone());
                Arc::new(pg)
            }
        })
    }
}

/// Group commits and the writes they carried, over every node's store.
#[derive(Default)]
struct GroupCounts {
    groups: Arc<AtomicU64>,
    ops: Arc<AtomicU64>,
    /// The PostgreSQL stores, whose batchers count their own.
    pg: std::sync::Mutex<Vec<PgStore>>,
}

impl GroupCounts {
    /// Transactions that carried hot-path writes, and the writes they carried.
    fn read(&self) -> (u64, u64) {
        let pg = self.pg.lock().unwrap();
        let (mut groups, mut ops) = (
            self.groups.load(Ordering::Relaxed),
            self.ops.load(Ordering::Relaxed),
        );
        for store in pg.iter() {
            let s = store.batch_stats();
            groups += s.batches;
            ops += s.calls;
        }
        (groups, ops)
    }
}

async fn throughput(args: &Args, target: &Target) -> Result<(), Box<dyn std::error::Error>> {
    let counts = GroupCounts::default();
    let mut stores = Vec::with_capacity(args.nodes);
    for _ in 0..args.nodes {
        stores.push(target.open(&counts).await?);
    }
    let store = stores[0].clone();

    // 1. Enqueue.
    let enqueue_s = enqueue_noops(store.as_ref(), args.jobs, "n")
        .await?
        .as_secs_f64();
    if let (true, Target::Postgres(schema)) = (args.analyze, target) {
        schema.analyze().await?;
    }

    // 2. Process with the full trees, counted from the first start.
    let t1 = Instant::now();
    let mut nodes = Vec::with_capacity(args.nodes);
    for (i, store) in stores.iter().enumerate() {
        let node_id = if args.nodes == 1 {
            "throughput".to_string()
        } else {
            format!("throughput-{i}")
        };
        let node = Leasehold::builder(store.clone())
            .node_id(node_id)
            .workers(args.workers)
            .handler("noop", |_ctx: JobContext| async move {
                Ok::<_, JobError>(json!(null))
            })
            .start()
            .await?;
        nodes.push(node);
    }
    wait_completed(&nodes, args.jobs as u64).await?;
    let process_s = t1.elapsed().as_secs_f64();
    let (groups, grouped_ops) = counts.read();
    let status = store.items_count().await?;
    if status.completed != args.jobs as u64 {
        return Err(format!("expected {} completed items, found {status:?}", args.jobs).into());
    }

    // 3. Pickup latency into the idle trees: enqueued through the first node's handle, taken
    // by whichever worker of any node gets it first.
    let mut events = merged_events(&nodes);
    let mut pickups = Vec::with_capacity(PICKUP_SAMPLES);
    for i in 0..PICKUP_SAMPLES {
        let t = Instant::now();
        let id = nodes[0]
            .enqueue(NewItem::new("noop", json!({ "pickup": i })))
            .await?;
        let acquired = next_event(
            &mut events,
            |e| matches!(e, NodeEvent::Acquired { item, .. } if *item == id),
        )
        .await?;
        pickups.push(acquired.duration_since(t));
        next_event(
            &mut events,
            |e| matches!(e, NodeEvent::Completed { item, .. } if *item == id),
        )
        .await?;
    }
    drop(events);
    for node in &nodes {
        node.shutdown(Duration::from_secs(10)).await?;
    }

    // 4. The store alone, on the first node's store.
    let store_loop_per_s = if args.store_loop {
        store_loop(&store, args.jobs, args.workers).await?
    } else {
        0.0
    };

    // 5. The floor.
    let mut autovacuum = None;
    let mut floor_at_workers_per_s = 0.0;
    let floor_per_s = match (args.no_floor, target) {
        (true, _) => 0.0,
        (false, Target::Sqlite(path)) => {
            let mut floor_path = path.as_os_str().to_owned();
            floor_path.push(".floor");
            let floor_path = PathBuf::from(floor_path);
            let jobs = args.jobs;
            tokio::task::spawn_blocking(move || floor(&floor_path, jobs)).await??
        }
        (false, Target::Postgres(schema)) => {
            let url = args.db.as_deref().unwrap_or_default();
            let (per_s, av) = pg_floor(url, schema.schema(), args.jobs).await?;
            autovacuum = Some(av);
            floor_at_workers_per_s =
                pg_floor_at(url, schema.schema(), args.jobs, args.workers).await?;
            per_s
        }
    };

    let enqueue_per_s = args.jobs as f64 / enqueue_s;
    let process_per_s = args.jobs as f64 / process_s;
    let ratio = if floor_per_s > 0.0 {
        process_per_s / floor_per_s
    } else {
        0.0
    };
    let ratio_at_workers = if floor_at_workers_per_s > 0.0 {
        process_per_s / floor_at_workers_per_s
    } else {
        0.0
    };
    let p50 = percentile_ms(&mut pickups, 0.50);
    let p99 = percentile_ms(&mut pickups, 0.99);
    let rss = peak_rss_mb();
    let ops_per_group = grouped_ops as f64 / groups.max(1) as f64;
    println!(
        "{} jobs, {} × {} workers on {}: enqueue {:.0}/s, process {:.0}/s, floor {:.0}/s \
         (ratio {:.3}); pickup p50 {:.3} ms, p99 {:.3} ms; peak RSS {:.1} MB; {} group commits, \
         {:.1} writes each{}{}",
        args.jobs,
        args.nodes,
        args.workers,
        target.backend(),
        enqueue_per_s,
        process_per_s,
        floor_per_s,
        ratio,
        p50,
        p99,
        rss,
        groups,
        ops_per_group,
        if args.store_loop {
            format!("; store alone {store_loop_per_s:.0}/s")
        } else {
            String::new()
        },
        match &autovacuum {
            Some(av) => format!(
                "; floor at {} rows per transaction {floor_at_workers_per_s:.0}/s (ratio \
                 {ratio_at_workers:.3}); the server runs with autovacuum={av}",
                args.workers
            ),
            None => String::new(),
        }
    );
    if args.json {
        println!(
            "{}",
            json!({
                "jobs": args.jobs,
                "workers": args.workers,
                "enqueue_per_s": enqueue_per_s.round(),
                "process_per_s": process_per_s.round(),
                "floor_per_s": floor_per_s.round(),
                "ratio_to_floor": (ratio * 1000.0).round() / 1000.0,
                "floor_at_workers_per_s": floor_at_workers_per_s.round(),
                "ratio_to_floor_at_workers": (ratio_at_workers * 1000.0).round() / 1000.0,
                "p50_pickup_ms": (p50 * 1000.0).round() / 1000.0,
                "p99_pickup_ms": (p99 * 1000.0).round() / 1000.0,
                "peak_rss_mb": (rss * 10.0).round() / 10.0,
                "group_commits": groups,
                "writes_per_group": (ops_per_group * 10.0).round() / 10.0,
                "nodes": args.nodes,
                "backend": target.backend(),
                "store_loop_per_s": store_loop_per_s.round(),
                "autovacuum": autovacuum,
            })
        );
    }
    Ok(())
}

/// Enqueues `jobs` no-op items `{field: i}` in batches of [`ENQUEUE_BATCH`]; returns the time
/// spent in the enqueue calls. Each batch is built untimed, just before its transaction, so
/// that the example's own memory stays small however many jobs it enqueues.
async fn enqueue_noops(
    store: &dyn Store,
    jobs: usize,
    field: &str,
) -> Result<Duration, StoreError> {
    let mut spent = Duration::ZERO;
    for start in (0..jobs).step_by(ENQUEUE_BATCH) {
        let batch: Vec<NewItem> = (start..(start + ENQUEUE_BATCH).min(jobs))
            .map(|i| NewItem::new("noop", json!({ field: i })))
            .collect();
        let t0 = Instant::now();
        store.items_enqueue(batch, SystemClock.now()).await?;
        spent += t0.elapsed();
    }
    Ok(spent)
}

/// Enqueues `jobs` more no-op items (untimed) and processes them with `tasks` plain tasks that
/// each loop as a worker does: acquire one item, then complete it and acquire the next in one
/// go (so the SQLite store commits both in one group). Returns items completed per second.
async fn store_loop(
    store: &Arc<dyn Store>,
    jobs: usize,
    tasks: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let clock = SystemClock;
    enqueue_noops(store.as_ref(), jobs, "loop").await?;
    let t0 = Instant::now();
    let mut running = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let store = store.clone();
        running.push(tokio::spawn(async move {
            let mut req = AcquireRequest::new(format!("store-loop/{t}"), Duration::from_secs(30))
                .node("store-loop", 0);
            req.kinds = vec!["noop".into()];
            let mut done = 0u64;
            let mut next = store.item_acquire(&req, clock.now()).await?;
            while let Some(leased) = next {
                let now = clock.now();
                let (completed, acquired) = tokio::join!(
                    store.item_complete(&leased.lease, json!(null), now),
                    store.item_acquire(&req, now),
                );
                completed?;
                done += 1;
                next = acquired?;
            }
            Ok::<u64, StoreError>(done)
        }));
    }
    let mut done = 0;
    for task in running {
        done += task.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    if done != jobs as u64 {
        return Err(format!("the store loop completed {done} of {jobs} items").into());
    }
    Ok(jobs as f64 / secs)
}

/// Starts `workers` idle workers, waits until every one has started (and so has its heartbeat
/// child), and reports resident memory.
async fn idle(
    target: &Target,
    workers: usize,
    as_json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = target.open(&GroupCounts::default()).await?;
    let rss_before = current_rss_mb();
    let builder = Leasehold::builder(store)
        .node_id("idle")
        .workers(workers)
        .handler("noop", |_ctx: JobContext| async move {
            Ok::<_, JobError>(json!(null))
        });
    let mut events = merge(vec![builder.subscribe()]);
    let t = Instant::now();
    let node = builder.start().await?;
    let mut started = 0;
    while started < workers {
        next_event(&mut events, |e| {
            matches!(e, NodeEvent::WorkerStarted { .. })
        })
        .await?;
        started += 1;
    }
    let start_s = t.elapsed().as_secs_f64();
    let heartbeats = heartbeat_children(&node, workers);
    let rss = current_rss_mb();
    let peak = peak_rss_mb();
    node.shutdown(Duration::from_secs(10)).await?;
    println!(
        "{workers} idle workers with {heartbeats} heartbeat children started in {start_s:.2} s: \
         RSS {rss:.1} MB (before the tree {rss_before:.1} MB), peak {peak:.1} MB"
    );
    if as_json {
        println!(
            "{}",
            json!({
                "idle_workers": workers,
                "heartbeat_children": heartbeats,
                "start_s": (start_s * 100.0).round() / 100.0,
                "rss_mb": (rss * 10.0).round() / 10.0,
                "rss_before_tree_mb": (rss_before * 10.0).round() / 10.0,
                "peak_rss_mb": (peak * 10.0).round() / 10.0,
            })
        );
    }
    Ok(())
}

/// Counts the children of every worker actor (each worker supervises only its heartbeat), found
/// by the name the tree registers workers under.
fn heartbeat_children(node: &NodeHandle, workers: usize) -> usize {
    (0..workers)
        .filter_map(|i| {
            let name = format!(
                "leasehold:{}:{}:worker:{i}",
                node.node_id(),
                node.incarnation()
            );
            ractor::registry::where_is(name)
        })
        .map(|cell| cell.get_children().len())
        .sum()
}

/// Waits until the nodes have acknowledged `total` completions between them, reading their
/// counters every millisecond. Not the event stream: a subscriber is woken for every event, and
/// during the bulk run those wake-ups would cost the trees a share of the two cores they are
/// measured on.
async fn wait_completed(
    nodes: &[NodeHandle],
    total: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let run = async {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while nodes.iter().map(|n| n.stats().completed).sum::<u64>() < total {
            tick.tick().await;
        }
    };
    tokio::time::timeout(DEADLINE, run)
        .await
        .map_err(|_| format!("not every item completed within {DEADLINE:?}"))?;
    Ok(())
}

/// Every node's events on one channel, each stamped with the instant its node's stream
/// delivered it.
fn merged_events(nodes: &[NodeHandle]) -> mpsc::UnboundedReceiver<(Instant, NodeEvent)> {
    merge(nodes.iter().map(NodeHandle::events).collect())
}

/// Several event streams on one channel, each event stamped with the instant its stream
/// delivered it. The forwarders end when the receiver is dropped (at their next event) or
/// their stream closes.
fn merge(streams: Vec<Receiver<NodeEvent>>) -> mpsc::UnboundedReceiver<(Instant, NodeEvent)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for mut events in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if tx.send((Instant::now(), e)).is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
    rx
}

/// The instant the first event matching `pick` arrived.
async fn next_event(
    events: &mut mpsc::UnboundedReceiver<(Instant, NodeEvent)>,
    pick: impl Fn(&NodeEvent) -> bool,
) -> Result<Instant, Box<dyn std::error::Error>> {
    let run = async {
        loop {
            match events.recv().await {
                Some((at, e)) if pick(&e) => return Ok(at),
                Some(_) => {}
                None => return Err("the event stream closed".to_string()),
            }
        }
    };
    Ok(tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .map_err(|_| "no matching event within 30 s".to_string())??)
}

/// The raw SQLite floor: `jobs` rows leased 64 per `UPDATE … RETURNING` transaction and
/// completed in one transaction per lease batch. Returns rows processed per second (the insert
/// is not timed).
fn floor(path: &Path, jobs: usize) -> Result<f64, rusqlite::Error> {
    let mut c = Connection::open(path)?;
    c.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.execute_batch(
        "CREATE TABLE jobs (
             id INTEGER PRIMARY KEY,
             status INTEGER NOT NULL DEFAULT 0,
             owner TEXT,
             lease_expires_at INTEGER,
             payload TEXT NOT NULL
         );
         CREATE INDEX jobs_pending ON jobs (id) WHERE status = 0;",
    )?;
    {
        let tx = c.transaction()?;
        {
            let mut insert = tx.prepare("INSERT INTO jobs (payload) VALUES (?1)")?;
            for i in 0..jobs {
                insert.execute([format!("{{\"n\":{i}}}")])?;
            }
        }
        tx.commit()?;
    }
    let started = Instant::now();
    let mut done = 0usize;
    loop {
        let now = SystemClock.now().0;
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let leased: Vec<(i64, String)> = {
            let mut lease = tx.prepare_cached(FLOOR_LEASE)?;
            let rows = lease.query_map(params!["floor", now + 300_000], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        tx.commit()?;
        if leased.is_empty() {
            break;
        }
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut complete = tx.prepare_cached(
                "UPDATE jobs SET status = 2, lease_expires_at = NULL \
                 WHERE id = ?1 AND status = 1 AND owner = ?2",
            )?;
            for (id, _payload) in &leased {
                complete.execute(params![id, "floor"])?;
            }
        }
        tx.commit()?;
        done += leased.len();
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(done, jobs, "the floor processed every row");
    Ok(jobs as f64 / secs)
}

/// The raw PostgreSQL floor, on one connection of its own to the server `url` names: `jobs`
/// rows in a minimal table in `schema` (dropped with it), leased 64 per transaction and
/// completed with one statement per leased batch. Returns rows processed per second (the
/// insert and its `ANALYZE` are not timed) and the server's `autovacuum` setting.
async fn pg_floor(
    url: &str,
    schema: &str,
    jobs: usize,
) -> Result<(f64, String), Box<dyn std::error::Error>> {
    let (client, conn) = pg_floor_table(url, schema, "floor_jobs", jobs).await?;
    let autovacuum: String = client.query_one("SHOW autovacuum", &[]).await?.get(0);
    let lease = client.prepare(&pg_floor_lease("floor_jobs", 64)).await?;
    let complete = client.prepare(&pg_floor_complete("floor_jobs")).await?;
    let started = Instant::now();
    let mut done = 0usize;
    loop {
        let expires = SystemClock.now().0 + 300_000;
        let leased = client.query(&lease, &[&"floor", &expires]).await?;
        if leased.is_empty() {
            break;
        }
        let ids: Vec<i64> = leased.iter().map(|r| r.get(0)).collect();
        let changed = client.execute(&complete, &[&ids, &"floor"]).await?;
        assert_eq!(
            changed as usize,
            ids.len(),
            "the floor completed what it leased"
        );
        done += ids.len();
    }
    let secs = started.elapsed().as_secs_f64();
    drop(client);
    let _ = conn.await;
    if done != jobs {
        return Err(format!("the PostgreSQL floor processed {done} of {jobs} rows").into());
    }
    Ok((jobs as f64 / secs, autovacuum))
}

/// The same floor in the shape of the tree's batches: each transaction completes the rows
/// the previous one leased and leases `per_tx` more (a node's idle workers' worth), `BEGIN`,
/// both statements and `COMMIT` pipelined in one round trip, as the store's batcher sends
/// them. What the floor's own minimal table and statements do with the batch size the tree is
/// allowed: the ceiling of any store that leases no more than its idle workers can start.
async fn pg_floor_at(
    url: &str,
    schema: &str,
    jobs: usize,
    per_tx: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let (client, conn) = pg_floor_table(url, schema, "floor_jobs_at", jobs).await?;
    let lease = client
        .prepare(&pg_floor_lease("floor_jobs_at", per_tx))
        .await?;
    let complete = client.prepare(&pg_floor_complete("floor_jobs_at")).await?;
    let started = Instant::now();
    let mut done = 0usize;
    let mut held: Vec<i64> = Vec::new();
    loop {
        let expires = SystemClock.now().0 + 300_000;
        let complete_args: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&held, &"floor"];
        let lease_args: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&"floor", &expires];
        let (begun, completed, leased, committed) = futures::join!(
            client.batch_execute("BEGIN"),
            client.execute(&complete, &complete_args),
            client.query(&lease, &lease_args),
            client.batch_execute("COMMIT"),
        );
        begun?;
        let completed = completed? as usize;
        assert_eq!(completed, held.len(), "the floor completed what it leased");
        committed?;
        done += completed;
        held = leased?.iter().map(|r| r.get(0)).collect();
        if held.is_empty() {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    drop(client);
    let _ = conn.await;
    if done != jobs {
        return Err(
            format!("the PostgreSQL batch-shaped floor processed {done} of {jobs} rows").into(),
        );
    }
    Ok(jobs as f64 / secs)
}

/// The floor's lease of `rows` pending rows of `table` in id order (its partial index's
/// order), passed over when another transaction holds them, as the store's acquisition does.
/// The limit is written into the text, as the SQLite floor's is.
fn pg_floor_lease(table: &str, rows: usize) -> String {
    format!(
        "UPDATE {table} SET status = 1, owner = $1, epoch = epoch + 1, lease_expires_at = $2 \
         WHERE id IN (SELECT id FROM {table} WHERE status = 0 ORDER BY id LIMIT {rows} \
                      FOR UPDATE SKIP LOCKED) \
         RETURNING id, payload"
    )
}

/// The floor's completion of the rows it leased, fenced by owner like the store's.
fn pg_floor_complete(table: &str) -> String {
    format!(
        "UPDATE {table} SET status = 2, lease_expires_at = NULL \
         WHERE id = ANY($1) AND status = 1 AND owner = $2"
    )
}

/// Creates the floor's minimal table `table` in `schema` with `jobs` pending rows, analyzed
/// as the store analyzes its own after a bulk load (with autovacuum off, the planner would
/// otherwise take it for empty); returns the connection, its `search_path` set to `schema`.
async fn pg_floor_table(
    url: &str,
    schema: &str,
    table: &str,
    jobs: usize,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    Box<dyn std::error::Error>,
> {
    let (client, connection) = url
        .parse::<tokio_postgres::Config>()?
        .connect(NoTls)
        .await?;
    let conn = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET search_path = {schema};
             CREATE TABLE {table} (
                 id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                 status           SMALLINT NOT NULL DEFAULT 0,
                 owner            TEXT,
                 epoch            BIGINT NOT NULL DEFAULT 0,
                 lease_expires_at BIGINT,
                 payload          JSON NOT NULL
             );
             CREATE INDEX {table}_pending ON {table} (id) WHERE status = 0;"
        ))
        .await?;
    client
        .execute(
            &format!(
                "INSERT INTO {table} (payload) \
                 SELECT json_build_object('n', n) FROM generate_series(1, $1::bigint) AS n"
            ),
            &[&(jobs as i64)],
        )
        .await?;
    client.batch_execute(&format!("ANALYZE {table}")).await?;
    Ok((client, conn))
}

/// A field of /proc/self/status in MB (`VmHWM`: peak resident set; `VmRSS`: current).
fn proc_status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn peak_rss_mb() -> f64 {
    proc_status_mb("VmHWM:")
}

fn current_rss_mb() -> f64 {
    proc_status_mb("VmRSS:")
}
