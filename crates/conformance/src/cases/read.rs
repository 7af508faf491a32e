//! Reads: a lease's status, an owner's leases, counts, listings, checkpoints and progress.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{
    FailDisposition, ItemFilter, ItemId, ItemStatus, Liveness, ReapRequest, StatusCounts, Store,
    StoreError,
};
use serde_json::json;

use crate::support::{
    acquire, at, at_s, enqueue, expect_lease_lost, get, new_item, req, ScriptedLiveness, LEASE,
    STALE, T0,
};

/// `lease_status` reports a pending item as unleased, a held lease with its time left, an
/// expired (not yet reaped) lease as expired with nothing left, and a finished item as
/// unleased.
pub async fn lease_status_reports_expiry_and_remaining_time(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("a", 1), T0).await;
    let st = s.lease_status(id, T0).await.expect("lease_status");
    assert_eq!(st.item, id);
    assert_eq!(st.status, ItemStatus::Pending);
    assert_eq!(st.owner, None);
    assert!(!st.expired, "a pending item has no expired lease");
    assert_eq!(st.remaining, None, "a pending item is not leased");

    let leased = acquire(s, &req("worker-a"), T0).await;
    let st = s.lease_status(id, at_s(10)).await.expect("lease_status");
    assert_eq!(st.status, ItemStatus::InProgress);
    assert_eq!(st.owner.as_deref(), Some("worker-a"));
    assert_eq!(st.epoch, 1);
    assert_eq!(st.lease_expires_at, Some(T0.plus(LEASE)));
    assert_eq!(st.last_heartbeat_at, Some(T0));
    assert!(!st.expired);
    assert_eq!(st.remaining, Some(Duration::from_secs(20)));

    let st = s.lease_status(id, at(30_001)).await.expect("lease_status");
    assert!(st.expired, "past its expiry the lease is expired");
    assert_eq!(st.remaining, Some(Duration::ZERO));
    assert_eq!(
        st.status,
        ItemStatus::InProgress,
        "expired but not yet reaped"
    );

    s.item_complete(&leased.lease, json!("ok"), at_s(31))
        .await
        .expect("complete");
    let st = s.lease_status(id, at_s(40)).await.expect("lease_status");
    assert_eq!(st.status, ItemStatus::Completed);
    assert!(!st.expired, "a completed item's lease is not 'expired'");
    assert_eq!(st.remaining, None);
}

/// `lease_status` of an id that does not exist is `NotFound`.
pub async fn lease_status_of_unknown_item_is_not_found(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("a", 1), T0).await;
    let unknown = ItemId(id.0 + 1000);
    match s.lease_status(unknown, T0).await {
        Err(StoreError::NotFound(got)) => assert_eq!(got, unknown),
        other => panic!("lease_status of an unknown item should be NotFound, got {other:?}"),
    }
    assert_eq!(s.item_get(unknown).await.expect("item_get"), None);
}

/// `leases_of_owner` lists exactly the in-progress items of that owner.
pub async fn leases_of_owner_lists_only_that_owners_in_progress_items(store: Arc<dyn Store>) {
    let s = &*store;
    for n in 0..5 {
        enqueue(s, new_item("k", n), T0).await;
    }
    let a1 = acquire(s, &req("worker-a"), T0).await;
    let a2 = acquire(s, &req("worker-a"), T0).await;
    let b1 = acquire(s, &req("worker-b"), T0).await;
    let a3 = acquire(s, &req("worker-a"), T0).await;
    s.item_complete(&a2.lease, json!(null), at_s(1))
        .await
        .expect("complete");
    s.item_release(&a3.lease, None, at_s(1))
        .await
        .expect("release");

    let ids = |items: Vec<leasehold_core::Item>| -> BTreeSet<ItemId> {
        items
            .into_iter()
            .map(|i| {
                assert_eq!(i.status, ItemStatus::InProgress);
                i.id
            })
            .collect()
    };
    let of = |owner: &'static str| async move {
        s.leases_of_owner(owner).await.expect("leases_of_owner")
    };
    let mine = of("worker-a").await;
    assert_eq!(mine, vec![get(s, a1.item.id).await], "the item as stored");
    assert_eq!(ids(of("worker-b").await), BTreeSet::from([b1.item.id]));
    assert!(of("worker-c").await.is_empty());
}

