//! Invariant 4, bounded retries: attempts never exceed the budget, a spent budget dead-letters
//! with the last error kept, backoff delays the next attempt, a permanent error dead-letters at
//! once, a graceful release is not an attempt; and cancel applies only to open items.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{
    FailDisposition, FailOutcome, ItemId, ItemStatus, ReleaseOutcome, Store, StoreError,
};
use serde_json::json;

use crate::support::{
    acquire, acquire_none, assert_every_write_fenced, at_s, enqueue, get, new_item, req, secs, T0,
};

fn retry_now() -> FailDisposition {
    FailDisposition::Retry {
        delay: Duration::ZERO,
    }
}

/// Retryable failures put the item back until its attempts reach `max_attempts`; the last one
/// dead-letters it (`failed`, the last error kept, attempts equal to the budget, finished), and
/// it is never acquired again.
pub async fn retryable_failures_dead_letter_when_attempts_are_spent(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("flaky", 1).max_attempts(3), T0).await;
    let owner = req("worker-a");
    for attempt in 1..=3u32 {
        let now = at_s(i64::from(attempt) * 10);
        let leased = acquire(s, &owner, now).await;
        assert_eq!(leased.item.id, id);
        assert_eq!(leased.item.attempts, attempt);
        assert_eq!(leased.item.epoch, i64::from(attempt));
        let outcome = s
            .item_fail(&leased.lease, &format!("boom {attempt}"), retry_now(), now)
            .await
            .expect("item_fail");
        let item = get(s, id).await;
        assert!(item.attempts <= item.max_attempts);
        if attempt < 3 {
            assert_eq!(outcome, FailOutcome::Retrying { run_at: now });
            assert_eq!(item.status, ItemStatus::Pending);
            assert_eq!(item.run_at, now);
            assert_eq!(
                item.error.as_deref(),
                Some(format!("boom {attempt}").as_str())
            );
            assert_eq!(item.lease(), None);
        } else {
            assert_eq!(outcome, FailOutcome::DeadLettered);
            assert_eq!(item.status, ItemStatus::Failed);
            assert_eq!(item.attempts, 3, "attempts equal the budget, never more");
            assert_eq!(
                item.error.as_deref(),
                Some("boom 3"),
                "the last error is kept on a dead-lettered item"
            );
            assert_eq!(item.finished_at, Some(now));
        }
    }
    acquire_none(s, &owner, at_s(100)).await;
    assert_eq!(get(s, id).await.attempts, 3);
    let counts = s.items_count().await.expect("items_count");
    assert_eq!((counts.failed, counts.total()), (1, 1));
}

/// A retried item waits for its backoff: not acquirable a millisecond before `run_at`, and
/// acquirable at it.
pub async fn retried_item_is_not_acquired_before_its_backoff(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("flaky", 1), T0).await;
    let owner = req("worker-a");
    let t1 = at_s(1);
    let leased = acquire(s, &owner, t1).await;
    let outcome = s
        .item_fail(
            &leased.lease,
            "transient",
            FailDisposition::Retry { delay: secs(10) },
            t1,
        )
        .await
        .expect("item_fail");
    let ready = t1.plus(secs(10));
    assert_eq!(outcome, FailOutcome::Retrying { run_at: ready });
    let item = get(s, id).await;
    assert_eq!(item.status, ItemStatus::Pending);
    assert_eq!(item.run_at, ready);
    assert_eq!(item.attempts, 1, "the failed attempt stays counted");

    acquire_none(s, &owner, t1).await;
    acquire_none(s, &owner, ready.minus(Duration::from_millis(1))).await;
    let again = acquire(s, &req("worker-b"), ready).await;
    assert_eq!(again.item.id, id);
    assert_eq!(again.item.attempts, 2);
    assert!(again.lease.epoch > leased.lease.epoch);
}

