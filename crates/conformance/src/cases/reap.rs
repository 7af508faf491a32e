//! The reaper's store side (invariant 5): an expired lease is requeued only when its owner is
//! not alive, or past the hard stale limit; spent items are dead-lettered; a renewal during the
//! sweep wins; a dry run changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{
    AcquireRequest, FailDisposition, Item, ItemFilter, ItemId, ItemStatus, Liveness, ReapCandidate,
    ReapRequest, RecoveredItem, RecoveryStats, RegistryLiveness, Store,
};
use serde_json::json;

use crate::support::{
    acquire, assert_every_write_fenced, at, at_s, enqueue, enqueue_n, get, new_item, node, req,
    secs, RenewingLiveness, ScriptedLiveness, LEASE, STALE, T0,
};

fn sweep(batch: u32) -> ReapRequest {
    ReapRequest::new(batch, STALE)
}

/// Every item, by id: what "changed nothing" is checked against.
async fn all_items(s: &dyn Store) -> Vec<Item> {
    s.items_list(&ItemFilter {
        limit: 1000,
        ..ItemFilter::default()
    })
    .await
    .expect("items_list")
}

/// The items a sweep reports, by id, as (dead_lettered) flags.
fn reported(stats: &RecoveryStats) -> BTreeMap<ItemId, bool> {
    stats
        .items
        .iter()
        .map(|r| (r.id, r.dead_lettered))
        .collect()
}

/// The counters of a sweep, without its duration and dry-run flag.
fn counters(stats: &RecoveryStats) -> [u64; 5] {
    [
        stats.expired_found,
        stats.recovered,
        stats.failed,
        stats.skipped_alive,
        stats.skipped_changed,
    ]
}

/// A lease that has not expired (and is within the stale limit) is neither counted nor asked
/// about nor touched, even with every owner judged dead.
pub async fn reap_leaves_an_unexpired_lease_alone(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("a", 1), T0).await;
    let leased = acquire(s, &req("worker-a"), T0).await;
    let dead = ScriptedLiveness::always(Liveness::Dead);
    let stats = s
        .items_reap_expired(&sweep(10), &dead, at(29_999))
        .await
        .expect("reap");
    assert_eq!(counters(&stats), [0; 5], "{stats:?}");
    assert!(stats.items.is_empty());
    assert!(!stats.dry_run);
    assert!(
        dead.asked().is_empty(),
        "no owner is asked about a live lease"
    );
    assert_eq!(get(s, id).await, leased.item);
}

/// An expired lease whose owner answers `Alive` is kept and counted `skipped_alive`; the owner
/// is asked with the item's lease as stored, and the holder can still finish.
pub async fn reap_keeps_an_expired_lease_whose_owner_is_alive(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("long-job", 1), T0).await;
    let request = AcquireRequest::new("node-a/w0", LEASE).node("node-a", 3);
    let leased = acquire(s, &request, T0).await;
    s.lease_renew(&leased.lease, LEASE, at_s(10))
        .await
        .expect("renew");
    let before = get(s, id).await;

    let alive = ScriptedLiveness::always(Liveness::Alive);
    let stats = s
        .items_reap_expired(&sweep(10), &alive, at_s(41))
        .await
        .expect("reap");
    assert_eq!(stats.expired_found, 1);
    assert_eq!(stats.skipped_alive, 1);
    assert_eq!(
        (stats.recovered, stats.failed, stats.skipped_changed),
        (0, 0, 0)
    );
    assert!(
        stats.items.is_empty(),
        "nothing was recovered: {:?}",
        stats.items
    );
    assert_eq!(
        alive.asked(),
        vec![ReapCandidate {
            item: id,
            kind: "long-job".into(),
            owner: "node-a/w0".into(),
            owner_node: Some("node-a".into()),
            owner_incarnation: Some(3),
            epoch: 1,
            lease_expires_at: Some(at_s(40)),
            last_heartbeat_at: Some(at_s(10)),
            attempts: 1,
            max_attempts: 3,
            past_stale_limit: false,
        }],
        "the owner is asked once, about the item as stored"
    );
    assert_eq!(
        get(s, id).await,
        before,
        "a live owner's item is left alone"
    );
    s.item_complete(&leased.lease, json!("finished late"), at_s(50))
        .await
        .expect("the live owner completes after its lease expired");
}