/// The counts by status cover every item, each in exactly one status.
pub async fn counts_by_status_cover_every_item(store: Arc<dyn Store>) {
    let s = &*store;
    assert_eq!(
        s.items_count().await.expect("items_count"),
        StatusCounts::default()
    );
    for n in 0..9 {
        enqueue(s, new_item("k", n), T0).await;
    }
    enqueue(s, new_item("k", 9).delay(Duration::from_secs(3600)), T0).await;
    let owner = req("worker-a");
    let done = acquire(s, &owner, T0).await;
    s.item_complete(&done.lease, json!(1), T0)
        .await
        .expect("complete");
    let done = acquire(s, &owner, T0).await;
    s.item_complete(&done.lease, json!(2), T0)
        .await
        .expect("complete");
    let dead = acquire(s, &owner, T0).await;
    s.item_fail(&dead.lease, "no", FailDisposition::Permanent, T0)
        .await
        .expect("fail");
    acquire(s, &owner, T0).await;
    acquire(s, &owner, T0).await;
    acquire(s, &owner, T0).await;
    let cancel = s
        .items_list(&ItemFilter {
            status: Some(ItemStatus::Pending),
            limit: 1,
            ..ItemFilter::default()
        })
        .await
        .expect("items_list");
    s.item_cancel(cancel[0].id, T0).await.expect("cancel");

    let counts = s.items_count().await.expect("items_count");
    let expected = StatusCounts {
        pending: 3,
        in_progress: 3,
        completed: 2,
        failed: 1,
        cancelled: 1,
        awaiting: 0,
        blocked: 0,
    };
    assert_eq!(counts, expected, "delayed items count as pending");
    assert_eq!(counts.total(), 10);
    for status in ItemStatus::ALL {
        let listed = s
            .items_list(&ItemFilter {
                status: Some(status),
                ..ItemFilter::default()
            })
            .await
            .expect("items_list");
        assert_eq!(listed.len() as u64, counts.get(status), "{status}");
        assert!(listed.iter().all(|i| i.status == status));
    }
}

/// Listing filters by status, kind, group and owner, alone and combined, always by id.
pub async fn list_filters_by_status_kind_group_and_owner(store: Arc<dyn Store>) {
    let s = &*store;
    let e1 = enqueue(s, new_item("email", 1).group("g1"), T0).await;
    let r1 = enqueue(s, new_item("report", 2).group("g1"), T0).await;
    let e2 = enqueue(s, new_item("email", 3).group("g2"), T0).await;
    let r2 = enqueue(s, new_item("report", 4), T0).await;
    let e3 = enqueue(s, new_item("email", 5), T0).await;
    acquire(s, &req("worker-a").kinds(["email"]), T0).await; // e1
    acquire(s, &req("worker-b").kinds(["report"]), T0).await; // r1
    acquire(s, &req("worker-a").kinds(["email"]), T0).await; // e2

    let list = |filter: ItemFilter| async move {
        s.items_list(&filter)
            .await
            .expect("items_list")
            .into_iter()
            .map(|i| i.id)
            .collect::<Vec<_>>()
    };
    let f = ItemFilter::default;
    assert_eq!(list(f()).await, vec![e1, r1, e2, r2, e3], "all, by id");
    assert_eq!(
        list(ItemFilter {
            status: Some(ItemStatus::InProgress),
            ..f()
        })
        .await,
        vec![e1, r1, e2]
    );
    assert_eq!(
        list(ItemFilter {
            status: Some(ItemStatus::Pending),
            ..f()
        })
        .await,
        vec![r2, e3]
    );
    assert_eq!(
        list(ItemFilter {
            kind: Some("email".into()),
            ..f()
        })
        .await,
        vec![e1, e2, e3]
    );
    assert_eq!(
        list(ItemFilter {
            group_id: Some("g1".into()),
            ..f()
        })
        .await,
        vec![e1, r1]
    );
    assert_eq!(
        list(ItemFilter {
            owner: Some("worker-a".into()),
            ..f()
        })
        .await,
        vec![e1, e2]
    );
    assert_eq!(
        list(ItemFilter {
            kind: Some("email".into()),
            status: Some(ItemStatus::Pending),
            ..f()
        })
        .await,
        vec![e3]
    );
    assert_eq!(
        list(ItemFilter {
            kind: Some("report".into()),
            group_id: Some("g1".into()),
            owner: Some("worker-b".into()),
            status: Some(ItemStatus::InProgress),
            ..f()
        })
        .await,
        vec![r1]
    );
    assert!(list(ItemFilter {
        kind: Some("none".into()),
        ..f()
    })
    .await
    .is_empty());
    assert!(list(ItemFilter {
        status: Some(ItemStatus::Cancelled),
        ..f()
    })
    .await
    .is_empty());
}

