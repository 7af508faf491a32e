//! `leasehold work`: a supervised tree in this process whose handler runs a shell command per
//! item — the input JSON on stdin, stdout stored as the output (JSON when it parses, else a JSON
//! string), a non-zero exit a retryable error. Stops gracefully on SIGINT/SIGTERM. On
//! PostgreSQL the tree runs on the database server's clock ([`db::open_clocked`]).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use leasehold_runtime::{JobContext, JobError, Leasehold, TreeExit};

use crate::args::{non_empty, positive_count, seconds};
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;

/// The most of a failing command's stderr kept in the item's error.
const STDERR_TAIL: usize = 500;

/// How often a node on PostgreSQL measures its clock's offset to the server's again.
const RESYNC_EVERY: Duration = Duration::from_secs(300);

/// Arguments of `work`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Workers in the tree.
    #[arg(long, default_value = "4", value_parser = positive_count)]
    workers: u32,
    /// Only items of this kind (repeatable); default: every kind.
    #[arg(long = "kind", value_parser = non_empty)]
    kinds: Vec<String>,
    /// The command run through `sh -c` for each item.
    #[arg(long, value_parser = non_empty)]
    exec: String,
    /// How long a graceful stop lets running commands finish before their items are released.
    #[arg(long, value_parser = seconds, default_value = "30")]
    drain_s: Duration,
    /// Stop gracefully once no item is pending or in progress.
    #[arg(long)]
    exit_when_done: bool,
    /// Do not run the monitor, which takes back the items of nodes the worker registry
    /// declares dead (those whose own heartbeat is as old) and reports each death on stderr.
    #[arg(long)]
    no_monitor: bool,
    /// When a live process already runs under this node id (LEASEHOLD_WORKER_ID), wait until
    /// it is dead and take over, instead of exiting with an error.
    #[arg(long, env = "LEASEHOLD_TAKEOVER")]
    takeover: bool,
}

/// What `--json` prints when the tree stops.
#[derive(Serialize)]
struct WorkJson {
    node_id: String,
    incarnation: i64,
    exit: TreeExit,
    shutdown: Option<leasehold_runtime::ShutdownReport>,
    stats: leasehold_runtime::RuntimeStats,
}

/// Runs the tree until a signal, an escalation, or (with `--exit-when-done`) an empty queue.
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    leasehold_core::Config::from_env()
        .and_then(|c| c.validate().map(|()| c))
        .map_err(|e| CliError::usage(e.to_string()))?;
    let db::Clocked {
        store,
        clock,
        database_clock,
    } = db::open_clocked(&ctx.db, Access::Create).await?;
    // On PostgreSQL the clock follows the server's; resync now and then so that drift between
    // this host's clock and the server's never builds up over a long run.
    let resync = database_clock.map(|c| {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RESYNC_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = c.resync().await {
                    tracing::warn!(error = %e, "cannot resync the database clock; keeping the last offset");
                }
            }
        })
    });
    let exec = Arc::new(args.exec);
    let make = |exec: Arc<String>| {
        move |job: JobContext| {
            let exec = exec.clone();
            async move { run_command(&exec, job).await }
        }
    };
    let mut builder = Leasehold::builder(store.clone())
        .clock(clock)
        .workers(args.workers as usize)
        .drain_timeout(args.drain_s)
        .monitor(!args.no_monitor)
        .takeover(args.takeover)
        .on_node_dead(|dead| {
            eprintln!(
                "leasehold work: node {} (incarnation {}) is dead, silent for {} ms; took back {} items",
                dead.node_id,
                dead.incarnation,
                dead.silent_for.as_millis(),
                dead.recovered.len()
            );
        });
    if args.kinds.is_empty() {
        builder = builder.fallback_handler(make(exec.clone()));
    } else {
        for kind in &args.kinds {
            builder = builder.handler(kind.clone(), make(exec.clone()));
        }
    }
    let waiting = tokio::spawn(announce_takeover_waits(builder.subscribe()));
    let started = builder.start().await;
    waiting.abort();
    // A node id in use is a failure (exit 1) with the runtime's one-line message.
    let node = started.map_err(|e| match e {
        leasehold_runtime::RuntimeError::Config(c) => CliError::usage(c.to_string()),
        other => CliError::failure(other.to_string()),
    })?;
    eprintln!(
        "leasehold work: node {} (incarnation {}), {} workers, running {:?}",
        node.node_id(),
        node.incarnation(),
        args.workers,
        exec.as_str()
    );

    let done = async {
        if !args.exit_when_done {
            return std::future::pending::<()>().await;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(c) = store.items_count().await {
                if c.pending + c.in_progress == 0 {
                    return;
                }
            }
        }
    };
    let (exit, shutdown) = tokio::select! {
        r = node.shutdown_on_signal() => (TreeExit::Shutdown, Some(r.map_err(|e| CliError::failure(e.to_string()))?)),
        _ = done => {
            let r = node.shutdown(args.drain_s).await.map_err(|e| CliError::failure(e.to_string()))?;
            (TreeExit::Shutdown, Some(r))
        }
        exit = node.wait() => (exit, None),
    };
    if let Some(task) = resync {
        task.abort();
    }
    let stats = node.stats();
    if ctx.out.is_json() {
        ctx.out.json(&WorkJson {
            node_id: node.node_id().to_string(),
            incarnation: node.incarnation(),
            exit: exit.clone(),
            shutdown,
            stats,
        })?;
    } else {
        ctx.out.text(&format!(
            "stopped: {} completed, {} retried, {} dead-lettered, {} released, {} restarts",
            stats.completed, stats.retried, stats.dead_lettered, stats.released, stats.restarts
        ))?;
    }
    match exit {
        TreeExit::Shutdown => Ok(()),
        TreeExit::Escalated(why) => Err(CliError::failure(format!("the tree escalated: {why}"))),
    }
}

