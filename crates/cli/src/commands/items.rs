//! `leasehold items`: list items, filtered.

use leasehold_core::{Clock, Item, ItemFilter, ItemStatus, Timestamp};

use crate::args;
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;
use crate::output::{one_line, relative, table};

/// How many items `items` lists without `--limit`.
const DEFAULT_LIMIT: u32 = 100;

/// Arguments of `items`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only items in this status (pending, in_progress, completed, failed, cancelled,
    /// awaiting).
    #[arg(long, value_name = "S", value_parser = args::status)]
    status: Option<ItemStatus>,

    /// Only items of this kind.
    #[arg(long, value_name = "K", value_parser = args::non_empty)]
    kind: Option<String>,

    /// Only items of this group.
    #[arg(long, value_name = "G", value_parser = args::non_empty)]
    group: Option<String>,

    /// Only items whose current or last holder is this owner.
    #[arg(long, value_name = "O", value_parser = args::non_empty)]
    owner: Option<String>,

    /// At most this many items, lowest ids first.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT,
          value_parser = args::positive_count, allow_negative_numbers = true)]
    limit: u32,
}

/// Opens an existing database and prints the matching items.
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let filter = ItemFilter {
        status: args.status,
        kind: args.kind,
        group_id: args.group,
        owner: args.owner,
        after: None,
        limit: args.limit,
    };
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, Access::Existing).await?;
    let items = store
        .items_list(&filter)
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    if ctx.out.is_json() {
        return ctx.out.json(&items);
    }
    if items.is_empty() {
        return ctx.out.text("no items");
    }
    let now = clock.now();
    let rows: Vec<Vec<String>> = items.iter().map(|item| row(item, now)).collect();
    let mut text = table(
        &[
            "ID", "KIND", "STATUS", "OWNER", "EPOCH", "ATTEMPTS", "LEASE", "ERROR",
        ],
        &rows,
    );
    if items.len() == args.limit as usize {
        text.push_str(&format!(
            "(first {} items shown; there may be more: raise --limit)\n",
            args.limit
        ));
    }
    ctx.out.text(&text)
}

/// One table row.
fn row(item: &Item, now: Timestamp) -> Vec<String> {
    let dash = || "-".to_string();
    let lease = match (item.status, item.lease_expires_at) {
        (ItemStatus::InProgress, Some(exp)) if exp <= now => {
            format!("expired {}", relative(exp, now))
        }
        (ItemStatus::InProgress, Some(exp)) => relative(exp, now),
        _ => dash(),
    };
    vec![
        item.id.to_string(),
        item.kind.clone(),
        item.status.to_string(),
        item.owner.clone().unwrap_or_else(dash),
        item.epoch.to_string(),
        format!("{}/{}", item.attempts, item.max_attempts),
        lease,
        note(item).unwrap_or_else(dash),
    ]
}

/// The last column: a parked item's open question and its allowed answers, else the error.
fn note(item: &Item) -> Option<String> {
    match (&item.status, &item.decision) {
        (ItemStatus::Awaiting, Some(d)) => Some(format!(
            "{} [{}]",
            one_line(&d.question, 60),
            d.answers.join("|")
        )),
        _ => item.error.as_deref().map(|e| one_line(e, 60)),
    }
}
