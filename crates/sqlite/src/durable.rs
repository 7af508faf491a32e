//! [`DurableStore`] on SQLite: checkpoints with evidence, the tool ledger and the LLM output
//! cache (tables of schema version 2; fenced cache claims and tool call identities, version 4).
//!
//! Every write made on behalf of an item is fenced by the caller's lease, read in the write's
//! own transaction (`checkpoint::fence`): a stale holder gets `LeaseLost` and changes nothing.
//!
//! # Layout
//! - `checkpoint`: begin, commit (with the tool ledger's record in the same transaction),
//!   read, verification records, rollback and retention.
//! - `ledger`: replay lookups, history and expiry of recorded tool executions.
//! - `cache`: the LLM output cache with its cross-process claims.
//! - `probe`: database-row evidence.
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

use crate::SqliteStore;

#[async_trait]
impl DurableStore for SqliteStore {
    async fn step_begin(
        &self,
        lease: &LeaseRef,
        step: &NewStep,
        now: Timestamp,
    ) -> StoreResult<i64> {
        let (lease, step) = (lease.clone(), step.clone());
        self.db
            .call(move |c| checkpoint::begin(c, &lease, &step, now))
            .await
    }

    async fn step_commit(
        &self,
        commit: &StepCommit<'_>,
        now: Timestamp,
    ) -> StoreResult<CheckpointRecord> {
        let owned = checkpoint::Commit {
            lease: commit.lease.clone(),
            checkpoint: commit.checkpoint,
            evidence: commit.evidence.clone(),
            snapshot: commit.snapshot.cloned(),
            tool: commit.tool.cloned(),
        };
        self.db
            .call(move |c| checkpoint::commit(c, &owned, now))
            .await
    }

    async fn checkpoint_get(&self, id: i64) -> StoreResult<Option<CheckpointRecord>> {
        self.db.call(move |c| checkpoint::get(c, id)).await
    }

    async fn checkpoints_of(&self, item: ItemId, limit: u32) -> StoreResult<Vec<CheckpointRecord>> {
        self.db
            .call(move |c| checkpoint::of_item(c, item, limit))
            .await
    }

    async fn checkpoint_record_verification(
        &self,
        lease: &LeaseRef,
        id: i64,
        verification: &Verification,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (lease, verification) = (lease.clone(), verification.clone());
        self.db
            .call(move |c| checkpoint::record_verification(c, &lease, id, &verification, now))
            .await
    }

    async fn checkpoints_rollback(
        &self,
        lease: &LeaseRef,
        to: i64,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let lease = lease.clone();
        self.db
            .call(move |c| checkpoint::rollback(c, &lease, to, now))
            .await
    }

    async fn checkpoints_prune(
        &self,
        lease: &LeaseRef,
        keep: u32,
        _now: Timestamp,
    ) -> StoreResult<u64> {
        let lease = lease.clone();
        self.db
            .call(move |c| checkpoint::prune(c, &lease, keep))
            .await
    }

    async fn evidence_row_exists(&self, probe: &RowProbe) -> StoreResult<bool> {
        let probe = probe.clone();
        self.db.call(move |c| probe::exists(c, &probe)).await
    }

    async fn ledger_get(
        &self,
        key: &str,
        replay: Option<&LeaseRef>,
        now: Timestamp,
    ) -> StoreResult<Option<LedgerEntry>> {
        let (key, replay) = (key.to_owned(), replay.cloned());
        self.db
            .call(move |c| ledger::get(c, &key, replay.as_ref(), now))
            .await
    }

    async fn ledger_history(&self, item: ItemId, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        self.db.call(move |c| ledger::history(c, item, limit)).await
    }

    async fn ledger_purge_expired(&self, now: Timestamp) -> StoreResult<u64> {
        self.db.call(move |c| ledger::purge(c, now)).await
    }

    async fn cache_claim(
        &self,
        key: &str,
        lease: &LeaseRef,
        ttl: Duration,
        now: Timestamp,
    ) -> StoreResult<CacheClaim> {
        let (key, lease) = (key.to_owned(), lease.clone());
        self.db
            .call(move |c| cache::claim(c, &key, &lease, ttl, now))
            .await
    }

    async fn cache_put(
        &self,
        entry: &NewCacheEntry,
        lease: &LeaseRef,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (entry, lease) = (entry.clone(), lease.clone());
        self.db
            .call(move |c| cache::put(c, &entry, &lease, now))
            .await
    }

    async fn cache_release(
        &self,
        key: &str,
        lease: &LeaseRef,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (key, lease) = (key.to_owned(), lease.clone());
        self.db
            .call(move |c| cache::release(c, &key, &lease, now))
            .await
    }

    async fn cache_entries_of(&self, item: ItemId, limit: u32) -> StoreResult<Vec<CacheKeyInfo>> {
        self.db.call(move |c| cache::of_item(c, item, limit)).await
    }

    async fn cache_invalidate(&self, key: &str) -> StoreResult<bool> {
        let key = key.to_owned();
        self.db.call(move |c| cache::invalidate(c, &key)).await
    }

    async fn cache_purge_expired(&self, now: Timestamp) -> StoreResult<u64> {
        self.db.call(move |c| cache::purge(c, now)).await
    }
}
