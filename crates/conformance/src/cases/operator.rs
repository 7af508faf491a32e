//! Attempt history and operators' actions: every ended attempt is recorded with how it ended,
//! in the transaction that ended it (a lost lease by whoever took the item back); retry, cancel
//! (an in-progress item marked for its holder), delete and pause each refuse a wrong state and
//! change nothing, and their dry runs report what they would do.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{
    ActionFilter, ActionReport, AttemptOutcome, FailDisposition, ItemId, ItemSelector, ItemStatus,
    Liveness, ReapRequest, RetryRequest, Store, StoreError, TIMED_OUT_PREFIX,
};
use serde_json::json;

use crate::support::{
    acquire, acquire_none, at_s, enqueue, expect_lease_lost, get, new_item, req, secs,
    ScriptedLiveness, LEASE, STALE, T0,
};

fn ids(v: &[ItemId]) -> ItemSelector {
    ItemSelector::Ids(v.to_vec())
}

fn retry_now() -> FailDisposition {
    FailDisposition::Retry {
        delay: Duration::ZERO,
    }
}

fn reported(r: &ActionReport) -> Vec<(ItemId, ItemStatus, ItemStatus)> {
    r.items.iter().map(|i| (i.id, i.from, i.to)).collect()
}

async fn outcomes(s: &dyn Store, id: ItemId) -> Vec<AttemptOutcome> {
    s.item_attempts(id)
        .await
        .expect("item_attempts")
        .iter()
        .map(|a| a.outcome)
        .collect()
}

/// Each way an attempt ends leaves one record, oldest first, with its epoch, attempt number,
/// holder, node and incarnation, start (the acquisition) and end times, outcome and error:
/// a failure, a timeout, a release, a reap, a `recover_mine`, a monitor's take-back and a
/// completion. An unknown item has no records.
pub async fn history_records_each_ended_attempt_with_how_it_ended(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("h", 1).max_attempts(10), T0).await;
    let w = req("worker-a");
    let timed_out = format!("{TIMED_OUT_PREFIX}2 s: the handler was cancelled");

    let l = acquire(s, &w, at_s(1)).await;
    s.item_fail(&l.lease, "boom", retry_now(), at_s(2))
        .await
        .expect("fail");
    let l = acquire(s, &w, at_s(3)).await;
    s.item_fail(&l.lease, &timed_out, retry_now(), at_s(4))
        .await
        .expect("fail");
    let l = acquire(s, &w, at_s(5)).await;
    s.item_release(&l.lease, None, at_s(6))
        .await
        .expect("release");
    acquire(s, &w, at_s(7)).await;
    let stats = s
        .items_reap_expired(
            &ReapRequest::new(10, STALE),
            &ScriptedLiveness::always(Liveness::Dead),
            at_s(7).plus(LEASE),
        )
        .await
        .expect("reap");
    assert_eq!(stats.recovered, 1);
    acquire(s, &w, at_s(100)).await;
    s.items_recover_owner("worker-a", at_s(101))
        .await
        .expect("recover_mine");
    acquire(s, &w, at_s(102)).await;
    s.items_recover_node("node-of-worker-a", 1, at_s(200), at_s(200))
        .await
        .expect("recover_node");
    let l = acquire(s, &w, at_s(201)).await;
    s.item_complete(&l.lease, json!("ok"), at_s(202))
        .await
        .expect("complete");

    let history = s.item_attempts(id).await.expect("item_attempts");
    let got: Vec<_> = history.iter().map(|a| a.outcome).collect();
    assert_eq!(
        got,
        [
            AttemptOutcome::Failed,
            AttemptOutcome::TimedOut,
            AttemptOutcome::Released,
            AttemptOutcome::Reaped,
            AttemptOutcome::RecoveredByOwner,
            AttemptOutcome::TakenBackByMonitor,
            AttemptOutcome::Completed,
        ],
        "{history:#?}"
    );
    let first = &history[0];
    assert_eq!(
        (first.item, first.epoch, first.attempt, first.owner.as_str()),
        (id, 1, 1, "worker-a")
    );
    assert_eq!(first.owner_node.as_deref(), Some("node-of-worker-a"));
    assert_eq!(first.owner_incarnation, Some(1));
    assert_eq!((first.started_at, first.ended_at), (Some(at_s(1)), at_s(2)));
    assert_eq!(first.error.as_deref(), Some("boom"));
    assert_eq!(history[1].error.as_deref(), Some(timed_out.as_str()));
    assert_eq!(history[2].error, None, "a release has no error");
    assert!(
        history[3].error.as_deref().is_some_and(|e| !e.is_empty()),
        "a take-back says why: {:?}",
        history[3]
    );
    let last = history.last().expect("records");
    assert_eq!(
        (last.started_at, last.ended_at, last.error.as_deref()),
        (Some(at_s(201)), at_s(202), None)
    );
    let epochs: Vec<i64> = history.iter().map(|a| a.epoch).collect();
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "epochs increase: {epochs:?}"
    );
    assert_eq!(get(s, id).await.started_at, Some(at_s(201)));
    assert!(s
        .item_attempts(ItemId(id.0 + 1000))
        .await
        .expect("unknown")
        .is_empty());
}

