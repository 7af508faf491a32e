//! The worker registry and [`RegistryLiveness`]: how a reaper on another node judges owners.

use std::sync::Arc;

use leasehold_core::{
    ItemId, Liveness, LivenessCheck, NodeStatus, ReapCandidate, RegistryLiveness, Store,
};
use serde_json::json;

use crate::support::{at_s, node, T0};

/// `node_heartbeat` inserts a row, and writing it again replaces it (a new heartbeat, status,
/// current item or incarnation); `node_get` returns it as written, and `None` for an unknown
/// node.
pub async fn node_heartbeat_inserts_then_replaces_the_row(store: Arc<dyn Store>) {
    let s = &*store;
    assert_eq!(s.node_get("node-a").await.expect("node_get"), None);
    let first = node("node-a", 1, T0);
    s.node_heartbeat(&first).await.expect("node_heartbeat");
    assert_eq!(
        s.node_get("node-a").await.expect("node_get"),
        Some(first.clone())
    );

    let busy = leasehold_core::NodeRecord {
        status: NodeStatus::Processing,
        current_item: Some(ItemId(7)),
        task_text: Some("sending mail".into()),
        last_heartbeat_at: at_s(10),
        metadata: json!({ "host": "test", "pid": 42, "workers": 4 }),
        ..first.clone()
    };
    s.node_heartbeat(&busy).await.expect("node_heartbeat");
    assert_eq!(s.node_get("node-a").await.expect("node_get"), Some(busy));

    let restarted = leasehold_core::NodeRecord {
        incarnation: 2,
        started_at: at_s(20),
        last_heartbeat_at: at_s(20),
        status: NodeStatus::Active,
        ..first
    };
    s.node_heartbeat(&restarted).await.expect("node_heartbeat");
    assert_eq!(
        s.node_get("node-a").await.expect("node_get"),
        Some(restarted),
        "a new incarnation replaces the row"
    );
    assert_eq!(
        s.nodes_list().await.expect("nodes_list").len(),
        1,
        "one row per node"
    );
    assert_eq!(s.node_get("node-z").await.expect("node_get"), None);
}

/// A lingering older incarnation cannot overwrite its successor's row, and a stopped
/// incarnation cannot bring its row back to life.
pub async fn node_heartbeat_never_goes_back_to_an_older_or_stopped_incarnation(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let new = node("node-a", 5, at_s(10));
    s.node_heartbeat(&new).await.expect("node_heartbeat");
    let old = node("node-a", 4, at_s(11));
    s.node_heartbeat(&old)
        .await
        .expect("an older incarnation's write is not an error");
    assert_eq!(
        s.node_get("node-a").await.expect("node_get"),
        Some(new.clone()),
        "the newer incarnation's row stays"
    );

    s.node_stop("node-a", 5, at_s(12)).await.expect("node_stop");
    let late = leasehold_core::NodeRecord {
        last_heartbeat_at: at_s(13),
        ..new.clone()
    };
    s.node_heartbeat(&late).await.expect("node_heartbeat");
    let row = s.node_get("node-a").await.expect("node_get").expect("row");
    assert_eq!(
        row.status,
        NodeStatus::Stopped,
        "a stopped incarnation stays stopped"
    );
    assert_eq!(row.last_heartbeat_at, at_s(10));

    let next = node("node-a", 6, at_s(14));
    s.node_heartbeat(&next).await.expect("node_heartbeat");
    assert_eq!(
        s.node_get("node-a").await.expect("node_get"),
        Some(next),
        "a newer incarnation takes over a stopped row"
    );
}

/// `nodes_list` returns every row, by node id.
pub async fn nodes_list_returns_every_node_by_id(store: Arc<dyn Store>) {
    let s = &*store;
    assert!(s.nodes_list().await.expect("nodes_list").is_empty());
    let rows = [
        node("node-c", 1, at_s(3)),
        node("node-a", 4, at_s(1)),
        node("node-b", 2, at_s(2)),
    ];
    for r in &rows {
        s.node_heartbeat(r).await.expect("node_heartbeat");
    }
    let listed = s.nodes_list().await.expect("nodes_list");
    assert_eq!(
        listed,
        vec![rows[1].clone(), rows[2].clone(), rows[0].clone()],
        "by node id"
    );
}

