//! The two emergency operations an operator runs by hand (`leasehold reap`, `leasehold reap
//! --dead-nodes`), judged by the worker registry alone: reaping expired leases whose owners
//! the registry does not vouch for ([`Store::items_reap_by_registry`]), and releasing at once
//! every item held by node incarnations the registry judges dead or stopped
//! ([`Store::items_release_dead_nodes`], also the monitor's take-back).
//!
//! The functions here are the Rust implementation, the trait's default: SQLite runs them.
//! PostgreSQL runs the same judgement as SQL functions in its schema (so an operator with only
//! `psql` can run them), and its store calls those functions instead.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::{StoreError, StoreResult};
use crate::item::{Item, RecoveredItem};
use crate::registry::{leased_items, NodeRecord, WorkerState};
use crate::store::{Liveness, LivenessCheck, ReapCandidate, ReapRequest, RecoveryStats, Store};

/// What [`Store::items_release_dead_nodes`] is to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadNodesRequest {
    /// A node is dead after this many missed heartbeat intervals (at least 1).
    pub missed_intervals: u32,
    /// Report only; change nothing.
    pub dry_run: bool,
    /// A node incarnation never judged (the caller's own, which is alive by definition).
    pub exclude: Option<(String, i64)>,
}

impl DeadNodesRequest {
    /// A real release, judging with `missed_intervals`.
    pub fn new(missed_intervals: u32) -> Self {
        DeadNodesRequest {
            missed_intervals,
            dry_run: false,
            exclude: None,
        }
    }

    /// Refuses zero missed intervals.
    pub fn validate(&self) -> Result<(), String> {
        if self.missed_intervals == 0 {
            return Err("missed heartbeat intervals must be at least 1".into());
        }
        Ok(())
    }
}

/// A node incarnation the registry does not vouch for, and what was (or in a dry run would be)
/// taken back from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedNode {
    /// The node id.
    pub node_id: String,
    /// The incarnation.
    pub incarnation: i64,
    /// `dead`, or `stopped` (only reported when it still held items).
    pub state: WorkerState,
    /// Its last heartbeat.
    pub last_heartbeat_at: Timestamp,
    /// The items requeued or dead-lettered (or that would be).
    pub items: Vec<RecoveredItem>,
}

/// The verdict of the registry on one candidate's owner, as of `now`: alive only when its
/// node's row has the item's incarnation, is not stopped and heartbeated within
/// `missed_intervals` of its interval. A registry that cannot be read vouches for everyone: a
/// failing store must not look like dead owners.
pub async fn registry_verdict(
    store: &dyn Store,
    candidate: &ReapCandidate,
    missed_intervals: u32,
    now: Timestamp,
) -> Liveness {
    let Some(node_id) = candidate.owner_node.as_deref() else {
        return Liveness::Dead;
    };
    match store.node_get(node_id).await {
        Ok(Some(node))
            if Some(node.incarnation) == candidate.owner_incarnation
                && node.is_alive(now, missed_intervals) =>
        {
            Liveness::Alive
        }
        Ok(_) => Liveness::Dead,
        Err(_) => Liveness::Alive,
    }
}

/// [`registry_verdict`] over a borrowed store.
struct Registry<'a> {
    store: &'a dyn Store,
    missed_intervals: u32,
    now: Timestamp,
}

#[async_trait::async_trait]
impl LivenessCheck for Registry<'_> {
    async fn check(&self, candidate: &ReapCandidate) -> Liveness {
        registry_verdict(self.store, candidate, self.missed_intervals, self.now).await
    }
}

/// The default of [`Store::items_reap_by_registry`]: one sweep of
/// [`Store::items_reap_expired`] judging owners by the registry.
pub async fn reap_by_registry(
    store: &dyn Store,
    req: &ReapRequest,
    missed_intervals: u32,
    now: Timestamp,
) -> StoreResult<RecoveryStats> {
    if missed_intervals == 0 {
        return Err(StoreError::InvalidInput(
            "missed heartbeat intervals must be at least 1".into(),
        ));
    }
    let registry = Registry {
        store,
        missed_intervals,
        now,
    };
    store.items_reap_expired(req, &registry, now).await
}

/// The default of [`Store::items_release_dead_nodes`]: every registry row not alive at `now`
/// (but `req.exclude`) whose incarnation holds in-progress items loses those whose own last
/// heartbeat is before the row's cutoff ([`NodeRecord::heartbeat_cutoff`]), through
/// [`Store::items_recover_node`]. Dead rows are reported even when they hold nothing; stopped
/// rows only when they do.
pub async fn release_dead_nodes(
    store: &dyn Store,
    req: &DeadNodesRequest,
    now: Timestamp,
) -> StoreResult<Vec<ReleasedNode>> {
    req.validate().map_err(StoreError::InvalidInput)?;
    let nodes = store.nodes_list().await?;
    // One read of the leased items (bounded by the fleet's workers) tells which incarnations
    // hold anything, so only those are written to, however many old rows the registry keeps.
    let leased = leased_items(store).await?;
    let mut out = Vec::new();
    for node in nodes {
        let key = (node.node_id.clone(), node.incarnation);
        if req.exclude.as_ref() == Some(&key) {
            continue;
        }
        let state = node.state(now, req.missed_intervals);
        if state == WorkerState::Alive {
            continue;
        }
        let cutoff = node.heartbeat_cutoff(now, req.missed_intervals);
        let held: Vec<&Item> = leased.iter().filter(|i| takes(&node, cutoff, i)).collect();
        let items = if held.is_empty() {
            Vec::new()
        } else if req.dry_run {
            held.into_iter().map(would_take).collect()
        } else {
            store
                .items_recover_node(&node.node_id, node.incarnation, cutoff, now)
                .await?
        };
        if state == WorkerState::Stopped && items.is_empty() {
            continue;
        }
        out.push(ReleasedNode {
            node_id: node.node_id,
            incarnation: node.incarnation,
            state,
            last_heartbeat_at: node.last_heartbeat_at,
            items,
        });
    }
    Ok(out)
}

/// Whether `node`'s take-back at `cutoff` takes `item` (what `items_recover_node` selects).
fn takes(node: &NodeRecord, cutoff: Timestamp, item: &Item) -> bool {
    item.owner_node.as_deref() == Some(node.node_id.as_str())
        && item.owner_incarnation == Some(node.incarnation)
        && item.last_heartbeat_at.is_none_or(|t| t < cutoff)
}

/// What taking `item` back would report.
fn would_take(item: &Item) -> RecoveredItem {
    RecoveredItem {
        id: item.id,
        kind: item.kind.clone(),
        previous_owner: item.owner.clone().unwrap_or_default(),
        previous_epoch: item.epoch,
        attempts: item.attempts,
        max_attempts: item.max_attempts,
        dead_lettered: item.attempts >= item.max_attempts,
    }
}
