//! What the cases share: the base time, builders, the `LeaseLost` and "nothing changed"
//! assertions, and scripted liveness checks. Public so a backend's own tests can use them too.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use leasehold_core::{
    AcquireRequest, FailDisposition, Item, ItemId, LeaseRef, Leased, Liveness, LivenessCheck,
    NewItem, NodeRecord, NodeStatus, ReapCandidate, Store, StoreError, StoreResult, Timestamp,
};
use serde_json::json;

/// The time every case starts at (2023-11-14); cases move it by hand.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

/// The lease most cases acquire with.
pub const LEASE: Duration = Duration::from_secs(30);

/// The hard stale limit most sweeps use: far beyond [`LEASE`], so only liveness decides.
pub const STALE: Duration = Duration::from_secs(900);

/// `T0` plus `ms` milliseconds.
pub fn at(ms: i64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

/// `T0` plus `s` seconds.
pub fn at_s(s: i64) -> Timestamp {
    at(s * 1000)
}

/// `s` seconds.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A request for one item by `owner` on node `node-of-<owner>`, incarnation 1, with [`LEASE`].
pub fn req(owner: &str) -> AcquireRequest {
    AcquireRequest::new(owner, LEASE).node(format!("node-of-{owner}"), 1)
}

/// An item of `kind` whose input names it, with the default budget.
pub fn new_item(kind: &str, n: i64) -> NewItem {
    NewItem::new(kind, json!({ "n": n }))
}

/// Enqueues one item and returns its id; panics on refusal.
pub async fn enqueue(store: &dyn Store, item: NewItem, now: Timestamp) -> ItemId {
    store
        .item_enqueue(item, now)
        .await
        .expect("item_enqueue of a valid item")
}

/// Enqueues `n` plain items of `kind` and returns their ids.
pub async fn enqueue_n(store: &dyn Store, kind: &str, n: i64, now: Timestamp) -> Vec<ItemId> {
    let items = (0..n).map(|i| new_item(kind, i)).collect();
    let ids = store
        .items_enqueue(items, now)
        .await
        .expect("items_enqueue of valid items");
    assert_eq!(ids.len() as i64, n, "items_enqueue returns one id per item");
    ids
}

/// Acquires the next ready item for `req`; panics when there is none.
pub async fn acquire(store: &dyn Store, req: &AcquireRequest, now: Timestamp) -> Leased {
    store
        .item_acquire(req, now)
        .await
        .expect("item_acquire")
        .unwrap_or_else(|| panic!("expected {} to acquire an item at {now}", req.owner))
}

/// Asserts that nothing is ready for `req` at `now`.
pub async fn acquire_none(store: &dyn Store, req: &AcquireRequest, now: Timestamp) {
    let got = store.item_acquire(req, now).await.expect("item_acquire");
    assert!(
        got.is_none(),
        "expected nothing acquirable for {} at {now}, got {:?}",
        req.owner,
        got.map(|l| l.item)
    );
}

/// The stored item; panics when it does not exist.
pub async fn get(store: &dyn Store, id: ItemId) -> Item {
    store
        .item_get(id)
        .await
        .expect("item_get")
        .unwrap_or_else(|| panic!("item {id} should exist"))
}

/// Asserts that `result` is `LeaseLost` naming `lease` (`what` names the refused write).
pub fn expect_lease_lost<T: Debug>(result: StoreResult<T>, lease: &LeaseRef, what: &str) {
    match result {
        Err(
            ref e @ StoreError::LeaseLost {
                item,
                ref owner,
                epoch,
            },
        ) => {
            assert!(e.is_lease_lost(), "is_lease_lost() of {e}");
            assert_eq!(
                (item, owner.as_str(), epoch),
                (lease.item, lease.owner.as_str(), lease.epoch),
                "{what}: LeaseLost should name the lease that tried to write"
            );
        }
        other => panic!("{what} with {lease:?} should be refused with LeaseLost, got {other:?}"),
    }
}

/// Tries every fenced write (renew, complete, retryable and permanent fail, release, checkpoint,
/// progress) with `lease` and asserts that each is refused with `LeaseLost` and leaves the item
/// and its checkpoints exactly as they were.
pub async fn assert_every_write_fenced(store: &dyn Store, lease: &LeaseRef, now: Timestamp) {
    let before = store.item_get(lease.item).await.expect("item_get");
    let checkpoints = store
        .checkpoints_list(lease.item)
        .await
        .expect("checkpoints_list");
    let unchanged = |what: &'static str| {
        let before = before.clone();
        let checkpoints = checkpoints.clone();
        async move {
            assert_eq!(
                store.item_get(lease.item).await.expect("item_get"),
                before,
                "a refused {what} must change nothing"
            );
            assert_eq!(
                store
                    .checkpoints_list(lease.item)
                    .await
                    .expect("checkpoints_list"),
                checkpoints,
                "a refused {what} must write no checkpoint"
            );
        }
    };

    expect_lease_lost(
        store.lease_renew(lease, LEASE, now).await,
        lease,
        "lease_renew",
    );
    unchanged("lease_renew").await;
    let zombie = json!({ "zombie": true });
    expect_lease_lost(
        store.item_complete(lease, zombie.clone(), now).await,
        lease,
        "item_complete",
    );
    unchanged("item_complete").await;
    let total = store.items_count().await.expect("items_count").total();
    expect_lease_lost(
        store
            .item_complete_with_follow_ups(
                lease,
                zombie.clone(),
                vec![NewItem::new("zombie-follow-up", json!({}))],
                now,
            )
            .await,
        lease,
        "item_complete_with_follow_ups",
    );
    unchanged("item_complete_with_follow_ups").await;
    assert_eq!(
        store.items_count().await.expect("items_count").total(),
        total,
        "a refused item_complete_with_follow_ups must enqueue nothing"
    );
    expect_lease_lost(
        store
            .item_fail(
                lease,
                "zombie error",
                FailDisposition::Retry {
                    delay: Duration::ZERO,
                },
                now,
            )
            .await,
        lease,
        "item_fail(Retry)",
    );
    unchanged("item_fail(Retry)").await;
    expect_lease_lost(
        store
            .item_fail(lease, "zombie error", FailDisposition::Permanent, now)
            .await,
        lease,
        "item_fail(Permanent)",
    );
    unchanged("item_fail(Permanent)").await;
    expect_lease_lost(
        store.item_release(lease, Some(0), now).await,
        lease,
        "item_release",
    );
    unchanged("item_release").await;
    expect_lease_lost(
        store
            .checkpoint_save(lease, "zombie-step", zombie.clone(), now)
            .await,
        lease,
        "checkpoint_save",
    );
    unchanged("checkpoint_save").await;
    expect_lease_lost(
        store.item_progress(lease, zombie, now).await,
        lease,
        "item_progress",
    );
    unchanged("item_progress").await;
}