/// `node_stop` marks the named incarnation stopped; a stop naming an older incarnation leaves
/// the newer incarnation's row alone.
pub async fn node_stop_stops_only_the_matching_incarnation(store: Arc<dyn Store>) {
    let s = &*store;
    s.node_heartbeat(&node("node-a", 2, at_s(10)))
        .await
        .expect("node_heartbeat");
    s.node_heartbeat(&node("node-b", 1, at_s(10)))
        .await
        .expect("node_heartbeat");

    let before = s.node_get("node-a").await.expect("node_get");
    s.node_stop("node-a", 1, at_s(11))
        .await
        .expect("node_stop of an older incarnation");
    assert_eq!(
        s.node_get("node-a").await.expect("node_get"),
        before,
        "the old incarnation's stop does not touch the new one"
    );

    s.node_stop("node-a", 2, at_s(12)).await.expect("node_stop");
    let stopped = s
        .node_get("node-a")
        .await
        .expect("node_get")
        .expect("row kept");
    assert_eq!(stopped.status, NodeStatus::Stopped);
    assert_eq!(stopped.incarnation, 2);
    assert!(
        !stopped.is_alive(at_s(12), 3),
        "a stopped node is not alive"
    );
    assert_eq!(
        s.node_get("node-b")
            .await
            .expect("node_get")
            .map(|n| n.status),
        Some(NodeStatus::Idle),
        "another node is untouched"
    );
}

/// A candidate held by `owner_node` at `owner_incarnation`.
fn candidate(owner_node: Option<&str>, owner_incarnation: Option<i64>) -> ReapCandidate {
    ReapCandidate {
        item: ItemId(1),
        kind: "k".into(),
        owner: "w0".into(),
        owner_node: owner_node.map(String::from),
        owner_incarnation,
        epoch: 1,
        lease_expires_at: Some(T0),
        last_heartbeat_at: Some(T0),
        attempts: 1,
        max_attempts: 3,
        past_stale_limit: false,
    }
}

/// [`RegistryLiveness`] judges alive a node whose row has the item's incarnation, is not
/// stopped and heartbeated within the missed-interval window.
pub async fn registry_liveness_alive_for_a_fresh_heartbeat_of_the_same_incarnation(
    store: Arc<dyn Store>,
) {
    store
        .node_heartbeat(&node("node-a", 5, at_s(100)))
        .await
        .expect("node_heartbeat");
    // 10 s interval, 3 missed: alive up to 30 s after the last heartbeat.
    for now in [at_s(100), at_s(120), at_s(130)] {
        let liveness = RegistryLiveness::new(Arc::clone(&store), 3, now);
        assert_eq!(
            liveness.check(&candidate(Some("node-a"), Some(5))).await,
            Liveness::Alive,
            "at {now}"
        );
    }
}

/// [`RegistryLiveness`] judges dead a node that missed its heartbeats.
pub async fn registry_liveness_dead_for_a_missed_heartbeat(store: Arc<dyn Store>) {
    store
        .node_heartbeat(&node("node-a", 5, at_s(100)))
        .await
        .expect("node_heartbeat");
    let liveness = RegistryLiveness::new(Arc::clone(&store), 3, at_s(131));
    assert_eq!(
        liveness.check(&candidate(Some("node-a"), Some(5))).await,
        Liveness::Dead
    );
}

/// [`RegistryLiveness`] judges dead a node that stopped, however recent its heartbeat.
pub async fn registry_liveness_dead_for_a_stopped_node(store: Arc<dyn Store>) {
    store
        .node_heartbeat(&node("node-a", 5, at_s(100)))
        .await
        .expect("node_heartbeat");
    store
        .node_stop("node-a", 5, at_s(101))
        .await
        .expect("node_stop");
    let liveness = RegistryLiveness::new(Arc::clone(&store), 3, at_s(101));
    assert_eq!(
        liveness.check(&candidate(Some("node-a"), Some(5))).await,
        Liveness::Dead
    );
}

/// [`RegistryLiveness`] does not let a reused node name vouch for its predecessor: an item
/// acquired under another incarnation is judged dead even though the node heartbeats.
pub async fn registry_liveness_dead_for_another_incarnation(store: Arc<dyn Store>) {
    store
        .node_heartbeat(&node("node-a", 6, at_s(100)))
        .await
        .expect("node_heartbeat");
    let liveness = RegistryLiveness::new(Arc::clone(&store), 3, at_s(100));
    assert_eq!(
        liveness.check(&candidate(Some("node-a"), Some(5))).await,
        Liveness::Dead,
        "an older incarnation"
    );
    assert_eq!(
        liveness.check(&candidate(Some("node-a"), None)).await,
        Liveness::Dead,
        "no incarnation recorded"
    );
    assert_eq!(
        liveness.check(&candidate(Some("node-a"), Some(6))).await,
        Liveness::Alive,
        "the current incarnation"
    );
}

/// [`RegistryLiveness`] judges dead an owner with no node, or whose node has no row.
pub async fn registry_liveness_dead_without_a_known_node(store: Arc<dyn Store>) {
    store
        .node_heartbeat(&node("node-a", 1, at_s(100)))
        .await
        .expect("node_heartbeat");
    let liveness = RegistryLiveness::new(Arc::clone(&store), 3, at_s(100));
    assert_eq!(
        liveness.check(&candidate(None, Some(1))).await,
        Liveness::Dead
    );
    assert_eq!(
        liveness.check(&candidate(Some("node-x"), Some(1))).await,
        Liveness::Dead
    );
}
