//! The operator's emergency operations, judged by the registry alone:
//! `items_reap_by_registry` (`leasehold reap`) and `items_release_dead_nodes` (`leasehold reap
//! --dead-nodes`, the monitor). PostgreSQL runs both as SQL functions, so these cases hold
//! those functions to the same results as the Rust default.

use std::sync::Arc;

use leasehold_core::{
    AcquireRequest, DeadNodesRequest, Item, ItemFilter, ItemStatus, NodeStatus, ReapRequest, Store,
    StoreError, WorkerState,
};

use crate::support::{acquire, at_s, enqueue_n, get, node, LEASE, STALE, T0};

async fn all_items(s: &dyn Store) -> Vec<Item> {
    s.items_list(&ItemFilter {
        limit: 1000,
        ..ItemFilter::default()
    })
    .await
    .expect("items_list")
}

/// Three nodes: `node-a` incarnation 2 alive, `node-b` silent (dead), `node-c` stopped with an
/// item still held; plus an item of `node-a`'s previous incarnation. Returns the items held by
/// a, b, c and a's predecessor, acquired at `T0` with a 30 s lease.
async fn fleet(s: &dyn Store) -> [Item; 4] {
    enqueue_n(s, "k", 4, T0).await;
    let a = acquire(s, &AcquireRequest::new("a/w0", LEASE).node("node-a", 2), T0).await;
    let b = acquire(s, &AcquireRequest::new("b/w0", LEASE).node("node-b", 1), T0).await;
    let c = acquire(s, &AcquireRequest::new("c/w0", LEASE).node("node-c", 1), T0).await;
    let old = acquire(s, &AcquireRequest::new("a/w1", LEASE).node("node-a", 1), T0).await;
    s.node_heartbeat(&node("node-a", 2, at_s(40)))
        .await
        .expect("heartbeat");
    s.node_heartbeat(&node("node-b", 1, T0))
        .await
        .expect("heartbeat");
    let mut stopped = node("node-c", 1, T0);
    stopped.status = NodeStatus::Stopped;
    s.node_heartbeat(&stopped).await.expect("heartbeat");
    [a.item, b.item, c.item, old.item]
}

/// The registry-judged sweep spares the live node's expired item and requeues the others (the
/// dead node's, the stopped node's, the replaced incarnation's); its dry run reports the same
/// and changes nothing; a reaper attempt limit dead-letters with the reaper's reason.
pub async fn reap_by_registry_spares_live_nodes_and_dry_run_changes_nothing(store: Arc<dyn Store>) {
    let s = &*store;
    let [a, b, c, old] = fleet(s).await;
    let now = at_s(45);
    let before = all_items(s).await;
    let dry = ReapRequest {
        dry_run: true,
        ..ReapRequest::new(10, STALE)
    };
    let report = s
        .items_reap_by_registry(&dry, 3, now)
        .await
        .expect("dry run");
    assert_eq!(all_items(s).await, before, "a dry run changes nothing");
    assert!(report.dry_run);
    assert_eq!(
        (
            report.expired_found,
            report.skipped_alive,
            report.recovered,
            report.failed
        ),
        (4, 1, 3, 0),
        "{report:?}"
    );
    let real = s
        .items_reap_by_registry(&ReapRequest::new(10, STALE), 3, now)
        .await
        .expect("reap");
    assert_eq!(
        (
            real.expired_found,
            real.skipped_alive,
            real.recovered,
            real.failed
        ),
        (4, 1, 3, 0),
        "{real:?}"
    );
    let mut dry_ids: Vec<_> = report.items.iter().map(|i| i.id).collect();
    let mut real_ids: Vec<_> = real.items.iter().map(|i| i.id).collect();
    dry_ids.sort();
    real_ids.sort();
    assert_eq!(dry_ids, real_ids, "the dry run reported what the sweep did");
    assert_eq!(real_ids, {
        let mut v = vec![b.id, c.id, old.id];
        v.sort();
        v
    });
    assert_eq!(get(s, a.id).await.status, ItemStatus::InProgress);
    for it in [&b, &c, &old] {
        let now_item = get(s, it.id).await;
        assert_eq!(now_item.status, ItemStatus::Pending);
        assert_eq!(now_item.epoch, it.epoch + 1, "a requeue bumps the epoch");
    }
    match s
        .items_reap_by_registry(&ReapRequest::new(0, STALE), 3, now)
        .await
    {
        Err(StoreError::InvalidInput(_)) => {}
        other => panic!("a zero batch must be InvalidInput, got {other:?}"),
    }
    match s
        .items_reap_by_registry(&ReapRequest::new(10, STALE), 0, now)
        .await
    {
        Err(StoreError::InvalidInput(_)) => {}
        other => panic!("zero missed intervals must be InvalidInput, got {other:?}"),
    }
}

