//! `recover_mine` (invariant 6): a (re)starting owner takes back everything it still holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use leasehold_core::{AcquireRequest, ItemStatus, RecoveredItem, Store};
use serde_json::json;

use crate::support::{
    acquire, assert_every_write_fenced, at_s, enqueue, get, new_item, req, LEASE, T0,
};

/// `recover_mine` requeues every in-progress item of the owner — whatever its lease says —
/// bumping the epoch and keeping the attempt counted, dead-letters those whose attempts are
/// spent (with an error), reports each, and leaves other owners' items alone.
pub async fn recover_mine_requeues_the_owners_items_and_dead_letters_spent_ones(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let requeue = enqueue(s, new_item("a", 1).max_attempts(3), T0).await;
    let spent = enqueue(s, new_item("b", 2).max_attempts(1), T0).await;
    let others = enqueue(s, new_item("c", 3), T0).await;
    let waiting = enqueue(s, new_item("d", 4), T0).await;
    let a = req("worker-a");
    let l1 = acquire(s, &a.clone().kinds(["a"]), T0).await;
    let l2 = acquire(s, &a.kinds(["b"]), T0).await;
    let l3 = acquire(s, &req("worker-b").kinds(["c"]), T0).await;
    let waiting_before = get(s, waiting).await;

    // Well within the lease: recover_mine does not wait for expiry.
    let recovered = s
        .items_recover_owner("worker-a", at_s(5))
        .await
        .expect("recover_mine");
    let by_id: BTreeMap<_, _> = recovered.iter().map(|r| (r.id, r.clone())).collect();
    assert_eq!(
        recovered.len(),
        2,
        "both of worker-a's items: {recovered:?}"
    );
    assert_eq!(
        by_id.get(&requeue),
        Some(&RecoveredItem {
            id: requeue,
            kind: "a".into(),
            previous_owner: "worker-a".into(),
            previous_epoch: 1,
            attempts: 1,
            max_attempts: 3,
            dead_lettered: false,
        })
    );
    assert_eq!(
        by_id.get(&spent).map(|r| r.dead_lettered),
        Some(true),
        "an item whose attempts are spent is dead-lettered"
    );

    let item = get(s, requeue).await;
    assert_eq!(item.status, ItemStatus::Pending);
    assert_eq!(item.epoch, 2, "a requeue bumps the epoch");
    assert_eq!(item.attempts, 1, "the lost attempt stays counted");
    assert_eq!(item.lease(), None);
    assert!(item.run_at <= at_s(5), "a recovered item is ready at once");
    let item = get(s, spent).await;
    assert_eq!(item.status, ItemStatus::Failed);
    assert_eq!(item.attempts, 1);
    assert!(
        item.error.is_some(),
        "a dead-lettered item carries an error"
    );

    assert_eq!(
        get(s, others).await,
        l3.item,
        "another owner's item is untouched"
    );
    assert_eq!(
        get(s, waiting).await,
        waiting_before,
        "a pending item is untouched"
    );
    assert!(s
        .leases_of_owner("worker-a")
        .await
        .expect("leases_of_owner")
        .is_empty());
    assert_eq!(
        s.leases_of_owner("worker-b")
            .await
            .expect("leases_of_owner")
            .len(),
        1
    );
    assert!(
        s.items_recover_owner("worker-a", at_s(6))
            .await
            .expect("recover_mine")
            .is_empty(),
        "a second recovery finds nothing"
    );
    assert!(l1.lease.epoch < get(s, requeue).await.epoch);
    assert_eq!(by_id[&spent].previous_epoch, l2.lease.epoch);
}

/// After `recover_mine`, the previous incarnation's leases are fenced out — even after the
/// same owner id acquires the item again — and the new lease works.
pub async fn recover_mine_fences_out_the_previous_incarnation(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("a", 1), T0).await;
    let old = acquire(s, &req("worker-a"), T0).await.lease;
    s.checkpoint_save(&old, "step", json!(1), at_s(1))
        .await
        .expect("checkpoint");
    s.items_recover_owner("worker-a", at_s(2))
        .await
        .expect("recover_mine");
    assert_every_write_fenced(s, &old, at_s(3)).await;

    let new = acquire(s, &req("worker-a"), at_s(4)).await;
    assert_eq!(new.item.id, id);
    assert!(
        new.lease.epoch > old.epoch + 1,
        "requeue and acquisition both bump"
    );
    assert_eq!(new.item.attempts, 2);
    assert_every_write_fenced(s, &old, at_s(5)).await;
    s.item_complete(&new.lease, json!("ok"), at_s(6))
        .await
        .expect("the new lease completes");
}

