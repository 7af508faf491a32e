//! The LLM output cache, with claims that make generation single-flight across processes.
//!
//! A claim is made by a lease and records it (`claimant` = owner, `claim_item`,
//! `claim_epoch`). Every write here except invalidation and purging is fenced by that lease
//! (see `checkpoint::fence`), and a claim counts as live only while its lease is still current,
//! so a zombie neither keeps a key from the new holder nor fills it.

use std::time::Duration;

use leasehold_core::durable::{CacheClaim, CacheEntry, CacheKeyInfo, NewCacheEntry};
use leasehold_core::{ItemId, LeaseRef, StoreError, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::checkpoint::fence;
use crate::db::write;
use crate::error::OpResult;
use crate::row::json_text;

/// Whether the lease recorded on a cache row is still current: the same condition as the fence,
/// on the row's claim columns.
const CLAIM_CURRENT: &str = "EXISTS (SELECT 1 FROM items WHERE items.id = llm_cache.claim_item \
     AND items.status = 'in_progress' AND items.owner = llm_cache.claimant \
     AND items.epoch = llm_cache.claim_epoch)";

/// The row as a claim decision needs it.
struct Row {
    state: String,
    output: Option<String>,
    claimant: Option<String>,
    claim_item: Option<i64>,
    claim_epoch: Option<i64>,
    claim_expires_at: Option<i64>,
    claim_current: bool,
    created_at: i64,
    expires_at: Option<i64>,
    hits: i64,
}

impl Row {
    /// Whether the row's claim was made by `lease`.
    fn claimed_by(&self, lease: &LeaseRef) -> bool {
        self.state == "generating"
            && self.claim_item == Some(lease.item.0)
            && self.claim_epoch == Some(lease.epoch)
            && self.claimant.as_deref() == Some(lease.owner.as_str())
    }
}

fn read(tx: &Transaction<'_>, key: &str) -> OpResult<Option<Row>> {
    let sql = format!(
        "SELECT state, output, claimant, claim_item, claim_epoch, claim_expires_at, \
             {CLAIM_CURRENT}, created_at, expires_at, hits \
         FROM llm_cache WHERE key = ?1"
    );
    Ok(tx
        .prepare_cached(&sql)?
        .query_row(params![key], |r| {
            Ok(Row {
                state: r.get(0)?,
                output: r.get(1)?,
                claimant: r.get(2)?,
                claim_item: r.get(3)?,
                claim_epoch: r.get(4)?,
                claim_expires_at: r.get(5)?,
                claim_current: r.get(6)?,
                created_at: r.get(7)?,
                expires_at: r.get(8)?,
                hits: r.get(9)?,
            })
        })
        .optional()?)
}

/// A hit, a new or renewed claim, or another current lease's live claim. One write
/// transaction, fenced first, so two processes asking at once see each other's claim and a
/// zombie takes, renews and counts nothing.
pub(super) fn claim(
    c: &mut Connection,
    key: &str,
    lease: &LeaseRef,
    ttl: Duration,
    now: Timestamp,
) -> OpResult<CacheClaim> {
    if ttl.is_zero() {
        return Err(StoreError::InvalidInput("a cache claim needs a positive ttl".into()).into());
    }
    let until = now.plus(ttl);
    write(c, |tx| {
        fence(tx, lease)?;
        if let Some(r) = read(tx, key)? {
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
            if r.claimed_by(lease) {
                // Our own claim (lapsed or not): a renewal.
                tx.prepare_cached("UPDATE llm_cache SET claim_expires_at = ?2 WHERE key = ?1")?
                    .execute(params![key, until.0])?;
                return Ok(CacheClaim::Claimed { until });
            }
            let claim_live = r.claim_expires_at.is_some_and(|t| t > now.0) && r.claim_current;
            if r.state == "generating" && claim_live {
                return Ok(CacheClaim::Busy {
                    holder: LeaseRef {
                        item: ItemId(r.claim_item.unwrap_or_default()),
                        owner: r.claimant.clone().unwrap_or_default(),
                        epoch: r.claim_epoch.unwrap_or_default(),
                    },
                    until: Timestamp(r.claim_expires_at.unwrap_or_default()),
                });
            }
        }
        // No entry, an expired one, or a claim that lapsed or whose lease is gone: take the key.
        tx.prepare_cached(
            "INSERT INTO llm_cache \
                 (key, state, claimant, claim_item, claim_epoch, claim_expires_at, created_at) \
             VALUES (?1, 'generating', ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (key) DO UPDATE SET state = 'generating', output = NULL, \
                 claimant = excluded.claimant, claim_item = excluded.claim_item, \
                 claim_epoch = excluded.claim_epoch, claim_expires_at = excluded.claim_expires_at, \
                 created_at = excluded.created_at, expires_at = NULL, hits = 0",
        )?
        .execute(params![
            key,
            lease.owner,
            lease.item.0,
            lease.epoch,
            until.0,
            now.0
        ])?;
        Ok(CacheClaim::Claimed { until })
    })
}

/// Stores the output over the lease's own claim, and nowhere else: the update's condition is
/// the claim (owner, item, epoch), so another claimant's claim or a stored output is never
/// overwritten.
pub(super) fn put(
    c: &mut Connection,
    entry: &NewCacheEntry,
    lease: &LeaseRef,
    now: Timestamp,
) -> OpResult<()> {
    if entry.expires_at <= now {
        return Err(StoreError::InvalidInput("a cache entry must expire after now".into()).into());
    }
    let output = json_text(&entry.output)?;
    write(c, |tx| {
        fence(tx, lease)?;
        let changed = tx
            .prepare_cached(
                "UPDATE llm_cache SET state = 'ready', operation = ?5, model = ?6, task = ?7, \
                     output = ?8, claimant = NULL, claim_item = NULL, claim_epoch = NULL, \
                     claim_expires_at = NULL, created_at = ?9, expires_at = ?10, hits = 0 \
                 WHERE key = ?1 AND state = 'generating' AND claimant = ?2 AND claim_item = ?3 \
                     AND claim_epoch = ?4",
            )?
            .execute(params![
                entry.key,
                lease.owner,
                lease.item.0,
                lease.epoch,
                entry.operation,
                entry.model,
                entry.task,
                output,
                now.0,
                entry.expires_at.0
            ])?;
        if changed == 0 {
            return Err(StoreError::ClaimNotHeld {
                key: entry.key.clone(),
                item: lease.item,
                owner: lease.owner.clone(),
                epoch: lease.epoch,
            }
            .into());
        }
        Ok(())
    })
}

/// Ends the lease's own claim without an output.
pub(super) fn release(
    c: &mut Connection,
    key: &str,
    lease: &LeaseRef,
    _now: Timestamp,
) -> OpResult<bool> {
    write(c, |tx| {
        fence(tx, lease)?;
        let n = tx
            .prepare_cached(
                "DELETE FROM llm_cache WHERE key = ?1 AND state = 'generating' AND claimant = ?2 \
                     AND claim_item = ?3 AND claim_epoch = ?4",
            )?
            .execute(params![key, lease.owner, lease.item.0, lease.epoch])?;
        Ok(n > 0)
    })
}

/// The item's entries: outputs scoped to its id, and claims its leases hold.
pub(super) fn of_item(c: &mut Connection, item: ItemId, limit: u32) -> OpResult<Vec<CacheKeyInfo>> {
    let mut stmt = c.prepare_cached(
        "SELECT key, state, operation, model, task, created_at, expires_at, hits FROM llm_cache \
         WHERE task = ?1 OR claim_item = ?2 ORDER BY created_at DESC, key LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![item.0.to_string(), item.0, limit], |r| {
        Ok(CacheKeyInfo {
            key: r.get(0)?,
            state: r.get(1)?,
            operation: r.get(2)?,
            model: r.get(3)?,
            task: r.get(4)?,
            created_at: Timestamp(r.get(5)?),
            expires_at: r.get::<_, Option<i64>>(6)?.map(Timestamp),
            hits: r.get::<_, i64>(7)?.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Removes the entry (ready or not).
pub(super) fn invalidate(c: &mut Connection, key: &str) -> OpResult<bool> {
    let n = c
        .prepare_cached("DELETE FROM llm_cache WHERE key = ?1")?
        .execute(params![key])?;
    Ok(n > 0)
}

/// Deletes expired entries, and claims that lapsed or whose lease is no longer current.
pub(super) fn purge(c: &mut Connection, now: Timestamp) -> OpResult<u64> {
    let sql = format!(
        "DELETE FROM llm_cache WHERE (state = 'ready' AND expires_at <= ?1) \
         OR (state = 'generating' AND (claim_expires_at <= ?1 OR NOT {CLAIM_CURRENT}))"
    );
    let n = c.prepare_cached(&sql)?.execute(params![now.0])?;
    Ok(n as u64)
}
