//! [`CheckpointManager`] (seed 003): begin a step, commit it with an evidence pack, verify it,
//! find the last verified checkpoint to resume from, roll back, and keep a bounded history.

use std::sync::Arc;

use leasehold_core::durable::{
    CheckpointRecord, CheckpointState, CheckpointType, DurableStore, EvidencePack, NewStep,
    StepCommit, Verification,
};
use leasehold_core::{Clock, ItemId, LeaseRef};
use serde_json::Value;

use crate::error::DurableError;
use crate::evidence;

/// How many checkpoints per item are kept by default (seed 000's `checkpoint_retention_limit`).
pub const DEFAULT_RETENTION: u32 = 100;

/// Checkpoints with evidence, over any [`DurableStore`]. Every write — begin, commit,
/// recording a verification, rollback, retention — is fenced by the caller's lease: a holder
/// whose lease was taken over gets `LeaseLost` and writes nothing.
#[derive(Debug, Clone)]
pub struct CheckpointManager {
    store: Arc<dyn DurableStore>,
    clock: Arc<dyn Clock>,
    retention: u32,
}

impl CheckpointManager {
    /// A manager keeping [`DEFAULT_RETENTION`] checkpoints per item.
    pub fn new(store: Arc<dyn DurableStore>, clock: Arc<dyn Clock>) -> Self {
        CheckpointManager {
            store,
            clock,
            retention: DEFAULT_RETENTION,
        }
    }

