//! The LLM output cache, with claims that make generation single-flight across processes and
//! hosts.
//!
//! A claim is made by a lease and records it (`claimant` = owner, `claim_item`,
//! `claim_epoch`). Every write here except invalidation and purging is fenced by that lease
//! (`checkpoint::fence`, whose share lock on the item row holds until the write commits), and
//! a claim counts as live only while its lease is still current, so a zombie neither keeps a
//! key from the new holder nor fills it.
//!
//! A claim is decided in one transaction that holds the key's row locked: `INSERT … ON
//! CONFLICT DO NOTHING` creates the row for the first asker (a concurrent inserter of the same
//! key waits for that insert to commit and then inserts nothing), and every other asker reads
//! the row `FOR UPDATE`, so two hosts asking at once are serialised on the row and the second
//! sees the first's claim. Locks are taken item row first, cache row second, everywhere, so
//! two claims never deadlock.

use std::time::Duration;

use deadpool_postgres::Transaction;
use leasehold_core::durable::{CacheClaim, CacheEntry, CacheKeyInfo, NewCacheEntry};
use leasehold_core::{ItemId, LeaseRef, StoreError, StoreResult, Timestamp};
use serde_json::Value;

use super::checkpoint::fence;
use crate::db::{finish, prepared, Db};
use crate::error::{corrupt, from_pg, no_nul};
use crate::row::col;

/// Whether the lease recorded on a cache row is still current: the fence's condition, on the
/// row's claim columns.
macro_rules! claim_current {
    () => {
        "EXISTS (SELECT 1 FROM items WHERE items.id = llm_cache.claim_item \
         AND items.status = 'in_progress' AND items.owner = llm_cache.claimant \
         AND items.epoch = llm_cache.claim_epoch)"
    };
}

const CLAIM_NEW: &str = "INSERT INTO llm_cache \
         (key, state, claimant, claim_item, claim_epoch, claim_expires_at, created_at) \
     VALUES ($1, 'generating', $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING RETURNING key";

const LOCK: &str = concat!(
    "SELECT state, output, claimant, claim_item, claim_epoch, claim_expires_at, ",
    claim_current!(),
    ", created_at, expires_at, hits FROM llm_cache WHERE key = $1 FOR UPDATE"
);

const HIT: &str = "UPDATE llm_cache SET hits = hits + 1 WHERE key = $1";

const RENEW: &str = "UPDATE llm_cache SET claim_expires_at = $2 WHERE key = $1";

const TAKE: &str = "UPDATE llm_cache SET state = 'generating', output = NULL, operation = NULL, \
         model = NULL, task = NULL, claimant = $2, claim_item = $3, claim_epoch = $4, \
         claim_expires_at = $5, created_at = $6, expires_at = NULL, hits = 0 \
     WHERE key = $1";

/// Only over the lease's own claim: another claimant's claim or a stored output is never
/// overwritten.
const PUT: &str = "UPDATE llm_cache SET state = 'ready', operation = $5, model = $6, task = $7, \
         output = $8, claimant = NULL, claim_item = NULL, claim_epoch = NULL, \
         claim_expires_at = NULL, created_at = $9, expires_at = $10, hits = 0 \
     WHERE key = $1 AND state = 'generating' AND claimant = $2 AND claim_item = $3 \
         AND claim_epoch = $4";

const RELEASE: &str = "DELETE FROM llm_cache WHERE key = $1 AND state = 'generating' \
     AND claimant = $2 AND claim_item = $3 AND claim_epoch = $4";

const OF_ITEM: &str = "SELECT key, state, operation, model, task, created_at, expires_at, hits \
     FROM llm_cache WHERE task = $1 OR claim_item = $2 ORDER BY created_at DESC, key LIMIT $3";

const INVALIDATE: &str = "DELETE FROM llm_cache WHERE key = $1";

const PURGE: &str = concat!(
    "DELETE FROM llm_cache WHERE (state = 'ready' AND expires_at <= $1) \
     OR (state = 'generating' AND (claim_expires_at <= $1 OR NOT ",
    claim_current!(),
    "))"
);

/// How many times a claim re-reads a row that was deleted between its insert and its lock (a
/// release or an invalidation in between); each round is one statement pair.
const CLAIM_ROUNDS: usize = 5;

/// A hit, a new or renewed claim, or another current lease's live claim (fenced).
pub(super) async fn claim(
    db: &Db,
    key: &str,
    lease: &LeaseRef,
    ttl: Duration,
    now: Timestamp,
) -> StoreResult<CacheClaim> {
    if ttl.is_zero() {
        return Err(StoreError::InvalidInput(
            "a cache claim needs a positive ttl".into(),
        ));
    }
    no_nul("cache key", key)?;
    let until = now.plus(ttl);
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = claim_in(&tx, key, lease, until, now).await;
    finish(tx, outcome).await
}