/// An expired lease (`lease_expires_at <= now`) whose owner is dead is requeued: pending, ready,
/// epoch bumped, the attempt still counted, reported; the old holder is fenced out.
pub async fn reap_requeues_an_expired_lease_whose_owner_is_dead(store: Arc<dyn Store>) {
    let s = &*store;
    let id = enqueue(s, new_item("email", 1), T0).await;
    let old = acquire(s, &req("worker-a"), T0).await.lease;

    let dead = ScriptedLiveness::always(Liveness::Dead);
    let now = T0.plus(LEASE); // exactly at expiry
    let stats = s
        .items_reap_expired(&sweep(10), &dead, now)
        .await
        .expect("reap");
    assert_eq!(stats.expired_found, 1, "{stats:?}");
    assert_eq!(stats.recovered, 1);
    assert_eq!(
        (stats.failed, stats.skipped_alive, stats.skipped_changed),
        (0, 0, 0)
    );
    assert!(!stats.dry_run);
    assert_eq!(
        stats.items,
        vec![RecoveredItem {
            id,
            kind: "email".into(),
            previous_owner: "worker-a".into(),
            previous_epoch: 1,
            attempts: 1,
            max_attempts: 3,
            dead_lettered: false,
        }]
    );
    assert_eq!(dead.asked().len(), 1);

    let item = get(s, id).await;
    assert_eq!(item.status, ItemStatus::Pending);
    assert_eq!(item.epoch, 2, "a requeue bumps the epoch");
    assert_eq!(item.attempts, 1, "a lost lease counts as an attempt");
    assert_eq!(item.lease(), None);
    assert!(item.run_at <= now, "a requeued item is ready at once");
    assert_every_write_fenced(s, &old, now.plus(secs(1))).await;

    let again = acquire(s, &req("worker-b"), now.plus(secs(2))).await;
    assert_eq!(again.item.id, id);
    assert_eq!((again.item.attempts, again.item.epoch), (2, 3));
}

/// An expired lease of a dead owner whose attempts are spent is dead-lettered with an error,
/// never requeued past its budget.
pub async fn reap_dead_letters_an_expired_lease_whose_attempts_are_spent(store: Arc<dyn Store>) {
    let s = &*store;
    let twice = enqueue(s, new_item("a", 1).max_attempts(2), T0).await;
    let once = enqueue(s, new_item("b", 2).max_attempts(1), T0).await;
    let first = acquire(s, &req("worker-a").kinds(["a"]), T0).await;
    s.item_fail(
        &first.lease,
        "transient",
        FailDisposition::Retry {
            delay: Duration::ZERO,
        },
        T0,
    )
    .await
    .expect("fail");
    let second = acquire(s, &req("worker-a").kinds(["a"]), T0).await;
    assert_eq!(second.item.attempts, 2);
    acquire(s, &req("worker-a").kinds(["b"]), T0).await;

    let stats = s
        .items_reap_expired(
            &sweep(10),
            &ScriptedLiveness::always(Liveness::Dead),
            at_s(31),
        )
        .await
        .expect("reap");
    assert_eq!(stats.expired_found, 2, "{stats:?}");
    assert_eq!((stats.failed, stats.recovered), (2, 0));
    assert_eq!(
        reported(&stats),
        BTreeMap::from([(twice, true), (once, true)])
    );
    for id in [twice, once] {
        let item = get(s, id).await;
        assert_eq!(item.status, ItemStatus::Failed);
        assert_eq!(item.attempts, item.max_attempts);
        assert!(
            item.error.as_deref().is_some_and(|e| !e.is_empty()),
            "a dead-lettered item keeps an error: {:?}",
            item.error
        );
        assert!(item.finished_at.is_some());
    }
    assert_every_write_fenced(s, &second.lease, at_s(32)).await;
}