    /// Keeps at most `keep` checkpoints per item on [`cleanup`](Self::cleanup); refuses 0.
    pub fn with_retention(mut self, keep: u32) -> Result<Self, DurableError> {
        if keep == 0 {
            return Err(DurableError::InvalidInput(
                "checkpoint retention must keep at least 1 checkpoint".into(),
            ));
        }
        self.retention = keep;
        Ok(self)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn DurableStore> {
        &self.store
    }

    /// Begins step number `step` of the lease's item, of `checkpoint_type` (one of seed 003's
    /// types; anything else is refused with the list of valid ones), with the task's `snapshot`.
    /// Returns the step id to commit.
    pub async fn begin_step(
        &self,
        lease: &LeaseRef,
        step: i64,
        name: &str,
        checkpoint_type: &str,
        snapshot: Value,
    ) -> Result<i64, DurableError> {
        let ty: CheckpointType = checkpoint_type
            .parse()
            .map_err(DurableError::InvalidInput)?;
        self.begin(
            lease,
            NewStep {
                step: Some(step),
                name: name.to_owned(),
                checkpoint_type: ty,
                snapshot,
            },
        )
        .await
    }

    /// [`begin_step`](Self::begin_step) with a typed step.
    pub async fn begin(&self, lease: &LeaseRef, step: NewStep) -> Result<i64, DurableError> {
        if step.checkpoint_type == CheckpointType::ErrorBoundary {
            return Err(DurableError::InvalidInput(
                "error_boundary checkpoints are written by recovery, not begun as steps".into(),
            ));
        }
        if step.name.trim().is_empty() {
            return Err(DurableError::InvalidInput(
                "step name must not be empty".into(),
            ));
        }
        Ok(self
            .store
            .step_begin(lease, &step, self.clock.now())
            .await?)
    }

    /// Commits a begun step with its evidence. Refuses invalid evidence (naming it).
    pub async fn commit_step(
        &self,
        lease: &LeaseRef,
        step_id: i64,
        evidence: EvidencePack,
    ) -> Result<CheckpointRecord, DurableError> {
        self.commit_with(lease, step_id, &evidence, None).await
    }

    /// Commits with the state after the step replacing the snapshot written at begin.
    pub async fn commit_with(
        &self,
        lease: &LeaseRef,
        step_id: i64,
        evidence: &EvidencePack,
        snapshot: Option<&Value>,
    ) -> Result<CheckpointRecord, DurableError> {
        evidence.validate().map_err(DurableError::InvalidInput)?;
        let commit = StepCommit {
            lease,
            checkpoint: step_id,
            evidence,
            snapshot,
            tool: None,
        };
        Ok(self.store.step_commit(&commit, self.clock.now()).await?)
    }

    /// Checks every piece of a checkpoint's evidence against the world now and records the
    /// result, fenced by `lease` (the checkpoint must belong to the lease's item). A checkpoint
    /// that is not committed is invalid.
    pub async fn verify_checkpoint(
        &self,
        lease: &LeaseRef,
        id: i64,
    ) -> Result<Verification, DurableError> {
        let cp = self
            .store
            .checkpoint_get(id)
            .await?
            .ok_or_else(|| DurableError::InvalidInput(format!("no checkpoint {id}")))?;
        self.verify(lease, &cp).await
    }

    async fn verify(
        &self,
        lease: &LeaseRef,
        cp: &CheckpointRecord,
    ) -> Result<Verification, DurableError> {
        let verdict = if cp.state != CheckpointState::Committed {
            Verification::Invalid {
                reason: format!(
                    "checkpoint {} is {}, not committed",
                    cp.id,
                    cp.state.as_str()
                ),
            }
        } else {
            let mut failed = None;
            for (i, e) in cp.evidence.evidence.iter().enumerate() {
                if let Some(why) = evidence::check(&*self.store, e).await? {
                    failed = Some(format!("evidence #{i} ({}): {why}", e.kind()));
                    break;
                }
            }
            match failed {
                None => Verification::Valid,
                Some(reason) => Verification::Invalid { reason },
            }
        };
        self.store
            .checkpoint_record_verification(lease, cp.id, &verdict, self.clock.now())
            .await?;
        if let Verification::Invalid { reason } = &verdict {
            tracing::warn!(checkpoint = cp.id, item = %cp.item, reason = %reason, "checkpoint failed verification");
        }
        Ok(verdict)
    }

    /// The newest committed step checkpoint of the lease's item whose evidence still holds:
    /// where a resumed task starts. Each verification is recorded (fenced by `lease`); newer
    /// checkpoints that fail verification are recorded as invalid and passed over; tool and
    /// error-boundary checkpoints are never resume points.
    ///
    /// The search reads the newest checkpoints a retention's worth at a time and looks further
    /// back while it finds no resume point, so a step followed by more tool checkpoints than
    /// the retention limit is still found.
    pub async fn get_last_verified_checkpoint(
        &self,
        lease: &LeaseRef,
    ) -> Result<Option<CheckpointRecord>, DurableError> {
        let item = lease.item;
        let mut limit = self.retention.max(1);
        let mut seen = 0;
        loop {
            let candidates = self.store.checkpoints_of(item, limit).await?;
            let fetched = candidates.len();
            for cp in candidates.into_iter().skip(seen) {
                if cp.state != CheckpointState::Committed || cp.step.is_none() {
                    continue;
                }
                if self.verify(lease, &cp).await? == Verification::Valid {
                    return Ok(Some(cp));
                }
            }
            if fetched < limit as usize || limit == u32::MAX {
                return Ok(None);
            }
            seen = fetched;
            limit = limit.saturating_mul(2);
        }
    }

    /// Makes `id` the item's latest checkpoint again: every newer one is set aside (fenced by
    /// the lease). Returns the checkpoint rolled back to and how many were set aside. The
    /// effects of the set-aside steps are not undone; their tool ledger records stay, so
    /// re-running them replays rather than executes again.
    pub async fn rollback_to_checkpoint(
        &self,
        lease: &LeaseRef,
        id: i64,
    ) -> Result<(CheckpointRecord, u64), DurableError> {
        let n = self
            .store
            .checkpoints_rollback(lease, id, self.clock.now())
            .await?;
        let cp = self
            .store
            .checkpoint_get(id)
            .await?
            .ok_or_else(|| DurableError::InvalidInput(format!("no checkpoint {id}")))?;
        Ok((cp, n))
    }

    /// The item's checkpoints, newest first (at most the retention limit).
    pub async fn list(&self, item: ItemId) -> Result<Vec<CheckpointRecord>, DurableError> {
        Ok(self.store.checkpoints_of(item, self.retention).await?)
    }

    /// Deletes the lease's item's checkpoints beyond the retention limit (fenced by the lease);
    /// returns how many.
    pub async fn cleanup(&self, lease: &LeaseRef) -> Result<u64, DurableError> {
        Ok(self
            .store
            .checkpoints_prune(lease, self.retention, self.clock.now())
            .await?)
    }
}