/// Listing pages by id: `limit` caps a page, `after` starts past an id, and the pages together
/// hold every matching item once.
pub async fn list_pages_by_id_with_limit_and_after(store: Arc<dyn Store>) {
    let s = &*store;
    let mut ids = Vec::new();
    for n in 0..7 {
        let kind = if n % 2 == 0 { "even" } else { "odd" };
        ids.push(enqueue(s, new_item(kind, n), T0).await);
    }
    let page = |after: Option<ItemId>, kind: Option<&str>| {
        let filter = ItemFilter {
            after,
            kind: kind.map(String::from),
            limit: 3,
            ..ItemFilter::default()
        };
        async move {
            s.items_list(&filter)
                .await
                .expect("items_list")
                .into_iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, None).await, ids[0..3]);
    assert_eq!(page(Some(ids[2]), None).await, ids[3..6]);
    assert_eq!(page(Some(ids[5]), None).await, ids[6..7]);
    assert!(page(Some(ids[6]), None).await.is_empty());
    assert_eq!(
        page(Some(ids[0]), Some("even")).await,
        vec![ids[2], ids[4], ids[6]]
    );
    assert_eq!(page(Some(ids[4]), Some("even")).await, vec![ids[6]]);
    let one = s
        .items_list(&ItemFilter {
            limit: 1,
            ..ItemFilter::default()
        })
        .await
        .expect("items_list");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0], get(s, ids[0]).await, "listed items are as stored");
}

/// Checkpoints are saved by the holder with increasing ids, recorded with its epoch, and
/// listed oldest first — across a takeover too — and only for their own item.
pub async fn checkpoints_are_saved_and_listed_oldest_first(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("etl", 1), T0).await;
    let other = enqueue(s, new_item("other", 2), T0).await;
    let first = acquire(s, &req("worker-a").kinds(["etl"]), T0).await.lease;
    assert_eq!(first.item, id);
    let mut saved = Vec::new();
    for (n, name) in ["extract", "transform", "load"].into_iter().enumerate() {
        let cp = s
            .checkpoint_save(&first, name, json!({ "step": n }), at_s(n as i64 + 1))
            .await
            .expect("checkpoint_save");
        saved.push(cp);
    }
    assert!(
        saved.windows(2).all(|w| w[0] < w[1]),
        "checkpoint ids increase: {saved:?}"
    );

    s.items_reap_expired(
        &ReapRequest::new(10, STALE),
        &ScriptedLiveness::always(Liveness::Dead),
        at_s(31),
    )
    .await
    .expect("reap");
    let second = acquire(s, &req("worker-b").kinds(["etl"]), at_s(32))
        .await
        .lease;
    assert_eq!(second.item, id);
    let resumed = s
        .checkpoint_save(
            &second,
            "load",
            json!({ "step": 2, "retry": true }),
            at_s(33),
        )
        .await
        .expect("checkpoint_save by the new holder");
    assert!(resumed > saved[2]);

    let list = s.checkpoints_list(id).await.expect("checkpoints_list");
    let got: Vec<_> = list
        .iter()
        .map(|c| (c.id, c.item, c.epoch, c.name.as_str(), c.created_at))
        .collect();
    assert_eq!(
        got,
        vec![
            (saved[0], id, first.epoch, "extract", at_s(1)),
            (saved[1], id, first.epoch, "transform", at_s(2)),
            (saved[2], id, first.epoch, "load", at_s(3)),
            (resumed, id, second.epoch, "load", at_s(33)),
        ]
    );
    assert_eq!(list[1].payload, json!({ "step": 1 }));
    assert_eq!(list[3].payload, json!({ "step": 2, "retry": true }));
    assert!(s
        .checkpoints_list(other)
        .await
        .expect("checkpoints_list")
        .is_empty());
}

