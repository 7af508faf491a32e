//! What `retry`, `cancel` and `delete` share: which items (ids, or a filter), `--dry-run`, the
//! checks made before the database is opened, and how the store's report is printed.

use leasehold_core::{
    ActionFilter, ActionReport, ItemAction, ItemId, ItemSelector, ItemStatus, Timestamp,
};

use crate::args::{self, Before};
use crate::commands::Ctx;
use crate::error::CliError;
use crate::output::table;

/// The items an action applies to: ids, or a filter. Flattened into each action's `Args`.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// The items, by id. All or nothing: an unknown id, or one item in a status the action does
    /// not apply to, refuses the whole command and changes nothing. Or give a filter instead.
    #[arg(value_name = "ID", value_parser = args::item_id,
          conflicts_with_all = ["status", "kind", "before"])]
    ids: Vec<ItemId>,

    /// Filter: only items in this status (one the action applies to; without it, every status
    /// it applies to).
    #[arg(long, value_name = "S", value_parser = args::status)]
    status: Option<ItemStatus>,

    /// Filter: only items of this kind.
    #[arg(long, value_name = "K", value_parser = args::non_empty)]
    kind: Option<String>,

    /// Filter: only items enqueued before this time: an RFC 3339 UTC time
    /// (2026-12-03T14:05:09Z), a date (2026-12-03), or an age (90s, 30m, 12h, 7d ago).
    #[arg(long, value_name = "TIME", value_parser = args::before)]
    before: Option<Before>,

    /// Report what the action would do; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

impl Target {
    /// Refuses, before any database is opened, a command with neither ids nor a filter and a
    /// `--status` the action does not apply to.
    pub(crate) fn check(&self, action: ItemAction) -> Result<(), CliError> {
        let selector = self.selector(Timestamp(0));
        if let ItemSelector::Filter(ActionFilter {
            status: None,
            kind: None,
            before: None,
        }) = selector
        {
            return Err(CliError::usage(format!(
                "{} needs item ids or a filter (--status, --kind, --before)",
                action.as_str()
            )));
        }
        selector.validate().map_err(CliError::usage)?;
        action.statuses(&selector).map_err(CliError::usage)?;
        Ok(())
    }

    /// The store's selector, a `--before` age counted back from `now`.
    pub(crate) fn selector(&self, now: Timestamp) -> ItemSelector {
        if !self.ids.is_empty() {
            return ItemSelector::Ids(self.ids.clone());
        }
        ItemSelector::Filter(ActionFilter {
            status: self.status,
            kind: self.kind.clone(),
            before: self.before.map(|b| b.resolve(now)),
        })
    }
}

/// Prints an action's report: as is with `--json`, else a count line (`retried 2 items`,
/// `dry run (nothing changed): would retry 2 items`) and a table of the items with their
/// status before and after.
pub(crate) fn print(ctx: &Ctx, report: &ActionReport) -> Result<(), CliError> {
    if ctx.out.is_json() {
        return ctx.out.json(report);
    }
    let n = report.count;
    let items = if n == 1 { "item" } else { "items" };
    let (verb, done) = match report.action {
        ItemAction::Retry => ("retry", "retried"),
        ItemAction::Cancel => ("cancel", "cancelled"),
        ItemAction::Delete => ("delete", "deleted"),
    };
    let mut text = if report.dry_run {
        format!("dry run (nothing changed): would {verb} {n} {items}\n")
    } else {
        format!("{done} {n} {items}\n")
    };
    let marked = report
        .items
        .iter()
        .filter(|i| report.action == ItemAction::Cancel && i.from == ItemStatus::InProgress)
        .count();
    if marked > 0 {
        text.push_str(&format!(
            "{marked} in progress marked for cancellation: each ends cancelled when its holder \
             next renews its lease\n"
        ));
    }
    if report.items.is_empty() {
        return ctx.out.text(&text);
    }
    let rows: Vec<Vec<String>> = report
        .items
        .iter()
        .map(|i| {
            let to = match (report.action, i.from) {
                (ItemAction::Cancel, ItemStatus::InProgress) => "cancel requested".to_string(),
                (ItemAction::Delete, _) => "deleted".to_string(),
                _ => i.to.to_string(),
            };
            vec![i.id.to_string(), i.kind.clone(), i.from.to_string(), to]
        })
        .collect();
    text.push_str(&table(&["ID", "KIND", "FROM", "TO"], &rows));
    ctx.out.text(&text)
}
