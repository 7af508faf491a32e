//! `kind_pause`, `kind_resume`, `kinds_paused`: kinds no node acquires (see `acquire`).

use leasehold_core::{PausedKind, StoreError, StoreResult, Timestamp};

use crate::db::Db;
use crate::error::no_nul;
use crate::row;

const PAUSE: &str =
    "INSERT INTO paused_kinds (kind, paused_at) VALUES ($1, $2) ON CONFLICT (kind) DO NOTHING";
const RESUME: &str = "DELETE FROM paused_kinds WHERE kind = $1";
const LIST: &str = "SELECT kind, paused_at FROM paused_kinds ORDER BY kind";

/// Pauses `kind`; whether it was not paused already.
pub(crate) async fn pause(db: &Db, kind: &str, now: Timestamp) -> StoreResult<bool> {
    if kind.trim().is_empty() {
        return Err(StoreError::InvalidInput("kind must not be empty".into()));
    }
    no_nul("kind", kind)?;
    Ok(db.execute(PAUSE, &[&kind, &now.0]).await? == 1)
}

/// Resumes `kind`; whether it was paused.
pub(crate) async fn resume(db: &Db, kind: &str) -> StoreResult<bool> {
    no_nul("kind", kind)?;
    Ok(db.execute(RESUME, &[&kind]).await? == 1)
}

/// The paused kinds, by name.
pub(crate) async fn list(db: &Db) -> StoreResult<Vec<PausedKind>> {
    let rows = db.query(LIST, &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(PausedKind {
                kind: row::col(r, 0)?,
                paused_at: leasehold_core::Timestamp(row::col(r, 1)?),
            })
        })
        .collect()
}
