//! The tool ledger on a real SQLite file: replay after a kill between a tool's execution and
//! the item's completion, fencing, force_execute, expiry, history and stats.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Env, NowTs};
use leasehold_core::durable::{CheckpointState, CheckpointType};
use leasehold_core::ItemStatus;
use leasehold_durable::{
    evidence, CheckpointManager, DurableError, ToolLedger, ToolOutput, DEFAULT_LEDGER_TTL,
};
use serde_json::json;

fn counting_tool(
    runs: Arc<AtomicUsize>,
) -> impl FnOnce() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<ToolOutput, DurableError>> + Send>,
> {
    move || {
        Box::pin(async move {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(ToolOutput {
                result: json!({"stdout": "hello", "run": n}),
                evidence: vec![evidence::command_exit("echo hello", 0, 0)],
            })
        })
    }
}

async fn a_killed_attempt_replays_the_recorded_tool_result_instead_of_running_it_again<
    S: Backend,
>(
    env: Env<S>,
) {
    let ledger = ToolLedger::new(env.durable(), env.clock());
    let runs = Arc::new(AtomicUsize::new(0));

    // Attempt 1: the tool runs and is recorded; then the worker dies before completing.
    let first = env.leased("w1").await;
    let r = ledger
        .execute_or_replay(
            &first,
            "bash",
            "echo hello",
            "call",
            counting_tool(runs.clone()),
        )
        .await
        .expect("execute");
    assert!(!r.replayed);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // The restarted worker's recover_mine takes the item back; attempt 2 leases it again.
    let second = env.crash_and_reacquire("w1").await;
    assert_eq!(second.item, first.item);
    assert!(second.epoch > first.epoch);
    let r2 = ledger
        .execute_or_replay(
            &second,
            "bash",
            "echo hello",
            "call",
            counting_tool(runs.clone()),
        )
        .await
        .expect("replay");
    assert!(r2.replayed, "the second attempt executed the tool again");
    assert_eq!(r2.result, r.result);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    env.store
        .item_complete(&second, r2.result.clone(), env.clock.now_ts())
        .await
        .expect("complete");
    let item = env
        .store
        .item_get(first.item)
        .await
        .expect("get")
        .expect("item");
    assert_eq!(item.status, ItemStatus::Completed);

    // The result was committed with a tool_executed checkpoint carrying its evidence.
    let cp = CheckpointManager::new(env.durable(), env.clock())
        .list(first.item)
        .await
        .expect("list")
        .into_iter()
        .find(|c| c.checkpoint_type == CheckpointType::ToolExecuted)
        .expect("tool checkpoint");
    assert_eq!(cp.state, CheckpointState::Committed);
    assert_eq!(Some(cp.id), r.checkpoint_id);
    assert_eq!(cp.evidence.evidence.len(), 1);

    let s = ledger.stats();
    assert_eq!((s.executions, s.replays), (1, 1));
    assert!((s.replay_rate - 0.5).abs() < 1e-9);
    let history = ledger.history(first.item, 10).await.expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].replays, 1);
    assert_eq!(history[0].epoch, first.epoch);
}

async fn a_stale_holder_neither_executes_nor_records<S: Backend>(env: Env<S>) {
    let ledger = ToolLedger::new(env.durable(), env.clock());
    let runs = Arc::new(AtomicUsize::new(0));
    let stale = env.leased("w1").await;
    let _current = env.crash_and_reacquire("w1").await;
    let err = ledger
        .execute_or_replay(
            &stale,
            "bash",
            "rm -rf build",
            "call",
            counting_tool(runs.clone()),
        )
        .await
        .expect_err("stale");
    assert!(err.is_lease_lost(), "{err:?}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "refused before the tool ran"
    );
    assert!(ledger
        .history(stale.item, 10)
        .await
        .expect("history")
        .is_empty());
}

