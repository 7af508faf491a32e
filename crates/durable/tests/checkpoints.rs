//! Checkpoints with evidence on a real SQLite file: the lifecycle, verification failing on
//! each kind of broken evidence, fencing, rollback, retention, and the error_boundary
//! checkpoint recovery writes.

mod common;

use std::time::Duration;

use common::{Backend, Env, NowTs, T0};
use leasehold_core::durable::{CheckpointState, CheckpointType, NewStep, RowProbe, Verification};
use leasehold_core::{NoLiveness, ReapRequest};
use leasehold_durable::{evidence, CheckpointManager, DurableError, EvidencePack};
use serde_json::{json, Map, Value};

fn manager<S: Backend>(env: &Env<S>) -> CheckpointManager {
    CheckpointManager::new(env.durable(), env.clock())
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

fn is_invalid(v: &Verification, needle: &str) -> bool {
    matches!(v, Verification::Invalid { reason } if reason.contains(needle))
}

async fn a_committed_step_verifies_and_is_the_last_verified_checkpoint<S: Backend>(env: Env<S>) {
    let m = manager(&env);
    let lease = env.leased("w1").await;
    let artifact = env.dir.path().join("out.txt");
    std::fs::write(&artifact, b"result").expect("write artifact");

    let step = m
        .begin_step(
            &lease,
            0,
            "plan",
            "iteration_start",
            json!({"iteration": 1}),
        )
        .await
        .expect("begin");
    assert!(
        m.get_last_verified_checkpoint(&lease)
            .await
            .expect("read")
            .is_none(),
        "a begun step is not a resume point"
    );
    let pack = EvidencePack::new(vec![
        evidence::command_exit("echo test", 0, 0),
        evidence::file_exists(&artifact),
        evidence::file_unchanged(&artifact).await.expect("hash"),
        evidence::db_row(RowProbe {
            table: "items".into(),
            where_: obj(json!({"id": lease.item.0})),
            values: obj(json!({"status": "in_progress", "owner": "w1"})),
        }),
    ]);
    let cp = m.commit_step(&lease, step, pack).await.expect("commit");
    assert_eq!(cp.state, CheckpointState::Committed);
    assert_eq!(cp.checkpoint_type, CheckpointType::IterationStart);
    assert_eq!(
        m.verify_checkpoint(&lease, cp.id).await.expect("verify"),
        Verification::Valid
    );
    let last = m
        .get_last_verified_checkpoint(&lease)
        .await
        .expect("read")
        .expect("one");
    assert_eq!(last.id, cp.id);
    assert_eq!(last.snapshot, json!({"iteration": 1}));
    assert_eq!(last.verification, Some(Verification::Valid));
}

async fn verification_fails_on_a_changed_file_hash<S: Backend>(env: Env<S>) {
    let m = manager(&env);
    let lease = env.leased("w1").await;
    let file = env.dir.path().join("config.yaml");
    std::fs::write(&file, b"a: 1").expect("write");
    let step = m
        .begin_step(&lease, 0, "configure", "state_transition", json!({}))
        .await
        .expect("begin");
    let pack = EvidencePack::new(vec![evidence::file_unchanged(&file).await.expect("hash")]);
    let cp = m.commit_step(&lease, step, pack).await.expect("commit");
    assert_eq!(
        m.verify_checkpoint(&lease, cp.id).await.expect("verify"),
        Verification::Valid
    );

    std::fs::write(&file, b"a: 2").expect("change the file");
    let v = m.verify_checkpoint(&lease, cp.id).await.expect("verify");
    assert!(is_invalid(&v, "SHA-256"), "{v:?}");
    assert!(
        m.get_last_verified_checkpoint(&lease)
            .await
            .expect("read")
            .is_none(),
        "a checkpoint whose file changed is no resume point"
    );
    let stored = m.list(lease.item).await.expect("list");
    assert!(matches!(
        stored[0].verification,
        Some(Verification::Invalid { .. })
    ));
}

async fn verification_fails_on_a_missing_artifact<S: Backend>(env: Env<S>) {
    let m = manager(&env);
    let lease = env.leased("w1").await;
    let artifact = env.dir.path().join("report.pdf");
    std::fs::write(&artifact, b"%PDF").expect("write");
    let step = m
        .begin_step(&lease, 0, "render", "tool_executed", json!({}))
        .await
        .expect("begin");
    let cp = m
        .commit_step(
            &lease,
            step,
            EvidencePack::new(vec![evidence::file_exists(&artifact)]),
        )
        .await
        .expect("commit");
    assert_eq!(
        m.verify_checkpoint(&lease, cp.id).await.expect("verify"),
        Verification::Valid
    );
    std::fs::remove_file(&artifact).expect("remove");
    let v = m.verify_checkpoint(&lease, cp.id).await.expect("verify");
    assert!(is_invalid(&v, "missing"), "{v:?}");
    // A directory where a file was claimed is not the artifact either.
    std::fs::create_dir(&artifact).expect("dir in its place");
    let v = m.verify_checkpoint(&lease, cp.id).await.expect("verify");
    assert!(is_invalid(&v, "not a file"), "{v:?}");
}

async fn verification_fails_on_a_wrong_exit_code<S: Backend>(env: Env<S>) {
    let m = manager(&env);
    let lease = env.leased("w1").await;
    let ok = m
        .begin_step(&lease, 0, "build", "tool_executed", json!({}))
        .await
        .expect("begin");
    let ok = m
        .commit_step(
            &lease,
            ok,
            EvidencePack::new(vec![evidence::command_exit("make", 0, 0)]),
        )
        .await
        .expect("commit");
    let bad = m
        .begin_step(&lease, 1, "test", "tool_executed", json!({}))
        .await
        .expect("begin");
    let bad = m
        .commit_step(
            &lease,
            bad,
            EvidencePack::new(vec![evidence::command_exit("make test", 0, 2)]),
        )
        .await
        .expect("commit");
    assert_eq!(
        m.verify_checkpoint(&lease, ok.id).await.expect("verify"),
        Verification::Valid
    );
    let v = m.verify_checkpoint(&lease, bad.id).await.expect("verify");
    assert!(is_invalid(&v, "exited with 2, expected 0"), "{v:?}");
    // The newest valid one is the resume point.
    let last = m
        .get_last_verified_checkpoint(&lease)
        .await
        .expect("read")
        .expect("one");
    assert_eq!(last.id, ok.id);
}

async fn verification_fails_on_a_missing_database_row<S: Backend>(env: Env<S>) {
    let m = manager(&env);
    let lease = env.leased("w1").await;
    let probe = |status: &str| RowProbe {
        table: "items".into(),
        where_: obj(json!({"id": lease.item.0})),
        values: obj(json!({"status": status})),
    };
    let step = m
        .begin_step(&lease, 0, "mark", "state_transition", json!({}))
        .await
        .expect("begin");
    let cp = m
        .commit_step(
            &lease,
            step,
            EvidencePack::new(vec![evidence::db_row(probe("in_progress"))]),
        )
        .await
        .expect("commit");
    assert_eq!(
        m.verify_checkpoint(&lease, cp.id).await.expect("verify"),
        Verification::Valid
    );
    let step = m
        .begin_step(&lease, 1, "done", "state_transition", json!({}))
        .await
        .expect("begin");
    let cp2 = m
        .commit_step(
            &lease,
            step,
            EvidencePack::new(vec![evidence::db_row(probe("completed"))]),
        )
        .await
        .expect("commit");
    let v = m.verify_checkpoint(&lease, cp2.id).await.expect("verify");
    assert!(is_invalid(&v, "no row of items"), "{v:?}");
    // An unknown table or column is a failed claim with a clear reason, not a crash.
    let step = m
        .begin_step(&lease, 2, "ghost", "state_transition", json!({}))
        .await
        .expect("begin");
    let cp3 = m
        .commit_step(
            &lease,
            step,
            EvidencePack::new(vec![evidence::db_row(RowProbe {
                table: "tasks".into(),
                where_: obj(json!({"task_id": "t-1"})),
                values: Map::new(),
            })]),
        )
        .await
        .expect("commit");
    let v = m.verify_checkpoint(&lease, cp3.id).await.expect("verify");
    assert!(is_invalid(&v, "no table \"tasks\""), "{v:?}");
}

async fn bad_input_is_refused_with_a_clear_message_and_writes_nothing<S: Backend>(env: Env<S>) {
    let m = manager(&env);
    let lease = env.leased("w1").await;
    let err = m
        .begin_step(&lease, 0, "x", "my_checkpoint", json!({}))
        .await
        .expect_err("unknown type");
    let msg = err.to_string();
    assert!(
        msg.contains("invalid checkpoint type \"my_checkpoint\"")
            && msg.contains("iteration_start"),
        "{msg}"
    );
    let err = m
        .begin_step(&lease, 0, "x", "error_boundary", json!({}))
        .await
        .expect_err("recovery's type");
    assert!(err.to_string().contains("error_boundary"), "{err}");
    let step = m
        .begin_step(&lease, 0, "x", "manual_checkpoint", json!({}))
        .await
        .expect("begin");
    let bad_hash = leasehold_core::durable::Evidence::FileSha256 {
        description: "d".into(),
        path: "/etc/hosts".into(),
        sha256: "abc123".into(),
    };
    let err = m
        .commit_step(&lease, step, EvidencePack::new(vec![bad_hash]))
        .await
        .expect_err("malformed digest");
    assert!(err.to_string().contains("64 lowercase hex"), "{err}");
    let injected = RowProbe {
        table: "items; DROP TABLE items".into(),
        where_: obj(json!({"id": 1})),
        values: Map::new(),
    };
    let err = m
        .commit_step(
            &lease,
            step,
            EvidencePack::new(vec![evidence::db_row(injected)]),
        )
        .await
        .expect_err("not an identifier");
    assert!(err.to_string().contains("not a plain identifier"), "{err}");
    let cps = m.list(lease.item).await.expect("list");
    assert_eq!(cps.len(), 1);
    assert_eq!(
        cps[0].state,
        CheckpointState::Begun,
        "refused commits changed nothing"
    );
    assert!(m
        .commit_step(&lease, 9_999, EvidencePack::default())
        .await
        .is_err());
    assert!(m.with_retention(0).is_err());
}

async fn a_stale_holder_cannot_begin_or_commit_a_checkpoint<S: Backend>(env: Env<S>) {
    let m = manager(&env);
    let old = env.leased("w1").await;
    let begun = m
        .begin_step(&old, 0, "plan", "iteration_start", json!({}))
        .await
        .expect("begin");
    // The item is taken back and leased again: epoch moves on.
    let new = env.crash_and_reacquire("w1").await;
    assert!(new.epoch > old.epoch);

    let err = m
        .begin_step(&old, 1, "late", "iteration_start", json!({}))
        .await
        .expect_err("stale begin");
    assert!(err.is_lease_lost(), "{err:?}");
    let err = m
        .commit_step(&old, begun, EvidencePack::default())
        .await
        .expect_err("stale commit");
    assert!(err.is_lease_lost(), "{err:?}");
    // The new holder cannot commit the old epoch's step either: it must begin its own.
    let err = m
        .commit_step(&new, begun, EvidencePack::default())
        .await
        .expect_err("another epoch's step");
    assert!(
        matches!(err, DurableError::Store(_)) && !err.is_lease_lost(),
        "{err:?}"
    );
    let cps = m.list(old.item).await.expect("list");
    assert!(
        cps.iter()
            .filter(|c| c.checkpoint_type != CheckpointType::ErrorBoundary)
            .all(|c| c.state != CheckpointState::Committed),
        "{cps:#?}"
    );
}

async fn rollback_sets_newer_checkpoints_aside<S: Backend>(env: Env<S>) {
    let m = manager(&env);
    let lease = env.leased("w1").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let s = m
            .begin_step(
                &lease,
                i,
                &format!("s{i}"),
                "iteration_end",
                json!({"i": i}),
            )
            .await
            .expect("begin");
        ids.push(
            m.commit_step(&lease, s, EvidencePack::default())
                .await
                .expect("commit")
                .id,
        );
    }
    let (cp, set_aside) = m
        .rollback_to_checkpoint(&lease, ids[0])
        .await
        .expect("rollback");
    assert_eq!(cp.id, ids[0]);
    assert_eq!(set_aside, 2);
    let last = m
        .get_last_verified_checkpoint(&lease)
        .await
        .expect("read")
        .expect("one");
    assert_eq!(last.id, ids[0]);
    assert_eq!(last.snapshot, json!({"i": 0}));
    let rolled = m.list(lease.item).await.expect("list");
    assert_eq!(
        rolled
            .iter()
            .filter(|c| c.state == CheckpointState::RolledBack)
            .count(),
        2
    );
    // A holder whose lease was taken over cannot roll anything back.
    let current = env.crash_and_reacquire("w1").await;
    let err = m
        .rollback_to_checkpoint(&lease, ids[0])
        .await
        .expect_err("stale rollback");
    assert!(err.is_lease_lost(), "{err:?}");
    let lease = current;
    // Rolling back to a set-aside checkpoint is refused.
    let err = m
        .rollback_to_checkpoint(&lease, ids[2])
        .await
        .expect_err("rolled back");
    assert!(err.to_string().contains("rolled_back"), "{err}");
}