/// The record of a lost lease is written by the reaper that took the item back, in its
/// transaction; the zombie's later writes are refused and add nothing.
pub async fn history_lease_lost_record_is_written_by_the_taker_not_the_zombie(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let id = enqueue(s, new_item("z", 1), T0).await;
    let zombie = acquire(s, &req("worker-a"), T0).await;
    s.items_reap_expired(
        &ReapRequest::new(10, STALE),
        &ScriptedLiveness::always(Liveness::Dead),
        T0.plus(LEASE),
    )
    .await
    .expect("reap");
    assert_eq!(outcomes(s, id).await, [AttemptOutcome::Reaped]);
    let at = T0.plus(LEASE).plus(secs(1));
    expect_lease_lost(
        s.item_complete(&zombie.lease, json!(1), at).await,
        &zombie.lease,
        "zombie complete",
    );
    expect_lease_lost(
        s.item_fail(&zombie.lease, "late", retry_now(), at).await,
        &zombie.lease,
        "zombie fail",
    );
    expect_lease_lost(
        s.item_release(&zombie.lease, None, at).await,
        &zombie.lease,
        "zombie release",
    );
    let history = s.item_attempts(id).await.expect("item_attempts");
    assert_eq!(
        history.len(),
        1,
        "the zombie recorded nothing: {history:#?}"
    );
    assert_eq!(
        (history[0].epoch, history[0].owner.as_str()),
        (zombie.lease.epoch, "worker-a")
    );
}

/// The history keeps the newest `DEFAULT_HISTORY_KEEP` (25) records of an item: older ones are
/// trimmed as newer ones are written, the completing attempt included; other items' records
/// are untouched.
pub async fn history_keeps_the_newest_attempts_per_item(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("many", 1), T0).await;
    let other = enqueue(s, new_item("other", 2), T0).await;
    let l = acquire(s, &req("w").kinds(["other"]), T0).await;
    s.item_complete(&l.lease, json!(0), T0)
        .await
        .expect("complete");
    let w = req("w").kinds(["many"]);
    for i in 1..=30 {
        let l = acquire(s, &w, at_s(i)).await;
        s.item_release(&l.lease, None, at_s(i))
            .await
            .expect("release");
    }
    let history = s.item_attempts(id).await.expect("item_attempts");
    let epochs: Vec<i64> = history.iter().map(|a| a.epoch).collect();
    assert_eq!(epochs, (6..=30).collect::<Vec<i64>>(), "the newest 25 kept");
    assert_eq!(outcomes(s, other).await, [AttemptOutcome::Completed]);
    // The completing attempt is the newest, and still only 25 are kept.
    let l = acquire(s, &w, at_s(31)).await;
    s.item_complete(&l.lease, json!(31), at_s(32))
        .await
        .expect("complete");
    let history = s.item_attempts(id).await.expect("item_attempts");
    let epochs: Vec<i64> = history.iter().map(|a| a.epoch).collect();
    assert_eq!(epochs, (7..=31).collect::<Vec<i64>>(), "the newest 25 kept");
    let last = history.last().expect("a record");
    assert_eq!(
        (
            last.outcome,
            last.started_at,
            last.ended_at,
            last.owner.as_str()
        ),
        (AttemptOutcome::Completed, Some(at_s(31)), at_s(32), "w")
    );
    assert_eq!(last.owner_node.as_deref(), Some("node-of-w"));
}