async fn force_execute_runs_again_and_replaces_the_record<S: Backend>(env: Env<S>) {
    let ledger = ToolLedger::new(env.durable(), env.clock());
    let runs = Arc::new(AtomicUsize::new(0));
    let lease = env.leased("w1").await;
    ledger
        .execute_or_replay(&lease, "bash", "date", "call", counting_tool(runs.clone()))
        .await
        .expect("execute");
    let forced = ledger
        .force_execute(&lease, "bash", "date", "call", counting_tool(runs.clone()))
        .await
        .expect("force");
    assert!(!forced.replayed);
    assert_eq!(forced.result["run"], 2);
    let replay = ledger
        .execute_or_replay(&lease, "bash", "date", "call", counting_tool(runs.clone()))
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(
        replay.result["run"], 2,
        "the forced result replaces the first"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        ledger.history(lease.item, 10).await.expect("history").len(),
        1
    );
}

async fn records_expire_after_thirty_days<S: Backend>(env: Env<S>) {
    let ledger = ToolLedger::new(env.durable(), env.clock());
    let runs = Arc::new(AtomicUsize::new(0));
    let lease = env.leased("w1").await;
    ledger
        .execute_or_replay(&lease, "http", "GET /", "call", counting_tool(runs.clone()))
        .await
        .expect("execute");
    env.clock
        .advance(DEFAULT_LEDGER_TTL - Duration::from_millis(1));
    assert!(
        ledger
            .execute_or_replay(&lease, "http", "GET /", "call", counting_tool(runs.clone()))
            .await
            .expect("replay")
            .replayed
    );
    env.clock.advance(Duration::from_millis(1));
    assert!(
        !ledger
            .execute_or_replay(&lease, "http", "GET /", "call", counting_tool(runs.clone()))
            .await
            .expect("execute again")
            .replayed
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    env.clock.advance(DEFAULT_LEDGER_TTL);
    assert_eq!(ledger.purge_expired().await.expect("purge"), 1);
}

async fn a_failed_tool_records_nothing_and_bad_input_is_refused<S: Backend>(env: Env<S>) {
    let ledger = ToolLedger::new(env.durable(), env.clock());
    let lease = env.leased("w1").await;
    let err = ledger
        .execute_or_replay(&lease, "http", "GET /flaky", "call", || async {
            Err::<ToolOutput, _>(DurableError::transient("timeout"))
        })
        .await
        .expect_err("failed");
    assert!(err.is_transient());
    assert!(err.to_string().contains("tool http"), "{err}");
    assert!(ledger
        .history(lease.item, 10)
        .await
        .expect("history")
        .is_empty());
    assert_eq!(ledger.stats().failures, 1);
    for (tool, command) in [("", "x"), ("bash", "")] {
        let e = ledger
            .execute_or_replay(&lease, tool, command, "call", || async {
                Ok::<_, DurableError>(json!(1))
            })
            .await
            .expect_err("refused");
        assert!(matches!(e, DurableError::InvalidInput(_)), "{e:?}");
    }
    assert!(ledger.history(lease.item, 0).await.is_err());
}

async fn the_key_is_tool_command_and_task<S: Backend>(env: Env<S>) {
    let ledger = ToolLedger::new(env.durable(), env.clock());
    let runs = Arc::new(AtomicUsize::new(0));
    let a = env.leased("w1").await;
    let b = env.leased("w2").await;
    assert_ne!(a.item, b.item);
    let mut replayed = Vec::new();
    for (lease, tool, command) in [
        (&a, "bash", "echo hello"),
        (&a, "bash", "echo hello"), // same key: replayed
        (&a, "bash", "echo bye"),   // another command
        (&a, "sh", "echo hello"),   // another tool
        (&b, "bash", "echo hello"), // another task
    ] {
        let r = ledger
            .execute_or_replay(lease, tool, command, "call", counting_tool(runs.clone()))
            .await
            .expect("execute or replay");
        replayed.push(r.replayed);
    }
    assert_eq!(replayed, vec![false, true, false, false, false]);
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert_eq!(ledger.history(a.item, 10).await.expect("history").len(), 3);
    assert_eq!(ledger.history(b.item, 10).await.expect("history").len(), 1);
}

durable_tests!(
    a_killed_attempt_replays_the_recorded_tool_result_instead_of_running_it_again,
    a_stale_holder_neither_executes_nor_records,
    force_execute_runs_again_and_replaces_the_record,
    records_expire_after_thirty_days,
    a_failed_tool_records_nothing_and_bad_input_is_refused,
    the_key_is_tool_command_and_task,
);
