//! `GET /metrics`: Prometheus text (exposition format 0.0.4), encoded by `prometheus-client`.
//!
//! Two sources, both read from the store on each scrape, since the dashboard runs apart from
//! the workers:
//! - **the store**: items by status, open work by kind, registry rows by state, expired leases
//!   (from the same [`Status`] the page shows, so the two never disagree);
//! - **the nodes**: what each node counted about its own work (completions, retries, timeouts,
//!   lost leases, renewals, recoveries, LLM cache and tool ledger use, run time and queue wait
//!   histograms), published in its registry row under `metrics` at every heartbeat
//!   ([`NodeMetrics`]) and rendered here labelled by `node` (and `kind`). A node's counters
//!   are its current incarnation's: a restart resets them, which Prometheus's `rate` handles;
//!   a row removed by `cleanup` takes its series with it.
//!
//! Why a client crate rather than hand-written text: labelled families and histograms
//! (cumulative `_bucket{le=…}`, `_sum`, `_count`) have rules — escaping, suffixes, `+Inf` —
//! that the crate already gets right and tests. `prometheus-client` is the Prometheus
//! project's own Rust client, with no dependencies beyond a few small crates; its collector
//! interface encodes values read at scrape time, which is what numbers read from a store are.

use std::fmt;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use leasehold_core::metrics::{Histogram, KindMetrics, NodeMetrics};
use leasehold_core::{ItemStatus, WorkerState};

use crate::api::{params, ApiError};
use crate::snapshot::{self, Status};
use crate::AppState;

/// `GET /metrics`.
pub(crate) async fn metrics(
    State(app): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    params(query, &[])?;
    let now = app.cfg.clock.now();
    let status = snapshot::status(app.store.as_ref(), now, app.cfg.dead_after_missed).await?;
    let nodes = app
        .store
        .nodes_list()
        .await?
        .into_iter()
        .filter_map(|n| NodeMetrics::from_metadata(&n.metadata).map(|m| (n.node_id, m)))
        .collect();
    let body = render(Scrape { status, nodes })
        .map_err(|_| ApiError::internal("the metrics could not be encoded as Prometheus text"))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        body,
    )
        .into_response())
}

/// What one scrape renders.
#[derive(Debug)]
pub(crate) struct Scrape {
    /// The store's view.
    pub(crate) status: Status,
    /// Each registry row's published metrics, by node id.
    pub(crate) nodes: Vec<(String, NodeMetrics)>,
}

/// The exposition text.
pub(crate) fn render(scrape: Scrape) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// A sample's labels.
type Labels = Vec<(&'static str, String)>;

/// A label value and how to read its sample from a node's metrics.
type NodeValue = (&'static str, fn(&NodeMetrics) -> u64);

/// A per-kind counter: its name, help and how to read it.
type KindCounter = (&'static str, &'static str, fn(&KindMetrics) -> u64);

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        family
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, u64, u64>(v, None)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        family.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, &Histogram)],
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in samples {
        family
            .encode_family(labels)?
            .encode_histogram::<NoLabelSet>(h.sum, h.count(), &h.buckets(), None)?;
    }
    Ok(())
}

impl Scrape {
    /// One sample per (node, kind) of a per-kind value.
    fn by_kind<'a, T>(&'a self, f: impl Fn(&'a KindMetrics) -> T) -> Vec<(Labels, T)> {
        self.nodes
            .iter()
            .flat_map(|(node, m)| {
                m.kinds
                    .iter()
                    .map(|(kind, k)| (vec![("node", node.clone()), ("kind", kind.clone())], f(k)))
            })
            .collect()
    }

