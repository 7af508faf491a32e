//! `kind_pause`, `kind_resume`, `kinds_paused`: kinds no node acquires (see `acquire`).

use leasehold_core::{PausedKind, StoreError, Timestamp};
use rusqlite::{params, Connection};

use crate::db::write;
use crate::error::OpResult;

const PAUSE: &str =
    "INSERT INTO paused_kinds (kind, paused_at) VALUES (?1, ?2) ON CONFLICT (kind) DO NOTHING";
const RESUME: &str = "DELETE FROM paused_kinds WHERE kind = ?1";
const LIST: &str = "SELECT kind, paused_at FROM paused_kinds ORDER BY kind";

/// Pauses `kind`; whether it was not paused already.
pub(crate) fn pause(c: &mut Connection, kind: &str, now: Timestamp) -> OpResult<bool> {
    if kind.trim().is_empty() {
        return Err(StoreError::InvalidInput("kind must not be empty".into()).into());
    }
    write(c, |tx| {
        Ok(tx.prepare_cached(PAUSE)?.execute(params![kind, now.0])? == 1)
    })
}

/// Resumes `kind`; whether it was paused.
pub(crate) fn resume(c: &mut Connection, kind: &str) -> OpResult<bool> {
    write(c, |tx| {
        Ok(tx.prepare_cached(RESUME)?.execute(params![kind])? == 1)
    })
}

/// The paused kinds, by name.
pub(crate) fn list(c: &mut Connection) -> OpResult<Vec<PausedKind>> {
    let mut stmt = c.prepare_cached(LIST)?;
    let rows = stmt.query_map([], |r| {
        Ok(PausedKind {
            kind: r.get(0)?,
            paused_at: Timestamp(r.get(1)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
