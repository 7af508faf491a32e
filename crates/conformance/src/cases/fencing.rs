//! Invariant 3, fenced writes: every write by a holder carries (owner, epoch), and a holder
//! whose lease was taken over, finished or released gets `LeaseLost` and changes nothing.

use std::sync::Arc;

use leasehold_core::{FailDisposition, ItemStatus, LeaseRef, Liveness, ReapRequest, Store};
use serde_json::json;

use crate::support::{
    acquire, assert_every_write_fenced, at_s, enqueue, expect_lease_lost, get, new_item, req,
    ScriptedLiveness, LEASE, STALE, T0,
};

/// The zombie story of River, Oban and graphile-worker: A's lease expires, the reaper requeues
/// the item, B acquires it; A, still running, tries to complete and is refused, and B's
/// completion is the one that counts.
pub async fn zombie_cannot_complete_after_takeover(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("email", 1), T0).await;
    let zombie = acquire(s, &req("worker-a"), T0).await.lease;

    let dead = ScriptedLiveness::always(Liveness::Dead);
    let stats = s
        .items_reap_expired(&ReapRequest::new(10, STALE), &dead, at_s(31))
        .await
        .expect("reap");
    assert_eq!(
        stats.recovered, 1,
        "the expired lease of a dead owner is requeued"
    );
    let successor = acquire(s, &req("worker-b"), at_s(32)).await;
    assert!(successor.lease.epoch > zombie.epoch);

    expect_lease_lost(
        s.item_complete(&zombie, json!({ "by": "zombie" }), at_s(33))
            .await,
        &zombie,
        "the zombie's item_complete",
    );
    let item = get(s, id).await;
    assert_eq!(item.status, ItemStatus::InProgress);
    assert_eq!(item.owner.as_deref(), Some("worker-b"));
    assert_eq!(item.output, None, "the zombie's output was not stored");

    s.item_complete(&successor.lease, json!({ "by": "successor" }), at_s(34))
        .await
        .expect("the successor completes");
    let item = get(s, id).await;
    assert_eq!(item.status, ItemStatus::Completed);
    assert_eq!(item.output, Some(json!({ "by": "successor" })));
    expect_lease_lost(
        s.item_complete(&zombie, json!({ "by": "zombie" }), at_s(35))
            .await,
        &zombie,
        "the zombie's item_complete after the successor finished",
    );
    assert_eq!(get(s, id).await.output, Some(json!({ "by": "successor" })));
}

/// After a reap and another owner's acquisition, the old holder's stale epoch cannot renew,
/// complete, fail, release, save a checkpoint or report progress; the successor's lease still
/// works afterwards.
pub async fn stale_epoch_after_reap_and_takeover_cannot_write(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("report", 1), T0).await;
    let old = acquire(s, &req("worker-a"), T0).await.lease;
    s.checkpoint_save(&old, "step-1", json!({ "rows": 10 }), at_s(5))
        .await
        .expect("the holder checkpoints");

    let stats = s
        .items_reap_expired(
            &ReapRequest::new(10, STALE),
            &ScriptedLiveness::always(Liveness::Dead),
            at_s(40),
        )
        .await
        .expect("reap");
    assert_eq!(stats.recovered, 1);
    let new = acquire(s, &req("worker-b"), at_s(41)).await;
    assert_eq!(new.item.id, id);
    assert!(
        new.lease.epoch > old.epoch,
        "every acquisition increments the epoch ({} after {})",
        new.lease.epoch,
        old.epoch
    );
    s.checkpoint_save(&new.lease, "step-1", json!({ "rows": 20 }), at_s(42))
        .await
        .expect("the new holder checkpoints");

    assert_every_write_fenced(s, &old, at_s(43)).await;

    s.lease_renew(&new.lease, LEASE, at_s(44))
        .await
        .expect("the successor still renews");
    s.item_complete(&new.lease, json!("done"), at_s(45))
        .await
        .expect("the successor still completes");
}