/// The holder's progress report is stored on the item (the latest wins); another epoch's is
/// refused.
pub async fn progress_report_is_stored_and_fenced(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("long", 1), T0).await;
    let lease = acquire(s, &req("worker-a"), T0).await.lease;
    assert_eq!(get(s, id).await.progress, None);
    s.item_progress(&lease, json!({ "done": 10, "of": 100 }), at_s(1))
        .await
        .expect("item_progress");
    assert_eq!(
        get(s, id).await.progress,
        Some(json!({ "done": 10, "of": 100 }))
    );
    s.item_progress(&lease, json!({ "done": 50, "of": 100 }), at_s(2))
        .await
        .expect("item_progress");
    let item = get(s, id).await;
    assert_eq!(item.progress, Some(json!({ "done": 50, "of": 100 })));
    assert_eq!(item.status, ItemStatus::InProgress);

    let stale = leasehold_core::LeaseRef {
        epoch: lease.epoch + 1,
        ..lease.clone()
    };
    expect_lease_lost(
        s.item_progress(&stale, json!({ "done": 99 }), at_s(3))
            .await,
        &stale,
        "item_progress with another epoch",
    );
    assert_eq!(get(s, id).await, item);
}

/// An item's own execution timeout is stored at enqueue (alone or in a batch) and comes back,
/// to the millisecond, from every read and from the acquisition that hands the item to a
/// worker on any node; an item without one reads `None`.
pub async fn item_timeout_is_stored_and_returned_by_reads_and_acquisition(store: Arc<dyn Store>) {
    let s = &*store;
    let timed = new_item("a", 1).timeout(Duration::from_millis(2500));
    let one = enqueue(s, timed.clone().priority(1), T0).await;
    let batch = s
        .items_enqueue(
            vec![new_item("a", 2), timed.timeout(Duration::from_secs(3600))],
            T0,
        )
        .await
        .expect("items_enqueue");
    let want = [
        (one, Some(Duration::from_millis(2500))),
        (batch[0], None),
        (batch[1], Some(Duration::from_secs(3600))),
    ];
    for (id, timeout) in want {
        assert_eq!(get(s, id).await.timeout, timeout, "item_get of item {id}");
    }
    let listed = s
        .items_list(&ItemFilter::default())
        .await
        .expect("items_list");
    for (id, timeout) in want {
        let it = listed.iter().find(|i| i.id == id).expect("listed");
        assert_eq!(it.timeout, timeout, "items_list of item {id}");
    }
    let leased = acquire(s, &req("worker-a"), T0).await;
    assert_eq!(leased.item.id, one, "the highest priority first");
    assert_eq!(
        leased.item.timeout,
        Some(Duration::from_millis(2500)),
        "the acquisition hands the timeout to the worker"
    );
    s.item_fail(
        &leased.lease,
        "timed out after 2.5 s",
        FailDisposition::Retry {
            delay: Duration::ZERO,
        },
        at_s(3),
    )
    .await
    .expect("fail");
    assert_eq!(
        get(s, one).await.timeout,
        Some(Duration::from_millis(2500)),
        "a retry keeps the item's timeout"
    );
}
