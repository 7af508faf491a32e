//! `leasehold status`: counts of items by status, and the paused kinds.

use leasehold_core::{ItemStatus, PausedKind, StatusCounts};
use serde::Serialize;

use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;
use crate::utc;

/// Arguments of `status` (none besides the global ones).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// The `--json` shape: every status's count, the total, then the paused kinds.
#[derive(Serialize)]
struct StatusJson {
    #[serde(flatten)]
    counts: StatusCounts,
    total: u64,
    paused_kinds: Vec<PausedKind>,
}

/// Opens an existing database and prints its counts, then a line per paused kind (none when
/// no kind is paused).
pub(crate) async fn run(_args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let store = db::open(&ctx.db, Access::Existing).await?;
    let counts = store
        .items_count()
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    let paused_kinds = store
        .kinds_paused()
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    if ctx.out.is_json() {
        return ctx.out.json(&StatusJson {
            counts,
            total: counts.total(),
            paused_kinds,
        });
    }
    let mut text = String::new();
    for status in ItemStatus::ALL {
        text.push_str(&format!("{:<12} {}\n", status.as_str(), counts.get(status)));
    }
    text.push_str(&format!("{:<12} {}\n", "total", counts.total()));
    for p in &paused_kinds {
        text.push_str(&format!(
            "{:<12} {} (since {})\n",
            "paused",
            p.kind,
            utc::format(p.paused_at)
        ));
    }
    ctx.out.text(&text)
}