/// A retry sends failed and cancelled items back to pending, ready at once, their attempt count
/// at 0 (and the budget raised when asked); error and history are kept, and the item runs
/// again. A dry run reports the same and changes nothing.
pub async fn retry_returns_failed_and_cancelled_items_to_pending_with_a_fresh_budget(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let dead = enqueue(s, new_item("a", 1).max_attempts(1), T0).await;
    let cancelled = enqueue(s, new_item("b", 2), T0).await;
    let l = acquire(s, &req("w").kinds(["a"]), T0).await;
    s.item_fail(&l.lease, "boom", retry_now(), at_s(1))
        .await
        .expect("fail");
    s.item_cancel(cancelled, at_s(1)).await.expect("cancel");
    let before = (get(s, dead).await, get(s, cancelled).await);

    let dry = s
        .items_retry(
            &RetryRequest {
                target: ids(&[cancelled, dead]),
                max_attempts: Some(4),
                dry_run: true,
            },
            at_s(2),
        )
        .await
        .expect("dry run");
    assert!(dry.dry_run);
    assert_eq!(
        reported(&dry),
        [
            (dead, ItemStatus::Failed, ItemStatus::Pending),
            (cancelled, ItemStatus::Cancelled, ItemStatus::Pending)
        ]
    );
    assert_eq!(
        (get(s, dead).await, get(s, cancelled).await),
        before,
        "a dry run changes nothing"
    );

    let done = s
        .items_retry(
            &RetryRequest {
                target: ids(&[dead, cancelled]),
                max_attempts: Some(4),
                dry_run: false,
            },
            at_s(2),
        )
        .await
        .expect("retry");
    assert_eq!(done.count, 2);
    assert_eq!(
        reported(&done),
        reported(&dry),
        "the dry run told the truth"
    );
    let item = get(s, dead).await;
    assert_eq!(
        (item.status, item.attempts, item.max_attempts, item.run_at),
        (ItemStatus::Pending, 0, 4, at_s(2))
    );
    assert_eq!(
        item.error.as_deref(),
        Some("boom"),
        "the last error is kept"
    );
    assert_eq!((item.finished_at, item.owner.clone()), (None, None));
    assert_eq!(get(s, cancelled).await.max_attempts, 4);
    assert_eq!(outcomes(s, dead).await, [AttemptOutcome::Failed]);
    let again = acquire(s, &req("w").kinds(["a"]), at_s(3)).await;
    assert_eq!((again.item.id, again.item.attempts), (dead, 1));
    assert!(again.lease.epoch > l.lease.epoch, "a new epoch");
    expect_lease_lost(
        s.item_complete(&l.lease, json!(1), at_s(3)).await,
        &l.lease,
        "the old holder after a retry",
    );
    let kept = s
        .items_retry(
            &RetryRequest {
                target: ids(&[cancelled]),
                max_attempts: None,
                dry_run: false,
            },
            at_s(4),
        )
        .await;
    assert!(
        matches!(kept, Err(StoreError::InvalidState { .. })),
        "a pending item is not retried: {kept:?}"
    );
}