/// After `recover_mine` and a re-acquisition — even by the same owner id, as a restarted worker
/// does — the previous incarnation's epoch is refused on every write.
pub async fn stale_epoch_after_recover_mine_and_reacquisition_cannot_write(store: Arc<dyn Store>) {
    let s = &*store;
    enqueue(s, new_item("report", 1), T0).await;
    let old = acquire(s, &req("worker-a"), T0).await.lease;

    let recovered = s
        .items_recover_owner("worker-a", at_s(5))
        .await
        .expect("recover_mine");
    assert_eq!(recovered.len(), 1);
    let again = acquire(s, &req("worker-a"), at_s(6)).await;
    assert_eq!(again.lease.owner, old.owner);
    assert!(again.lease.epoch > old.epoch);

    assert_every_write_fenced(s, &old, at_s(7)).await;

    s.item_complete(&again.lease, json!("done"), at_s(8))
        .await
        .expect("the new incarnation completes");
}

/// A lease taken back by the reaper is fenced even before anyone acquires the item again: the
/// item stays pending and the old holder cannot complete it.
pub async fn stale_lease_of_a_requeued_pending_item_cannot_write(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("email", 1), T0).await;
    let old = acquire(s, &req("worker-a"), T0).await.lease;
    s.items_reap_expired(
        &ReapRequest::new(10, STALE),
        &ScriptedLiveness::always(Liveness::Dead),
        at_s(31),
    )
    .await
    .expect("reap");
    assert_eq!(get(s, id).await.status, ItemStatus::Pending);

    assert_every_write_fenced(s, &old, at_s(32)).await;
    assert_eq!(get(s, id).await.status, ItemStatus::Pending);
}

/// Another owner presenting the current epoch is refused on every write; the real holder's
/// lease is unaffected.
pub async fn wrong_owner_with_the_current_epoch_cannot_write(store: Arc<dyn Store>) {
    let s = &*store;
    enqueue(s, new_item("email", 1), T0).await;
    let real = acquire(s, &req("worker-a"), T0).await.lease;
    let impostor = LeaseRef {
        owner: "worker-b".into(),
        ..real.clone()
    };
    assert_every_write_fenced(s, &impostor, at_s(1)).await;
    s.item_complete(&real, json!("ok"), at_s(2))
        .await
        .expect("the holder completes");
}

/// The holder presenting any epoch but its own (an older or a future one) is refused.
pub async fn current_owner_with_another_epoch_cannot_write(store: Arc<dyn Store>) {
    let s = &*store;
    enqueue(s, new_item("email", 1), T0).await;
    let real = acquire(s, &req("worker-a"), T0).await.lease;
    for epoch in [real.epoch - 1, real.epoch + 1] {
        let wrong = LeaseRef {
            epoch,
            ..real.clone()
        };
        assert_every_write_fenced(s, &wrong, at_s(1)).await;
    }
    s.item_complete(&real, json!("ok"), at_s(2))
        .await
        .expect("the holder completes");
}

/// Once the holder has completed, failed or released the item, its lease is spent: a second
/// complete does not overwrite the output, and no write goes through.
pub async fn finished_or_released_lease_refuses_further_writes(store: Arc<dyn Store>) {
    let s = &*store;
    let done = enqueue(s, new_item("a", 1), T0).await;
    let dead = enqueue(s, new_item("b", 2), T0).await;
    let given_back = enqueue(s, new_item("c", 3), T0).await;
    let owner = req("worker-a");

    let l = acquire(s, &owner.clone().kinds(["a"]), T0).await.lease;
    s.item_complete(&l, json!("first"), at_s(1))
        .await
        .expect("complete");
    expect_lease_lost(
        s.item_complete(&l, json!("second"), at_s(2)).await,
        &l,
        "a second item_complete",
    );
    assert_eq!(get(s, done).await.output, Some(json!("first")));
    assert_every_write_fenced(s, &l, at_s(2)).await;

    let l = acquire(s, &owner.clone().kinds(["b"]), T0).await.lease;
    s.item_fail(&l, "bad input", FailDisposition::Permanent, at_s(1))
        .await
        .expect("fail");
    assert_every_write_fenced(s, &l, at_s(2)).await;
    assert_eq!(get(s, dead).await.error.as_deref(), Some("bad input"));

    let l = acquire(s, &owner.kinds(["c"]), T0).await.lease;
    s.item_release(&l, None, at_s(1)).await.expect("release");
    assert_every_write_fenced(s, &l, at_s(2)).await;
    assert_eq!(get(s, given_back).await.status, ItemStatus::Pending);
}
