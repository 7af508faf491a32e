//! `leasehold status`: counts of items by status.

use leasehold_core::{ItemStatus, StatusCounts};
use serde::Serialize;

use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;

/// Arguments of `status` (none besides the global ones).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// The `--json` shape: every status's count, then the total.
#[derive(Serialize)]
struct StatusJson {
    #[serde(flatten)]
    counts: StatusCounts,
    total: u64,
}

/// Opens an existing database and prints its counts.
pub(crate) async fn run(_args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let store = db::open(&ctx.db, Access::Existing).await?;
    let counts = store
        .items_count()
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    if ctx.out.is_json() {
        return ctx.out.json(&StatusJson {
            counts,
            total: counts.total(),
        });
    }
    let mut text = String::new();
    for status in ItemStatus::ALL {
        text.push_str(&format!("{:<12} {}\n", status.as_str(), counts.get(status)));
    }
    text.push_str(&format!("{:<12} {}\n", "total", counts.total()));
    ctx.out.text(&text)
}
