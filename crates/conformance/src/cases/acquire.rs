//! Acquisition: which ready items are leased, in what order, and that none is leased twice.

use std::collections::BTreeSet;
use std::sync::Arc;

use leasehold_core::{ItemId, ItemStatus, Store};

use crate::support::{
    acquire, acquire_none, at, at_s, enqueue, enqueue_n, get, new_item, req, secs, T0,
};

/// Ready items are leased by priority (higher first), then `run_at` (earlier first), then id.
pub async fn acquire_orders_by_priority_then_run_at_then_id(store: Arc<dyn Store>) {
    let s = &*store;
    let late_low = enqueue(s, new_item("k", 1).delay(secs(2)), T0).await;
    let early_low = enqueue(s, new_item("k", 2).delay(secs(1)), T0).await;
    let high_a = enqueue(s, new_item("k", 3).priority(10).delay(secs(3)), T0).await;
    let early_low_b = enqueue(s, new_item("k", 4).delay(secs(1)), T0).await;
    let negative = enqueue(s, new_item("k", 5).priority(-1), T0).await;
    let high_b = enqueue(s, new_item("k", 6).priority(10).delay(secs(3)), T0).await;
    // Enqueued last, but ready earlier than every other priority-0 item: run_at, not id (or
    // enqueue order), decides.
    let enqueued_later = enqueue(s, new_item("k", 7), at(500)).await;

    let expected = [
        high_a,
        high_b,
        enqueued_later,
        early_low,
        early_low_b,
        late_low,
        negative,
    ];
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(acquire(s, &req("worker-a"), at_s(5)).await.item.id);
    }
    assert_eq!(
        got, expected,
        "order: priority desc, then run_at asc, then id asc"
    );
    acquire_none(s, &req("worker-a"), at_s(5)).await;
}

/// A delayed item is pending (and counted) but not leased before `now + delay`; it is at it.
pub async fn delayed_item_is_not_acquired_early(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("later", 1).delay(secs(60)), T0).await;
    let item = get(s, id).await;
    assert_eq!(item.status, ItemStatus::Pending);
    assert_eq!(item.run_at, at_s(60));
    assert_eq!(s.items_count().await.expect("items_count").pending, 1);

    acquire_none(s, &req("worker-a"), T0).await;
    acquire_none(s, &req("worker-a"), at(59_999)).await;
    let got = s
        .items_acquire(&req("worker-a").limit(10), at(59_999))
        .await
        .expect("items_acquire");
    assert!(got.is_empty(), "a batch does not take it early either");
    assert_eq!(
        get(s, id).await,
        item,
        "an empty acquisition changes nothing"
    );
    let leased = acquire(s, &req("worker-a"), at_s(60)).await;
    assert_eq!(leased.item.id, id);
}

/// A kind filter leases only the listed kinds; an empty list means any kind.
pub async fn kind_filter_acquires_only_listed_kinds(store: Arc<dyn Store>) {
    let s = &*store;
    let a = enqueue(s, new_item("alpha", 1), T0).await;
    let b = enqueue(s, new_item("beta", 2), T0).await;
    let c = enqueue(s, new_item("gamma", 3), T0).await;
    let d = enqueue(s, new_item("beta", 4), T0).await;

    let betas = req("worker-b").kinds(["beta"]);
    assert_eq!(acquire(s, &betas, T0).await.item.id, b);
    assert_eq!(acquire(s, &betas, T0).await.item.id, d);
    acquire_none(s, &betas, T0).await;
    acquire_none(s, &req("worker-b").kinds(["delta"]), T0).await;

    let got: BTreeSet<ItemId> = s
        .items_acquire(&req("worker-ac").kinds(["gamma", "alpha"]).limit(10), T0)
        .await
        .expect("items_acquire")
        .into_iter()
        .map(|l| {
            assert!(["alpha", "gamma"].contains(&l.item.kind.as_str()));
            l.item.id
        })
        .collect();
    assert_eq!(got, BTreeSet::from([a, c]));

    let e = enqueue(s, new_item("epsilon", 5), T0).await;
    assert_eq!(
        acquire(s, &req("worker-any"), T0).await.item.id,
        e,
        "no kinds means any kind"
    );
}

/// A group filter leases only that group's items.
pub async fn group_filter_acquires_only_that_group(store: Arc<dyn Store>) {
    let s = &*store;
    let g1 = enqueue(s, new_item("k", 1).group("task-1"), T0).await;
    let g2 = enqueue(s, new_item("k", 2).group("task-2"), T0).await;
    let none = enqueue(s, new_item("k", 3), T0).await;
    let g1b = enqueue(s, new_item("k", 4).group("task-1"), T0).await;

    let in_g1 = req("worker-a").group("task-1");
    let first = acquire(s, &in_g1, T0).await;
    assert_eq!(first.item.id, g1);
    assert_eq!(first.item.group_id.as_deref(), Some("task-1"));
    assert_eq!(acquire(s, &in_g1, T0).await.item.id, g1b);
    acquire_none(s, &in_g1, T0).await;
    acquire_none(s, &req("worker-a").group("task-3"), T0).await;
    assert_eq!(
        acquire(s, &req("worker-a").group("task-2"), T0)
            .await
            .item
            .id,
        g2
    );
    assert_eq!(acquire(s, &req("worker-a"), T0).await.item.id, none);
}

/// A batch acquisition leases distinct items, at most `limit`, in acquisition order, and
/// successive batches never repeat an item.
pub async fn batch_acquire_returns_distinct_items_up_to_the_limit(store: Arc<dyn Store>) {
    let s = &*store;
    let ids = enqueue_n(s, "bulk", 10, T0).await;
    let request = req("worker-a").limit(4);
    let mut seen = Vec::new();
    for expected in [4, 4, 2, 0] {
        let batch = s
            .items_acquire(&request, at_s(1))
            .await
            .expect("items_acquire");
        assert_eq!(
            batch.len(),
            expected,
            "a batch is as large as it can be, up to the limit"
        );
        for leased in batch {
            assert_eq!(leased.item.status, ItemStatus::InProgress);
            assert_eq!(leased.item.epoch, 1);
            assert_eq!(leased.item.attempts, 1);
            assert_eq!(leased.lease.owner, "worker-a");
            assert_eq!(leased.expires_at, at_s(1).plus(request.lease));
            assert_eq!(get(s, leased.item.id).await, leased.item);
            seen.push(leased.item.id);
        }
    }
    assert_eq!(
        seen, ids,
        "equal priority and run_at: by id, each exactly once"
    );
    assert_eq!(s.items_count().await.expect("items_count").in_progress, 10);
}

/// Many batch acquisitions issued at once never lease one item twice, and together lease every
/// ready item.
pub async fn concurrent_batch_acquires_never_hand_out_an_item_twice(store: Arc<dyn Store>) {
    let s = &*store;
    let ids = enqueue_n(s, "bulk", 40, T0).await;
    let calls = (0..12).map(|w| {
        let request = req(&format!("worker-{w}")).limit(4);
        async move { s.items_acquire(&request, at_s(1)).await }
    });
    let mut seen = BTreeSet::new();
    for batch in futures::future::join_all(calls).await {
        for leased in batch.expect("items_acquire") {
            assert!(
                seen.insert(leased.item.id),
                "item {} was leased twice",
                leased.item.id
            );
            assert_eq!(leased.lease.epoch, 1);
        }
    }
    assert_eq!(
        seen,
        ids.into_iter().collect(),
        "48 places for 40 items: all leased"
    );
    acquire_none(s, &req("late"), at_s(2)).await;
}
