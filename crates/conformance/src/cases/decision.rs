//! The decision step: a holder parks its item with a question (`item_park`, fenced); the item
//! holds no lease, is neither acquired nor reaped, and an allowed answer (`item_decide`) puts it
//! back to pending with the answer. A decision on an item that is not parked, or an answer the
//! question does not accept, is refused and changes nothing.

use std::sync::Arc;

use leasehold_core::{
    DecisionRequest, ItemFilter, ItemId, ItemStatus, Liveness, ReapRequest, Store, StoreError,
};
use serde_json::json;

use crate::support::{
    acquire, acquire_none, at_s, enqueue, expect_lease_lost, get, new_item, req, ScriptedLiveness,
    STALE, T0,
};

fn ask() -> DecisionRequest {
    DecisionRequest::new(
        "No contact found for acme.com: what now?",
        ["skip", "retry"],
    )
}

/// Parking moves the item to `awaiting` with its question, clears its lease and gives its
/// attempt back; nothing acquires it, the reaper and `recover_mine` do not see it, it is
/// counted and listed as awaiting; an allowed answer resumes it as pending, ready at once, the
/// answer in its input and its decision, and the next acquisition bumps the epoch.
pub async fn park_then_decide_resumes_the_item_with_the_answer(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("lead", 1), T0).await;
    let held = acquire(s, &req("worker-a"), T0).await;
    s.item_park(&held.lease, &ask(), at_s(1))
        .await
        .expect("the holder parks its item");

    let parked = get(s, id).await;
    assert_eq!(parked.status, ItemStatus::Awaiting);
    assert_eq!(parked.lease(), None, "a parked item holds no lease");
    assert_eq!(parked.owner, None);
    assert_eq!(parked.lease_expires_at, None);
    assert_eq!(parked.attempts, 0, "parking gives the attempt back");
    let open = parked
        .decision
        .clone()
        .expect("the open decision is stored");
    assert_eq!(open.question, ask().question);
    assert_eq!(open.answers, ask().answers);
    assert_eq!(open.asked_at, at_s(1));
    assert_eq!(open.answer, None);

    acquire_none(s, &req("worker-b"), at_s(2)).await;
    let dead = ScriptedLiveness::always(Liveness::Dead);
    let stats = s
        .items_reap_expired(&ReapRequest::new(10, STALE), &dead, at_s(3_600))
        .await
        .expect("reap");
    assert_eq!(
        stats.expired_found, 0,
        "the reaper never sees a parked item"
    );
    assert!(s
        .items_recover_owner("worker-a", at_s(3_601))
        .await
        .expect("recover_mine")
        .is_empty());
    assert_eq!(s.items_count().await.expect("count").awaiting, 1);
    let listed = s
        .items_list(&ItemFilter {
            status: Some(ItemStatus::Awaiting),
            ..ItemFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.iter().map(|i| i.id).collect::<Vec<_>>(), vec![id]);

    let resumed = s
        .item_decide(id, "skip", at_s(3_700))
        .await
        .expect("an allowed answer");
    assert_eq!(resumed.status, ItemStatus::Pending);
    assert_eq!(resumed.run_at, at_s(3_700), "ready as soon as decided");
    assert_eq!(
        resumed.input,
        json!({ "n": 1, "decision": { "question": ask().question, "answer": "skip" } })
    );
    let decided = resumed.decision.clone().expect("decision kept");
    assert_eq!(decided.answer.as_deref(), Some("skip"));
    assert_eq!(decided.decided_at, Some(at_s(3_700)));
    assert_eq!(
        get(s, id).await,
        resumed,
        "the returned item is the stored one"
    );

    let again = acquire(s, &req("worker-b"), at_s(3_701)).await;
    assert_eq!(again.item.id, id);
    assert!(again.lease.epoch > held.lease.epoch);
    assert_eq!(again.item.attempts, 1);
    assert_eq!(
        again.item.decision.and_then(|d| d.answer).as_deref(),
        Some("skip")
    );
}

