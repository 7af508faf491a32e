//! The LLM output cache, with claims that make generation single-flight across processes.

use std::time::Duration;

use leasehold_core::durable::{CacheClaim, CacheEntry, NewCacheEntry};
use leasehold_core::{StoreError, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};

use crate::db::write;
use crate::error::OpResult;
use crate::row::json_text;

/// The row as a claim decision needs it.
struct Row {
    state: String,
    output: Option<String>,
    claimant: Option<String>,
    claim_expires_at: Option<i64>,
    created_at: i64,
    expires_at: Option<i64>,
    hits: i64,
}

/// A hit, a new claim, or someone else's live claim. One write transaction, so two processes
/// asking at once see each other's claim.
pub(super) fn claim(
    c: &mut Connection,
    key: &str,
    claimant: &str,
    ttl: Duration,
    now: Timestamp,
) -> OpResult<CacheClaim> {
    if claimant.is_empty() || ttl.is_zero() {
        return Err(StoreError::InvalidInput(
            "a cache claim needs a claimant and a positive ttl".into(),
        )
        .into());
    }
    let until = now.plus(ttl);
    write(c, |tx| {
        let row = tx
            .prepare_cached(
                "SELECT state, output, claimant, claim_expires_at, created_at, expires_at, hits \
                 FROM llm_cache WHERE key = ?1",
            )?
            .query_row(params![key], |r| {
                Ok(Row {
                    state: r.get(0)?,
                    output: r.get(1)?,
                    claimant: r.get(2)?,
                    claim_expires_at: r.get(3)?,
                    created_at: r.get(4)?,
                    expires_at: r.get(5)?,
                    hits: r.get(6)?,
                })
            })
            .optional()?;
        if let Some(r) = &row {
            let live = r.expires_at.is_some_and(|e| e > now.0);
            if r.state == "ready" && live {
                tx.prepare_cached("UPDATE llm_cache SET hits = hits + 1 WHERE key = ?1")?
                    .execute(params![key])?;
                let text = r.output.clone().unwrap_or_default();
                let output = serde_json::from_str(&text).map_err(|e| {
                    StoreError::Corrupt(format!("cached output of {key}: stored JSON: {e}"))
                })?;
                return Ok(CacheClaim::Hit(CacheEntry {
                    key: key.to_owned(),
                    output,
                    created_at: Timestamp(r.created_at),
                    expires_at: Timestamp(r.expires_at.unwrap_or_default()),
                    hits: (r.hits + 1).max(0) as u64,
                }));
            }
            if r.state == "generating" {
                let other = r.claimant.clone().unwrap_or_default();
                let claim_live = r.claim_expires_at.is_some_and(|t| t > now.0);
                if claim_live && other != claimant {
                    return Ok(CacheClaim::Busy {
                        claimant: other,
                        until: Timestamp(r.claim_expires_at.unwrap_or_default()),
                    });
                }
            }
        }
        // No entry, an expired one, or a lapsed (or our own) claim: take the key.
        tx.prepare_cached(
            "INSERT INTO llm_cache (key, state, claimant, claim_expires_at, created_at) \
             VALUES (?1, 'generating', ?2, ?3, ?4) \
             ON CONFLICT (key) DO UPDATE SET state = 'generating', output = NULL, \
                 claimant = excluded.claimant, claim_expires_at = excluded.claim_expires_at, \
                 created_at = excluded.created_at, expires_at = NULL, hits = 0",
        )?
        .execute(params![key, claimant, until.0, now.0])?;
        Ok(CacheClaim::Claimed { until })
    })
}

/// Stores the output. A claimant whose claim was taken over still stores its output (it is as
/// good as the other's), but never over a ready entry: the first output stored wins.
pub(super) fn put(
    c: &mut Connection,
    entry: &NewCacheEntry,
    _claimant: &str,
    now: Timestamp,
) -> OpResult<()> {
    if entry.expires_at <= now {
        return Err(StoreError::InvalidInput("a cache entry must expire after now".into()).into());
    }
    let output = json_text(&entry.output)?;
    c.prepare_cached(
        "INSERT INTO llm_cache (key, state, operation, model, task, output, created_at, expires_at) \
         VALUES (?1, 'ready', ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (key) DO UPDATE SET state = 'ready', operation = excluded.operation, \
             model = excluded.model, task = excluded.task, output = excluded.output, \
             claimant = NULL, claim_expires_at = NULL, created_at = excluded.created_at, \
             expires_at = excluded.expires_at, hits = 0 \
         WHERE llm_cache.state = 'generating' OR llm_cache.expires_at <= ?6",
    )?
    .execute(params![
        entry.key,
        entry.operation,
        entry.model,
        entry.task,
        output,
        now.0,
        entry.expires_at.0
    ])?;
    Ok(())
}

/// Ends a claim without an output.
pub(super) fn release(c: &mut Connection, key: &str, claimant: &str) -> OpResult<()> {
    c.prepare_cached(
        "DELETE FROM llm_cache WHERE key = ?1 AND state = 'generating' AND claimant = ?2",
    )?
    .execute(params![key, claimant])?;
    Ok(())
}

/// Removes the entry (ready or not).
pub(super) fn invalidate(c: &mut Connection, key: &str) -> OpResult<bool> {
    let n = c
        .prepare_cached("DELETE FROM llm_cache WHERE key = ?1")?
        .execute(params![key])?;
    Ok(n > 0)
}

/// Deletes expired entries and lapsed claims.
pub(super) fn purge(c: &mut Connection, now: Timestamp) -> OpResult<u64> {
    let n = c
        .prepare_cached(
            "DELETE FROM llm_cache WHERE (state = 'ready' AND expires_at <= ?1) \
             OR (state = 'generating' AND claim_expires_at <= ?1)",
        )?
        .execute(params![now.0])?;
    Ok(n as u64)
}
