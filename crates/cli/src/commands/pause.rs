//! `leasehold pause KIND` and `leasehold resume KIND`: stop and restart acquisition of a kind
//! on every node of the store (the store's `kind_pause` / `kind_resume`); in-flight items
//! finish. `status` lists the paused kinds.

use leasehold_core::Clock;
use serde::Serialize;

use crate::args;
use crate::commands::Ctx;
use crate::db::{self, Access};
use crate::error::CliError;

/// Arguments of `pause` and of `resume`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The kind.
    #[arg(value_name = "KIND", value_parser = args::non_empty)]
    kind: String,
}

/// What `--json` prints.
#[derive(Serialize)]
struct PauseJson<'a> {
    /// The kind.
    kind: &'a str,
    /// Whether it is paused now.
    paused: bool,
    /// Whether this command changed that (false: it already was).
    changed: bool,
}

/// Opens an existing database and pauses the kind.
pub(crate) async fn pause(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let db::Clocked { store, clock, .. } = db::open_clocked(&ctx.db, Access::Existing).await?;
    let changed = store
        .kind_pause(&args.kind, clock.now())
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    print(ctx, &args.kind, true, changed)
}

/// Opens an existing database and resumes the kind.
pub(crate) async fn resume(args: Args, ctx: &Ctx) -> Result<(), CliError> {
    let store = db::open(&ctx.db, Access::Existing).await?;
    let changed = store
        .kind_resume(&args.kind)
        .await
        .map_err(|e| CliError::store(&ctx.db, e))?;
    print(ctx, &args.kind, false, changed)
}

fn print(ctx: &Ctx, kind: &str, paused: bool, changed: bool) -> Result<(), CliError> {
    if ctx.out.is_json() {
        return ctx.out.json(&PauseJson {
            kind,
            paused,
            changed,
        });
    }
    ctx.out.text(&match (paused, changed) {
        (true, true) => format!(
            "kind {kind:?} paused: no node on this store takes it until `leasehold resume {kind}`; \
             items in progress finish"
        ),
        (true, false) => format!("kind {kind:?} was already paused"),
        (false, true) => format!("kind {kind:?} resumed"),
        (false, false) => format!("kind {kind:?} was not paused"),
    })
}
