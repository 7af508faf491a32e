//! Pipelines: follow-up items enqueued in the completion's own commit, and unique keys.

use std::sync::Arc;

use leasehold_core::{
    FailDisposition, ItemFilter, ItemStatus, Liveness, NewItem, ReapRequest, Store, StoreError,
};
use serde_json::json;

use crate::support::{
    acquire, at_s, enqueue, expect_lease_lost, get, new_item, req, ScriptedLiveness, STALE, T0,
};

/// A completion with follow-ups completes the item and enqueues every follow-up, pending and
/// ready as asked, with the ids returned in order; with none it is a plain completion.
pub async fn follow_ups_are_enqueued_in_the_completions_commit(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("research", 1), T0).await;
    let held = acquire(s, &req("worker-a"), T0).await;
    let ids = s
        .item_complete_with_follow_ups(
            &held.lease,
            json!({ "company": "acme" }),
            vec![
                NewItem::new("contacts", json!({ "company": "acme" })).priority(5),
                NewItem::new("summary", json!({})).delay(std::time::Duration::from_secs(60)),
            ],
            at_s(1),
        )
        .await
        .expect("complete with follow-ups");
    assert_eq!(ids.len(), 2, "one id per follow-up");
    assert!(ids[0] < ids[1], "ids come back in the follow-ups' order");
    let done = get(s, id).await;
    assert_eq!(done.status, ItemStatus::Completed);
    assert_eq!(done.output, Some(json!({ "company": "acme" })));
    let contacts = get(s, ids[0]).await;
    assert_eq!(
        (contacts.kind.as_str(), contacts.status, contacts.priority),
        ("contacts", ItemStatus::Pending, 5)
    );
    assert_eq!(contacts.input, json!({ "company": "acme" }));
    assert_eq!(contacts.created_at, at_s(1));
    let summary = get(s, ids[1]).await;
    assert_eq!(
        summary.run_at,
        at_s(61),
        "a follow-up's delay runs from the completion"
    );

    let plain = enqueue(s, new_item("research", 2), at_s(2)).await;
    let held = acquire(s, &req("worker-a").kinds(["research"]), at_s(2)).await;
    assert_eq!(held.lease.item, plain);
    let none = s
        .item_complete_with_follow_ups(&held.lease, json!(2), Vec::new(), at_s(3))
        .await
        .expect("complete with no follow-ups");
    assert!(none.is_empty());
    assert_eq!(get(s, plain).await.status, ItemStatus::Completed);
}

/// A zombie (its lease reaped and taken over) completing with follow-ups is refused with
/// `LeaseLost`: no follow-up appears and the successor's completion is the one that counts.
pub async fn zombie_completion_with_follow_ups_creates_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("research", 1), T0).await;
    let zombie = acquire(s, &req("worker-a"), T0).await.lease;
    let dead = ScriptedLiveness::always(Liveness::Dead);
    s.items_reap_expired(&ReapRequest::new(10, STALE), &dead, at_s(31))
        .await
        .expect("reap");
    let successor = acquire(s, &req("worker-b"), at_s(32)).await;

    expect_lease_lost(
        s.item_complete_with_follow_ups(
            &zombie,
            json!({ "by": "zombie" }),
            vec![NewItem::new("contacts", json!({ "by": "zombie" }))],
            at_s(33),
        )
        .await,
        &zombie,
        "the zombie's completion with follow-ups",
    );
    let all = s.items_list(&ItemFilter::default()).await.expect("list");
    assert_eq!(
        all.len(),
        1,
        "the zombie's follow-up must not exist: {all:?}"
    );
    assert_eq!(get(s, id).await.output, None);

    let ids = s
        .item_complete_with_follow_ups(
            &successor.lease,
            json!({ "by": "successor" }),
            vec![NewItem::new("contacts", json!({ "by": "successor" }))],
            at_s(34),
        )
        .await
        .expect("the successor completes");
    assert_eq!(get(s, ids[0]).await.input, json!({ "by": "successor" }));
    let all = s.items_list(&ItemFilter::default()).await.expect("list");
    assert_eq!(all.len(), 2, "exactly the successor's follow-up: {all:?}");
}

/// An invalid follow-up refuses the whole completion with `InvalidInput` naming it: the item
/// stays in progress under its lease (its holder may still complete it) and nothing is enqueued.
pub async fn invalid_follow_up_refuses_the_completion_and_writes_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("research", 1), T0).await;
    let held = acquire(s, &req("worker-a"), T0).await;
    let before = get(s, id).await;
    let refused = s
        .item_complete_with_follow_ups(
            &held.lease,
            json!(1),
            vec![
                NewItem::new("contacts", json!({})),
                NewItem::new("contacts", json!({})).max_attempts(0),
            ],
            at_s(1),
        )
        .await;
    match refused {
        Err(StoreError::InvalidInput(msg)) => assert!(
            msg.contains("follow-up 1") && msg.contains("max_attempts"),
            "the error names the follow-up and the problem: {msg}"
        ),
        other => panic!("an invalid follow-up should be InvalidInput, got {other:?}"),
    }
    assert_eq!(
        get(s, id).await,
        before,
        "the refused completion changed nothing"
    );
    let all = s.items_list(&ItemFilter::default()).await.expect("list");
    assert_eq!(all.len(), 1, "no follow-up was enqueued: {all:?}");
    s.item_complete(&held.lease, json!(1), at_s(2))
        .await
        .expect("the holder can still complete");
}