async fn retention_keeps_the_newest_checkpoints<S: Backend>(env: Env<S>) {
    let m = manager(&env).with_retention(3).expect("retention");
    let lease = env.leased("w1").await;
    for i in 0..5 {
        let s = m
            .begin_step(
                &lease,
                i,
                &format!("s{i}"),
                "iteration_end",
                json!({"i": i}),
            )
            .await
            .expect("begin");
        m.commit_step(&lease, s, EvidencePack::default())
            .await
            .expect("commit");
    }
    assert_eq!(m.cleanup(&lease).await.expect("cleanup"), 2);
    let kept: Vec<_> = m
        .list(lease.item)
        .await
        .expect("list")
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(kept, vec![Some(4), Some(3), Some(2)]);
    assert_eq!(m.cleanup(&lease).await.expect("again"), 0);
}

async fn a_step_behind_more_tool_checkpoints_than_the_retention_is_still_the_resume_point<
    S: Backend,
>(
    env: Env<S>,
) {
    let m = manager(&env).with_retention(4).expect("retention");
    let lease = env.leased("w1").await;
    let step = m
        .begin_step(&lease, 0, "plan", "iteration_end", json!({"planned": true}))
        .await
        .expect("begin");
    let planned = m
        .commit_step(&lease, step, EvidencePack::default())
        .await
        .expect("commit");
    // Ten evidence-only checkpoints (a tool's executions) after it: none is a resume point.
    for i in 0..10 {
        let tool = m
            .begin(
                &lease,
                NewStep {
                    step: None,
                    name: format!("tool-{i}"),
                    checkpoint_type: CheckpointType::ToolExecuted,
                    snapshot: json!({}),
                },
            )
            .await
            .expect("begin tool");
        m.commit_step(&lease, tool, EvidencePack::default())
            .await
            .expect("commit tool");
    }
    let last = m
        .get_last_verified_checkpoint(&lease)
        .await
        .expect("read")
        .expect("the step, found behind the tool checkpoints");
    assert_eq!((last.id, last.step), (planned.id, Some(0)));
    assert_eq!(last.snapshot, json!({"planned": true}));
}

