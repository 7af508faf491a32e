//! What a node counts about its own work, in the shape it publishes: [`NodeMetrics`], kept in
//! memory by the runtime, written with every registry heartbeat under the row's
//! [`METADATA_METRICS`] key, and read back by whoever renders metrics for the whole cluster
//! (the dashboard's `/metrics` runs in another process and sees only the store).
//!
//! Histograms have fixed bucket bounds ([`SECONDS_BUCKETS`]), the same on every node, so the
//! published form is a short list of counts per histogram and nodes can be summed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The key of a registry row's metadata under which a node publishes its [`NodeMetrics`].
pub const METADATA_METRICS: &str = "metrics";

/// The upper bounds (seconds, inclusive) of every duration histogram's buckets; one more
/// bucket (`+Inf`) takes the rest. From 5 ms to an hour: queue waits and run times of
/// background work span that.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// A duration histogram over [`SECONDS_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Observations per bucket (not cumulative): one per bound of [`SECONDS_BUCKETS`], then
    /// one for everything above the last. Empty while nothing was observed.
    #[serde(default)]
    pub counts: Vec<u64>,
    /// The sum of the observations, in seconds.
    #[serde(default)]
    pub sum: f64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, d: Duration) {
        if self.counts.len() != SECONDS_BUCKETS.len() + 1 {
            self.counts.resize(SECONDS_BUCKETS.len() + 1, 0);
        }
        let s = d.as_secs_f64();
        let i = SECONDS_BUCKETS
            .iter()
            .position(|&bound| s <= bound)
            .unwrap_or(SECONDS_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += s;
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound, count)` per bucket, `+Inf` last, counts not cumulative; every bucket is
    /// listed, empty ones included. A published list of another length (a node of another
    /// version) is read as far as it fits, the rest counted in `+Inf`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = SECONDS_BUCKETS
            .iter()
            .enumerate()
            .map(|(i, &b)| (b, self.counts.get(i).copied().unwrap_or(0)))
            .collect();
        let rest = self.counts.iter().skip(SECONDS_BUCKETS.len()).sum();
        out.push((f64::INFINITY, rest));
        out
    }

    fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| *c == 0)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One node's counts for one kind of work.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KindMetrics {
    /// Attempts started (acquired and handed to a handler).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub started: u64,
    /// Items completed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub completed: u64,
    /// Failed attempts sent back to pending for another try.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retried: u64,
    /// Items dead-lettered by a failed attempt (permanent error or budget spent).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// Attempts that ran past their execution timeout (each also counted as retried or
    /// failed once its failure is written).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timed_out: u64,
    /// Attempts whose lease was lost while working (taken over, renewals failing, heartbeat
    /// dead): their result was dropped.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_lost: u64,
    /// Attempts an operator cancelled while they ran (the holder cancelled its handler at its
    /// next renewal).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cancelled: u64,
    /// LLM outputs served from the cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub llm_cache_hits: u64,
    /// LLM outputs generated (not in the cache).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub llm_cache_misses: u64,
    /// Tool calls executed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_executions: u64,
    /// Tool calls replayed from the ledger instead of executed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_replays: u64,
    /// How long attempts ran, from the handler's start to its result being written (or the
    /// attempt ending by timeout or lost lease).
    #[serde(default, skip_serializing_if = "Histogram::is_empty")]
    pub run_seconds: Histogram,
    /// How long items waited before an attempt started: from their `run_at` (the enqueue
    /// time, or the time a retry or delay was scheduled for) to the acquisition.
    #[serde(default, skip_serializing_if = "Histogram::is_empty")]
    pub queue_wait_seconds: Histogram,
}

/// What one node counted since it started (an incarnation's running totals: a restart starts
/// again from zero, as a Prometheus counter reset).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMetrics {
    /// Per kind of work this node ran.
    #[serde(default)]
    pub kinds: BTreeMap<String, KindMetrics>,
    /// Items taken back by this node's workers' `recover_mine` at their (re)start.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recovered_by_recover_mine: u64,
    /// Items requeued by this node's reaper.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recovered_by_reaper: u64,
    /// Items requeued by this node's monitor from dead nodes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recovered_by_monitor: u64,
    /// Lease renewals by this node's heartbeats that the store accepted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub renewals_succeeded: u64,
    /// Lease renewals refused (the lease was taken over) or failed (the store was unreachable).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub renewals_failed: u64,
}

impl NodeMetrics {
    /// The metrics a registry row's metadata carries, if it carries any that parse.
    pub fn from_metadata(metadata: &serde_json::Value) -> Option<NodeMetrics> {
        let m = metadata.get(METADATA_METRICS)?;
        serde_json::from_value(m.clone()).ok()
    }

    /// The counts of `kind`, created empty on first use.
    pub fn kind_mut(&mut self, kind: &str) -> &mut KindMetrics {
        if !self.kinds.contains_key(kind) {
            self.kinds.insert(kind.to_owned(), KindMetrics::default());
        }
        self.kinds.get_mut(kind).expect("inserted above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(6));
        h.observe(Duration::from_secs(7200));
        let b = h.buckets();
        assert_eq!(b.len(), SECONDS_BUCKETS.len() + 1);
        assert_eq!(b[0], (0.005, 1), "a bound is inclusive");
        assert_eq!(b[1], (0.01, 1));
        assert_eq!(b[SECONDS_BUCKETS.len()], (f64::INFINITY, 1));
        assert_eq!(h.count(), 3);
        assert!((h.sum - 7200.011).abs() < 1e-9);
    }

    #[test]
    fn empty_counts_are_left_out_of_the_published_form() {
        let mut m = NodeMetrics::default();
        m.kind_mut("email").completed = 2;
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({ "kinds": { "email": { "completed": 2 } } })
        );
        let back = NodeMetrics::from_metadata(&serde_json::json!({ "metrics": v })).unwrap();
        assert_eq!(back, m);
        assert_eq!(NodeMetrics::from_metadata(&serde_json::json!({})), None);
    }
}
