//! `leasehold decide ID --answer A`: answers a parked item's question, so it goes back to
//! pending with the answer (the store's `item_decide`).

use leasehold_core::{Clock, ItemId};

use crate::args;
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;

/// Arguments of `decide`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The parked item's id (`leasehold items --status awaiting` lists them with their
    /// questions).
    #[arg(value_name = "ID", value_parser = args::item_id)]
    id: ItemId,

    /// The answer: one of the answers the item's question allows, exactly.
    #[arg(long, value_name = "A", value_parser = args::non_empty)]
    answer: String,
}

/// Opens an existing database and answers the item's question. An item that is not awaiting
/// a decision, an unknown item, or an answer the question does not allow is bad input: refused
/// with its reason (exit 2), nothing changed.
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, Access::Existing).await?;
    let item = store
        .item_decide(args.id, &args.answer, clock.now())
        .await
        .map_err(|e| CliError::refused(&ctx.db, e))?;
    if ctx.out.is_json() {
        return ctx.out.json(&item);
    }
    ctx.out.text(&format!(
        "item {} decided: {:?}; back to pending\n",
        item.id, args.answer
    ))
}