/// Parking is a fenced write: a holder whose lease was taken over cannot park, and its
/// attempt changes nothing; an invalid question is refused before anything is written.
pub async fn park_is_fenced_and_refuses_an_invalid_question(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("lead", 2), T0).await;
    let old = acquire(s, &req("worker-a"), T0).await.lease;
    s.items_recover_owner("worker-a", at_s(1))
        .await
        .expect("recover_mine");
    let new = acquire(s, &req("worker-b"), at_s(2)).await;
    let before = get(s, id).await;
    expect_lease_lost(
        s.item_park(&old, &ask(), at_s(3)).await,
        &old,
        "a zombie's park",
    );
    assert_eq!(get(s, id).await, before, "a refused park changes nothing");

    let bad = DecisionRequest::new("pick one", Vec::<String>::new());
    match s.item_park(&new.lease, &bad, at_s(4)).await {
        Err(StoreError::InvalidInput(why)) => assert!(why.contains("answer"), "{why}"),
        other => panic!("a question without answers must be InvalidInput, got {other:?}"),
    }
    assert_eq!(get(s, id).await, before, "a refused park changes nothing");
}

/// A decision on an item that is not parked is `InvalidState` naming its status; an answer the
/// question does not accept is `InvalidInput` naming it; an unknown item is `NotFound`. None
/// changes anything.
pub async fn decide_refuses_an_item_not_parked_and_an_answer_not_allowed(store: Arc<dyn Store>) {
    let s = &*store;
    let pending = enqueue(s, new_item("lead", 3), T0).await;
    match s.item_decide(pending, "skip", at_s(1)).await {
        Err(e @ StoreError::InvalidState { .. }) => {
            let StoreError::InvalidState { status, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*status, ItemStatus::Pending);
            assert!(e.to_string().contains("is pending"), "{e}");
        }
        other => panic!("deciding a pending item must be InvalidState, got {other:?}"),
    }
    assert_eq!(get(s, pending).await.status, ItemStatus::Pending);

    let held = acquire(s, &req("worker-a"), at_s(1)).await;
    s.item_park(&held.lease, &ask(), at_s(2))
        .await
        .expect("park");
    let before = get(s, held.item.id).await;
    match s.item_decide(held.item.id, "maybe", at_s(3)).await {
        Err(StoreError::InvalidInput(why)) => {
            assert!(
                why.contains("\"maybe\""),
                "the refusal names the answer: {why}"
            );
            assert!(why.contains("\"skip\""), "and the allowed ones: {why}");
        }
        other => panic!("an answer not allowed must be InvalidInput, got {other:?}"),
    }
    assert_eq!(
        get(s, held.item.id).await,
        before,
        "a refused decision changes nothing"
    );

    s.item_decide(held.item.id, "retry", at_s(4))
        .await
        .expect("decide");
    let decided = get(s, held.item.id).await;
    match s.item_decide(held.item.id, "skip", at_s(5)).await {
        Err(StoreError::InvalidState { status, .. }) => assert_eq!(status, ItemStatus::Pending),
        other => panic!("a second decision must be InvalidState, got {other:?}"),
    }
    assert_eq!(
        get(s, held.item.id).await,
        decided,
        "the first answer stands"
    );

    match s.item_decide(ItemId(999_999), "skip", at_s(6)).await {
        Err(StoreError::NotFound(id)) => assert_eq!(id, ItemId(999_999)),
        other => panic!("an unknown item must be NotFound, got {other:?}"),
    }
}

/// An operator may cancel an item that waits for a decision: it ends `cancelled` at once, its
/// question kept on the item, and a decision that comes later is refused and changes nothing.
pub async fn cancel_ends_an_awaiting_item_and_a_later_decision_is_refused(store: Arc<dyn Store>) {
    let s = &*store;
    enqueue(s, new_item("lead", 4), T0).await;
    let held = acquire(s, &req("worker-a"), T0).await;
    s.item_park(&held.lease, &ask(), at_s(1))
        .await
        .expect("park");
    s.item_cancel(held.item.id, at_s(2))
        .await
        .expect("an awaiting item can be cancelled");
    let cancelled = get(s, held.item.id).await;
    assert_eq!(cancelled.status, ItemStatus::Cancelled);
    assert_eq!(cancelled.finished_at, Some(at_s(2)));
    assert_eq!(
        cancelled.decision.as_ref().map(|d| d.question.as_str()),
        Some(ask().question.as_str()),
        "the question stays on the item"
    );
    match s.item_decide(held.item.id, "skip", at_s(3)).await {
        Err(StoreError::InvalidState { status, .. }) => assert_eq!(status, ItemStatus::Cancelled),
        other => panic!("deciding a cancelled item must be InvalidState, got {other:?}"),
    }
    assert_eq!(
        get(s, held.item.id).await,
        cancelled,
        "the refusal changed nothing"
    );
}
