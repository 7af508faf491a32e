//! Invalid arguments are refused with `InvalidInput` before anything is written.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{
    AcquireRequest, ItemFilter, ItemStatus, Liveness, NewItem, ReapRequest, StatusCounts, Store,
    StoreError, StoreResult,
};
use serde_json::json;

use crate::support::{acquire, at_s, enqueue, get, new_item, req, ScriptedLiveness, STALE, T0};

fn expect_invalid_input<T: Debug>(result: StoreResult<T>, what: &str) {
    match result {
        Err(StoreError::InvalidInput(_)) => {}
        other => panic!("{what} should be refused with InvalidInput, got {other:?}"),
    }
}

/// Enqueue refuses an empty or blank kind, a zero budget and an empty group — and a batch with
/// one such item is refused whole: nothing is written.
pub async fn enqueue_refuses_invalid_items_and_writes_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    let bad = [
        ("an empty kind", NewItem::new("", json!({}))),
        ("a blank kind", NewItem::new("  ", json!({}))),
        ("max_attempts 0", new_item("k", 1).max_attempts(0)),
        ("an empty group", new_item("k", 1).group("")),
        ("a zero timeout", new_item("k", 1).timeout(Duration::ZERO)),
        (
            "a timeout under 1 ms",
            new_item("k", 1).timeout(Duration::from_micros(500)),
        ),
    ];
    for (what, item) in bad {
        expect_invalid_input(s.item_enqueue(item.clone(), T0).await, what);
        expect_invalid_input(
            s.items_enqueue(vec![new_item("ok", 1), item, new_item("ok", 2)], T0)
                .await,
            &format!("a batch holding {what}"),
        );
    }
    assert_eq!(
        s.items_count().await.expect("items_count"),
        StatusCounts::default(),
        "no item of a refused batch was written"
    );
}

/// Acquire refuses a zero limit, a zero lease and an empty owner or node; the ready item stays
/// pending with epoch 0.
pub async fn acquire_refuses_invalid_requests_and_writes_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("k", 1), T0).await;
    let before = get(s, id).await;
    let bad = [
        ("limit 0", req("worker-a").limit(0)),
        (
            "a zero lease",
            AcquireRequest::new("worker-a", Duration::ZERO),
        ),
        ("an empty owner", req("")),
        ("an empty node", req("worker-a").node("", 1)),
    ];
    for (what, request) in bad {
        expect_invalid_input(s.items_acquire(&request, at_s(1)).await, what);
        assert_eq!(
            get(s, id).await,
            before,
            "a refused acquire ({what}) changes nothing"
        );
    }
    expect_invalid_input(
        s.item_acquire(&AcquireRequest::new("worker-a", Duration::ZERO), at_s(1))
            .await,
        "item_acquire with a zero lease",
    );
    assert_eq!(get(s, id).await.status, ItemStatus::Pending);
    assert_eq!(get(s, id).await.epoch, 0);
}

/// A sweep refuses a zero batch, a zero stale limit and a zero attempt limit; the expired item
/// it would have taken is untouched.
pub async fn reap_refuses_invalid_requests_and_writes_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("k", 1), T0).await;
    acquire(s, &req("worker-a"), T0).await;
    let before = get(s, id).await;
    let dead = ScriptedLiveness::always(Liveness::Dead);
    let mut zero_attempts = ReapRequest::new(10, STALE);
    zero_attempts.max_attempts = Some(0);
    let bad = [
        ("batch 0", ReapRequest::new(0, STALE)),
        ("a zero stale limit", ReapRequest::new(10, Duration::ZERO)),
        ("max_attempts 0", zero_attempts),
    ];
    for (what, request) in bad {
        expect_invalid_input(s.items_reap_expired(&request, &dead, at_s(60)).await, what);
        assert_eq!(
            get(s, id).await,
            before,
            "a refused sweep ({what}) changes nothing"
        );
    }
    assert!(dead.asked().is_empty(), "a refused sweep asks nobody");
}

/// Listing with a zero limit is refused (the limit is "at least 1").
pub async fn list_refuses_a_zero_limit(store: Arc<dyn Store>) {
    let s = &*store;
    enqueue(s, new_item("k", 1), T0).await;
    expect_invalid_input(
        s.items_list(&ItemFilter {
            limit: 0,
            ..ItemFilter::default()
        })
        .await,
        "items_list with limit 0",
    );
}
