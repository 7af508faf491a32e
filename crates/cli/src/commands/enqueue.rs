//! `leasehold enqueue`: add one item and print its id.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use leasehold_core::{Clock, NewItem};
use serde_json::{json, Value};

use crate::args;
use crate::commands::{config, Ctx};
use crate::db::{self, Access};
use crate::error::CliError;

/// Arguments of `enqueue`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The work type; workers pick items by kind.
    #[arg(long, value_name = "K", value_parser = args::non_empty)]
    kind: String,

    /// The handler's input, as JSON (e.g. '{"to": "a@b.c"}'). Exactly one of --input and
    /// --input-file is required.
    #[arg(
        long,
        value_name = "JSON",
        required_unless_present = "input_file",
        conflicts_with = "input_file"
    )]
    input: Option<String>,

    /// Read the handler's JSON input from this file (`-` for standard input), for inputs too
    /// large for a command-line argument.
    #[arg(long, value_name = "PATH")]
    input_file: Option<PathBuf>,

    /// The retry budget [default: LEASEHOLD_MAX_ATTEMPTS or TASK_MAX_REQUEUE, else 3].
    #[arg(long, value_name = "N", value_parser = args::positive_count, allow_negative_numbers = true)]
    max_attempts: Option<u32>,

    /// Higher runs first; may be negative.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    priority: i32,

    /// Do not run before this many seconds from now (may be fractional).
    #[arg(long, value_name = "S", value_parser = args::seconds, allow_negative_numbers = true)]
    delay_s: Option<Duration>,

    /// A group (task) id that workers can filter by.
    #[arg(long, value_name = "G", value_parser = args::non_empty)]
    group: Option<String>,

    /// This item's execution timeout per attempt, in seconds (may be fractional); wins over
    /// its kind's and the worker node's [default: none of its own].
    #[arg(long, value_name = "S", value_parser = args::seconds, allow_negative_numbers = true)]
    timeout_s: Option<Duration>,

    /// A unique key: while an item with this key is pending or in progress, print that item's
    /// id instead of adding another.
    #[arg(long, value_name = "K", value_parser = args::non_empty)]
    key: Option<String>,

    /// With --key: an item with the key that completed less than this many seconds ago also
    /// counts (its id is printed and nothing is added); may be fractional.
    #[arg(long, value_name = "S", value_parser = args::seconds, requires = "key")]
    key_within_s: Option<Duration>,

    /// The ids of items this one waits for: it is enqueued `blocked` and becomes ready when
    /// all of them have completed, and is cancelled if one fails or is cancelled. Each must
    /// name an existing item.
    #[arg(long, value_name = "ID", num_args = 1.., value_parser = args::item_id)]
    after: Vec<leasehold_core::ItemId>,
}

/// Validates, opens (creating the database if needed), enqueues, prints the id.
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let input = match (args.input, args.input_file) {
        (Some(text), _) => serde_json::from_str(&text)
            .map_err(|e| CliError::usage(format!("--input is not valid JSON: {e}")))?,
        (None, Some(path)) => read_input_file(path).await?,
        (None, None) => {
            return Err(CliError::usage(
                "one of --input or --input-file is required",
            ))
        }
    };
    let max_attempts = match args.max_attempts {
        Some(n) => n,
        None => config()?.max_attempts,
    };
    let mut item = NewItem::new(args.kind, input)
        .max_attempts(max_attempts)
        .priority(args.priority)
        .delay(args.delay_s.unwrap_or(Duration::ZERO));
    if let Some(g) = args.group {
        item = item.group(g);
    }
    if let Some(t) = args.timeout_s {
        item = item.timeout(t);
    }
    if let Some(k) = args.key {
        item = item.unique_key(k);
    }
    if let Some(w) = args.key_within_s {
        item = item.unique_within(w);
    }
    item = item.after(args.after);
    item.validate().map_err(CliError::usage)?;

    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, Access::Create).await?;
    let id = store
        .item_enqueue(item, clock.now())
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    if ctx.out.is_json() {
        ctx.out.json(&json!({ "id": id }))
    } else {
        ctx.out.text(&id.to_string())
    }
}

/// Reads and parses `--input-file` (`-` is standard input) before anything is opened, so a
/// missing file or bad JSON writes nothing. The read blocks, so it runs off the runtime.
async fn read_input_file(path: PathBuf) -> Result<Value, CliError> {
    let is_stdin = path.as_os_str() == "-";
    let name = if is_stdin {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let read = tokio::task::spawn_blocking(move || {
        if is_stdin {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map(|_| text)
        } else {
            std::fs::read_to_string(&path)
        }
    })
    .await
    .map_err(|e| CliError::failure(format!("reading --input-file {name}: {e}")))?;
    let text =
        read.map_err(|e| CliError::usage(format!("--input-file {name}: cannot read it: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("--input-file {name} is not valid JSON: {e}")))
}