/// Past the hard stale limit an item is taken whatever its owner would say — without asking —
/// even when its (long) lease has not expired; an expired item within the limit is still
/// judged by liveness, and a recent one is untouched.
pub async fn reap_takes_items_past_the_stale_limit_even_if_the_owner_is_alive(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let stale_after = secs(60);
    enqueue_n(s, "k", 4, T0).await;
    let owner = req("worker-a");
    // Expires at 30 s, heartbeat at 0 s.
    let expired_stale = acquire(s, &owner, T0).await.item.id;
    // Expires at 600 s, heartbeat at 0 s.
    let long = AcquireRequest {
        lease: secs(600),
        ..owner.clone()
    };
    let long_lease_stale = acquire(s, &long, T0).await.item.id;
    // Expires at 50 s, heartbeat at 20 s.
    let expired_recent = acquire(s, &owner, at_s(20)).await.item.id;
    // Expires at 70 s.
    let fresh = acquire(s, &owner, at_s(40)).await.item.id;

    let alive = ScriptedLiveness::always(Liveness::Alive);
    let stats = s
        .items_reap_expired(&ReapRequest::new(10, stale_after), &alive, at_s(61))
        .await
        .expect("reap");
    assert_eq!(stats.expired_found, 3, "{stats:?}");
    assert_eq!(stats.recovered, 2);
    assert_eq!(stats.skipped_alive, 1);
    assert_eq!(
        reported(&stats),
        BTreeMap::from([(expired_stale, false), (long_lease_stale, false)])
    );
    let asked: Vec<_> = alive.asked().into_iter().map(|c| c.item).collect();
    assert_eq!(
        asked,
        vec![expired_recent],
        "liveness is asked only about expired items within the stale limit"
    );
    assert_eq!(get(s, expired_stale).await.status, ItemStatus::Pending);
    assert_eq!(get(s, long_lease_stale).await.status, ItemStatus::Pending);
    assert_eq!(get(s, expired_recent).await.status, ItemStatus::InProgress);
    assert_eq!(get(s, fresh).await.status, ItemStatus::InProgress);
}

/// A dry run reports exactly what the real sweep then does — found, requeued, dead-lettered,
/// skipped, item by item — and changes nothing.
pub async fn reap_dry_run_reports_the_same_and_changes_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    let stale_after = secs(90);
    let unexpired = enqueue(s, new_item("u", 1), T0).await;
    let alive = enqueue(s, new_item("a", 2), T0).await;
    let dead = enqueue(s, new_item("d", 3), T0).await;
    let spent = enqueue(s, new_item("s", 4).max_attempts(1), T0).await;
    let stale = enqueue(s, new_item("p", 5), T0).await;
    acquire(s, &req("worker-alive").kinds(["p"]), T0).await; // past the stale limit at 100 s
    acquire(s, &req("worker-alive").kinds(["a"]), at_s(20)).await;
    acquire(s, &req("worker-dead").kinds(["d"]), at_s(20)).await;
    acquire(s, &req("worker-dead").kinds(["s"]), at_s(20)).await;
    acquire(s, &req("worker-dead").kinds(["u"]), at_s(80)).await; // expires at 110 s
    let liveness =
        || ScriptedLiveness::always(Liveness::Dead).with("worker-alive", Liveness::Alive);

    let before = all_items(s).await;
    let counts_before = s.items_count().await.expect("items_count");
    let mut request = ReapRequest::new(10, stale_after);
    request.dry_run = true;
    let dry = s
        .items_reap_expired(&request, &liveness(), at_s(100))
        .await
        .expect("dry-run reap");
    assert!(dry.dry_run);
    assert_eq!(counters(&dry), [4, 2, 1, 1, 0], "{dry:?}");
    let expected = BTreeMap::from([(dead, false), (stale, false), (spent, true)]);
    assert_eq!(reported(&dry), expected);
    assert_eq!(all_items(s).await, before, "a dry run changes no item");
    assert_eq!(s.items_count().await.expect("items_count"), counts_before);

    request.dry_run = false;
    let real = s
        .items_reap_expired(&request, &liveness(), at_s(100))
        .await
        .expect("reap");
    assert!(!real.dry_run);
    assert_eq!(counters(&real), counters(&dry), "{real:?}");
    let sorted = |st: &RecoveryStats| {
        let mut v = st.items.clone();
        v.sort_by_key(|r| r.id);
        v
    };
    assert_eq!(
        sorted(&real),
        sorted(&dry),
        "the dry run reported each item as done"
    );
    assert_eq!(get(s, dead).await.status, ItemStatus::Pending);
    assert_eq!(get(s, stale).await.status, ItemStatus::Pending);
    assert_eq!(get(s, spent).await.status, ItemStatus::Failed);
    assert_eq!(get(s, alive).await.status, ItemStatus::InProgress);
    assert_eq!(get(s, unexpired).await.status, ItemStatus::InProgress);
}

