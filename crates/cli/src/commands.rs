//! The subcommands. Each lives in its own module under `commands/` with a clap `Args` struct
//! and an `async fn run(args, ctx)` that validates everything it can before it opens the
//! database. Adding a subcommand is one module and one variant (plus its arm) here.

mod action;
mod cancel;
mod cleanup;
mod dashboard;
mod decide;
mod delete;
mod enqueue;
mod item;
mod items;
mod monitor;
mod pause;
mod reap;
mod retry;
mod status;
mod work;
mod workers;

use clap::Subcommand;

use crate::error::CliError;
use crate::output::Output;

/// What every subcommand gets besides its own arguments.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The `--db` URL, not yet opened: a command opens it only after validating its input.
    pub(crate) db: String,
    /// Text or JSON.
    pub(crate) out: Output,
}

/// The subcommands of `leasehold`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Add an item; print its id.
    Enqueue(enqueue::Args),
    /// Count items by status; list the paused kinds.
    Status(status::Args),
    /// List items with their owner, epoch, attempts, lease expiry and error.
    Items(items::Args),
    /// Show one item: its fields and its attempt history (one line per ended attempt).
    Item(item::Args),
    /// Run one reaper sweep: requeue or dead-letter items whose lease expired and whose owner
    /// the worker registry does not vouch for.
    Reap(reap::Args),
    /// Run a supervised tree in this process whose workers run a shell command per item.
    Work(work::Args),
    /// List the worker registry: each node's status, current item, last heartbeat, and
    /// whether it is alive, dead or stopped.
    Workers(workers::Args),
    /// Remove registry rows of long-stopped or long-dead nodes and old finished items with
    /// their checkpoints (--dry-run: report only).
    Cleanup(cleanup::Args),
    /// Serve the web dashboard, its JSON API and Prometheus metrics.
    Dashboard(dashboard::Args),
    /// Run the dead-node monitor as a process of its own: every interval, take back what dead
    /// nodes hold, print a line of statistics, alert once per newly dead node.
    Monitor(monitor::Args),
    /// Answer an item parked awaiting a decision: it goes back to pending with the answer.
    Decide(decide::Args),
    /// Put failed or cancelled items back to pending, their attempt count reset (by ids, or
    /// every match of a filter; --dry-run: report only).
    Retry(retry::Args),
    /// Cancel pending items; mark in-progress ones, which end cancelled at their holder's next
    /// renewal (by ids, or every match of a filter; --dry-run: report only).
    Cancel(cancel::Args),
    /// Remove finished items with their checkpoints and attempt history (by ids, or every
    /// match of a filter; --dry-run: report only).
    Delete(delete::Args),
    /// Stop every node on the store from taking items of a kind; in-flight items finish.
    Pause(pause::Args),
    /// Let nodes take items of a paused kind again.
    Resume(pause::Args),
}

impl Command {
    /// Runs the subcommand.
    pub(crate) async fn run(self, ctx: &Ctx) -> Result<(), CliError> {
        match self {
            Command::Enqueue(args) => enqueue::run(args, ctx).await,
            Command::Status(args) => status::run(args, ctx).await,
            Command::Items(args) => items::run(args, ctx).await,
            Command::Reap(args) => reap::run(args, ctx).await,
            Command::Work(args) => work::run(args, ctx).await,
            Command::Workers(args) => workers::run(args, ctx).await,
            Command::Cleanup(args) => cleanup::run(args, ctx).await,
            Command::Dashboard(args) => dashboard::run(args, ctx).await,
            Command::Monitor(args) => monitor::run(args, ctx).await,
            Command::Decide(args) => decide::run(args, ctx).await,
            Command::Item(args) => item::run(args, ctx).await,
            Command::Retry(args) => retry::run(args, ctx).await,
            Command::Cancel(args) => cancel::run(args, ctx).await,
            Command::Delete(args) => delete::run(args, ctx).await,
            Command::Pause(args) => pause::pause(args, ctx).await,
            Command::Resume(args) => pause::resume(args, ctx).await,
        }
    }
}

/// The configuration from the environment (`LEASEHOLD_*`, with the seeds' `TASK_*` aliases);
/// an unparsable variable is bad input that names the variable.
pub(crate) fn config() -> Result<leasehold_core::Config, CliError> {
    leasehold_core::Config::from_env().map_err(|e| CliError::usage(e.to_string()))
}
