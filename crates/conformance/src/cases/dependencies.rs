//! Dependencies: an item enqueued to wait for others ([`NewItem::after`]) is `blocked` until
//! the last completes, and cancelled, transitively, when one fails or is cancelled, in the
//! transaction that ends it.

use std::sync::Arc;

use leasehold_core::{
    FailDisposition, ItemId, ItemSelector, ItemStatus, NewItem, Store, StoreError,
};
use serde_json::json;

use crate::support::{acquire, acquire_none, at_s, enqueue, get, new_item, req, T0};

/// Acquires and completes `id` (which must be the only ready item) with `output`.
async fn run_to_completion(s: &dyn Store, id: ItemId, output: serde_json::Value, now: i64) {
    let held = acquire(s, &req("worker-a"), at_s(now)).await;
    assert_eq!(held.lease.item, id, "the ready item is the one expected");
    s.item_complete(&held.lease, output, at_s(now))
        .await
        .expect("complete");
}

/// Fan-in: an item waiting for many (one of them completed already, which counts as done) is
/// `blocked`, counted as such and never acquired, until the completion of the last one
/// releases it (`pending`, ready now) in that completion's commit; its dependencies' outputs
/// are then read back in one call, in id order.
pub async fn dependant_of_many_is_released_by_the_last_completion(store: Arc<dyn Store>) {
    let s = &*store;
    let first = enqueue(s, new_item("research", 0), T0).await;
    run_to_completion(s, first, json!({ "lead": 0 }), 1).await;
    let mut needs = vec![first];
    for n in 1..8 {
        needs.push(enqueue(s, new_item("research", n), at_s(2)).await);
    }
    let summary = enqueue(
        s,
        NewItem::new("summary", json!({})).after(needs.iter().copied()),
        at_s(3),
    )
    .await;
    let blocked = get(s, summary).await;
    assert_eq!(blocked.status, ItemStatus::Blocked, "waits for 7 of its 8");
    assert_eq!(s.items_count().await.expect("count").blocked, 1);

    for (i, id) in needs.iter().enumerate().skip(1) {
        let now = 10 + i as i64;
        acquire_none(s, &req("worker-a").kinds(["summary"]), at_s(now)).await;
        run_to_completion(s, *id, json!({ "lead": i }), now).await;
        let expected = if i + 1 < needs.len() {
            ItemStatus::Blocked
        } else {
            ItemStatus::Pending
        };
        assert_eq!(
            get(s, summary).await.status,
            expected,
            "after {i} of {} dependencies completed",
            needs.len() - 1
        );
    }
    let released = acquire(s, &req("worker-b").kinds(["summary"]), at_s(30)).await;
    assert_eq!(
        released.lease.item, summary,
        "the released item is ready now"
    );

    let deps = s.item_dependencies(summary).await.expect("dependencies");
    let ids: Vec<ItemId> = deps.iter().map(|d| d.id).collect();
    assert_eq!(ids, needs, "every dependency, in id order");
    for (i, d) in deps.iter().enumerate() {
        assert_eq!(d.status, ItemStatus::Completed);
        assert_eq!(d.kind, "research");
        assert_eq!(
            d.output,
            Some(json!({ "lead": i })),
            "dependency {}'s output",
            d.id
        );
    }
    assert!(
        s.item_dependencies(first).await.expect("none").is_empty(),
        "an item without dependencies has none"
    );
}

