//! `leasehold retry ID…` (or by filter): failed or cancelled items back to pending with their
//! budget renewed, or raised by `--attempts N` (the store's `items_retry`).

use leasehold_core::{Clock, ItemAction, RetryRequest};

use crate::args;
use crate::commands::action::{self, Target};
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;

/// Arguments of `retry`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Which items.
    #[command(flatten)]
    target: Target,

    /// The new retry budget of each item (at least 1); without it each keeps its own. Either
    /// way the attempt count starts again at 0.
    #[arg(long, value_name = "N", value_parser = args::positive_count,
          allow_negative_numbers = true)]
    attempts: Option<u32>,
}

/// Opens an existing database and retries the items. An item that is not failed or cancelled
/// (by id) or an unknown id is bad input: refused naming it (exit 2), nothing changed.
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    args.target.check(ItemAction::Retry)?;
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, Access::Existing).await?;
    let now = clock.now();
    let req = RetryRequest {
        target: args.target.selector(now),
        max_attempts: args.attempts,
        dry_run: args.target.dry_run,
    };
    let report = store
        .items_retry(&req, now)
        .await
        .map_err(|e| CliError::refused(&ctx.db, e))?;
    action::print(ctx, &report)
}