    /// Two samples per (node, kind), told apart by `result`.
    fn by_kind_result(
        &self,
        (yes, no): (&'static str, &'static str),
        f: impl Fn(&KindMetrics) -> (u64, u64),
    ) -> Vec<(Labels, u64)> {
        self.by_kind(f)
            .into_iter()
            .flat_map(|(labels, (a, b))| {
                let with = |r: &'static str| {
                    let mut l = labels.clone();
                    l.push(("result", r.to_string()));
                    l
                };
                [(with(yes), a), (with(no), b)]
            })
            .collect()
    }

    /// One sample per node and value of `label`.
    fn by_node(&self, label: &'static str, values: &[NodeValue]) -> Vec<(Labels, u64)> {
        self.nodes
            .iter()
            .flat_map(|(node, m)| {
                values
                    .iter()
                    .map(move |(v, f)| (vec![("node", node.clone()), (label, v.to_string())], f(m)))
            })
            .collect()
    }

    fn store_families(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let s = &self.status;
        let by_status: Vec<(Labels, u64)> = ItemStatus::ALL
            .iter()
            .map(|st| (vec![("status", st.to_string())], s.items.get(*st)))
            .collect();
        gauge(enc, "leasehold_items", "Items by status.", &by_status)?;
        let by_state: Vec<(Labels, u64)> = WorkerState::ALL
            .iter()
            .map(|st| (vec![("state", st.to_string())], s.workers.get(*st)))
            .collect();
        gauge(
            enc,
            "leasehold_workers",
            "Worker registry rows by state (dead: no heartbeat for the configured intervals).",
            &by_state,
        )?;
        let mut depth: Vec<(Labels, u64)> = Vec::new();
        for k in &s.by_kind {
            for (status, n) in [("pending", k.pending), ("in_progress", k.in_progress)] {
                depth.push((vec![("kind", k.kind.clone()), ("status", status.into())], n));
            }
        }
        gauge(
            enc,
            "leasehold_queue_depth",
            "Open items by kind and status.",
            &depth,
        )?;
        gauge(
            enc,
            "leasehold_expired_leases",
            "In-progress items whose lease has expired.",
            &[(vec![], s.recovery.expired_leases)],
        )?;
        counter(
            enc,
            "leasehold_items_completed",
            "Items in the store that completed (finished items removed by cleanup leave it, as a counter reset).",
            &[(vec![], s.items.completed)],
        )?;
        counter(
            enc,
            "leasehold_items_failed",
            "Items in the store that were dead-lettered.",
            &[(vec![], s.items.failed)],
        )?;
        counter(
            enc,
            "leasehold_items_recovered",
            "Items taken back from dead or restarted holders, summed over the registered nodes.",
            &[(vec![], s.recovery.recovered_total)],
        )?;
        gauge(
            enc,
            "leasehold_build_info",
            "The dashboard's leasehold version (always 1).",
            &[(vec![("version", env!("CARGO_PKG_VERSION").to_string())], 1)],
        )
    }

    fn node_families(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let per_kind: [KindCounter; 7] = [
            (
                "leasehold_attempts_started",
                "Attempts started, by the node that ran them and the item's kind.",
                |k| k.started,
            ),
            ("leasehold_attempts_completed", "Attempts that completed their item.", |k| {
                k.completed
            }),
            (
                "leasehold_attempts_retried",
                "Failed attempts whose item went back to pending for another try.",
                |k| k.retried,
            ),
            (
                "leasehold_attempts_failed",
                "Failed attempts that dead-lettered their item (permanent error or retry budget spent).",
                |k| k.failed,
            ),
            (
                "leasehold_attempts_timed_out",
                "Attempts that ran past their execution timeout (also counted as retried or failed).",
                |k| k.timed_out,
            ),
            (
                "leasehold_attempts_lease_lost",
                "Attempts whose lease was lost while working (result dropped).",
                |k| k.lease_lost,
            ),
            (
                "leasehold_attempts_cancelled",
                "Attempts an operator cancelled while they ran.",
                |k| k.cancelled,
            ),
        ];
        for (name, help, f) in per_kind {
            counter(enc, name, help, &self.by_kind(f))?;
        }
        counter(
            enc,
            "leasehold_recovered",
            "Items a node took back, by how: recover_mine (its restarted workers), reaper (expired leases of dead owners), monitor (items of dead nodes).",
            &self.by_node(
                "by",
                &[
                    ("recover_mine", |m| m.recovered_by_recover_mine),
                    ("reaper", |m| m.recovered_by_reaper),
                    ("monitor", |m| m.recovered_by_monitor),
                ],
            ),
        )?;
        counter(
            enc,
            "leasehold_lease_renewals",
            "Lease renewals by a node's heartbeats, by result (failed: refused as taken over, or the store was unreachable).",
            &self.by_node(
                "result",
                &[
                    ("succeeded", |m| m.renewals_succeeded),
                    ("failed", |m| m.renewals_failed),
                ],
            ),
        )?;
        counter(
            enc,
            "leasehold_llm_cache_lookups",
            "LLM outputs asked of the cache by durable tasks: served (hit) or generated (miss).",
            &self.by_kind_result(("hit", "miss"), |k| (k.llm_cache_hits, k.llm_cache_misses)),
        )?;
        counter(
            enc,
            "leasehold_tool_calls",
            "Tool calls by durable tasks: executed, or replayed from the ledger.",
            &self.by_kind_result(("executed", "replayed"), |k| {
                (k.tool_executions, k.tool_replays)
            }),
        )?;
        histogram(
            enc,
            "leasehold_attempt_run_seconds",
            "How long attempts ran, from the handler's start to the attempt's end.",
            &self.by_kind(|k| &k.run_seconds),
        )?;
        histogram(
            enc,
            "leasehold_queue_wait_seconds",
            "How long items waited to start: from run_at (enqueue, or the scheduled retry) to the acquisition.",
            &self.by_kind(|k| &k.queue_wait_seconds),
        )
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.store_families(&mut enc)?;
        self.node_families(&mut enc)
    }
}