/// A reaper attempt limit below the item's budget dead-letters with the reaper's reason.
pub async fn reap_by_registry_dead_letters_at_the_reaper_limit_with_its_reason(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let [_, b, ..] = fleet(s).await;
    let req = ReapRequest {
        max_attempts: Some(1),
        ..ReapRequest::new(10, STALE)
    };
    let stats = s
        .items_reap_by_registry(&req, 3, at_s(45))
        .await
        .expect("reap");
    assert_eq!((stats.failed, stats.recovered), (3, 0), "{stats:?}");
    let dead = get(s, b.id).await;
    assert_eq!(dead.status, ItemStatus::Failed);
    assert_eq!(
        dead.error.as_deref(),
        Some("lease expired; owner b/w0 presumed dead after 1 attempts (reaper limit 1, budget 3)")
    );
}

/// Releasing dead nodes takes the dead node's and the stopped node's items at once (their
/// leases have not expired), leaves the live node and the replaced incarnation (whose row now
/// shows a live successor) alone, reports the dead node and the stopped one that held items,
/// skips the excluded incarnation, and its dry run reports the same and changes nothing.
pub async fn release_dead_nodes_takes_only_dead_incarnations_items_and_dry_run_changes_nothing(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let [a, b, c, old] = fleet(s).await;
    // 31 s after the dead node's last heartbeat, 3 intervals of 10 s: dead, though the leases
    // acquired at T0 (30 s) are about to expire only now.
    let now = at_s(31);
    s.node_heartbeat(&node("node-a", 2, at_s(30)))
        .await
        .expect("heartbeat");
    let before = all_items(s).await;
    let mut dry = DeadNodesRequest::new(3);
    dry.dry_run = true;
    let would = s
        .items_release_dead_nodes(&dry, now)
        .await
        .expect("dry run");
    assert_eq!(all_items(s).await, before, "a dry run changes nothing");
    let did = s
        .items_release_dead_nodes(&DeadNodesRequest::new(3), now)
        .await
        .expect("release");
    assert_eq!(would, did, "the dry run reported what the release did");
    let summary: Vec<_> = did
        .iter()
        .map(|n| {
            (
                n.node_id.as_str(),
                n.state,
                n.items.iter().map(|i| i.id).collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("node-b", WorkerState::Dead, vec![b.id]),
            ("node-c", WorkerState::Stopped, vec![c.id]),
        ]
    );
    assert_eq!(did[0].items[0].previous_owner, "b/w0");
    assert!(!did[0].items[0].dead_lettered);
    assert_eq!(get(s, a.id).await.status, ItemStatus::InProgress);
    assert_eq!(get(s, old.id).await.status, ItemStatus::InProgress);
    for it in [&b, &c] {
        let now_item = get(s, it.id).await;
        assert_eq!(now_item.status, ItemStatus::Pending);
        assert_eq!(now_item.epoch, it.epoch + 1);
    }
    let again = s
        .items_release_dead_nodes(&DeadNodesRequest::new(3), now)
        .await
        .expect("second release");
    assert_eq!(again.len(), 1, "the dead node is still reported: {again:?}");
    assert!(again[0].items.is_empty(), "nothing is taken twice");

    let mut excluding = DeadNodesRequest::new(3);
    excluding.exclude = Some(("node-b".into(), 1));
    assert!(s
        .items_release_dead_nodes(&excluding, now)
        .await
        .expect("release")
        .is_empty());
    match s
        .items_release_dead_nodes(&DeadNodesRequest::new(0), now)
        .await
    {
        Err(StoreError::InvalidInput(_)) => {}
        other => panic!("zero missed intervals must be InvalidInput, got {other:?}"),
    }
}
