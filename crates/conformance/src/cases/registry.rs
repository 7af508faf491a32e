//! The worker registry and [`RegistryLiveness`]: how a reaper on another node judges owners.

use std::sync::Arc;

use leasehold_core::{
    ItemId, Liveness, LivenessCheck, NodeClaim, NodeRecord, NodeStatus, ReapCandidate,
    RegistryLiveness, Store, StoreError,
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

/// A lingering older incarnation cannot overwrite its successor's row, and is told it was
/// superseded (by which incarnation); a stopped incarnation cannot bring its row back to life
/// (a late tick of its own, which is not an error).
pub async fn node_heartbeat_never_goes_back_to_an_older_or_stopped_incarnation(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let new = node("node-a", 5, at_s(10));
    s.node_heartbeat(&new).await.expect("node_heartbeat");
    let old = node("node-a", 4, at_s(11));
    match s.node_heartbeat(&old).await {
        Err(StoreError::Superseded {
            node_id,
            incarnation: 4,
            current: 5,
        }) if node_id == "node-a" => {}
        other => {
            panic!("an older incarnation's write must be refused as superseded by 5: {other:?}")
        }
    }
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

/// `cleanup` removes exactly the registry rows it names and reports them; a dry run reports
/// the same and removes nothing; a row that heartbeated (or restarted) since it was read, or
/// whose dead incarnation still holds an in-progress item, stays.
pub async fn cleanup_removes_only_the_named_unchanged_rows_and_dry_run_removes_nothing(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    for r in [
        node("dead", 1, at_s(0)),
        node("stopped", 1, at_s(0)),
        node("revived", 1, at_s(0)),
        node("holder", 1, at_s(0)),
        node("alive", 1, at_s(1000)),
    ] {
        s.node_heartbeat(&r).await.expect("node_heartbeat");
    }
    s.node_stop("stopped", 1, at_s(1)).await.expect("node_stop");
    // "holder" holds an item at incarnation 1.
    crate::support::enqueue(s, crate::support::new_item("k", 1), at_s(0)).await;
    let req =
        leasehold_core::AcquireRequest::new("holder/w0", crate::support::LEASE).node("holder", 1);
    crate::support::acquire(s, &req, at_s(0)).await;

    let listed = s.nodes_list().await.expect("nodes_list");
    let now = at_s(1000);
    let keys = leasehold_core::cleanup_candidates(&listed, now, 3, crate::support::secs(60));
    let mut picked: Vec<&str> = keys.iter().map(|k| k.node_id.as_str()).collect();
    picked.sort();
    assert_eq!(
        picked,
        ["dead", "holder", "revived", "stopped"],
        "never the alive row"
    );
    // "revived" heartbeats after the read: its key no longer matches.
    s.node_heartbeat(&node("revived", 1, at_s(999)))
        .await
        .expect("node_heartbeat");

    let mut req = leasehold_core::CleanupRequest {
        nodes: keys,
        finished_before: None,
        dry_run: true,
    };
    let dry = s.cleanup(&req).await.expect("cleanup dry run");
    assert_eq!(dry.nodes_removed, ["dead", "stopped"]);
    assert!(dry.dry_run);
    assert_eq!(
        s.nodes_list().await.expect("nodes_list").len(),
        5,
        "a dry run removes nothing"
    );

    req.dry_run = false;
    let done = s.cleanup(&req).await.expect("cleanup");
    assert_eq!(
        done.nodes_removed, dry.nodes_removed,
        "the dry run told the truth"
    );
    let mut left: Vec<String> = s
        .nodes_list()
        .await
        .expect("nodes_list")
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    left.sort();
    assert_eq!(left, ["alive", "holder", "revived"]);
    assert_eq!(
        s.cleanup(&req).await.expect("cleanup again").nodes_removed,
        Vec::<String>::new(),
        "nothing left to remove"
    );
}

/// `cleanup` removes finished items (completed, failed, cancelled) finished at or before the
/// cut-off, with their checkpoints and attempt history, and nothing open or newer; a dry run
/// counts the same and removes nothing.
pub async fn cleanup_removes_old_finished_items_with_their_checkpoints_only(store: Arc<dyn Store>) {
    use crate::support::{acquire, enqueue_n, get, req};
    use leasehold_core::{FailDisposition, ItemStatus};
    let s = &*store;
    let ids = enqueue_n(s, "k", 6, at_s(0)).await;
    // 0: completed at 10 with a checkpoint; 1: dead-lettered at 10; 2: cancelled at 10;
    // 3: completed at 100 (too new); 4: in progress; 5: pending.
    let l0 = acquire(s, &req("w0"), at_s(1)).await;
    s.checkpoint_save(&l0.lease, "step", json!({"n": 1}), at_s(2))
        .await
        .expect("checkpoint_save");
    s.item_complete(&l0.lease, json!("done"), at_s(10))
        .await
        .expect("complete");
    let l1 = acquire(s, &req("w1"), at_s(1)).await;
    s.item_fail(&l1.lease, "boom", FailDisposition::Permanent, at_s(10))
        .await
        .expect("fail");
    s.item_cancel(ids[2], at_s(10)).await.expect("cancel");
    let l3 = acquire(s, &req("w3"), at_s(1)).await;
    s.checkpoint_save(&l3.lease, "step", json!({"n": 3}), at_s(2))
        .await
        .expect("checkpoint_save");
    s.item_complete(&l3.lease, json!("done"), at_s(100))
        .await
        .expect("complete");
    let l4 = acquire(s, &req("w4"), at_s(1)).await;
    assert_eq!(
        [l0.item.id, l1.item.id, l3.item.id, l4.item.id],
        [ids[0], ids[1], ids[3], ids[4]],
        "acquired in id order"
    );
    let before = s.items_count().await.expect("items_count");

    let mut request = leasehold_core::CleanupRequest {
        nodes: Vec::new(),
        finished_before: Some(at_s(10)),
        dry_run: true,
    };
    let dry = s.cleanup(&request).await.expect("cleanup dry run");
    assert_eq!((dry.items_removed, dry.checkpoints_removed), (3, 1));
    assert_eq!(s.items_count().await.expect("items_count"), before);
    assert_eq!(
        s.checkpoints_list(ids[0]).await.expect("checkpoints").len(),
        1
    );

    let history = |id| async move { s.item_attempts(id).await.expect("item_attempts").len() };
    assert_eq!((history(ids[0]).await, history(ids[3]).await), (1, 1));

    request.dry_run = false;
    let done = s.cleanup(&request).await.expect("cleanup");
    assert_eq!((done.items_removed, done.checkpoints_removed), (3, 1));
    for gone in &ids[..3] {
        assert_eq!(
            s.item_get(*gone).await.expect("item_get"),
            None,
            "item {gone}"
        );
    }
    assert!(s
        .checkpoints_list(ids[0])
        .await
        .expect("checkpoints")
        .is_empty());
    assert_eq!(
        history(ids[0]).await,
        0,
        "a removed item's history goes with it"
    );
    assert_eq!(get(s, ids[3]).await.status, ItemStatus::Completed);
    assert_eq!(
        s.checkpoints_list(ids[3]).await.expect("checkpoints").len(),
        1
    );
    assert_eq!(history(ids[3]).await, 1, "a kept item keeps its history");
    assert_eq!(get(s, ids[4]).await.status, ItemStatus::InProgress);
    assert_eq!(get(s, ids[5]).await.status, ItemStatus::Pending);
}

/// `items_depth_by_kind` counts pending and in-progress items per kind, by kind name, and
/// leaves out kinds with no open item.
pub async fn depth_by_kind_counts_open_items_per_kind(store: Arc<dyn Store>) {
    use crate::support::{acquire, enqueue_n};
    let s = &*store;
    assert!(s.items_depth_by_kind().await.expect("depth").is_empty());
    enqueue_n(s, "b", 3, at_s(0)).await;
    enqueue_n(s, "a", 2, at_s(0)).await;
    enqueue_n(s, "done", 1, at_s(0)).await;
    let a = leasehold_core::AcquireRequest::new("w", crate::support::LEASE).kinds(["a"]);
    acquire(s, &a, at_s(1)).await;
    let d = leasehold_core::AcquireRequest::new("w2", crate::support::LEASE).kinds(["done"]);
    let l = acquire(s, &d, at_s(1)).await;
    s.item_complete(&l.lease, json!(1), at_s(2))
        .await
        .expect("complete");
    let depth = s.items_depth_by_kind().await.expect("depth");
    let got: Vec<(String, u64, u64)> = depth
        .into_iter()
        .map(|k| (k.kind, k.pending, k.in_progress))
        .collect();
    assert_eq!(got, [("a".into(), 1, 1), ("b".into(), 3, 0)]);
}

/// `items_finished_since` counts completions, dead-letters and cancellations per bucket from
/// `since`, oldest first, only non-empty buckets, and nothing finished before `since`.
pub async fn finished_since_counts_per_bucket(store: Arc<dyn Store>) {
    use crate::support::{acquire, enqueue_n, req};
    use leasehold_core::FailDisposition;
    let s = &*store;
    let ids = enqueue_n(s, "k", 5, at_s(0)).await;
    let finish = |owner: &'static str, at: i64, ok: bool| async move {
        let l = acquire(s, &req(owner), at_s(1)).await;
        if ok {
            s.item_complete(&l.lease, json!(1), at_s(at))
                .await
                .expect("complete");
        } else {
            s.item_fail(&l.lease, "x", FailDisposition::Permanent, at_s(at))
                .await
                .expect("fail");
        }
    };
    finish("w0", 30, true).await; // before `since`
    finish("w1", 65, true).await; // bucket 0
    finish("w2", 70, false).await; // bucket 0
    finish("w3", 190, true).await; // bucket 2
    s.item_cancel(ids[4], at_s(185)).await.expect("cancel"); // bucket 2
    let got = s
        .items_finished_since(at_s(60), crate::support::secs(60))
        .await
        .expect("finished_since");
    let got: Vec<(leasehold_core::Timestamp, u64, u64, u64)> = got
        .into_iter()
        .map(|b| (b.start, b.completed, b.failed, b.cancelled))
        .collect();
    assert_eq!(got, [(at_s(60), 1, 1, 0), (at_s(180), 1, 0, 1)]);
    assert!(s
        .items_finished_since(at_s(60), std::time::Duration::ZERO)
        .await
        .is_err_and(|e| matches!(e, leasehold_core::StoreError::InvalidInput(_))));
}

/// `items_recently_finished` lists the last items to finish in a status, newest first, up to
/// the limit; an open status or a zero limit is refused.
pub async fn recently_finished_lists_newest_first_and_refuses_bad_input(store: Arc<dyn Store>) {
    use crate::support::{acquire, enqueue_n, req};
    use leasehold_core::{FailDisposition, ItemStatus, StoreError};
    let s = &*store;
    enqueue_n(s, "k", 3, at_s(0)).await;
    let mut failed = Vec::new();
    for (owner, at) in [("w0", 20), ("w1", 10), ("w2", 30)] {
        let l = acquire(s, &req(owner), at_s(1)).await;
        s.item_fail(
            &l.lease,
            &format!("error of {owner}"),
            FailDisposition::Permanent,
            at_s(at),
        )
        .await
        .expect("fail");
        failed.push(l.item.id);
    }
    let got = s
        .items_recently_finished(ItemStatus::Failed, 2)
        .await
        .expect("recently_finished");
    let got: Vec<(ItemId, Option<String>)> = got.into_iter().map(|i| (i.id, i.error)).collect();
    assert_eq!(
        got,
        [
            (failed[2], Some("error of w2".into())),
            (failed[0], Some("error of w0".into()))
        ]
    );
    assert!(s
        .items_recently_finished(ItemStatus::Completed, 5)
        .await
        .expect("recently_finished")
        .is_empty());
    for (status, limit) in [(ItemStatus::Pending, 5), (ItemStatus::Failed, 0)] {
        assert!(
            matches!(
                s.items_recently_finished(status, limit).await,
                Err(StoreError::InvalidInput(_))
            ),
            "{status} limit {limit}"
        );
    }
}

fn registered(claim: NodeClaim) -> NodeRecord {
    match claim {
        NodeClaim::Registered(row) => row,
        NodeClaim::InUse(row) => panic!("refused: a live incarnation holds the id: {row:?}"),
    }
}

fn in_use(claim: NodeClaim) -> NodeRecord {
    match claim {
        NodeClaim::InUse(row) => row,
        NodeClaim::Registered(row) => panic!("registered over a live incarnation: {row:?}"),
    }
}

/// `node_register` claims a free id, refuses (writing nothing) while the row's incarnation is
/// alive — returning that row, host and pid included — and claims the row once that
/// incarnation is dead (silent past 3 intervals) or stopped, at a greater incarnation.
pub async fn node_register_refuses_a_live_incarnation_and_claims_a_dead_or_stopped_one(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let first = node("node-a", 100, T0);
    assert_eq!(
        registered(s.node_register(&first, 3, T0).await.expect("node_register")),
        first,
        "a free id is claimed as proposed"
    );
    assert_eq!(
        s.node_get("node-a").await.expect("node_get"),
        Some(first.clone())
    );

    // Another process under the same id, 30 s later (exactly 3 intervals: still alive).
    let second = NodeRecord {
        metadata: json!({ "host": "other", "pid": 7 }),
        ..node("node-a", 200, at_s(30))
    };
    let live = in_use(
        s.node_register(&second, 3, at_s(30))
            .await
            .expect("node_register"),
    );
    assert_eq!(live, first, "the live row comes back");
    assert_eq!((live.host(), live.pid()), (Some("test"), Some(42)));
    assert_eq!(
        s.node_get("node-a").await.expect("node_get"),
        Some(first.clone()),
        "a refused registration writes nothing"
    );

    // One millisecond later the first incarnation is dead: the id is claimed.
    let later = at_s(30).plus(std::time::Duration::from_millis(1));
    let claimed = registered(
        s.node_register(&second, 3, later)
            .await
            .expect("node_register"),
    );
    assert_eq!(claimed.incarnation, 200);
    assert_eq!(s.node_get("node-a").await.expect("node_get"), Some(claimed));

    // A stopped incarnation is claimed at once, however fresh its last heartbeat.
    s.node_stop("node-a", 200, at_s(31))
        .await
        .expect("node_stop");
    let third = node("node-a", 300, at_s(31));
    assert_eq!(
        registered(
            s.node_register(&third, 3, at_s(31))
                .await
                .expect("node_register")
        )
        .incarnation,
        300
    );
    // A longer tolerance keeps a row alive longer: the caller's `missed_intervals` counts.
    let fourth = node("node-a", 400, at_s(70));
    in_use(
        s.node_register(&fourth, 5, at_s(70))
            .await
            .expect("node_register"),
    );
    registered(
        s.node_register(&fourth, 3, at_s(70))
            .await
            .expect("node_register"),
    );
}

/// Incarnations of one id grow even when the proposing clock stepped back: a proposal below
/// the row's incarnation registers as that incarnation + 1, so the predecessor's late
/// heartbeats can never overwrite the new row.
pub async fn node_register_incarnation_grows_when_the_clock_steps_back(store: Arc<dyn Store>) {
    let s = &*store;
    let first = registered(
        s.node_register(&node("node-a", 5_000, T0), 3, T0)
            .await
            .expect("node_register"),
    );
    s.node_stop("node-a", first.incarnation, at_s(1))
        .await
        .expect("node_stop");
    // The clock stepped back an hour: the new process proposes a smaller number.
    let behind = T0.minus(std::time::Duration::from_secs(3600));
    let second = registered(
        s.node_register(&node("node-a", 1_000, behind), 3, behind)
            .await
            .expect("node_register"),
    );
    assert_eq!(
        second.incarnation, 5_001,
        "previous + 1, not the smaller proposal"
    );
    assert_eq!(
        s.node_get("node-a").await.expect("node_get"),
        Some(second.clone())
    );
    // The predecessor's late heartbeat changes nothing, and tells it who replaced it.
    let late = s
        .node_heartbeat(&NodeRecord {
            status: NodeStatus::Processing,
            ..node("node-a", 5_000, at_s(2))
        })
        .await;
    assert!(
        matches!(
            late,
            Err(StoreError::Superseded {
                incarnation: 5_000,
                current: 5_001,
                ..
            })
        ),
        "{late:?}"
    );
    assert_eq!(s.node_get("node-a").await.expect("node_get"), Some(second));
}

/// Many nodes registering one free id at the same moment: exactly one is registered, every
/// other one is told the id is in use by that one.
pub async fn concurrent_node_registrations_of_one_id_let_exactly_one_through(
    store: Arc<dyn Store>,
) {
    let claims = futures::future::join_all((0..8).map(|i| {
        let store = store.clone();
        async move {
            let mut row = node("node-a", 100 + i, T0);
            row.metadata = json!({ "host": "test", "pid": i });
            store
                .node_register(&row, 3, T0)
                .await
                .expect("node_register")
        }
    }))
    .await;
    let winners: Vec<_> = claims
        .iter()
        .filter_map(|c| match c {
            NodeClaim::Registered(r) => Some(r.clone()),
            NodeClaim::InUse(_) => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    for c in &claims {
        if let NodeClaim::InUse(live) = c {
            assert_eq!(live, &winners[0], "refused in favour of the winner");
        }
    }
    assert_eq!(
        s_get(&*store).await,
        Some(winners[0].clone()),
        "the row is the winner's"
    );
}

async fn s_get(s: &dyn Store) -> Option<NodeRecord> {
    s.node_get("node-a").await.expect("node_get")
}
