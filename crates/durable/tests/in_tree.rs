//! run_job inside a real leasehold tree, on every backend: a handler that panics right
//! after its tool call (an injected fault between the tool's execution and the item's
//! completion) is retried by the queue, resumes from its checkpoint and replays the tool.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Env};
use leasehold_core::{Backoff, ItemStatus, SystemClock};
use leasehold_durable::{DurableError, TaskRunner};
use leasehold_runtime::faults::FaultPoints;
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent};
use serde_json::json;

async fn a_handler_killed_after_its_tool_resumes_and_replays_in_the_tree<S: Backend>(env: Env<S>) {
    let store = env.queue();
    let runner = TaskRunner::new(env.durable(), Arc::new(SystemClock));
    let tool_runs = Arc::new(AtomicUsize::new(0));
    let first_step_runs = Arc::new(AtomicUsize::new(0));
    let faults = Arc::new(FaultPoints::default());
    faults.arm("after_tool", 1);

    let (r, tools, firsts) = (runner.clone(), tool_runs.clone(), first_step_runs.clone());
    let node = Leasehold::builder(store.clone())
        .workers(1)
        .fault_points(faults.clone())
        .backoff(Backoff {
            initial: Duration::from_millis(10),
            factor: 2.0,
            max: Duration::from_millis(50),
            jitter: 0.0,
        })
        .handler("research", move |ctx: JobContext| {
            let (runner, tools, firsts) = (r.clone(), tools.clone(), firsts.clone());
            async move {
                let job = ctx.clone();
                let done = runner
                    .run_job(&ctx, move |task| async move {
                        let plan = task
                            .step("plan", move |_| async move {
                                firsts.fetch_add(1, Ordering::SeqCst);
                                Ok::<_, DurableError>(json!("plan"))
                            })
                            .await?;
                        let fetched = task
                            .step("fetch", move |t| async move {
                                let r = t
                                    .tool("http", "GET acme.example", || async move {
                                        tools.fetch_add(1, Ordering::SeqCst);
                                        Ok::<_, DurableError>(json!({"status": 200}))
                                    })
                                    .await?;
                                // The worker dies here on the first attempt.
                                job.fault_point("after_tool");
                                Ok::<_, DurableError>(r.result)
                            })
                            .await?;
                        let report = task.report();
                        Ok(json!({"plan": plan, "fetched": fetched, "report": report}))
                    })
                    .await?;
                Ok::<_, JobError>(done.output)
            }
        })
        .start()
        .await
        .expect("start");
    let mut events = node.events();
    let id = node
        .enqueue(node.item("research", json!({})))
        .await
        .expect("enqueue");
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::Completed { item, .. }) if item == id => break,
                Ok(NodeEvent::AttemptFailed {
                    item,
                    dead_lettered: true,
                }) if item == id => panic!("dead-lettered"),
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .expect("the item completes");
    node.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");

    assert_eq!(faults.fired("after_tool"), 1, "the fault fired once");
    let item = store.item_get(id).await.expect("get").expect("item");
    assert_eq!(item.status, ItemStatus::Completed);
    assert_eq!(item.attempts, 2);
    let out = item.output.expect("output");
    assert_eq!(out["fetched"], json!({"status": 200}));
    assert_eq!(tool_runs.load(Ordering::SeqCst), 1, "the tool ran again");
    assert_eq!(
        first_step_runs.load(Ordering::SeqCst),
        1,
        "the checkpointed step ran again"
    );
    assert_eq!(out["report"]["tool_replays"], 1, "{out}");
    assert_eq!(out["report"]["steps_skipped"], 1, "{out}");
    assert!(out["report"]["resumed_from_checkpoint"].is_i64(), "{out}");
}

durable_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_handler_killed_after_its_tool_resumes_and_replays_in_the_tree,
);