/// A dependency that fails permanently cancels its blocked dependants, and theirs, in the
/// failure's own transaction, each naming the dependency that ended it. An item enqueued
/// after the failure, naming the failed item, is cancelled at once with the same error.
pub async fn failed_dependency_cancels_its_dependants_transitively(store: Arc<dyn Store>) {
    let s = &*store;
    let root = enqueue(s, new_item("research", 1), T0).await;
    let other = enqueue(s, new_item("research", 2), T0).await;
    let mid = enqueue(s, new_item("contacts", 1).after([root, other]), T0).await;
    let leaf = enqueue(s, new_item("summary", 1).after([mid]), T0).await;
    let unrelated = enqueue(s, new_item("summary", 2).after([other]), T0).await;

    let held = acquire(s, &req("worker-a").kinds(["research"]), at_s(1)).await;
    assert_eq!(held.lease.item, root);
    s.item_fail(
        &held.lease,
        "no such company",
        FailDisposition::Permanent,
        at_s(2),
    )
    .await
    .expect("fail");

    let mid_now = get(s, mid).await;
    assert_eq!(mid_now.status, ItemStatus::Cancelled);
    assert_eq!(
        mid_now.error.as_deref(),
        Some(format!("dependency {root} failed: no such company").as_str())
    );
    assert_eq!(mid_now.finished_at, Some(at_s(2)));
    let leaf_now = get(s, leaf).await;
    assert_eq!(leaf_now.status, ItemStatus::Cancelled, "transitively");
    assert_eq!(
        leaf_now.error.as_deref(),
        Some(format!("dependency {mid} was cancelled").as_str())
    );
    assert_eq!(
        get(s, unrelated).await.status,
        ItemStatus::Blocked,
        "an item that does not wait for the failed one keeps waiting"
    );

    let late = enqueue(s, new_item("summary", 3).after([other, root]), at_s(3)).await;
    let late_now = get(s, late).await;
    assert_eq!(
        late_now.status,
        ItemStatus::Cancelled,
        "named a failed item"
    );
    assert_eq!(
        late_now.error.as_deref(),
        Some(format!("dependency {root} failed: no such company").as_str())
    );
    run_to_completion(s, other, json!("done"), 4).await;
    assert_eq!(get(s, unrelated).await.status, ItemStatus::Pending);
    assert_eq!(
        get(s, late).await.status,
        ItemStatus::Cancelled,
        "stays cancelled"
    );
}

/// An operator's cancel of a dependency (pending) cancels its dependants; cancelling a blocked
/// item itself is allowed and cancels its own dependants.
pub async fn cancelled_dependency_cancels_its_dependants(store: Arc<dyn Store>) {
    let s = &*store;
    let dep = enqueue(s, new_item("research", 1), T0).await;
    let waits = enqueue(s, new_item("contacts", 1).after([dep]), T0).await;
    let report = s
        .items_cancel(&ItemSelector::Ids(vec![dep]), false, at_s(1))
        .await
        .expect("cancel");
    assert_eq!(report.items.len(), 1);
    let now = get(s, waits).await;
    assert_eq!(now.status, ItemStatus::Cancelled);
    assert_eq!(
        now.error.as_deref(),
        Some(format!("dependency {dep} was cancelled").as_str())
    );

    let dep = enqueue(s, new_item("research", 2), at_s(2)).await;
    let blocked = enqueue(s, new_item("contacts", 2).after([dep]), at_s(2)).await;
    let after_it = enqueue(s, new_item("summary", 2).after([blocked]), at_s(2)).await;
    s.items_cancel(&ItemSelector::Ids(vec![blocked]), false, at_s(3))
        .await
        .expect("cancel of a blocked item");
    assert_eq!(get(s, blocked).await.status, ItemStatus::Cancelled);
    assert_eq!(get(s, after_it).await.status, ItemStatus::Cancelled);
    run_to_completion(s, dep, json!("done"), 4).await;
    assert_eq!(
        get(s, blocked).await.status,
        ItemStatus::Cancelled,
        "a cancelled dependant is not revived by its dependency's completion"
    );
}

