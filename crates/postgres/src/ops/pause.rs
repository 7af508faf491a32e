//! `kind_pause`, `kind_resume`, `kinds_paused`: kinds no node acquires (see `acquire`).

use leasehold_core::{PausedKind, StoreError, StoreResult, Timestamp};

use crate::db::Db;
use crate::error::no_nul;
use crate::notify::WAKE_ALL;
use crate::row;

const PAUSE: &str =
    "INSERT INTO paused_kinds (kind, paused_at) VALUES ($1, $2) ON CONFLICT (kind) DO NOTHING";
/// Resumes the kind and, if it was paused, wakes every listening node's idle workers (delivered
/// at commit): its ready items may have waited while the nodes' idle polls backed off. How
/// many are ready is not counted, which would read every pending item of the kind: a resume is
/// rare, and a worker woken for nothing only polls once more.
const RESUME: &str = "WITH resumed AS (DELETE FROM paused_kinds WHERE kind = $1 RETURNING kind) \
     SELECT pg_notify($2, $3) FROM resumed";
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
pub(crate) async fn resume(db: &Db, channel: &str, kind: &str) -> StoreResult<bool> {
    no_nul("kind", kind)?;
    let wake_all = WAKE_ALL.to_string();
    Ok(db.query(RESUME, &[&kind, &channel, &wake_all]).await?.len() == 1)
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
