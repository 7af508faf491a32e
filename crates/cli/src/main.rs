//! `leasehold`: the command line of leasehold — enqueue items, inspect the queue, and run one
//! reaper sweep against a store named by `--db`.
//!
//! # Layout
//! - `main.rs` (this file): parses the command line, sets up logging and the async runtime,
//!   dispatches, and turns the outcome into an exit code.
//! - [`commands`]: the subcommand enum and the context every subcommand gets; one module per
//!   subcommand under `commands/`.
//! - [`args`]: value parsers shared by the subcommands (counts, seconds, statuses, non-empty
//!   names), so bad input is refused by the parser, before any database is opened.
//! - [`db`]: turns `--db` into a store, refusing a missing file for read-only commands.
//! - [`output`]: text-or-JSON printing, tables and time formatting.
//! - [`utc`]: RFC 3339 UTC times, printed (`item`) and read (`--before`).
//! - [`error`]: [`error::CliError`] and its exit codes (2 bad input, 1 failure).
//!
//! # Exit codes
//! 0 success; 1 a runtime or store failure; 2 bad input (including clap's usage errors). Every
//! error is one line on stderr starting `error: `.

mod args;
mod commands;
mod db;
mod error;
mod output;
mod utc;

use std::process::ExitCode;

use clap::Parser;

use crate::commands::{Command, Ctx};
use crate::error::CliError;
use crate::output::Output;

/// Durable leased work items: enqueue, inspect and reap.
#[derive(Debug, Parser)]
#[command(name = "leasehold", version, propagate_version = true)]
struct Cli {
    /// The store: a SQLite file path (./leasehold.db), a sqlite://PATH URL (sqlite:///abs/path
    /// for an absolute path), or a PostgreSQL URL postgres://USER@HOST:PORT/DB (also
    /// postgresql://; add ?schema=NAME for a schema other than leasehold).
    #[arg(
        long,
        global = true,
        env = "LEASEHOLD_DB",
        default_value = "./leasehold.db",
        value_name = "URL"
    )]
    db: String,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// The subcommand.
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    init_tracing();

    // Multi-threaded because subcommands may run a whole actor tree in this process; the
    // short commands do not notice the difference.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return report(CliError::failure(format!(
                "cannot start the async runtime: {e}"
            )))
        }
    };
    let ctx = Ctx {
        db: cli.db,
        out: Output::new(cli.json),
    };
    install_panic_hook();
    // A bug must still end as one `error:` line and exit 1, not a backtrace and 101.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(cli.command.run(&ctx))
    }));
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => report(e),
        // The hook has already printed the error line.
        Err(_) => ExitCode::from(error::EXIT_FAILURE),
    }
}

/// Replaces the default panic report (several lines, maybe a backtrace) with one `error:` line.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let line = CliError::failure(format!("internal error: {msg}{at}")).line();
        if let Some(line) = line {
            eprintln!("{line}");
        }
    }));
}

/// Prints `e` as one `error:` line (nothing for a closed stdout) and returns its exit code.
fn report(e: CliError) -> ExitCode {
    if let Some(line) = e.line() {
        eprintln!("{line}");
    }
    ExitCode::from(e.exit_code())
}

/// Handles a clap parse outcome that is not a parsed command line: help and version go to
/// stdout with exit 0; a usage error becomes one `error:` line with exit 2.
fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        // `leasehold` alone: the help is more use than a one-line complaint.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(error::EXIT_USAGE)
        }
        _ => {
            // clap renders several lines (usage, tips); the contract is one line, so keep the
            // error line and fold any tips into it.
            eprintln!("{}", one_line_clap_error(&e.render().to_string()));
            ExitCode::from(error::EXIT_USAGE)
        }
    }
}

/// clap's rendered error as one line: its first paragraph (the error and, for missing
/// arguments, their names), then any `tip:` lines in parentheses.
fn one_line_clap_error(rendered: &str) -> String {
    let lines: Vec<&str> = rendered.lines().map(str::trim).collect();
    let first: Vec<&str> = lines
        .iter()
        .copied()
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let mut line = if first.is_empty() {
        "error: invalid command line".to_string()
    } else {
        first.join(" ")
    };
    for tip in lines.iter().filter(|l| l.starts_with("tip:")) {
        line.push_str(&format!(" ({tip})"));
    }
    line
}

/// Logs to stderr (so `--json` stdout stays clean), filtered by `RUST_LOG`, default `warn`.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