/// A sweep takes at most `batch` candidates; successive sweeps take the rest.
pub async fn reap_honours_the_batch_limit(store: Arc<dyn Store>) {
    let s = &*store;
    enqueue_n(s, "k", 5, T0).await;
    let got = s
        .items_acquire(&req("worker-a").limit(5), T0)
        .await
        .expect("acquire");
    assert_eq!(got.len(), 5);
    let dead = ScriptedLiveness::always(Liveness::Dead);
    let mut total = 0;
    for expected in [2, 2, 1, 0] {
        let stats = s
            .items_reap_expired(&sweep(2), &dead, at_s(31))
            .await
            .expect("reap");
        assert_eq!(stats.expired_found, expected, "{stats:?}");
        assert_eq!(stats.recovered, expected);
        assert_eq!(stats.items.len() as u64, expected);
        total += stats.recovered;
    }
    assert_eq!(total, 5);
    let counts = s.items_count().await.expect("items_count");
    assert_eq!((counts.pending, counts.in_progress), (5, 0));
}

/// The request's `max_attempts` dead-letters items whose attempts reached it when it is lower
/// than their own budget, and never lets an item run past its own budget when it is higher.
pub async fn reap_max_attempts_override_dead_letters_earlier_never_later(store: Arc<dyn Store>) {
    let s = &*store;
    let reached = enqueue(s, new_item("a", 1).max_attempts(5), T0).await;
    let below = enqueue(s, new_item("b", 2).max_attempts(5), T0).await;
    let own_budget = enqueue(s, new_item("c", 3).max_attempts(1), T0).await;
    let first = acquire(s, &req("worker-a").kinds(["a"]), T0).await;
    s.item_fail(
        &first.lease,
        "transient",
        FailDisposition::Retry {
            delay: Duration::ZERO,
        },
        T0,
    )
    .await
    .expect("fail");
    assert_eq!(
        acquire(s, &req("worker-a").kinds(["a"]), T0)
            .await
            .item
            .attempts,
        2
    );
    acquire(s, &req("worker-a").kinds(["b"]), T0).await;
    acquire(s, &req("worker-a").kinds(["c"]), T0).await;

    let dead = ScriptedLiveness::always(Liveness::Dead);
    let mut request = sweep(10);
    request.max_attempts = Some(2);
    let stats = s
        .items_reap_expired(&request, &dead, at_s(31))
        .await
        .expect("reap");
    assert_eq!((stats.failed, stats.recovered), (2, 1), "{stats:?}");
    assert_eq!(
        reported(&stats),
        BTreeMap::from([(reached, true), (below, false), (own_budget, true)])
    );
    assert_eq!(get(s, reached).await.status, ItemStatus::Failed);
    assert_eq!(get(s, below).await.status, ItemStatus::Pending);
    assert_eq!(get(s, own_budget).await.status, ItemStatus::Failed);

    // A limit above the item's budget does not extend it.
    let spent = enqueue(s, new_item("d", 4).max_attempts(1), at_s(40)).await;
    acquire(s, &req("worker-a").kinds(["d"]), at_s(40)).await;
    request.max_attempts = Some(10);
    let stats = s
        .items_reap_expired(&request, &dead, at_s(71))
        .await
        .expect("reap");
    assert_eq!(reported(&stats).get(&spent), Some(&true), "{stats:?}");
    assert_eq!(get(s, spent).await.status, ItemStatus::Failed);
}

/// An owner's renewal that lands between the sweep's scan and its write wins: the item is
/// neither requeued nor dead-lettered, is counted `skipped_changed`, and the holder keeps its
/// renewed lease.
pub async fn reap_renewal_between_scan_and_write_wins(store: Arc<dyn Store>) {
    let s = &*store;
    let plain = enqueue(s, new_item("a", 1), T0).await;
    let spent = enqueue(s, new_item("b", 2).max_attempts(1), T0).await;
    let l1 = acquire(s, &req("worker-a").kinds(["a"]), T0).await.lease;
    let l2 = acquire(s, &req("worker-a").kinds(["b"]), T0).await.lease;

    let now = at_s(31);
    let renewing = RenewingLiveness::new(Arc::clone(&store), now);
    let stats = s
        .items_reap_expired(&sweep(10), &renewing, now)
        .await
        .expect("reap");
    assert_eq!(renewing.renewed().len(), 2, "the owner renewed both leases");
    assert_eq!(stats.expired_found, 2, "{stats:?}");
    assert_eq!(stats.skipped_changed, 2, "{stats:?}");
    assert_eq!((stats.recovered, stats.failed), (0, 0), "{stats:?}");
    assert!(stats.items.is_empty(), "{:?}", stats.items);
    for (id, lease) in [(plain, &l1), (spent, &l2)] {
        let item = get(s, id).await;
        assert_eq!(item.status, ItemStatus::InProgress);
        assert_eq!(item.epoch, lease.epoch);
        assert_eq!(item.lease_expires_at, Some(now.plus(LEASE)));
        s.item_complete(lease, json!("ok"), now.plus(secs(1)))
            .await
            .expect("the holder that renewed completes");
    }
}

