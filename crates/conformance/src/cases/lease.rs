//! The lease lifecycle: enqueue → acquire → renew → complete.

use std::sync::Arc;

use leasehold_core::{AcquireRequest, ItemStatus, LeaseRef, NewItem, Store};
use serde_json::json;

use crate::support::{acquire, at_s, get, req, secs, LEASE, T0};

/// Enqueue stores a pending item; acquire leases it (in_progress, owner and node recorded,
/// epoch 1, attempts 1, expiry `now + lease`, heartbeat `now`); renew extends the lease from
/// the renewal time; complete stores the output and finishes the item.
pub async fn lease_lifecycle_acquire_renew_complete(store: Arc<dyn Store>) {
    let store = &*store;
    let input = json!({ "to": "a@b.c", "subject": "hi" });
    let id = store
        .item_enqueue(NewItem::new("email", input.clone()), T0)
        .await
        .expect("enqueue");

    let item = get(store, id).await;
    assert_eq!(item.id, id);
    assert_eq!(item.kind, "email");
    assert_eq!(item.input, input);
    assert_eq!(item.status, ItemStatus::Pending);
    assert_eq!(item.attempts, 0);
    assert_eq!(item.max_attempts, NewItem::DEFAULT_MAX_ATTEMPTS);
    assert_eq!(item.priority, 0);
    assert_eq!(
        item.run_at, T0,
        "an undelayed item is ready at enqueue time"
    );
    assert_eq!(item.epoch, 0, "no acquisition yet");
    assert_eq!(item.owner, None);
    assert_eq!(item.lease_expires_at, None);
    assert_eq!(item.output, None);
    assert_eq!(item.error, None);
    assert_eq!(item.created_at, T0);
    assert_eq!(item.finished_at, None);
    assert_eq!(item.lease(), None);

    let t1 = at_s(1);
    let request = AcquireRequest::new("node-a/pool/0", LEASE).node("node-a", 7);
    let leased = acquire(store, &request, t1).await;
    let lease = LeaseRef {
        item: id,
        owner: "node-a/pool/0".into(),
        epoch: 1,
    };
    assert_eq!(
        leased.lease, lease,
        "the lease names item, owner and epoch 1"
    );
    assert_eq!(leased.expires_at, t1.plus(LEASE));
    let held = &leased.item;
    assert_eq!(held.id, id);
    assert_eq!(held.status, ItemStatus::InProgress);
    assert_eq!(held.owner.as_deref(), Some("node-a/pool/0"));
    assert_eq!(held.owner_node.as_deref(), Some("node-a"));
    assert_eq!(held.owner_incarnation, Some(7));
    assert_eq!(held.epoch, 1);
    assert_eq!(held.attempts, 1);
    assert_eq!(held.lease_expires_at, Some(t1.plus(LEASE)));
    assert_eq!(held.last_heartbeat_at, Some(t1));
    assert_eq!(held.lease(), Some(lease.clone()));
    assert_eq!(
        get(store, id).await,
        leased.item,
        "the acquired item is returned as stored"
    );

    let t11 = at_s(11);
    let expiry = store
        .lease_renew(&lease, LEASE, t11)
        .await
        .expect("the holder renews");
    assert_eq!(
        expiry,
        t11.plus(LEASE),
        "renewal extends from the renewal time"
    );
    let renewed = get(store, id).await;
    assert_eq!(renewed.lease_expires_at, Some(t11.plus(LEASE)));
    assert_eq!(renewed.last_heartbeat_at, Some(t11));
    assert_eq!(
        (renewed.status, renewed.epoch, renewed.attempts),
        (ItemStatus::InProgress, 1, 1),
        "renewal changes neither epoch nor attempts"
    );

    // A longer renewal than the lease is allowed: the holder chooses the duration.
    let expiry = store
        .lease_renew(&lease, secs(120), at_s(12))
        .await
        .expect("the holder renews for longer");
    assert_eq!(expiry, at_s(12).plus(secs(120)));

    let output = json!({ "sent": true, "message_id": "m-1" });
    let t20 = at_s(20);
    store
        .item_complete(&lease, output.clone(), t20)
        .await
        .expect("the holder completes");
    let done = get(store, id).await;
    assert_eq!(done.status, ItemStatus::Completed);
    assert_eq!(done.output, Some(output));
    assert_eq!(done.finished_at, Some(t20));
    assert_eq!((done.epoch, done.attempts), (1, 1));
    assert_eq!(done.error, None);
    assert_eq!(done.lease(), None, "a completed item has no lease");
    assert!(
        store
            .leases_of_owner("node-a/pool/0")
            .await
            .expect("leases_of_owner")
            .is_empty(),
        "a completed item is no longer among its owner's leases"
    );
}

