//! `leasehold status`: counts of items by status, the paused kinds and the schedules.

use leasehold_core::{ItemStatus, PausedKind, ScheduleRecord, StatusCounts};
use serde::Serialize;

use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;
use crate::output::{relative, table};
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    schedules: Vec<ScheduleRecord>,
}

/// Opens an existing database and prints its counts, then a line per paused kind (none when
/// no kind is paused).
pub(crate) async fn run(_args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, Access::Existing).await?;
    let counts = store
        .items_count()
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    let paused_kinds = store
        .kinds_paused()
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    let schedules = store
        .schedules_list()
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    if ctx.out.is_json() {
        return ctx.out.json(&StatusJson {
            counts,
            total: counts.total(),
            paused_kinds,
            schedules,
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
    if !schedules.is_empty() {
        let now = clock.now();
        let rows: Vec<Vec<String>> = schedules
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.cron.clone(),
                    s.kind.clone(),
                    s.catch_up.to_string(),
                    relative(s.next_run_at, now),
                    s.last_run_at
                        .map_or_else(|| "-".to_string(), |t| relative(t, now)),
                ]
            })
            .collect();
        text.push_str("\nschedules\n");
        text.push_str(&table(
            &["NAME", "CRON", "KIND", "CATCH-UP", "NEXT RUN", "LAST RUN"],
            &rows,
        ));
    }
    ctx.out.text(&text)
}