/// A wrong state is refused with `InvalidState` naming the item and its state, an unknown id
/// with `NotFound`, a bad selector or filter status with `InvalidInput`; the whole call changes
/// nothing, even for the ids it could have applied to.
pub async fn actions_refuse_a_wrong_state_or_bad_selector_and_change_nothing(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let pending = enqueue(s, new_item("a", 1), T0).await;
    let done = enqueue(s, new_item("b", 2), T0).await;
    let cancelled = enqueue(s, new_item("c", 3), T0).await;
    let l = acquire(s, &req("w").kinds(["b"]), T0).await;
    s.item_complete(&l.lease, json!(1), T0)
        .await
        .expect("complete");
    s.item_cancel(cancelled, T0).await.expect("cancel");
    let snapshot = || async {
        (
            get(s, pending).await,
            get(s, done).await,
            get(s, cancelled).await,
        )
    };
    let before = snapshot().await;
    let unknown = ItemId(cancelled.0 + 1000);
    let retry = |target, max_attempts| RetryRequest {
        target,
        max_attempts,
        dry_run: false,
    };

    let wrong = [
        (
            s.items_retry(&retry(ids(&[cancelled, done]), None), at_s(1))
                .await,
            done,
            ItemStatus::Completed,
        ),
        (
            s.items_retry(&retry(ids(&[pending]), None), at_s(1)).await,
            pending,
            ItemStatus::Pending,
        ),
        (
            s.items_cancel(&ids(&[pending, done]), false, at_s(1)).await,
            done,
            ItemStatus::Completed,
        ),
        (
            s.items_delete(&ids(&[cancelled, pending]), false).await,
            pending,
            ItemStatus::Pending,
        ),
    ];
    for (result, item, status) in wrong {
        match result {
            Err(StoreError::InvalidState {
                item: got,
                status: got_status,
                ..
            }) => assert_eq!((got, got_status), (item, status)),
            other => panic!("expected InvalidState for {item} ({status}), got {other:?}"),
        }
    }
    match s.items_delete(&ids(&[done, unknown]), false).await {
        Err(StoreError::NotFound(got)) => assert_eq!(got, unknown),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let filter = |status| {
        ItemSelector::Filter(ActionFilter {
            status,
            ..ActionFilter::default()
        })
    };
    for bad in [
        s.items_retry(&retry(filter(Some(ItemStatus::Completed)), None), at_s(1))
            .await,
        s.items_retry(&retry(filter(None), None), at_s(1)).await,
        s.items_retry(&retry(ids(&[]), None), at_s(1)).await,
        s.items_retry(&retry(ids(&[cancelled]), Some(0)), at_s(1))
            .await,
        s.items_cancel(&filter(Some(ItemStatus::Failed)), false, at_s(1))
            .await,
        s.items_delete(&filter(Some(ItemStatus::Pending)), false)
            .await,
    ] {
        assert!(
            matches!(bad, Err(StoreError::InvalidInput(_))),
            "expected InvalidInput, got {bad:?}"
        );
    }
    assert!(matches!(
        s.kind_pause("", at_s(1)).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert_eq!(snapshot().await, before, "refused actions change nothing");
    assert!(s.kinds_paused().await.expect("kinds_paused").is_empty());
}

/// Cancelling an in-progress item marks it and leaves it leased; the holder's next renewal is
/// refused with `CancelRequested` and changes nothing; the holder's confirm ends it
/// `cancelled` (fenced, recorded as such). A confirm of an unmarked item is `InvalidState`, of
/// a lost lease `LeaseLost`.
pub async fn cancel_in_progress_marks_it_and_the_holder_learns_at_renewal(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("long", 1), T0).await;
    let other = enqueue(s, new_item("other", 2), T0).await;
    let held = acquire(s, &req("w").kinds(["long"]), T0).await;
    let unmarked = acquire(s, &req("v").kinds(["other"]), T0).await;
    match s.item_cancel_confirm(&unmarked.lease, at_s(1)).await {
        Err(StoreError::InvalidState { item, status, .. }) => {
            assert_eq!((item, status), (other, ItemStatus::InProgress))
        }
        r => panic!("a confirm of an unmarked item is InvalidState, got {r:?}"),
    }

    let report = s
        .items_cancel(&ids(&[id]), false, at_s(1))
        .await
        .expect("cancel");
    assert_eq!(
        reported(&report),
        [(id, ItemStatus::InProgress, ItemStatus::InProgress)]
    );
    let marked = get(s, id).await;
    assert_eq!(
        (marked.status, marked.cancel_requested_at),
        (ItemStatus::InProgress, Some(at_s(1)))
    );
    s.item_cancel(id, at_s(2)).await.expect("cancel again");
    assert_eq!(get(s, id).await.cancel_requested_at, Some(at_s(1)));

    let before = get(s, id).await;
    match s.lease_renew(&held.lease, LEASE, at_s(3)).await {
        Err(e @ StoreError::CancelRequested { .. }) => assert!(e.is_cancel_requested()),
        r => panic!("the holder's renewal should be CancelRequested, got {r:?}"),
    }
    assert_eq!(
        get(s, id).await,
        before,
        "the refused renewal changed nothing"
    );
    s.lease_renew(&unmarked.lease, LEASE, at_s(3))
        .await
        .expect("other leases still renew");

    s.item_cancel_confirm(&held.lease, at_s(4))
        .await
        .expect("confirm");
    let item = get(s, id).await;
    assert_eq!(
        (item.status, item.finished_at),
        (ItemStatus::Cancelled, Some(at_s(4)))
    );
    assert_eq!(outcomes(s, id).await, [AttemptOutcome::Cancelled]);
    expect_lease_lost(
        s.item_cancel_confirm(&held.lease, at_s(5)).await,
        &held.lease,
        "a second confirm",
    );
    acquire_none(s, &req("x").kinds(["long"]), at_s(6)).await;
}

/// A marked item whose holder fails it, or whose holder is gone (the reaper, `recover_mine`,
/// the monitor take it back), ends `cancelled`: never retried, never requeued.
pub async fn cancel_mark_is_finished_by_whoever_ends_the_attempt(store: Arc<dyn Store>) {
    let s = &*store;
    let failing = enqueue(s, new_item("a", 1), T0).await;
    let reaped = enqueue(s, new_item("b", 2), T0).await;
    let recovered = enqueue(s, new_item("c", 3), T0).await;
    let monitored = enqueue(s, new_item("d", 4), T0).await;
    let f = acquire(s, &req("wa").kinds(["a"]), T0).await;
    acquire(s, &req("wb").kinds(["b"]), T0).await;
    acquire(s, &req("wc").kinds(["c"]), T0).await;
    acquire(s, &req("wd").kinds(["d"]), T0).await;
    let all = [failing, reaped, recovered, monitored];
    s.items_cancel(&ids(&all), false, at_s(1))
        .await
        .expect("cancel");

    s.item_fail(&f.lease, "boom", retry_now(), at_s(2))
        .await
        .expect("fail");
    s.items_recover_owner("wc", at_s(2))
        .await
        .expect("recover_mine");
    s.items_recover_node("node-of-wd", 1, at_s(2), at_s(2))
        .await
        .expect("recover_node");
    s.items_reap_expired(
        &ReapRequest::new(10, STALE),
        &ScriptedLiveness::always(Liveness::Dead),
        T0.plus(LEASE),
    )
    .await
    .expect("reap");
    for (id, outcome) in [
        (failing, AttemptOutcome::Failed),
        (reaped, AttemptOutcome::Reaped),
        (recovered, AttemptOutcome::RecoveredByOwner),
        (monitored, AttemptOutcome::TakenBackByMonitor),
    ] {
        let item = get(s, id).await;
        assert_eq!(item.status, ItemStatus::Cancelled, "{item:?}");
        assert!(item.finished_at.is_some());
        assert_eq!(outcomes(s, id).await, [outcome]);
    }
    acquire_none(s, &req("x"), at_s(100)).await;
    let counts = s.items_count().await.expect("count");
    assert_eq!((counts.cancelled, counts.pending), (4, 0));
}

/// A paused kind is skipped by every shape of acquisition (any kind, that kind, several kinds,
/// batches) while other kinds are still handed out; its in-flight item still renews and
/// completes; pausing is listed and idempotent; resuming makes it acquirable again.
pub async fn pause_skips_a_kind_on_every_acquisition_until_resumed(store: Arc<dyn Store>) {
    let s = &*store;
    let running = enqueue(s, new_item("p", 0).priority(9), T0).await;
    let held = acquire(s, &req("w0"), T0).await;
    assert_eq!(held.item.id, running);
    let paused = enqueue(s, new_item("p", 1).priority(5), T0).await;
    let free = enqueue(s, new_item("q", 2), T0).await;
    assert!(s.kind_pause("p", at_s(1)).await.expect("pause"));
    assert!(!s.kind_pause("p", at_s(2)).await.expect("pause again"));
    let listed = s.kinds_paused().await.expect("kinds_paused");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].kind.as_str(), listed[0].paused_at),
        ("p", at_s(1))
    );

    acquire_none(s, &req("w1").kinds(["p"]), at_s(3)).await;
    let got = s
        .items_acquire(&req("w2").limit(5), at_s(3))
        .await
        .expect("batch");
    assert_eq!(
        got.iter().map(|l| l.item.id).collect::<Vec<_>>(),
        [free],
        "a batch skips the paused kind"
    );
    acquire_none(s, &req("w3"), at_s(3)).await;
    acquire_none(s, &req("w3").kinds(["p", "q"]), at_s(3)).await;
    s.lease_renew(&held.lease, LEASE, at_s(4))
        .await
        .expect("in-flight work renews");
    s.item_complete(&held.lease, json!(1), at_s(5))
        .await
        .expect("and completes");

    assert!(s.kind_resume("p").await.expect("resume"));
    assert!(!s.kind_resume("p").await.expect("resume again"));
    assert!(s.kinds_paused().await.expect("kinds_paused").is_empty());
    let l = acquire(s, &req("w4"), at_s(6)).await;
    assert_eq!(l.item.id, paused);
}