/// A permanent failure dead-letters at once, whatever budget is left, with its error kept.
pub async fn permanent_failure_dead_letters_at_once(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("parse", 1).max_attempts(5), T0).await;
    let leased = acquire(s, &req("worker-a"), T0).await;
    let outcome = s
        .item_fail(
            &leased.lease,
            "malformed input",
            FailDisposition::Permanent,
            at_s(1),
        )
        .await
        .expect("item_fail");
    assert_eq!(outcome, FailOutcome::DeadLettered);
    let item = get(s, id).await;
    assert_eq!(item.status, ItemStatus::Failed);
    assert_eq!(item.attempts, 1);
    assert_eq!(item.error.as_deref(), Some("malformed input"));
    assert_eq!(item.finished_at, Some(at_s(1)));
    acquire_none(s, &req("worker-a"), at_s(100)).await;
}

/// A graceful release gives the item back, ready at once, without counting the attempt: an item
/// with a budget of one can be released and re-acquired again and again, each acquisition with
/// a higher epoch, and the released lease is fenced.
pub async fn release_does_not_count_an_attempt(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("once", 1).max_attempts(1), T0).await;
    let mut last_epoch = 0;
    for round in 0..3 {
        let now = at_s(round * 10);
        let leased = acquire(s, &req("worker-a"), now).await;
        assert_eq!(leased.item.id, id);
        assert_eq!(leased.item.attempts, 1, "released attempts are not counted");
        assert!(leased.lease.epoch > last_epoch);
        last_epoch = leased.lease.epoch;
        s.item_release(&leased.lease, None, now.plus(secs(1)))
            .await
            .expect("item_release");
        let item = get(s, id).await;
        assert_eq!(item.status, ItemStatus::Pending);
        assert_eq!(item.attempts, 0, "release gives the attempt back");
        assert_eq!(item.releases, 0, "a release without a limit is not counted");
        assert!(
            item.run_at <= now.plus(secs(1)),
            "a released item is ready at once"
        );
        assert_eq!(item.lease(), None);
        assert_every_write_fenced(s, &leased.lease, now.plus(secs(2))).await;
    }
    let last = acquire(s, &req("worker-b"), at_s(100)).await;
    s.item_complete(&last.lease, json!("ok"), at_s(101))
        .await
        .expect("complete");
    assert_eq!(get(s, id).await.status, ItemStatus::Completed);
}

/// Releases are bounded: with a limit of 2, the first two releases give their attempt back
/// (`Released`), the third keeps it (`AttemptCounted`, back to pending and ready), and the
/// fourth, with the budget of 2 spent, dead-letters the item with an error that says it was
/// released too often; it is never acquired again and its lease is fenced.
pub async fn releases_past_the_limit_count_attempts_and_dead_letter_when_spent(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let id = enqueue(s, new_item("slow", 1).max_attempts(2), T0).await;
    let limit = Some(2);
    let expected = [
        (ReleaseOutcome::Released, 0),
        (ReleaseOutcome::Released, 0),
        (ReleaseOutcome::AttemptCounted, 1),
    ];
    for (round, (outcome, attempts_after)) in expected.into_iter().enumerate() {
        let now = at_s(round as i64 * 10);
        let leased = acquire(s, &req("worker-a"), now).await;
        assert_eq!(leased.item.id, id);
        let got = s
            .item_release(&leased.lease, limit, now.plus(secs(1)))
            .await
            .expect("item_release");
        assert_eq!(got, outcome, "release {}", round + 1);
        let item = get(s, id).await;
        assert_eq!(item.status, ItemStatus::Pending);
        assert_eq!(
            item.releases,
            round as u32 + 1,
            "every limited release is counted"
        );
        assert_eq!(item.attempts, attempts_after, "release {}", round + 1);
        assert!(
            item.run_at <= now.plus(secs(1)),
            "a released item is ready at once"
        );
        assert_eq!(item.lease(), None);
        assert_every_write_fenced(s, &leased.lease, now.plus(secs(2))).await;
    }
    let last = acquire(s, &req("worker-b"), at_s(100)).await;
    assert_eq!(last.item.attempts, 2);
    let got = s
        .item_release(&last.lease, limit, at_s(101))
        .await
        .expect("item_release");
    assert_eq!(got, ReleaseOutcome::DeadLettered);
    let item = get(s, id).await;
    assert_eq!(item.status, ItemStatus::Failed);
    assert_eq!((item.attempts, item.releases), (2, 4));
    assert_eq!(item.finished_at, Some(at_s(101)));
    let error = item.error.unwrap_or_default();
    assert!(
        error.contains("released 4 times") && error.contains("limit of 2"),
        "the error says why: {error}"
    );
    assert_every_write_fenced(s, &last.lease, at_s(102)).await;
    acquire_none(s, &req("worker-a"), at_s(200)).await;
}

