//! A node's identity at start: one live incarnation per node id.
//!
//! Two processes under one node id (a deployment that copies one environment to every replica)
//! would each take the other's in-flight items through `recover_mine`, since owner ids are
//! `{node_id}/w{i}`, and every item would run twice. So before any actor starts, the builder
//! claims the node id's registry row through [`Store::node_register`], which checks and writes
//! in one transaction: while the row shows a live incarnation (fresh heartbeat, not stopped)
//! the start is refused with [`RuntimeError::NodeIdInUse`], or, with
//! [`takeover`](crate::LeaseholdBuilder::takeover), waits until that incarnation is dead. A
//! restart after a crash finds the old row stale and proceeds at once.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;

use leasehold_core::clock::duration_millis;
use leasehold_core::{
    Clock, NodeClaim, NodeRecord, NodeStatus, Store, StoreError, METADATA_HOST, METADATA_PID,
};

use crate::builder::RuntimeConfig;
use crate::error::RuntimeError;
use crate::events::NodeEvent;

/// The longest pause between two registration attempts while the store is failing.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The host this process runs on (`HOSTNAME`, else /etc/hostname, else `node`), read once.
pub(crate) fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".to_string())
    })
}

/// The `metadata` fields that say which process an incarnation is: what a refused start
/// names. Every write of the row carries them (the registry replaces `metadata` whole).
pub(crate) fn process_metadata() -> serde_json::Value {
    json!({ METADATA_HOST: host(), METADATA_PID: std::process::id() })
}

/// The incarnation a start proposes: the start time in ms in the high bits and random low
/// bits, so two starts within one millisecond differ. The store raises it above the row's
/// previous incarnation when this host's clock stepped back
/// ([`next_incarnation`](leasehold_core::next_incarnation)).
fn proposed_incarnation(now_ms: i64) -> i64 {
    let low: i64 = rand::random::<u16>().into();
    (now_ms.max(0) << 12 | (low & 0xfff)) & i64::MAX
}

/// The refusal for `live`, judged at `now`.
fn in_use(live: &NodeRecord, now: leasehold_core::Timestamp) -> RuntimeError {
    RuntimeError::NodeIdInUse {
        node_id: live.node_id.clone(),
        incarnation: live.incarnation,
        host: live.host().map(str::to_string),
        pid: live.pid(),
        since: live.silent_for(now),
    }
}

/// Claims `node_id` for this start and returns the incarnation the node runs as. Refuses while
/// a live incarnation holds the id, unless `cfg.takeover`, in which case it waits, re-checking
/// at least once per heartbeat interval of that incarnation, until the row is dead or
/// stopped. A store that fails (a backend error) is retried with a growing pause: no node may
/// run without its claim, and a database that is down at start is not a reason to give up.
pub(crate) async fn claim(
    store: &dyn Store,
    clock: &dyn Clock,
    cfg: &RuntimeConfig,
    node_id: &str,
    worker_type: &str,
    events: &tokio::sync::broadcast::Sender<NodeEvent>,
) -> Result<i64, RuntimeError> {
    let mut waited_for: Option<i64> = None;
    let mut failures: u32 = 0;
    loop {
        let now = clock.now();
        let proposal = NodeRecord {
            node_id: node_id.to_string(),
            incarnation: proposed_incarnation(now.0),
            worker_type: worker_type.to_string(),
            status: NodeStatus::Active,
            current_item: None,
            task_text: None,
            last_heartbeat_at: now,
            heartbeat_interval_ms: duration_millis(cfg.base.heartbeat),
            started_at: now,
            metadata: process_metadata(),
        };
        let live = match store
            .node_register(&proposal, cfg.dead_after_missed, now)
            .await
        {
            Ok(NodeClaim::Registered(row)) => {
                if waited_for.is_some() {
                    tracing::info!(node = %node_id, incarnation = row.incarnation, "the previous incarnation is dead; taking over its node id");
                }
                return Ok(row.incarnation);
            }
            Ok(NodeClaim::InUse(live)) => live,
            Err(e @ (StoreError::Backend(_) | StoreError::Closed)) => {
                failures += 1;
                let pause = Duration::from_millis(100)
                    .saturating_mul(1 << failures.min(10))
                    .min(MAX_RETRY);
                tracing::warn!(node = %node_id, error = %e, ?pause, "cannot register this node in the worker registry; retrying");
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(e) => return Err(RuntimeError::Store(e)),
        };
        failures = 0;
        let refusal = in_use(&live, now);
        if !cfg.takeover {
            return Err(refusal);
        }
        if waited_for != Some(live.incarnation) {
            waited_for = Some(live.incarnation);
            tracing::warn!(node = %node_id, "{refusal}; waiting until that incarnation is dead (takeover)");
            let _ = events.send(NodeEvent::WaitingForTakeover {
                node_id: node_id.to_string(),
                incarnation: live.incarnation,
            });
        }
        // The row turns dead one millisecond past its window; a graceful stop may come sooner,
        // so look again at least every heartbeat interval of that incarnation.
        let cutoff = live.heartbeat_cutoff(now, cfg.dead_after_missed);
        let until_dead = millis(live.last_heartbeat_at.0.saturating_sub(cutoff.0) + 1);
        let interval = millis(live.heartbeat_interval_ms);
        tokio::time::sleep(until_dead.min(interval)).await;
    }
}

/// `ms` milliseconds, at least one.
fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0).max(1))
}