/// Says on stderr, once per incarnation, that `--takeover` is waiting for a live process
/// under the same node id to die.
async fn announce_takeover_waits(
    mut events: tokio::sync::broadcast::Receiver<leasehold_runtime::NodeEvent>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(leasehold_runtime::NodeEvent::WaitingForTakeover {
                node_id,
                incarnation,
            }) => eprintln!(
                "leasehold work: node id {node_id} is in use by live incarnation {incarnation}; waiting until it is dead (--takeover)"
            ),
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

/// Runs `exec` for one item. Cancellation (lease lost, node stopping) kills the command.
async fn run_command(exec: &str, job: JobContext) -> Result<Value, JobError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(exec)
        .env("LEASEHOLD_ITEM_ID", job.id().to_string())
        .env("LEASEHOLD_KIND", job.kind())
        .env("LEASEHOLD_ATTEMPT", job.attempt().to_string())
        .env("LEASEHOLD_EPOCH", job.epoch().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| JobError::retryable(format!("cannot start sh -c {exec:?}: {e}")))?;
    let input = serde_json::to_vec(job.input()).map_err(JobError::permanent)?;
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let io = async {
        if let Some(mut s) = stdin.take() {
            // A command that does not read its stdin closes the pipe early: not an error.
            let _ = s.write_all(&input).await;
        }
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (o, e) = tokio::join!(
            async {
                if let Some(s) = stdout.as_mut() {
                    let _ = s.read_to_end(&mut out).await;
                }
            },
            async {
                if let Some(s) = stderr.as_mut() {
                    let _ = s.read_to_end(&mut err).await;
                }
            }
        );
        let ((), ()) = (o, e);
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, out, err) = tokio::select! {
        r = io => r,
        _ = job.cancelled() => return Err(JobError::retryable("cancelled: the lease was lost or the node is stopping")),
    };
    let status =
        status.map_err(|e| JobError::retryable(format!("waiting for the command: {e}")))?;
    if !status.success() {
        let err = String::from_utf8_lossy(&err);
        let tail: String = err
            .trim()
            .chars()
            .rev()
            .take(STDERR_TAIL)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(JobError::retryable(format!(
            "command exited with {status}: {tail}"
        )));
    }
    let text = String::from_utf8_lossy(&out);
    let text = text.trim();
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())))
}
