//! Pipelines: follow-up items enqueued in the completion's own commit.

use std::sync::Arc;

use leasehold_core::{ItemFilter, ItemStatus, Liveness, NewItem, ReapRequest, Store, StoreError};
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
