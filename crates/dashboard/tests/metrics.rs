//! The node's counters reach `/metrics` through the store: a real tree on a real SQLite file
//! runs items through a retry, an execution timeout, a lost lease and a durable task that
//! replays a tool call and hits the LLM cache on its second attempt; the node publishes its
//! metrics in its registry row (written last at the graceful shutdown), and a dashboard over
//! the same file — which sees only the store — renders them labelled by node and kind,
//! equal to what `NodeHandle::metrics` reports.
//!
//! Attempts run on tokio timers in real time (timeouts, heartbeats); the test waits on the
//! node's events, never on sleeps.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast;

use leasehold_core::{Backoff, Clock, ItemId, NewItem, Store, SystemClock};
use leasehold_dashboard::DashboardConfig;
use leasehold_durable::{DurableError, TaskRunner};
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};
use leasehold_sqlite::SqliteStore;

use common::{get, loopback, serve};

const WAIT: Duration = Duration::from_secs(30);

/// The value of the sample whose name and labels are exactly `series`.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("no sample {series} in\n{body}"))
}

/// The node's events, and the items seen finished (completed or dead-lettered) so far.
struct Watch {
    events: broadcast::Receiver<NodeEvent>,
    finished: HashSet<ItemId>,
}

impl Watch {
    /// Waits for the first event `pick` accepts, noting every finish on the way.
    async fn until(&mut self, what: &str, pick: impl Fn(&NodeEvent) -> bool) {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.events.recv().await {
                    Ok(e) => {
                        if let NodeEvent::Completed { item, .. }
                        | NodeEvent::AttemptFailed {
                            item,
                            dead_lettered: true,
                        } = e
                        {
                            self.finished.insert(item);
                        }
                        if pick(&e) {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        panic!("missed {n} events waiting for {what}")
                    }
                    Err(e) => panic!("event stream closed waiting for {what}: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"));
    }

    /// Waits until every one of `items` has finished.
    async fn finished(&mut self, items: &[ItemId]) {
        while !items.iter().all(|i| self.finished.contains(i)) {
            self.until("the items to finish", |e| {
                matches!(
                    e,
                    NodeEvent::Completed { .. }
                        | NodeEvent::AttemptFailed {
                            dead_lettered: true,
                            ..
                        }
                )
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_timeouts_and_lost_leases_are_counted_on_metrics_by_node_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(
        SqliteStore::open(dir.path().join("metrics.db"))
            .await
            .expect("open store"),
    );
    let store: Arc<dyn Store> = sqlite.clone();
    let runner = TaskRunner::new(sqlite.clone(), Arc::new(SystemClock));

    let builder = Leasehold::builder(store.clone())
        .node_id("m1")
        .workers(2)
        // Leases that never lapse on their own under the test; only the test takes one away.
        .lease(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(50))
        .reaper(false)
        .monitor(false)
        .poll_interval(Duration::from_millis(50))
        .cancel_grace(Duration::from_millis(100))
        .backoff(Backoff {
            initial: Duration::from_millis(1),
            factor: 1.0,
            max: Duration::from_millis(1),
            jitter: 0.0,
        })
        // Fails its first attempt, then completes.
        .handler("flaky", |ctx: JobContext| async move {
            if ctx.attempt() == 1 {
                return Err(JobError::retryable("first attempt fails"));
            }
            Ok(json!("ok"))
        })
        // Hangs until cancelled: ends by its timeout.
        .handler("slow", |ctx: JobContext| async move {
            ctx.cancelled().await;
            Err::<serde_json::Value, _>(JobError::retryable("cancelled"))
        })
        // Its first attempt holds on until its lease is taken away; the next completes.
        .handler("held", |ctx: JobContext| async move {
            if ctx.attempt() == 1 {
                ctx.cancelled().await;
                return Err(JobError::retryable("cancelled"));
            }
            Ok(json!("ok"))
        })
        // A durable task: its first attempt runs a tool and an LLM call, then fails inside the
        // step; the second replays the tool and is served the LLM output from the cache.
        .handler("agent", move |ctx: JobContext| {
            let runner = runner.clone();
            async move {
                let attempt = ctx.attempt();
                let done = runner
                    .run_job(&ctx, move |task| async move {
                        task.step("work", move |t| async move {
                            t.tool("shell", "echo hi", || async {
                                Ok::<_, DurableError>(json!("hi"))
                            })
                            .await?;
                            t.llm("plan", "what next?", "model-x", || async {
                                Ok(json!("a plan"))
                            })
                            .await?;
                            if attempt == 1 {
                                return Err(DurableError::transient("the step fails once"));
                            }
                            Ok(json!("done"))
                        })
                        .await
                    })
                    .await?;
                Ok::<_, JobError>(done.output)
            }
        });
    let mut watch = Watch {
        events: builder.subscribe(),
        finished: HashSet::new(),
    };
    let node = builder.start().await.expect("node starts");

    // The lost lease first, while a worker is free to take the item again.
    let held = node.enqueue(NewItem::new("held", json!({}))).await.unwrap();
    watch
        .until(
            "held acquired",
            |e| matches!(e, NodeEvent::Acquired { item, .. } if *item == held),
        )
        .await;
    // Taken from its holder the way a restarted owner's recover_mine would: the epoch moves
    // on, so the holder's next renewal is refused.
    let owner = store.item_get(held).await.unwrap().unwrap().owner.unwrap();
    let taken = store
        .items_recover_owner(&owner, SystemClock.now())
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    watch
        .until(
            "held's lease lost",
            |e| matches!(e, NodeEvent::LeaseLost { item, .. } if *item == held),
        )
        .await;

    let flaky = node
        .enqueue(NewItem::new("flaky", json!({})))
        .await
        .unwrap();
    let slow = node
        .enqueue(
            NewItem::new("slow", json!({}))
                .max_attempts(1)
                .timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let agent = node
        .enqueue(NewItem::new("agent", json!({})))
        .await
        .unwrap();
    watch.finished(&[held, flaky, slow, agent]).await;
    // The shutdown writes the registry row a last time, with the final counts.
    node.shutdown(Duration::from_secs(5)).await.unwrap();
    let published = node.metrics();

    let (addr, _stop) = serve(store.clone(), DashboardConfig::new(loopback())).await;
    let r = get(addr, "/metrics", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = &r.body;
    let k =
        |name: &str, kind: &str| sample(body, &format!("{name}{{node=\"m1\",kind=\"{kind}\"}}"));

    assert_eq!(k("leasehold_attempts_retried_total", "flaky"), 1.0);
    assert_eq!(k("leasehold_attempts_completed_total", "flaky"), 1.0);
    assert_eq!(k("leasehold_attempts_started_total", "flaky"), 2.0);
    assert_eq!(k("leasehold_attempts_timed_out_total", "slow"), 1.0);
    assert_eq!(
        k("leasehold_attempts_failed_total", "slow"),
        1.0,
        "its one attempt spent"
    );
    assert_eq!(k("leasehold_attempts_lease_lost_total", "held"), 1.0);
    assert_eq!(k("leasehold_attempts_completed_total", "held"), 1.0);
    assert_eq!(
        k("leasehold_attempts_retried_total", "held"),
        0.0,
        "a lost lease is no failure"
    );
    assert_eq!(k("leasehold_attempts_retried_total", "agent"), 1.0);
    assert_eq!(k("leasehold_attempts_completed_total", "agent"), 1.0);

    let r = |name: &str, kind: &str, result: &str| {
        sample(
            body,
            &format!("{name}{{node=\"m1\",kind=\"{kind}\",result=\"{result}\"}}"),
        )
    };
    assert_eq!(r("leasehold_tool_calls_total", "agent", "executed"), 1.0);
    assert_eq!(r("leasehold_tool_calls_total", "agent", "replayed"), 1.0);
    assert_eq!(r("leasehold_llm_cache_lookups_total", "agent", "miss"), 1.0);
    assert_eq!(r("leasehold_llm_cache_lookups_total", "agent", "hit"), 1.0);

    // The refused renewal of the lost lease is the one failed renewal.
    assert_eq!(
        sample(
            body,
            "leasehold_lease_renewals_total{node=\"m1\",result=\"failed\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            body,
            "leasehold_recovered_total{node=\"m1\",by=\"recover_mine\"}"
        ),
        0.0,
        "the test took the item back, not the node"
    );

    // Histograms: one queue wait per attempt started, one run time per attempt ended; the
    // timed-out attempt ran at least its 300 ms.
    let h = |name: &str, kind: &str, suffix: &str| {
        sample(
            body,
            &format!("{name}_{suffix}{{node=\"m1\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(h("leasehold_queue_wait_seconds", "flaky", "count"), 2.0);
    assert_eq!(h("leasehold_attempt_run_seconds", "held", "count"), 2.0);
    assert_eq!(
        sample(
            body,
            "leasehold_attempt_run_seconds_bucket{node=\"m1\",kind=\"slow\",le=\"0.25\"}"
        ),
        0.0,
        "{body}"
    );
    assert_eq!(
        sample(
            body,
            "leasehold_attempt_run_seconds_bucket{node=\"m1\",kind=\"slow\",le=\"+Inf\"}"
        ),
        1.0
    );
    assert!(h("leasehold_attempt_run_seconds", "slow", "sum") >= 0.3);
    assert!(body.contains("# TYPE leasehold_queue_wait_seconds histogram"));
    assert!(body.contains("leasehold_build_info{version=\""));

    // What the dashboard rendered from the store is what the node counted.
    for (kind, m) in &published.kinds {
        assert_eq!(
            k("leasehold_attempts_started_total", kind),
            m.started as f64,
            "{kind}"
        );
        assert_eq!(
            k("leasehold_attempts_completed_total", kind),
            m.completed as f64,
            "{kind}"
        );
        assert_eq!(
            h("leasehold_attempt_run_seconds", kind, "count"),
            m.run_seconds.count() as f64,
            "{kind}"
        );
    }
    assert_eq!(published.kinds.len(), 4);
    assert_eq!(
        sample(
            body,
            "leasehold_lease_renewals_total{node=\"m1\",result=\"succeeded\"}"
        ),
        published.renewals_succeeded as f64
    );
}