async fn recovery_writes_an_error_boundary_checkpoint_with_the_requeue<S: Backend>(env: Env<S>) {
    let m = manager(&env);
    // recover_mine
    let lease = env.leased("w1").await;
    env.crash_and_reacquire("w1").await;
    let cps = m.list(lease.item).await.expect("list");
    assert_eq!(cps.len(), 1, "{cps:#?}");
    assert_eq!(cps[0].checkpoint_type, CheckpointType::ErrorBoundary);
    assert_eq!(cps[0].epoch, lease.epoch);
    assert_eq!(cps[0].snapshot["previous_owner"], "w1");
    assert_eq!(cps[0].step, None, "never a resume point");

    // The reaper, once the lease expired.
    let second = env.leased("w2").await;
    env.clock.advance(Duration::from_secs(120));
    let stats = env
        .store
        .items_reap_expired(
            &ReapRequest::new(10, Duration::from_secs(900)),
            &NoLiveness,
            env.clock.now_ts(),
        )
        .await
        .expect("reap");
    assert!(stats.recovered >= 1, "{stats:?}");
    let cps = m.list(second.item).await.expect("list");
    let boundary: Vec<_> = cps
        .iter()
        .filter(|c| c.checkpoint_type == CheckpointType::ErrorBoundary)
        .collect();
    assert_eq!(boundary.len(), 1, "{cps:#?}");
    assert!(boundary[0].snapshot["reason"]
        .as_str()
        .unwrap_or("")
        .contains("lease expired"));
    assert!(m
        .get_last_verified_checkpoint(&second)
        .await
        .expect("read")
        .is_none());

    // A dry run writes nothing.
    let third = env.leased("w3").await;
    let before = m.list(third.item).await.expect("list").len();
    env.clock.advance(Duration::from_secs(120));
    let mut dry = ReapRequest::new(10, Duration::from_secs(900));
    dry.dry_run = true;
    let stats = env
        .store
        .items_reap_expired(&dry, &NoLiveness, env.clock.now_ts())
        .await
        .expect("dry reap");
    assert_eq!(stats.recovered + stats.failed, 1, "{stats:?}");
    assert_eq!(m.list(third.item).await.expect("list").len(), before);
    let _ = T0;
}

durable_tests!(
    a_committed_step_verifies_and_is_the_last_verified_checkpoint,
    verification_fails_on_a_changed_file_hash,
    verification_fails_on_a_missing_artifact,
    verification_fails_on_a_wrong_exit_code,
    verification_fails_on_a_missing_database_row,
    bad_input_is_refused_with_a_clear_message_and_writes_nothing,
    a_stale_holder_cannot_begin_or_commit_a_checkpoint,
    rollback_sets_newer_checkpoints_aside,
    retention_keeps_the_newest_checkpoints,
    a_step_behind_more_tool_checkpoints_than_the_retention_is_still_the_resume_point,
    recovery_writes_an_error_boundary_checkpoint_with_the_requeue,
);