/// A registry row of a running node heartbeating every 10 s.
pub fn node(node_id: &str, incarnation: i64, last_heartbeat_at: Timestamp) -> NodeRecord {
    NodeRecord {
        node_id: node_id.to_owned(),
        incarnation,
        worker_type: "email,report".to_owned(),
        status: NodeStatus::Idle,
        current_item: None,
        task_text: None,
        last_heartbeat_at,
        heartbeat_interval_ms: 10_000,
        started_at: T0,
        metadata: json!({ "host": "test", "pid": 42 }),
    }
}

/// A liveness check that gives one answer and records every candidate it was asked about.
#[derive(Debug)]
pub struct ScriptedLiveness {
    answer: Liveness,
    per_owner: HashMap<String, Liveness>,
    asked: Mutex<Vec<ReapCandidate>>,
}

impl ScriptedLiveness {
    /// Answers `answer` for every owner.
    pub fn always(answer: Liveness) -> Self {
        ScriptedLiveness {
            answer,
            per_owner: HashMap::new(),
            asked: Mutex::new(Vec::new()),
        }
    }

    /// Answers `answer` for `owner` (others get the default answer).
    pub fn with(mut self, owner: &str, answer: Liveness) -> Self {
        self.per_owner.insert(owner.to_owned(), answer);
        self
    }

    /// Every candidate asked about so far, in order.
    pub fn asked(&self) -> Vec<ReapCandidate> {
        self.asked.lock().expect("liveness log").clone()
    }
}

#[async_trait]
impl LivenessCheck for ScriptedLiveness {
    async fn check(&self, candidate: &ReapCandidate) -> Liveness {
        self.asked
            .lock()
            .expect("liveness log")
            .push(candidate.clone());
        self.per_owner
            .get(&candidate.owner)
            .copied()
            .unwrap_or(self.answer)
    }
}

/// A liveness check that plays an owner renewing its lease while the reaper is deciding: it
/// renews the candidate's lease through the store at `now`, then answers `Dead`. A correct
/// sweep sees the renewal and leaves the item alone (`skipped_changed`).
#[derive(Debug)]
pub struct RenewingLiveness {
    store: Arc<dyn Store>,
    now: Timestamp,
    renewed: Mutex<Vec<Timestamp>>,
}

impl RenewingLiveness {
    /// Renews through `store` at `now`.
    pub fn new(store: Arc<dyn Store>, now: Timestamp) -> Self {
        RenewingLiveness {
            store,
            now,
            renewed: Mutex::new(Vec::new()),
        }
    }

    /// The expiries the renewals returned.
    pub fn renewed(&self) -> Vec<Timestamp> {
        self.renewed.lock().expect("renewal log").clone()
    }
}

#[async_trait]
impl LivenessCheck for RenewingLiveness {
    async fn check(&self, candidate: &ReapCandidate) -> Liveness {
        let lease = LeaseRef {
            item: candidate.item,
            owner: candidate.owner.clone(),
            epoch: candidate.epoch,
        };
        let expiry = self
            .store
            .lease_renew(&lease, LEASE, self.now)
            .await
            .expect("the owner's renewal during the sweep should succeed");
        self.renewed.lock().expect("renewal log").push(expiry);
        Liveness::Dead
    }
}

/// The unique-key race across stores on one database (several connections, pools or hosts):
/// `tasks` tasks, spread over `stores` in turn, each enqueue the same 50 keys starting from a
/// different place, so they collide throughout. Asserts every caller of a key got the same id
/// and the database holds one item per key. Call it on a multi-threaded runtime.
pub async fn same_keys_from_many_stores_make_one_item_each(
    stores: &[Arc<dyn Store>],
    tasks: usize,
) {
    const KEYS: usize = 50;
    let tasks = (0..tasks).map(|t| {
        let store = stores[t % stores.len()].clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            for k in 0..KEYS {
                let key = format!("key-{}", (k + t * 7) % KEYS);
                let id = store
                    .item_enqueue(
                        NewItem::new("sync", json!({ "task": t })).unique_key(&key),
                        T0,
                    )
                    .await
                    .expect("enqueue");
                got.push((key, id));
            }
            got
        })
    });
    let mut by_key: std::collections::BTreeMap<String, ItemId> = Default::default();
    for task in futures::future::join_all(tasks).await {
        for (key, id) in task.expect("task") {
            let first = *by_key.entry(key.clone()).or_insert(id);
            assert_eq!(first, id, "key {key} answered with two ids");
        }
    }
    let all = stores[0]
        .items_list(&leasehold_core::ItemFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("items_list");
    assert_eq!(all.len(), KEYS, "one item per key");
}