/// Enqueuing a unique key that an open (pending or in-progress) item holds returns that
/// item's id and adds nothing, within a batch too; once the item has finished, the key is
/// free and a new item is added. An empty key is refused.
pub async fn unique_key_returns_the_open_items_id_and_is_freed_when_it_finishes(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let keyed = |n: i64, key: &str| new_item("sync", n).unique_key(key);
    let first = enqueue(s, keyed(1, "account-7"), T0).await;
    let again = enqueue(s, keyed(2, "account-7"), at_s(1)).await;
    assert_eq!(again, first, "a pending item's key returns its id");
    let batch = s
        .items_enqueue(
            vec![
                keyed(3, "account-7"),
                keyed(4, "account-8"),
                keyed(5, "account-8"),
                new_item("sync", 6),
            ],
            at_s(2),
        )
        .await
        .expect("enqueue a batch with keys");
    assert_eq!(batch[0], first);
    assert_eq!(
        batch[1], batch[2],
        "a key repeated within one batch is one item"
    );
    assert_ne!(batch[1], batch[3]);
    assert_eq!(s.items_count().await.expect("count").total(), 3);
    let item = get(s, first).await;
    assert_eq!(item.unique_key.as_deref(), Some("account-7"));
    assert_eq!(
        item.input,
        json!({ "n": 1 }),
        "the existing item is unchanged"
    );

    let held = acquire(s, &req("worker-a"), at_s(3)).await;
    assert_eq!(held.lease.item, first);
    let during = enqueue(s, keyed(7, "account-7"), at_s(4)).await;
    assert_eq!(during, first, "an in-progress item's key returns its id");
    s.item_complete(&held.lease, json!(null), at_s(5))
        .await
        .expect("complete");
    let after = enqueue(s, keyed(8, "account-7"), at_s(6)).await;
    assert_ne!(after, first, "a finished item frees its key");
    assert_eq!(get(s, after).await.status, ItemStatus::Pending);

    let total = s.items_count().await.expect("count").total();
    match s.item_enqueue(keyed(9, ""), at_s(7)).await {
        Err(StoreError::InvalidInput(msg)) => assert!(msg.contains("unique key"), "{msg}"),
        other => panic!("an empty unique key should be InvalidInput, got {other:?}"),
    }
    assert_eq!(s.items_count().await.expect("count").total(), total);
}

/// With `unique_within`, a key's item that completed within the window still answers for the
/// key (its id returned, nothing added); past the window, or for an item that failed instead,
/// or without the window, a new item is added; an open item wins over a completed one; a window
/// without a key, or under 1 ms, is refused and writes nothing.
pub async fn unique_within_returns_an_item_completed_inside_the_window(store: Arc<dyn Store>) {
    let s = &*store;
    let window = std::time::Duration::from_secs(60);
    let keyed = |n: i64| new_item("report", n).unique_key("report-7");
    let windowed = |n: i64| keyed(n).unique_within(window);
    let first = enqueue(s, windowed(1), T0).await;
    let held = acquire(s, &req("worker-a"), at_s(1)).await;
    assert_eq!(held.lease.item, first);
    s.item_complete(&held.lease, json!("done"), at_s(2))
        .await
        .expect("complete");

    assert_eq!(
        enqueue(s, windowed(2), at_s(30)).await,
        first,
        "completed 28 s ago, inside the 60 s window: its id"
    );
    let batch = s
        .items_enqueue(vec![windowed(3), windowed(4)], at_s(62))
        .await
        .expect("a batch inside the window");
    assert_eq!(batch, vec![first, first], "exactly 60 s is still inside");
    assert_eq!(s.items_count().await.expect("count").total(), 1);

    // Without the window, the completed item does not count.
    let plain = enqueue(s, keyed(5), at_s(63)).await;
    assert_ne!(plain, first);
    // An open item wins over the completed one while both answer for the key.
    assert_eq!(enqueue(s, windowed(6), at_s(64)).await, plain);
    let held = acquire(s, &req("worker-a"), at_s(65)).await;
    assert_eq!(held.lease.item, plain);
    s.item_fail(&held.lease, "no", FailDisposition::Permanent, at_s(66))
        .await
        .expect("fail");
    // A failed item is not the work done: the newest completion is still `first`, at 2 s.
    assert_eq!(
        enqueue(s, windowed(7), at_s(61)).await,
        first,
        "a failed item does not answer for the key; the completed one still does"
    );
    let past = enqueue(s, windowed(8), at_s(63)).await;
    assert!(
        ![first, plain].contains(&past),
        "61 s after the completion, past the window: a new item"
    );
    assert_eq!(get(s, past).await.status, ItemStatus::Pending);

    let total = s.items_count().await.expect("count").total();
    for (bad, what) in [
        (
            new_item("report", 9).unique_within(window),
            "needs a unique key",
        ),
        (
            keyed(10).unique_within(std::time::Duration::from_micros(10)),
            "at least 1 ms",
        ),
    ] {
        match s.item_enqueue(bad, at_s(70)).await {
            Err(StoreError::InvalidInput(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("expected InvalidInput ({what}), got {other:?}"),
        }
    }
    assert_eq!(s.items_count().await.expect("count").total(), total);
}

/// Many enqueues of one key at once (separate calls racing on the store) create one item, and
/// every caller gets its id.
pub async fn concurrent_enqueues_of_one_key_create_one_item(store: Arc<dyn Store>) {
    let calls = (0..16).map(|n| {
        let store = Arc::clone(&store);
        async move {
            store
                .item_enqueue(new_item("sync", n).unique_key("the-key"), at_s(n))
                .await
                .expect("enqueue")
        }
    });
    let ids = futures::future::join_all(calls).await;
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every caller gets the one item's id: {ids:?}"
    );
    assert_eq!(store.items_count().await.expect("count").total(), 1);
}
