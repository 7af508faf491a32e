//! `leasehold work`: a supervised tree in this process whose handler runs a shell command per
//! item — the input JSON on stdin, stdout stored as the output (JSON when it parses, else a JSON
//! string), a non-zero exit a retryable error. Stops gracefully on SIGINT/SIGTERM. On
//! PostgreSQL the tree runs on the database server's clock, which its node chooses by itself.
//!
//! Each command runs in a process group of its own: a timeout, a lost lease or a stopping node
//! kills the whole group, so nothing the command started in the background outlives its
//! attempt.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use leasehold_core::{ItemFilter, ItemStatus, Store};
use leasehold_runtime::{JobContext, JobError, Leasehold, TreeExit};

use crate::args::{non_empty, positive_count, seconds};
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;

/// The most of a failing command's stderr kept in the item's error.
const STDERR_TAIL: usize = 500;

/// Arguments of `work`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Workers in the tree.
    #[arg(long, default_value = "4", value_parser = positive_count)]
    workers: u32,
    /// Only items of this kind (repeatable); default: every kind.
    #[arg(long = "kind", value_parser = non_empty)]
    kinds: Vec<String>,
    /// Only items of this group (task) id; default: every group, and items without one.
    #[arg(long, value_name = "G", value_parser = non_empty)]
    group: Option<String>,
    /// The command run through `sh -c` for each item.
    #[arg(long, value_parser = non_empty)]
    exec: String,
    /// How long a graceful stop lets running commands finish before their items are released.
    #[arg(long, value_parser = seconds, default_value = "30")]
    drain_s: Duration,
    /// The execution timeout of one attempt, for items without their own: past it the command's
    /// process group is killed and the attempt fails as retryable ("timed out after …")
    /// [default: LEASEHOLD_TIMEOUT_S, else none].
    #[arg(long, value_name = "S", value_parser = seconds)]
    timeout_s: Option<Duration>,
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
    // The builder takes lease times from the database server's clock on PostgreSQL (and
    // resyncs it), the system clock on SQLite.
    let store = db::open(&ctx.db, Access::Create).await?;
    let exec = Arc::new(args.exec);
    let make = |exec: Arc<String>| {
        move |job: JobContext| {
            let exec = exec.clone();
            async move { run_command(&exec, job).await }
        }
    };
    let mut builder = Leasehold::builder(store.clone())
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
    if let Some(t) = args.timeout_s {
        builder = builder.timeout(t);
    }
    if let Some(g) = &args.group {
        builder = builder.group(g.clone());
    }
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
            if queue_done(store.as_ref(), args.group.as_deref()).await {
                return;
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
        TreeExit::Superseded(why) => Err(CliError::failure(format!("this node stopped: {why}"))),
        other => Err(CliError::failure(format!("the tree stopped: {other:?}"))),
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

/// Runs `exec` for one item. Cancellation (a timeout, a lost lease, the node stopping) kills
/// the command's whole process group.
async fn run_command(exec: &str, job: JobContext) -> Result<Value, JobError> {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(exec)
        .env("LEASEHOLD_ITEM_ID", job.id().to_string())
        .env("LEASEHOLD_KIND", job.kind())
        .env("LEASEHOLD_ATTEMPT", job.attempt().to_string())
        .env("LEASEHOLD_EPOCH", job.epoch().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own group (pgid = the shell's pid): killing the group reaches whatever the command
    // started, which killing `sh` alone would leave running.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| JobError::retryable(format!("cannot start sh -c {exec:?}: {e}")))?;
    // Armed until the shell is reaped: dropping the handler (aborted after the grace period)
    // kills the group as well.
    let mut group = group::ProcessGroup::of(child.id());
    let input = serde_json::to_vec(job.input()).map_err(JobError::permanent)?;
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let io = async {
        // Written while stdout and stderr are read: a command that writes before it has read
        // all its input would otherwise fill one pipe while this side waits on the other.
        let write = async move {
            if let Some(mut s) = stdin {
                // A command that does not read its stdin closes the pipe early: not an error.
                let _ = s.write_all(&input).await;
                // Dropping `s` closes the pipe: the command sees the end of its input.
            }
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
        };
        tokio::join!(write, read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, out, err) = tokio::select! {
        r = io => r,
        _ = job.cancelled() => {
            // The shell is not reaped yet, so its pid still names this group.
            group.kill();
            return Err(JobError::retryable(
                "cancelled: the attempt timed out, the lease was lost or the node is stopping",
            ));
        }
    };
    // Reaped: from here on the group id may name someone else's group.
    group.disarm();
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

/// The command's process group.
mod group {
    /// Sends SIGKILL to the group on [`kill`](Self::kill) or on drop, unless disarmed.
    pub(super) struct ProcessGroup {
        #[cfg(unix)]
        pgid: Option<rustix::process::Pid>,
    }

    impl ProcessGroup {
        /// The group led by the process `pid` (spawned with `process_group(0)`).
        pub(super) fn of(pid: Option<u32>) -> Self {
            #[cfg(not(unix))]
            let _ = pid;
            ProcessGroup {
                #[cfg(unix)]
                pgid: pid
                    .and_then(|p| i32::try_from(p).ok())
                    .and_then(rustix::process::Pid::from_raw),
            }
        }

        /// Kills every process of the group, once.
        pub(super) fn kill(&mut self) {
            #[cfg(unix)]
            if let Some(pgid) = self.pgid.take() {
                match rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL) {
                    // Everyone in it has exited already.
                    Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                    Err(e) => {
                        tracing::warn!(pgid = pgid.as_raw_nonzero().get(), error = %e, "cannot kill the command's process group");
                    }
                }
            }
        }

        /// Forgets the group without killing it (the command finished and was reaped).
        pub(super) fn disarm(&mut self) {
            #[cfg(unix)]
            {
                self.pgid = None;
            }
        }
    }

    impl Drop for ProcessGroup {
        fn drop(&mut self) {
            self.kill();
        }
    }
}

/// Whether nothing `work` could still run is pending or in progress: the whole queue, or with
/// `--group` only that group's items — the others are never this node's to finish. A store
/// error counts as not done, so a passing outage does not end the run.
async fn queue_done(store: &dyn Store, group: Option<&str>) -> bool {
    let Some(group) = group else {
        return store
            .items_count()
            .await
            .is_ok_and(|c| c.pending + c.in_progress == 0);
    };
    for status in [ItemStatus::Pending, ItemStatus::InProgress] {
        let filter = ItemFilter {
            status: Some(status),
            group_id: Some(group.to_string()),
            limit: 1,
            ..ItemFilter::default()
        };
        match store.items_list(&filter).await {
            Ok(items) if items.is_empty() => {}
            _ => return false,
        }
    }
    true
}