/// Deleting finished items removes them with their history and checkpoints; a dry run reports
/// the same and removes nothing.
pub async fn delete_removes_finished_items_with_their_history(store: Arc<dyn Store>) {
    let s = &*store;
    let done = enqueue(s, new_item("a", 1), T0).await;
    let open = enqueue(s, new_item("b", 2), T0).await;
    let l = acquire(s, &req("w").kinds(["a"]), T0).await;
    s.checkpoint_save(&l.lease, "step", json!(1), T0)
        .await
        .expect("checkpoint");
    s.item_complete(&l.lease, json!(1), at_s(1))
        .await
        .expect("complete");
    let dry = s.items_delete(&ids(&[done]), true).await.expect("dry run");
    assert_eq!(
        reported(&dry),
        [(done, ItemStatus::Completed, ItemStatus::Completed)]
    );
    assert_eq!(outcomes(s, done).await, [AttemptOutcome::Completed]);
    let report = s.items_delete(&ids(&[done]), false).await.expect("delete");
    assert_eq!(report.count, 1);
    assert!(s.item_get(done).await.expect("get").is_none());
    assert!(s.item_attempts(done).await.expect("history").is_empty());
    assert!(s
        .checkpoints_list(done)
        .await
        .expect("checkpoints")
        .is_empty());
    assert_eq!(get(s, open).await.status, ItemStatus::Pending);
}

