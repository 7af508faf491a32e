//! The node's metrics by kind ([`NodeMetrics`]): kept in memory as the workers, heartbeats,
//! reaper and monitor report what they do, read by
//! [`NodeHandle::metrics`](crate::NodeHandle::metrics), and published with every registry
//! heartbeat under the row's `metrics` key, which is how a dashboard in another process
//! renders them for the whole cluster.
//!
//! Handlers (through [`JobMetrics`], e.g. the durable crate's task runner) add their LLM cache
//! and tool-ledger counts to their item's kind.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_core::metrics::{KindMetrics, NodeMetrics};

use crate::node::Metrics;

/// The per-kind counts and histograms. A std Mutex: held for one increment or one copy, never
/// across an await.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    by_kind: Mutex<NodeMetrics>,
}

impl Recorder {
    /// Applies `f` to `kind`'s counts.
    pub(crate) fn kind(&self, kind: &str, f: impl FnOnce(&mut KindMetrics)) {
        let mut m = self.by_kind.lock().unwrap_or_else(|p| p.into_inner());
        f(m.kind_mut(kind));
    }

    /// A copy of everything, the node-wide counters read from `totals`.
    pub(crate) fn snapshot(&self, totals: &Metrics) -> NodeMetrics {
        let mut m = self
            .by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        m.recovered_by_recover_mine = get(&totals.recovered_on_start);
        m.recovered_by_reaper = get(&totals.reaper_recovered);
        m.recovered_by_monitor = get(&totals.monitor_recovered);
        m.renewals_succeeded = get(&totals.renewals_succeeded);
        m.renewals_failed = get(&totals.renewals_failed);
        m
    }
}

/// A handler's way to add to its node's metrics, under its item's kind: what the durable
/// crate's task runner reports about LLM cache lookups and tool calls. Cheap to clone.
#[derive(Clone)]
pub struct JobMetrics {
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) kind: Arc<str>,
}

impl std::fmt::Debug for JobMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobMetrics")
            .field("kind", &self.kind)
            .finish()
    }
}

impl JobMetrics {
    /// Counts an LLM output served from the cache (`hit`) or generated.
    pub fn llm_cache(&self, hit: bool) {
        self.recorder.kind(&self.kind, |k| {
            if hit {
                k.llm_cache_hits += 1;
            } else {
                k.llm_cache_misses += 1;
            }
        });
    }

    /// Counts a tool call replayed from the ledger (`replayed`) or executed.
    pub fn tool_call(&self, replayed: bool) {
        self.recorder.kind(&self.kind, |k| {
            if replayed {
                k.tool_replays += 1;
            } else {
                k.tool_executions += 1;
            }
        });
    }
}

impl Recorder {
    /// An attempt of `kind` started after waiting `queue_wait`.
    pub(crate) fn started(&self, kind: &str, queue_wait: Duration) {
        self.kind(kind, |k| {
            k.started += 1;
            k.queue_wait_seconds.observe(queue_wait);
        });
    }

    /// An attempt of `kind` ended (whichever way) after running `ran`.
    pub(crate) fn ran(&self, kind: &str, ran: Duration) {
        self.kind(kind, |k| k.run_seconds.observe(ran));
    }
}
