//! `leasehold cancel ID…` (or by filter): a pending item becomes cancelled; an in-progress one
//! is marked, and its holder ends it cancelled at its next renewal (the store's
//! `items_cancel`).

use leasehold_core::{Clock, ItemAction};

use crate::commands::action::{self, Target};
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;

/// Arguments of `cancel`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Which items.
    #[command(flatten)]
    target: Target,
}

/// Opens an existing database and cancels the items. A finished item (by id) or an unknown id
/// is bad input: refused naming it (exit 2), nothing changed.
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    args.target.check(ItemAction::Cancel)?;
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, Access::Existing).await?;
    let now = clock.now();
    let report = store
        .items_cancel(&args.target.selector(now), args.target.dry_run, now)
        .await
        .map_err(|e| CliError::refused(&ctx.db, e))?;
    action::print(ctx, &report)
}