/// The filter form applies to every matching item in a status the action applies to (by
/// status, kind, enqueue time), reports how many, and its dry run changes nothing.
pub async fn actions_by_filter_report_how_many_and_dry_runs_change_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    let old_a = enqueue(s, new_item("a", 1), T0).await;
    let old_b = enqueue(s, new_item("b", 2), T0).await;
    let new_a = enqueue(s, new_item("a", 3), at_s(100)).await;
    let running = enqueue(s, new_item("a", 4).priority(9), at_s(100)).await;
    assert_eq!(acquire(s, &req("w"), at_s(100)).await.item.id, running);
    let by = |kind: Option<&str>, before| {
        ItemSelector::Filter(ActionFilter {
            status: None,
            kind: kind.map(str::to_owned),
            before,
        })
    };
    let dry = s
        .items_cancel(&by(Some("a"), Some(at_s(50))), true, at_s(101))
        .await
        .expect("dry run");
    assert_eq!(
        reported(&dry),
        [(old_a, ItemStatus::Pending, ItemStatus::Cancelled)]
    );
    assert_eq!(get(s, old_a).await.status, ItemStatus::Pending);

    let all_a = s
        .items_cancel(&by(Some("a"), None), false, at_s(101))
        .await
        .expect("cancel kind a");
    assert_eq!(all_a.count, 3, "{all_a:?}");
    let in_progress = all_a
        .items
        .iter()
        .filter(|i| i.from == ItemStatus::InProgress)
        .count();
    assert_eq!(in_progress, 1, "the running one is marked");
    assert_eq!(get(s, old_b).await.status, ItemStatus::Pending);
    assert_eq!(get(s, new_a).await.status, ItemStatus::Cancelled);

    let retried = s
        .items_retry(
            &RetryRequest {
                target: ItemSelector::Filter(ActionFilter {
                    status: Some(ItemStatus::Cancelled),
                    kind: None,
                    before: Some(at_s(50)),
                }),
                max_attempts: None,
                dry_run: false,
            },
            at_s(102),
        )
        .await
        .expect("retry by filter");
    assert_eq!(
        reported(&retried),
        [(old_a, ItemStatus::Cancelled, ItemStatus::Pending)]
    );
    let deleted = s
        .items_delete(&by(Some("a"), None), false)
        .await
        .expect("delete kind a");
    assert_eq!(
        deleted.items.iter().map(|i| i.id).collect::<Vec<_>>(),
        [new_a]
    );
}
