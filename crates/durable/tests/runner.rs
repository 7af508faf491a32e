//! run_with_recovery on a real SQLite file: a task killed mid-way resumes from the right step,
//! skipping the steps its checkpoint covers and replaying the tool calls and LLM outputs that
//! had completed; a checkpoint whose evidence no longer holds is passed over.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{Backend, Env};
use leasehold_core::LeaseRef;
use leasehold_durable::{evidence, DurableError, StepOutput, Task, TaskRunner};
use serde_json::{json, Value};

/// How often each body ran.
#[derive(Default)]
struct Runs {
    steps: [AtomicUsize; 4],
    tools: AtomicUsize,
    llm: AtomicUsize,
}

/// A four-step task; with `fail_in_step = Some(k)`, step k's tool runs and then the attempt
/// dies (the error stands for a crash: nothing after it is written).
async fn four_steps(
    task: Task,
    runs: Arc<Runs>,
    fail_in_step: Option<usize>,
) -> Result<Value, DurableError> {
    let mut outs = Vec::new();
    for k in 0..4 {
        let runs = runs.clone();
        let out = task
            .step(&format!("step{k}"), move |t| async move {
                runs.steps[k].fetch_add(1, Ordering::SeqCst);
                let plan = t
                    .llm("plan", &format!("plan step {k}"), "model-a", || {
                        let runs = runs.clone();
                        async move {
                            runs.llm.fetch_add(1, Ordering::SeqCst);
                            Ok(json!(format!("plan {k}")))
                        }
                    })
                    .await?;
                let tool = t
                    .tool("bash", &format!("make part{k}"), || {
                        let runs = runs.clone();
                        async move {
                            runs.tools.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, DurableError>(json!({"built": k}))
                        }
                    })
                    .await?;
                if fail_in_step == Some(k) {
                    return Err(DurableError::transient("killed after the tool ran"));
                }
                Ok::<_, DurableError>(json!({"plan": plan, "tool": tool.result}))
            })
            .await?;
        outs.push(out);
    }
    Ok(json!(outs))
}

async fn run(
    runner: &TaskRunner,
    lease: &LeaseRef,
    runs: &Arc<Runs>,
    fail_in_step: Option<usize>,
) -> Result<leasehold_durable::Recovered<Value>, DurableError> {
    let runs = runs.clone();
    runner
        .run_with_recovery(lease.clone(), move |task| {
            four_steps(task, runs, fail_in_step)
        })
        .await
}

async fn a_killed_task_resumes_after_its_last_verified_step<S: Backend>(env: Env<S>) {
    let runner = TaskRunner::new(env.durable(), env.clock());
    let runs = Arc::new(Runs::default());

    let first = env.leased("w1").await;
    let err = run(&runner, &first, &runs, Some(2))
        .await
        .expect_err("killed");
    assert!(err.is_transient());
    let counts =
        |r: &Runs| -> Vec<usize> { r.steps.iter().map(|c| c.load(Ordering::SeqCst)).collect() };
    assert_eq!(counts(&runs), vec![1, 1, 1, 0]);
    assert_eq!(runs.tools.load(Ordering::SeqCst), 3);

    let second = env.crash_and_reacquire("w1").await;
    let done = run(&runner, &second, &runs, None).await.expect("resumed");
    let report = done.report;
    assert_eq!(report.resumed_after_step, Some(1), "{report:?}");
    assert!(report.resumed_from_checkpoint.is_some());
    assert_eq!(report.steps_skipped, 2);
    assert_eq!(report.steps_run, 2);
    // Steps 0 and 1 did not run again; step 2 ran again but its tool and LLM call replayed.
    assert_eq!(counts(&runs), vec![1, 1, 2, 1]);
    assert_eq!(
        runs.tools.load(Ordering::SeqCst),
        4,
        "only step 3's tool is new"
    );
    assert_eq!(runs.llm.load(Ordering::SeqCst), 4);
    assert_eq!((report.tool_replays, report.tool_executions), (1, 1));
    assert_eq!((report.llm_cache_hits, report.llm_calls), (1, 1));
    // The outputs of the skipped steps come from the checkpoint.
    assert_eq!(
        done.output[0],
        json!({"plan": "plan 0", "tool": {"built": 0}})
    );
    assert_eq!(
        done.output[3],
        json!({"plan": "plan 3", "tool": {"built": 3}})
    );
    assert_eq!(done.output.as_array().map(Vec::len), Some(4));
}

async fn a_checkpoint_whose_evidence_broke_is_passed_over_for_an_earlier_one<S: Backend>(
    env: Env<S>,
) {
    let runner = TaskRunner::new(env.durable(), env.clock());
    let file = env.dir.path().join("artifact.txt");
    let ran = Arc::new(AtomicUsize::new(0));

    let task = |task: Task, file: std::path::PathBuf, ran: Arc<AtomicUsize>, die: bool| async move {
        task.step("fetch", |_| async {
            Ok::<_, DurableError>(json!("fetched"))
        })
        .await?;
        let f = file.clone();
        let r = ran.clone();
        task.step("write", move |_| async move {
            r.fetch_add(1, Ordering::SeqCst);
            std::fs::write(&f, b"v1").map_err(DurableError::permanent)?;
            Ok::<_, DurableError>(StepOutput {
                result: json!("written"),
                evidence: vec![evidence::file_unchanged(&f).await?],
            })
        })
        .await?;
        if die {
            return Err(DurableError::transient("killed"));
        }
        Ok(json!("done"))
    };

    let first = env.leased("w1").await;
    let (f, r) = (file.clone(), ran.clone());
    runner
        .run_with_recovery(first.clone(), move |t| task(t, f, r, true))
        .await
        .expect_err("killed");
    // Someone changed the artifact: the "write" checkpoint's evidence no longer holds.
    std::fs::write(&file, b"tampered").expect("tamper");
    let second = env.crash_and_reacquire("w1").await;
    let (f, r) = (file.clone(), ran.clone());
    let done = runner
        .run_with_recovery(second, move |t| task(t, f, r, false))
        .await
        .expect("resumed");
    assert_eq!(done.report.resumed_after_step, Some(0), "{:?}", done.report);
    assert_eq!(ran.load(Ordering::SeqCst), 2, "the write step ran again");
    assert_eq!(std::fs::read(&file).expect("read"), b"v1");
}

async fn a_fresh_task_runs_every_step_and_steps_must_keep_their_order<S: Backend>(env: Env<S>) {
    let runner = TaskRunner::new(env.durable(), env.clock());
    let runs = Arc::new(Runs::default());
    let lease = env.leased("w1").await;
    let done = run(&runner, &lease, &runs, None).await.expect("run");
    assert_eq!(done.report.resumed_from_checkpoint, None);
    assert_eq!(done.report.steps_run, 4);

    // Re-running with renamed steps against the same checkpoints is refused, permanently.
    let again = env.crash_and_reacquire("w1").await;
    let err = runner
        .run_with_recovery(again, |t| async move {
            t.step("renamed", |_| async { Ok::<_, DurableError>(json!(1)) })
                .await
        })
        .await
        .expect_err("steps changed");
    assert!(err.is_permanent(), "{err:?}");
    assert!(err.to_string().contains("steps changed"), "{err}");
}

durable_tests!(
    a_killed_task_resumes_after_its_last_verified_step,
    a_checkpoint_whose_evidence_broke_is_passed_over_for_an_earlier_one,
    a_fresh_task_runs_every_step_and_steps_must_keep_their_order,
);