/// Recovering a dead node incarnation takes back what any of its workers held — before the
/// leases expire — and fences the old leases out, while the same node id's next incarnation
/// and other nodes keep theirs.
pub async fn recover_node_takes_back_only_that_incarnations_items(store: Arc<dyn Store>) {
    let s = &*store;
    for n in 0..4 {
        enqueue(s, new_item("a", n), T0).await;
    }
    let dead_w0 = AcquireRequest::new("n1/w0", LEASE).node("n1", 7);
    let dead_w1 = AcquireRequest::new("n1/w1", LEASE).node("n1", 7);
    let successor = AcquireRequest::new("n1/w0", LEASE).node("n1", 8);
    let other = AcquireRequest::new("n2/w0", LEASE).node("n2", 7);
    let d0 = acquire(s, &dead_w0, T0).await;
    let d1 = acquire(s, &dead_w1, T0).await;
    let kept = acquire(s, &successor, T0).await;
    let theirs = acquire(s, &other, T0).await;

    let recovered = s
        .items_recover_node("n1", 7, at_s(1), at_s(1))
        .await
        .expect("items_recover_node");
    let mut ids: Vec<_> = recovered.iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(ids, vec![d0.item.id, d1.item.id], "{recovered:?}");
    for lease in [&d0.lease, &d1.lease] {
        let item = get(s, lease.item).await;
        assert_eq!(item.status, ItemStatus::Pending);
        assert!(item.epoch > lease.epoch, "a requeue bumps the epoch");
        assert_every_write_fenced(s, lease, at_s(2)).await;
    }
    assert_eq!(
        get(s, kept.item.id).await,
        kept.item,
        "the next incarnation keeps its item"
    );
    assert_eq!(
        get(s, theirs.item.id).await,
        theirs.item,
        "another node keeps its item"
    );
    assert!(s
        .items_recover_node("n1", 7, at_s(3), at_s(3))
        .await
        .expect("items_recover_node")
        .is_empty());
}

/// The monitor's rule, store side: of a dead incarnation's items, only those whose own last
/// heartbeat is before the cut-off are taken back. An item its worker renewed since (the
/// registry row can lag the leases' heartbeats) keeps its lease and its epoch.
pub async fn recover_node_leaves_items_whose_own_heartbeat_is_fresh(store: Arc<dyn Store>) {
    let s = &*store;
    for n in 0..2 {
        enqueue(s, new_item("a", n), T0).await;
    }
    let w0 = AcquireRequest::new("n1/w0", LEASE).node("n1", 7);
    let w1 = AcquireRequest::new("n1/w1", LEASE).node("n1", 7);
    let silent = acquire(s, &w0, T0).await;
    let renewed = acquire(s, &w1, T0).await;
    s.lease_renew(&renewed.lease, LEASE, at_s(40))
        .await
        .expect("the live worker renews");
    let before = get(s, renewed.item.id).await;

    // The cut-off: heartbeats before T0 + 30 s count as silent; at_s(40) does not.
    let recovered = s
        .items_recover_node("n1", 7, at_s(30), at_s(60))
        .await
        .expect("items_recover_node");
    let ids: Vec<_> = recovered.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        vec![silent.item.id],
        "only the silent item: {recovered:?}"
    );
    assert_eq!(get(s, silent.item.id).await.status, ItemStatus::Pending);
    assert_eq!(
        get(s, renewed.item.id).await,
        before,
        "the renewed item keeps its lease, epoch and heartbeat"
    );
    s.item_complete(&renewed.lease, json!("done"), at_s(61))
        .await
        .expect("its worker completes it under the same lease");

    // A heartbeat exactly at the cut-off is not before it.
    let third = enqueue(s, new_item("b", 9), at_s(70)).await;
    let at_cut = acquire(s, &w0.kinds(["b"]), at_s(70)).await;
    assert_eq!(at_cut.item.id, third);
    assert!(s
        .items_recover_node("n1", 7, at_s(70), at_s(100))
        .await
        .expect("items_recover_node")
        .is_empty());
}
