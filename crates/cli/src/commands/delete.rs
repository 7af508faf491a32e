//! `leasehold delete ID…` (or by filter): removes finished items with their checkpoints and
//! attempt history (the store's `items_delete`).

use leasehold_core::{Clock, ItemAction};

use crate::commands::action::{self, Target};
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;

/// Arguments of `delete`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Which items.
    #[command(flatten)]
    target: Target,
}

/// Opens an existing database and deletes the items. An item that is not finished (by id) or
/// an unknown id is bad input: refused naming it (exit 2), nothing changed.
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    args.target.check(ItemAction::Delete)?;
    // The clock only turns a `--before` age into a time.
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, Access::Existing).await?;
    let report = store
        .items_delete(&args.target.selector(clock.now()), args.target.dry_run)
        .await
        .map_err(|e| CliError::refused(&ctx.db, e))?;
    action::print(ctx, &report)
}
