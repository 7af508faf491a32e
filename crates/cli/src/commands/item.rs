//! `leasehold item ID`: one item's fields and its attempt history (the store's `item_get` and
//! `item_attempts`).

use leasehold_core::{Attempt, Item, ItemId, StoreError};
use serde::Serialize;

use crate::args;
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;
use crate::output::{duration, one_line, table};
use crate::utc;

/// Arguments of `item`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The item's id.
    #[arg(value_name = "ID", value_parser = args::item_id)]
    id: ItemId,
}

/// What `--json` prints: the item's fields, and its ended attempts oldest first.
#[derive(Serialize)]
struct ItemJson {
    #[serde(flatten)]
    item: Item,
    history: Vec<Attempt>,
}

/// Opens an existing database and prints the item. An unknown id is bad input (exit 2).
pub(crate) async fn run(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let store = db::open(&ctx.db, Access::Existing).await?;
    let item = store
        .item_get(args.id)
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?
        .ok_or_else(|| CliError::refused(&ctx.db, StoreError::NotFound(args.id)))?;
    let history = store
        .item_attempts(args.id)
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    if ctx.out.is_json() {
        return ctx.out.json(&ItemJson { item, history });
    }
    let mut text = fields(&item);
    if history.is_empty() {
        text.push_str("history: no ended attempts\n");
    } else {
        text.push_str(&format!("history: {} ended attempts\n", history.len()));
        let rows: Vec<Vec<String>> = history.iter().map(attempt_row).collect();
        text.push_str(&table(
            &[
                "ATTEMPT", "EPOCH", "STARTED", "ENDED", "OWNER", "NODE", "OUTCOME", "ERROR",
            ],
            &rows,
        ));
    }
    ctx.out.text(&text)
}

/// One `name: value` line per field that has a value.
fn fields(item: &Item) -> String {
    let time = |t: Option<leasehold_core::Timestamp>| t.map(utc::format);
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| one_line(&v.to_string(), 200));
    let lines: Vec<(&str, Option<String>)> = vec![
        ("id", Some(item.id.to_string())),
        ("kind", Some(item.kind.clone())),
        ("status", Some(item.status.to_string())),
        (
            "attempts",
            Some(format!("{}/{}", item.attempts, item.max_attempts)),
        ),
        ("priority", Some(item.priority.to_string())),
        ("group", item.group_id.clone()),
        ("unique key", item.unique_key.clone()),
        ("owner", item.owner.clone()),
        (
            "node",
            item.owner_node
                .as_ref()
                .map(|n| match item.owner_incarnation {
                    Some(inc) => format!("{n} (incarnation {inc})"),
                    None => n.clone(),
                }),
        ),
        ("epoch", Some(item.epoch.to_string())),
        ("created", Some(utc::format(item.created_at))),
        ("run at", Some(utc::format(item.run_at))),
        ("started", time(item.started_at)),
        ("lease expires", time(item.lease_expires_at)),
        ("cancel requested", time(item.cancel_requested_at)),
        ("finished", time(item.finished_at)),
        ("timeout", item.timeout.map(duration)),
        ("input", Some(one_line(&item.input.to_string(), 200))),
        ("progress", json(&item.progress)),
        ("output", json(&item.output)),
        ("error", item.error.as_deref().map(|e| one_line(e, 200))),
        (
            "decision",
            item.decision.as_ref().map(|d| match &d.answer {
                Some(a) => format!("{} → {a}", one_line(&d.question, 120)),
                None => format!("{} [{}]", one_line(&d.question, 120), d.answers.join("|")),
            }),
        ),
    ];
    let mut out = String::new();
    for (name, value) in lines {
        if let Some(value) = value {
            out.push_str(&format!("{:<17} {value}\n", format!("{name}:")));
        }
    }
    out
}

/// One row of the history table.
fn attempt_row(a: &Attempt) -> Vec<String> {
    let dash = || "-".to_string();
    vec![
        a.attempt.to_string(),
        a.epoch.to_string(),
        a.started_at.map(utc::format).unwrap_or_else(dash),
        utc::format(a.ended_at),
        a.owner.clone(),
        match (&a.owner_node, a.owner_incarnation) {
            (Some(n), Some(inc)) => format!("{n}#{inc}"),
            (Some(n), None) => n.clone(),
            _ => dash(),
        },
        a.outcome.to_string(),
        a.error
            .as_deref()
            .map(|e| one_line(e, 80))
            .unwrap_or_else(dash),
    ]
}
