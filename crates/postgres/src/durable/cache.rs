//! The LLM output cache, with claims that make generation single-flight across processes and
//! hosts.
//!
//! A claim is decided in one transaction that holds the key's row locked: `INSERT … ON
//! CONFLICT DO NOTHING` creates the row for the first asker (a concurrent inserter of the same
//! key waits for it and then inserts nothing), and everyone else reads the row `FOR UPDATE`,
//! so two nodes asking at once are serialised on the row and the second sees the first's
//! claim.

use std::time::Duration;

use deadpool_postgres::Transaction;
use leasehold_core::durable::{CacheClaim, CacheEntry, NewCacheEntry};
use leasehold_core::{StoreError, StoreResult, Timestamp};
use serde_json::Value;

use crate::db::{finish, prepared, Db};
use crate::error::{corrupt, from_pg, no_nul};
use crate::row::col;

const CLAIM_NEW: &str =
    "INSERT INTO llm_cache (key, state, claimant, claim_expires_at, created_at) \
     VALUES ($1, 'generating', $2, $3, $4) ON CONFLICT (key) DO NOTHING RETURNING key";

const LOCK: &str =
    "SELECT state, output, claimant, claim_expires_at, created_at, expires_at, hits \
     FROM llm_cache WHERE key = $1 FOR UPDATE";

const HIT: &str = "UPDATE llm_cache SET hits = hits + 1 WHERE key = $1";

const TAKE: &str = "UPDATE llm_cache SET state = 'generating', output = NULL, operation = NULL, \
         model = NULL, task = NULL, claimant = $2, claim_expires_at = $3, created_at = $4, \
         expires_at = NULL, hits = 0 \
     WHERE key = $1";

/// The first output stored wins: never over a ready, live entry.
const PUT: &str = "INSERT INTO llm_cache \
         (key, state, operation, model, task, output, created_at, expires_at) \
     VALUES ($1, 'ready', $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (key) DO UPDATE SET state = 'ready', operation = excluded.operation, \
         model = excluded.model, task = excluded.task, output = excluded.output, \
         claimant = NULL, claim_expires_at = NULL, created_at = excluded.created_at, \
         expires_at = excluded.expires_at, hits = 0 \
     WHERE llm_cache.state = 'generating' OR llm_cache.expires_at <= $6";

const RELEASE: &str =
    "DELETE FROM llm_cache WHERE key = $1 AND state = 'generating' AND claimant = $2";

const INVALIDATE: &str = "DELETE FROM llm_cache WHERE key = $1";

const PURGE: &str = "DELETE FROM llm_cache WHERE (state = 'ready' AND expires_at <= $1) \
     OR (state = 'generating' AND claim_expires_at <= $1)";

/// How many times a claim re-reads a row that was deleted between its insert and its lock (a
/// release or an invalidation in between); each round is one statement pair.
const CLAIM_ROUNDS: usize = 5;

/// A hit, a new claim, or someone else's live claim.
pub(super) async fn claim(
    db: &Db,
    key: &str,
    claimant: &str,
    ttl: Duration,
    now: Timestamp,
) -> StoreResult<CacheClaim> {
    if claimant.is_empty() || ttl.is_zero() {
        return Err(StoreError::InvalidInput(
            "a cache claim needs a claimant and a positive ttl".into(),
        ));
    }
    no_nul("cache key", key)?;
    no_nul("claimant", claimant)?;
    let until = now.plus(ttl);
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = claim_in(&tx, key, claimant, until, now).await;
    finish(tx, outcome).await
}

async fn claim_in(
    tx: &Transaction<'_>,
    key: &str,
    claimant: &str,
    until: Timestamp,
    now: Timestamp,
) -> StoreResult<CacheClaim> {
    for _ in 0..CLAIM_ROUNDS {
        let stmt = prepared(tx, CLAIM_NEW).await?;
        let inserted = tx
            .query_opt(&stmt, &[&key, &claimant, &until.0, &now.0])
            .await
            .map_err(from_pg)?;
        if inserted.is_some() {
            return Ok(CacheClaim::Claimed { until });
        }
        let stmt = prepared(tx, LOCK).await?;
        let Some(r) = tx.query_opt(&stmt, &[&key]).await.map_err(from_pg)? else {
            // Deleted since the insert saw it: try to insert again.
            continue;
        };
        let state: String = col(&r, 0)?;
        let expires_at: Option<i64> = col(&r, 5)?;
        if state == "ready" && expires_at.is_some_and(|e| e > now.0) {
            let stmt = prepared(tx, HIT).await?;
            tx.execute(&stmt, &[&key]).await.map_err(from_pg)?;
            let output: Option<Value> = col(&r, 1)?;
            let output =
                output.ok_or_else(|| corrupt(format!("cached output of {key} is missing")))?;
            let hits: i64 = col(&r, 6)?;
            return Ok(CacheClaim::Hit(CacheEntry {
                key: key.to_owned(),
                output,
                created_at: Timestamp(col(&r, 4)?),
                expires_at: Timestamp(expires_at.unwrap_or_default()),
                hits: (hits + 1).max(0) as u64,
            }));
        }
        if state == "generating" {
            let other: Option<String> = col(&r, 2)?;
            let other = other.unwrap_or_default();
            let claim_expires_at: Option<i64> = col(&r, 3)?;
            if claim_expires_at.is_some_and(|t| t > now.0) && other != claimant {
                return Ok(CacheClaim::Busy {
                    claimant: other,
                    until: Timestamp(claim_expires_at.unwrap_or_default()),
                });
            }
        }
        // An expired entry, a lapsed claim, or our own (renewed): take the key.
        let stmt = prepared(tx, TAKE).await?;
        tx.execute(&stmt, &[&key, &claimant, &until.0, &now.0])
            .await
            .map_err(from_pg)?;
        return Ok(CacheClaim::Claimed { until });
    }
    Err(StoreError::Backend(
        format!("cache key {key}: its row kept vanishing while being claimed").into(),
    ))
}

/// Stores the output. A claimant whose claim was taken over still stores its output (it is as
/// good as the other's), but never over a ready entry: the first output stored wins.
pub(super) async fn put(
    db: &Db,
    entry: &NewCacheEntry,
    _claimant: &str,
    now: Timestamp,
) -> StoreResult<()> {
    if entry.expires_at <= now {
        return Err(StoreError::InvalidInput(
            "a cache entry must expire after now".into(),
        ));
    }
    for (what, v) in [
        ("cache key", &entry.key),
        ("operation", &entry.operation),
        ("model", &entry.model),
        ("task", &entry.task),
    ] {
        no_nul(what, v)?;
    }
    db.execute(
        PUT,
        &[
            &entry.key,
            &entry.operation,
            &entry.model,
            &entry.task,
            &entry.output,
            &now.0,
            &entry.expires_at.0,
        ],
    )
    .await?;
    Ok(())
}

/// Ends a claim without an output.
pub(super) async fn release(db: &Db, key: &str, claimant: &str) -> StoreResult<()> {
    db.execute(RELEASE, &[&key, &claimant]).await?;
    Ok(())
}

/// Removes the entry (ready or not).
pub(super) async fn invalidate(db: &Db, key: &str) -> StoreResult<bool> {
    Ok(db.execute(INVALIDATE, &[&key]).await? > 0)
}

/// Deletes expired entries and lapsed claims.
pub(super) async fn purge(db: &Db, now: Timestamp) -> StoreResult<u64> {
    db.execute(PURGE, &[&now.0]).await
}