async fn claim_in(
    tx: &Transaction<'_>,
    key: &str,
    lease: &LeaseRef,
    until: Timestamp,
    now: Timestamp,
) -> StoreResult<CacheClaim> {
    fence(tx, lease).await?;
    for _ in 0..CLAIM_ROUNDS {
        let stmt = prepared(tx, CLAIM_NEW).await?;
        let inserted = tx
            .query_opt(
                &stmt,
                &[
                    &key,
                    &lease.owner,
                    &lease.item.0,
                    &lease.epoch,
                    &until.0,
                    &now.0,
                ],
            )
            .await
            .map_err(from_pg)?;
        if inserted.is_some() {
            return Ok(CacheClaim::Claimed { until });
        }
        let stmt = prepared(tx, LOCK).await?;
        let Some(r) = tx.query_opt(&stmt, &[&key]).await.map_err(from_pg)? else {
            // Deleted since the insert saw it: insert again.
            continue;
        };
        let state: String = col(&r, 0)?;
        let expires_at: Option<i64> = col(&r, 8)?;
        if state == "ready" && expires_at.is_some_and(|e| e > now.0) {
            let stmt = prepared(tx, HIT).await?;
            tx.execute(&stmt, &[&key]).await.map_err(from_pg)?;
            let output: Option<Value> = col(&r, 1)?;
            let output =
                output.ok_or_else(|| corrupt(format!("cached output of {key} is missing")))?;
            let hits: i64 = col(&r, 9)?;
            return Ok(CacheClaim::Hit(CacheEntry {
                key: key.to_owned(),
                output,
                created_at: Timestamp(col(&r, 7)?),
                expires_at: Timestamp(expires_at.unwrap_or_default()),
                hits: (hits + 1).max(0) as u64,
            }));
        }
        let claimant: Option<String> = col(&r, 2)?;
        let claim_item: Option<i64> = col(&r, 3)?;
        let claim_epoch: Option<i64> = col(&r, 4)?;
        let claim_expires_at: Option<i64> = col(&r, 5)?;
        let claim_current: bool = col(&r, 6)?;
        if state == "generating" {
            let ours = claim_item == Some(lease.item.0)
                && claim_epoch == Some(lease.epoch)
                && claimant.as_deref() == Some(lease.owner.as_str());
            if ours {
                // Our own claim (lapsed or not): a renewal.
                let stmt = prepared(tx, RENEW).await?;
                tx.execute(&stmt, &[&key, &until.0])
                    .await
                    .map_err(from_pg)?;
                return Ok(CacheClaim::Claimed { until });
            }
            if claim_current && claim_expires_at.is_some_and(|t| t > now.0) {
                return Ok(CacheClaim::Busy {
                    holder: LeaseRef {
                        item: ItemId(claim_item.unwrap_or_default()),
                        owner: claimant.unwrap_or_default(),
                        epoch: claim_epoch.unwrap_or_default(),
                    },
                    until: Timestamp(claim_expires_at.unwrap_or_default()),
                });
            }
        }
        // An expired entry, or a claim that lapsed or whose lease is gone: take the key.
        let stmt = prepared(tx, TAKE).await?;
        tx.execute(
            &stmt,
            &[
                &key,
                &lease.owner,
                &lease.item.0,
                &lease.epoch,
                &until.0,
                &now.0,
            ],
        )
        .await
        .map_err(from_pg)?;
        return Ok(CacheClaim::Claimed { until });
    }
    Err(StoreError::Backend(
        format!("cache key {key}: its row kept vanishing while being claimed").into(),
    ))
}

/// Stores the output over the lease's own claim (fenced); `ClaimNotHeld` when the key's row
/// is not that claim.
pub(super) async fn put(
    db: &Db,
    entry: &NewCacheEntry,
    lease: &LeaseRef,
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
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = async {
        fence(&tx, lease).await?;
        let stmt = prepared(&tx, PUT).await?;
        let changed = tx
            .execute(
                &stmt,
                &[
                    &entry.key,
                    &lease.owner,
                    &lease.item.0,
                    &lease.epoch,
                    &entry.operation,
                    &entry.model,
                    &entry.task,
                    &entry.output,
                    &now.0,
                    &entry.expires_at.0,
                ],
            )
            .await
            .map_err(from_pg)?;
        if changed == 0 {
            return Err(StoreError::ClaimNotHeld {
                key: entry.key.clone(),
                item: lease.item,
                owner: lease.owner.clone(),
                epoch: lease.epoch,
            });
        }
        Ok(())
    }
    .await;
    finish(tx, outcome).await
}

/// Ends the lease's own claim without an output (fenced); whether there was one.
pub(super) async fn release(db: &Db, key: &str, lease: &LeaseRef) -> StoreResult<bool> {
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = async {
        fence(&tx, lease).await?;
        let stmt = prepared(&tx, RELEASE).await?;
        let n = tx
            .execute(&stmt, &[&key, &lease.owner, &lease.item.0, &lease.epoch])
            .await
            .map_err(from_pg)?;
        Ok(n > 0)
    }
    .await;
    finish(tx, outcome).await
}

/// Removes the entry (ready or not).
pub(super) async fn invalidate(db: &Db, key: &str) -> StoreResult<bool> {
    Ok(db.execute(INVALIDATE, &[&key]).await? > 0)
}

/// Deletes expired entries, and claims that lapsed or whose lease is no longer current.
pub(super) async fn purge(db: &Db, now: Timestamp) -> StoreResult<u64> {
    db.execute(PURGE, &[&now.0]).await
}

/// The item's entries: outputs scoped to its id, and claims its leases hold.
pub(super) async fn of_item(db: &Db, item: ItemId, limit: u32) -> StoreResult<Vec<CacheKeyInfo>> {
    let rows = db
        .query(OF_ITEM, &[&item.0.to_string(), &item.0, &i64::from(limit)])
        .await?;
    rows.iter()
        .map(|r| {
            Ok(CacheKeyInfo {
                key: col(r, 0)?,
                state: col(r, 1)?,
                operation: col(r, 2)?,
                model: col(r, 3)?,
                task: col(r, 4)?,
                created_at: Timestamp(col(r, 5)?),
                expires_at: col::<Option<i64>>(r, 6)?.map(Timestamp),
                hits: col::<i64>(r, 7)?.max(0) as u64,
            })
        })
        .collect()
}
