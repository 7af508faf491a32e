//! [`DurableStore`] on PostgreSQL: checkpoints with evidence, the tool ledger and the LLM
//! output cache (schema version 2), with the SQLite store's semantics; the LLM cache's claims
//! hold across hosts.
//!
//! Every write made on behalf of an item is fenced by the caller's lease, read in the write's
//! own transaction with a share lock on the item row (`checkpoint::fence`): a takeover, which
//! updates that row, waits for the write to commit or finds it refused; a stale holder gets
//! `LeaseLost` and changes nothing.
//!
//! # Layout
//! - `checkpoint`: begin, commit (with the tool ledger's record in the same transaction),
//!   read, verification records, rollback and retention.
//! - `ledger`: replay lookups, history and expiry of recorded tool executions.
//! - `cache`: the LLM output cache with its cross-host claims.
//! - `probe`: database-row evidence, confined to the store's schema.
//! - `boundary`: the `error_boundary` checkpoint recovery writes beside its requeue.

pub(crate) mod boundary;
mod cache;
mod checkpoint;
mod ledger;
mod probe;

use std::time::Duration;

use async_trait::async_trait;
use leasehold_core::durable::{
    CacheClaim, CacheKeyInfo, CheckpointRecord, DurableStore, LedgerEntry, NewCacheEntry, NewStep,
    RowProbe, StepCommit, Verification,
};
use leasehold_core::{ItemId, LeaseRef, StoreResult, Timestamp};

use crate::PgStore;

#[async_trait]
impl DurableStore for PgStore {
    async fn step_begin(
        &self,
        lease: &LeaseRef,
        step: &NewStep,
        now: Timestamp,
    ) -> StoreResult<i64> {
        checkpoint::begin(&self.db, lease, step, now).await
    }

    async fn step_commit(
        &self,
        commit: &StepCommit<'_>,
        now: Timestamp,
    ) -> StoreResult<CheckpointRecord> {
        checkpoint::commit(&self.db, commit, now).await
    }

    async fn checkpoint_get(&self, id: i64) -> StoreResult<Option<CheckpointRecord>> {
        checkpoint::get(&self.db, id).await
    }

    async fn checkpoints_of(&self, item: ItemId, limit: u32) -> StoreResult<Vec<CheckpointRecord>> {
        checkpoint::of_item(&self.db, item, limit).await
    }

    async fn checkpoint_record_verification(
        &self,
        lease: &LeaseRef,
        id: i64,
        verification: &Verification,
        now: Timestamp,
    ) -> StoreResult<()> {
        checkpoint::record_verification(&self.db, lease, id, verification, now).await
    }

    async fn checkpoints_rollback(
        &self,
        lease: &LeaseRef,
        to: i64,
        now: Timestamp,
    ) -> StoreResult<u64> {
        checkpoint::rollback(&self.db, lease, to, now).await
    }

    async fn checkpoints_prune(
        &self,
        lease: &LeaseRef,
        keep: u32,
        _now: Timestamp,
    ) -> StoreResult<u64> {
        checkpoint::prune(&self.db, lease, keep).await
    }

    async fn evidence_row_exists(&self, probe: &RowProbe) -> StoreResult<bool> {
        probe::exists(&self.db, self.schema(), probe).await
    }

    async fn ledger_get(
        &self,
        key: &str,
        replay: Option<&LeaseRef>,
        now: Timestamp,
    ) -> StoreResult<Option<LedgerEntry>> {
        ledger::get(&self.db, key, replay, now).await
    }

    async fn ledger_history(&self, item: ItemId, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        ledger::history(&self.db, item, limit).await
    }

    async fn ledger_purge_expired(&self, now: Timestamp) -> StoreResult<u64> {
        ledger::purge(&self.db, now).await
    }

    async fn cache_claim(
        &self,
        key: &str,
        lease: &LeaseRef,
        ttl: Duration,
        now: Timestamp,
    ) -> StoreResult<CacheClaim> {
        cache::claim(&self.db, key, lease, ttl, now).await
    }

    async fn cache_put(
        &self,
        entry: &NewCacheEntry,
        lease: &LeaseRef,
        now: Timestamp,
    ) -> StoreResult<()> {
        cache::put(&self.db, entry, lease, now).await
    }

    async fn cache_release(
        &self,
        key: &str,
        lease: &LeaseRef,
        _now: Timestamp,
    ) -> StoreResult<bool> {
        cache::release(&self.db, key, lease).await
    }

    async fn cache_entries_of(&self, item: ItemId, limit: u32) -> StoreResult<Vec<CacheKeyInfo>> {
        cache::of_item(&self.db, item, limit).await
    }

    async fn cache_invalidate(&self, key: &str) -> StoreResult<bool> {
        cache::invalidate(&self.db, key).await
    }

    async fn cache_purge_expired(&self, now: Timestamp) -> StoreResult<u64> {
        cache::purge(&self.db, now).await
    }
}