/// Cancelling a pending (even a delayed) item makes it `cancelled` and finished; it is never
/// acquired.
pub async fn cancel_pending_item_cancels_it(store: Arc<dyn Store>) {
    let s = &*store;
    let ready = enqueue(s, new_item("email", 1), T0).await;
    let delayed = enqueue(s, new_item("email", 2).delay(secs(60)), T0).await;
    for id in [ready, delayed] {
        s.item_cancel(id, at_s(1))
            .await
            .expect("cancel a pending item");
        let item = get(s, id).await;
        assert_eq!(item.status, ItemStatus::Cancelled);
        assert_eq!(item.finished_at, Some(at_s(1)));
        assert_eq!(item.attempts, 0);
    }
    acquire_none(s, &req("worker-a"), at_s(120)).await;
    let counts = s.items_count().await.expect("items_count");
    assert_eq!((counts.cancelled, counts.pending), (2, 0));
}

fn expect_invalid_state(r: Result<(), StoreError>, id: ItemId, status: ItemStatus) {
    match r {
        Err(StoreError::InvalidState {
            item, status: got, ..
        }) => {
            assert_eq!(
                (item, got),
                (id, status),
                "InvalidState names item and status"
            );
        }
        other => panic!("cancelling a {status} item should be InvalidState, got {other:?}"),
    }
}

/// Cancelling an item that is completed, failed or already cancelled is `InvalidState` and
/// changes nothing. (An in-progress item is marked instead: see the operator cases.)
pub async fn cancel_finished_item_is_invalid_state(store: Arc<dyn Store>) {
    let s = &*store;
    let done = enqueue(s, new_item("b", 2), T0).await;
    let dead = enqueue(s, new_item("c", 3), T0).await;
    let cancelled = enqueue(s, new_item("d", 4), T0).await;
    let owner = req("worker-a");
    let l = acquire(s, &owner.clone().kinds(["b"]), T0).await.lease;
    s.item_complete(&l, json!(1), T0).await.expect("complete");
    let l = acquire(s, &owner.kinds(["c"]), T0).await.lease;
    s.item_fail(&l, "no", FailDisposition::Permanent, T0)
        .await
        .expect("fail");
    s.item_cancel(cancelled, T0).await.expect("cancel");

    for (id, status) in [
        (done, ItemStatus::Completed),
        (dead, ItemStatus::Failed),
        (cancelled, ItemStatus::Cancelled),
    ] {
        let before = get(s, id).await;
        expect_invalid_state(s.item_cancel(id, at_s(1)).await, id, status);
        assert_eq!(get(s, id).await, before, "a refused cancel changes nothing");
    }
}

/// Cancelling an id that does not exist is `NotFound`.
pub async fn cancel_unknown_item_is_not_found(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("a", 1), T0).await;
    let unknown = ItemId(id.0 + 1000);
    match s.item_cancel(unknown, T0).await {
        Err(StoreError::NotFound(got)) => assert_eq!(got, unknown),
        other => panic!("cancelling an unknown item should be NotFound, got {other:?}"),
    }
    assert_eq!(get(s, id).await.status, ItemStatus::Pending);
}
