//! `GET /metrics`: Prometheus text (exposition format 0.0.4), rendered from the same
//! [`Status`](crate::Status) the page shows, so the two never disagree.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

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
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&status),
    )
        .into_response())
}

/// The exposition text. Counters are store-wide: completed and failed count the items in
/// those statuses (finished items removed by `cleanup` leave them, as a counter reset);
/// recovered sums what every registered node reports.
pub(crate) fn render(s: &Status) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let by_status: Vec<(String, u64)> = ItemStatus::ALL
        .iter()
        .map(|st| (format!("{{status=\"{st}\"}}"), s.items.get(*st)))
        .collect();
    family("leasehold_items", "gauge", "Items by status.", &by_status);
    let by_state: Vec<(String, u64)> = WorkerState::ALL
        .iter()
        .map(|st| (format!("{{state=\"{st}\"}}"), s.workers.get(*st)))
        .collect();
    family(
        "leasehold_workers",
        "gauge",
        "Worker registry rows by state (dead: no heartbeat for the configured intervals).",
        &by_state,
    );
    let mut depth = Vec::new();
    for k in &s.by_kind {
        let kind = escape(&k.kind);
        depth.push((format!("{{kind=\"{kind}\",status=\"pending\"}}"), k.pending));
        depth.push((
            format!("{{kind=\"{kind}\",status=\"in_progress\"}}"),
            k.in_progress,
        ));
    }
    family(
        "leasehold_queue_depth",
        "gauge",
        "Open items by kind and status.",
        &depth,
    );
    family(
        "leasehold_expired_leases",
        "gauge",
        "In-progress items whose lease has expired.",
        &[(String::new(), s.recovery.expired_leases)],
    );
    family(
        "leasehold_items_completed_total",
        "counter",
        "Items completed.",
        &[(String::new(), s.items.completed)],
    );
    family(
        "leasehold_items_failed_total",
        "counter",
        "Items dead-lettered.",
        &[(String::new(), s.items.failed)],
    );
    family(
        "leasehold_items_recovered_total",
        "counter",
        "Items taken back from dead or restarted holders, as reported by the registered nodes.",
        &[(String::new(), s.recovery.recovered_total)],
    );
    out
}

/// A label value escaped as the format asks (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