/// An id naming no item, or an item later in the same batch, refuses the whole batch with
/// `InvalidInput` naming the id, and writes nothing; an item earlier in the batch may be named.
pub async fn unknown_or_forward_dependency_is_refused_and_nothing_is_written(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let existing = enqueue(s, new_item("research", 1), T0).await;
    let before = s.items_count().await.expect("count");
    let unknown = ItemId(existing.0 + 1_000);
    let refused = s
        .items_enqueue(
            vec![
                new_item("research", 2),
                new_item("summary", 2).after([existing, unknown]),
            ],
            at_s(1),
        )
        .await;
    match refused {
        Err(StoreError::InvalidInput(msg)) => {
            assert!(msg.contains(&unknown.to_string()), "names the id: {msg}")
        }
        other => panic!("an unknown dependency must be InvalidInput, got {other:?}"),
    }
    // The next id the store would hand out names the second item of the batch: a forward
    // reference from the first (it could form a cycle if allowed).
    let forward = ItemId(existing.0 + 1);
    let refused = s
        .items_enqueue(
            vec![
                new_item("summary", 3).after([forward]),
                new_item("research", 3),
            ],
            at_s(1),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::InvalidInput(_))),
        "a forward reference must be refused, got {refused:?}"
    );
    assert_eq!(
        s.items_count().await.expect("count"),
        before,
        "nothing written"
    );

    let ids = s
        .items_enqueue(
            vec![new_item("research", 4), new_item("summary", 4)],
            at_s(2),
        )
        .await
        .expect("plain batch");
    let chained = s
        .items_enqueue(
            vec![
                new_item("research", 5),
                new_item("summary", 5).after([ids[1]]),
            ],
            at_s(3),
        )
        .await
        .expect("an earlier item may be named");
    assert_eq!(get(s, chained[1]).await.status, ItemStatus::Blocked);
}

/// An operator's retry of a dependant that a failed dependency cancelled sends it back to
/// `blocked`, not to `pending`: it waits for that dependency again (the report says so), and
/// runs only once a retry of the dependency completes. A dependant whose dependencies all
/// completed meanwhile goes straight to `pending`.
pub async fn retried_dependant_waits_again_for_its_unfinished_dependency(store: Arc<dyn Store>) {
    use leasehold_core::RetryRequest;
    let s = &*store;
    let root = enqueue(s, new_item("research", 0), T0).await;
    let dependant = enqueue(s, new_item("summary", 1).after([root]), T0).await;
    let held = acquire(s, &req("worker-a"), at_s(1)).await;
    assert_eq!(held.lease.item, root);
    s.item_fail(
        &held.lease,
        "rate limited",
        FailDisposition::Permanent,
        at_s(2),
    )
    .await
    .expect("fail");
    assert_eq!(get(s, dependant).await.status, ItemStatus::Cancelled);

    let retry = |id: ItemId, dry_run: bool| RetryRequest {
        target: ItemSelector::Ids(vec![id]),
        max_attempts: None,
        dry_run,
    };
    let dry = s
        .items_retry(&retry(dependant, true), at_s(3))
        .await
        .expect("dry run");
    assert_eq!(dry.items[0].to, ItemStatus::Blocked, "{dry:?}");
    assert_eq!(get(s, dependant).await.status, ItemStatus::Cancelled);
    let report = s
        .items_retry(&retry(dependant, false), at_s(3))
        .await
        .expect("retry the dependant");
    assert_eq!(report.items[0].to, ItemStatus::Blocked, "{report:?}");
    let waiting = get(s, dependant).await;
    assert_eq!(waiting.status, ItemStatus::Blocked);
    assert_eq!(waiting.finished_at, None);
    acquire_none(s, &req("worker-b"), at_s(4)).await;

    s.items_retry(&retry(root, false), at_s(5))
        .await
        .expect("retry the dependency");
    run_to_completion(s, root, json!({ "lead": 1 }), 6).await;
    assert_eq!(get(s, dependant).await.status, ItemStatus::Pending);
    run_to_completion(s, dependant, json!("summary"), 7).await;

    // Both finished: a failed dependant whose dependency completed is retried to pending.
    let other = enqueue(s, new_item("summary", 2).after([root]), at_s(8)).await;
    let held = acquire(s, &req("worker-a"), at_s(9)).await;
    assert_eq!(held.lease.item, other);
    s.item_fail(&held.lease, "boom", FailDisposition::Permanent, at_s(10))
        .await
        .expect("fail");
    let report = s
        .items_retry(&retry(other, false), at_s(11))
        .await
        .expect("retry");
    assert_eq!(report.items[0].to, ItemStatus::Pending, "{report:?}");
    assert_eq!(get(s, other).await.status, ItemStatus::Pending);
}