/// `leases_renew_owner` extends every in-progress lease of that owner (and counts them), and
/// no other owner's.
pub async fn renew_owner_extends_every_lease_of_that_owner_only(store: Arc<dyn Store>) {
    let store = &*store;
    let ids = crate::support::enqueue_n(store, "job", 4, T0).await;
    let a = req("worker-a");
    let b = req("worker-b");
    let a1 = acquire(store, &a, T0).await;
    let a2 = acquire(store, &a, T0).await;
    let b1 = acquire(store, &b, T0).await;
    let a3 = acquire(store, &a, T0).await;
    store
        .item_complete(&a3.lease, json!(null), at_s(1))
        .await
        .expect("complete");
    assert_eq!(ids.len(), 4);

    let t = at_s(20);
    let n = store
        .leases_renew_owner("worker-a", secs(60), t)
        .await
        .expect("leases_renew_owner");
    assert_eq!(n, 2, "worker-a holds two in-progress items");
    for l in [&a1, &a2] {
        let item = get(store, l.item.id).await;
        assert_eq!(item.lease_expires_at, Some(t.plus(secs(60))));
        assert_eq!(item.last_heartbeat_at, Some(t));
        assert_eq!(item.epoch, 1, "renewal does not bump the epoch");
    }
    let other = get(store, b1.item.id).await;
    assert_eq!(
        other, b1.item,
        "another owner's lease is not touched by worker-a's renewal"
    );
    let done = get(store, a3.item.id).await;
    assert_eq!(done.status, ItemStatus::Completed);
    assert_eq!(
        store
            .leases_renew_owner("nobody", secs(60), t)
            .await
            .expect("leases_renew_owner"),
        0
    );
}

/// `ping` answers on a fresh store.
pub async fn ping_answers_on_a_fresh_store(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    assert_eq!(
        store.items_count().await.expect("items_count").total(),
        0,
        "a fresh store is empty"
    );
}

/// A lease past its expiry that nobody has taken yet is still its holder's: a renewal (one, or
/// the owner's all at once) extends it from the renewal time, epoch unchanged. Expiry alone
/// takes nothing; only a reap, a recovery or the monitor does.
pub async fn an_expired_lease_not_yet_taken_can_still_be_renewed(store: Arc<dyn Store>) {
    let store = &*store;
    let held = crate::support::enqueue_n(store, "job", 1, T0).await;
    assert_eq!(held.len(), 1);
    let leased = acquire(store, &req("worker-a"), T0).await;
    let late = at_s(40);
    assert!(
        store
            .lease_status(leased.item.id, late)
            .await
            .expect("lease_status")
            .expired,
        "the lease ran out at 30 s"
    );
    let until = store
        .lease_renew(&leased.lease, LEASE, late)
        .await
        .expect("an expired, untaken lease renews");
    assert_eq!(until, late.plus(LEASE));
    let n = store
        .leases_renew_owner("worker-a", LEASE, at_s(50))
        .await
        .expect("leases_renew_owner");
    assert_eq!(n, 1);
    let item = get(store, leased.item.id).await;
    assert_eq!(
        (item.status, item.epoch, item.lease_expires_at),
        (ItemStatus::InProgress, 1, Some(at_s(50).plus(LEASE)))
    );
}