/// With [`RegistryLiveness`], an expired lease held under a node that heartbeats is kept, and
/// those held under a silent node or under a previous incarnation of a live node are requeued.
pub async fn reap_with_registry_liveness_spares_live_nodes_and_requeues_dead_ones(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let ids = enqueue_n(s, "k", 3, T0).await;
    let on_live = acquire(s, &AcquireRequest::new("a/w0", LEASE).node("node-a", 2), T0).await;
    let on_silent = acquire(s, &AcquireRequest::new("b/w0", LEASE).node("node-b", 1), T0).await;
    let on_previous = acquire(s, &AcquireRequest::new("a/w1", LEASE).node("node-a", 1), T0).await;
    assert_eq!(
        vec![on_live.item.id, on_silent.item.id, on_previous.item.id],
        ids
    );
    let now = at_s(45);
    s.node_heartbeat(&node("node-a", 2, at_s(40)))
        .await
        .expect("heartbeat");
    s.node_heartbeat(&node("node-b", 1, T0))
        .await
        .expect("heartbeat");

    let registry = RegistryLiveness::new(Arc::clone(&store), 3, now);
    let stats = s
        .items_reap_expired(&sweep(10), &registry, now)
        .await
        .expect("reap");
    assert_eq!(stats.expired_found, 3, "{stats:?}");
    assert_eq!((stats.skipped_alive, stats.recovered), (1, 2), "{stats:?}");
    assert_eq!(
        reported(&stats),
        BTreeMap::from([(on_silent.item.id, false), (on_previous.item.id, false)])
    );
    assert_eq!(get(s, on_live.item.id).await.status, ItemStatus::InProgress);
}

/// A full batch of expired items whose owners are alive does not hide the expired items behind
/// it: each batch reports where it stopped (`next`), and a sweep continued from there reaches
/// the dead owner's items. The last batch reports no continuation.
pub async fn reap_continues_past_a_full_batch_of_live_owners(store: Arc<dyn Store>) {
    let s = &*store;
    enqueue_n(s, "k", 5, T0).await;
    // The live owner's three leases expire first, the dead owner's two later.
    let live = s
        .items_acquire(&req("worker-live").limit(3), T0)
        .await
        .expect("acquire");
    assert_eq!(live.len(), 3);
    let dead = s
        .items_acquire(&req("worker-dead").limit(2), at_s(1))
        .await
        .expect("acquire");
    assert_eq!(dead.len(), 2);
    let liveness = ScriptedLiveness::always(Liveness::Dead).with("worker-live", Liveness::Alive);

    let first = s
        .items_reap_expired(&sweep(3), &liveness, at_s(40))
        .await
        .expect("reap");
    assert_eq!(
        (first.expired_found, first.skipped_alive, first.recovered),
        (3, 3, 0),
        "{first:?}"
    );
    assert!(first.next.is_some(), "a full batch says where it stopped");
    let again = s
        .items_reap_expired(&sweep(3), &liveness, at_s(40))
        .await
        .expect("reap");
    assert_eq!(
        again.recovered, 0,
        "from the start, the live owner's items fill the batch"
    );

    let second = s
        .items_reap_expired(&sweep(3).after(first.next), &liveness, at_s(40))
        .await
        .expect("reap");
    assert_eq!(
        (second.expired_found, second.recovered),
        (2, 2),
        "{second:?}"
    );
    assert_eq!(second.next, None, "the scan reached the end");
    for l in &dead {
        assert_eq!(get(s, l.item.id).await.status, ItemStatus::Pending);
    }
    for l in &live {
        assert_eq!(get(s, l.item.id).await.status, ItemStatus::InProgress);
    }
}
