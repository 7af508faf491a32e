//! Every durable write made on behalf of an item is fenced by its lease, and a tool call has its
//! own identity.
//!
//! The cases are generic over a store that implements both [`Store`] and [`DurableStore`], so
//! every backend runs the same ones: `durable_store_tests!` at the end runs each on a fresh
//! SQLite file (`sqlite::`) and in a fresh PostgreSQL schema (`postgres::`). A "zombie" is a holder whose item was taken back (`recover_mine`) and leased again at
//! a newer epoch: every write it still tries must fail with `LeaseLost` and change nothing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::durable::{
    CacheClaim, CheckpointType, DurableStore, EvidencePack, NewCacheEntry, NewLedgerEntry, NewStep,
    StepCommit, Verification,
};
use leasehold_core::{
    AcquireRequest, Clock, LeaseRef, ManualClock, NewItem, Store, StoreError, Timestamp,
};
use leasehold_durable::{
    cache_key, ledger_key, DurableError, LlmCache, TaskRunner, ToolOutput, ToolResult,
};
use serde_json::{json, Value};

const T0: Timestamp = Timestamp(1_700_000_000_000);
const LEASE: Duration = Duration::from_secs(60);
const CLAIM: Duration = Duration::from_secs(30);

/// A store, a manual clock, and leases on fresh items.
struct Fixture<S> {
    store: Arc<S>,
    clock: ManualClock,
}

impl<S: Store + DurableStore> Fixture<S> {
    fn new(store: Arc<S>) -> Self {
        Fixture {
            store,
            clock: ManualClock::new(T0),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Enqueues one item and leases it to `owner`.
    async fn leased(&self, owner: &str) -> LeaseRef {
        self.store
            .item_enqueue(NewItem::new("task", json!({})), self.now())
            .await
            .expect("enqueue");
        self.store
            .item_acquire(&AcquireRequest::new(owner, LEASE), self.now())
            .await
            .expect("acquire")
            .expect("an item to lease")
            .lease
    }

    /// Turns `lease` into a zombie: its owner restarts, `recover_mine` takes the item back, and
    /// the owner leases it again at a newer epoch. Returns the current lease.
    async fn take_over(&self, lease: &LeaseRef) -> LeaseRef {
        let back = self
            .store
            .items_recover_owner(&lease.owner, self.now())
            .await
            .expect("recover_mine");
        assert_eq!(back.len(), 1, "recover_mine should take the item back");
        let current = self
            .store
            .item_acquire(&AcquireRequest::new(&lease.owner, LEASE), self.now())
            .await
            .expect("acquire")
            .expect("the requeued item")
            .lease;
        assert_eq!(current.item, lease.item);
        assert!(current.epoch > lease.epoch);
        current
    }

    fn entry(&self, key: &str, output: Value) -> NewCacheEntry {
        NewCacheEntry {
            key: key.to_owned(),
            operation: "plan".into(),
            model: "model-a".into(),
            task: "t".into(),
            output,
            expires_at: self.now().plus(Duration::from_secs(3600)),
        }
    }

    /// Begins and commits a step checkpoint; returns its id.
    async fn committed_step(&self, lease: &LeaseRef, step: i64) -> i64 {
        let id = self
            .store
            .step_begin(
                lease,
                &NewStep {
                    step: Some(step),
                    name: format!("s{step}"),
                    checkpoint_type: CheckpointType::StateTransition,
                    snapshot: json!({ "step": step }),
                },
                self.now(),
            )
            .await
            .expect("begin");
        let evidence = EvidencePack::default();
        let commit = StepCommit {
            lease,
            checkpoint: id,
            evidence: &evidence,
            snapshot: None,
            tool: None,
        };
        self.store
            .step_commit(&commit, self.now())
            .await
            .expect("commit");
        id
    }
}

fn assert_lease_lost(r: Result<impl std::fmt::Debug, StoreError>, what: &str) {
    match r {
        Err(e) if e.is_lease_lost() => {}
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    }
}

/// A zombie's put is refused and stores nothing: the current holder still has to generate.
pub async fn zombie_cache_put_is_refused<S: Store + DurableStore>(store: Arc<S>) {
    let f = Fixture::new(store);
    let key = cache_key("plan", "p", "model-a", "t");
    let zombie = f.leased("w1").await;
    let claim = f
        .store
        .cache_claim(&key, &zombie, CLAIM, f.now())
        .await
        .expect("claim");
    assert!(matches!(claim, CacheClaim::Claimed { .. }), "{claim:?}");
    let current = f.take_over(&zombie).await;

    let put = f
        .store
        .cache_put(&f.entry(&key, json!("zombie's")), &zombie, f.now())
        .await;
    assert_lease_lost(put, "a zombie's cache put");
    let released = f.store.cache_release(&key, &zombie, f.now()).await;
    assert_lease_lost(released, "a zombie's cache release");

    // Nothing was stored: the current holder gets a claim, not the zombie's output.
    let claim = f
        .store
        .cache_claim(&key, &current, CLAIM, f.now())
        .await
        .expect("claim");
    assert!(
        matches!(claim, CacheClaim::Claimed { .. }),
        "the zombie's put changed the cache: {claim:?}"
    );
    f.store
        .cache_put(&f.entry(&key, json!("current's")), &current, f.now())
        .await
        .expect("the current holder's put");
    let other = f.leased("w2").await;
    match f
        .store
        .cache_claim(&key, &other, CLAIM, f.now())
        .await
        .expect("claim")
    {
        CacheClaim::Hit(e) => assert_eq!(e.output, json!("current's")),
        c => panic!("expected the current holder's output, got {c:?}"),
    }
}

/// A zombie cannot renew its claim, and its claim is dead at once: the new holder takes the
/// key without waiting for it to lapse, and the zombie's later renewals do not take it back.
pub async fn zombie_cache_claim_renewal_is_refused<S: Store + DurableStore>(store: Arc<S>) {
    let f = Fixture::new(store);
    let key = cache_key("plan", "p", "model-a", "t");
    let zombie = f.leased("w1").await;
    f.store
        .cache_claim(&key, &zombie, CLAIM, f.now())
        .await
        .expect("claim");
    // Renewing one's own live claim works while the lease is current.
    f.clock.advance(Duration::from_secs(5));
    let renewed = f
        .store
        .cache_claim(&key, &zombie, CLAIM, f.now())
        .await
        .expect("renew");
    assert_eq!(
        renewed,
        CacheClaim::Claimed {
            until: f.now().plus(CLAIM)
        }
    );

    let current = f.take_over(&zombie).await;
    let renewal = f.store.cache_claim(&key, &zombie, CLAIM, f.now()).await;
    assert_lease_lost(renewal, "a zombie's claim renewal");

    // Same instant, claim far from lapsing: the new holder does not wait for the zombie.
    let claim = f
        .store
        .cache_claim(&key, &current, CLAIM, f.now())
        .await
        .expect("claim");
    assert_eq!(
        claim,
        CacheClaim::Claimed {
            until: f.now().plus(CLAIM)
        },
        "the new holder waited for a zombie's claim"
    );
    let renewal = f.store.cache_claim(&key, &zombie, CLAIM, f.now()).await;
    assert_lease_lost(renewal, "a zombie's second claim renewal");
    let other = f.leased("w2").await;
    let busy = f
        .store
        .cache_claim(&key, &other, CLAIM, f.now())
        .await
        .expect("claim");
    assert_eq!(
        busy,
        CacheClaim::Busy {
            holder: current.clone(),
            until: f.now().plus(CLAIM)
        },
        "the zombie's renewal changed the current holder's claim"
    );
}

/// A current lease's put on a key another live lease has claimed is refused and changes
/// nothing; so is a put with no claim at all. The claimant's own put then works.
pub async fn a_live_claim_cannot_be_overwritten_by_another_put<S: Store + DurableStore>(
    store: Arc<S>,
) {
    let f = Fixture::new(store);
    let key = cache_key("plan", "p", "model-a", "t");
    let claimant = f.leased("w1").await;
    let intruder = f.leased("w2").await;
    f.store
        .cache_claim(&key, &claimant, CLAIM, f.now())
        .await
        .expect("claim");

    let err = f
        .store
        .cache_put(&f.entry(&key, json!("intruder's")), &intruder, f.now())
        .await
        .expect_err("a put over another lease's live claim");
    assert!(
        matches!(&err, StoreError::ClaimNotHeld { key: k, item, .. } if k == &key && *item == intruder.item),
        "{err:?}"
    );
    assert!(
        !f.store
            .cache_release(&key, &intruder, f.now())
            .await
            .expect("release"),
        "released another lease's claim"
    );
    let busy = f
        .store
        .cache_claim(&key, &intruder, CLAIM, f.now())
        .await
        .expect("claim");
    assert!(
        matches!(&busy, CacheClaim::Busy { holder, .. } if holder == &claimant),
        "the refused put or release changed the claim: {busy:?}"
    );

    let unclaimed = cache_key("plan", "other prompt", "model-a", "t");
    let err = f
        .store
        .cache_put(&f.entry(&unclaimed, json!(1)), &intruder, f.now())
        .await
        .expect_err("a put with no claim");
    assert!(err.is_claim_not_held(), "{err:?}");

    f.store
        .cache_put(&f.entry(&key, json!("claimant's")), &claimant, f.now())
        .await
        .expect("the claimant's put");
    // A stored output is not overwritten either, not even by the lease that stored it.
    let err = f
        .store
        .cache_put(&f.entry(&key, json!("again")), &claimant, f.now())
        .await
        .expect_err("a second put");
    assert!(err.is_claim_not_held(), "{err:?}");
    match f
        .store
        .cache_claim(&key, &intruder, CLAIM, f.now())
        .await
        .expect("claim")
    {
        CacheClaim::Hit(e) => assert_eq!(e.output, json!("claimant's")),
        c => panic!("expected the claimant's output, got {c:?}"),
    }
}

/// A zombie's retention clean-up deletes nothing.
pub async fn zombie_prune_is_refused<S: Store + DurableStore>(store: Arc<S>) {
    let f = Fixture::new(store);
    let zombie = f.leased("w1").await;
    for step in 0..3 {
        f.committed_step(&zombie, step).await;
    }
    let current = f.take_over(&zombie).await;
    let before = f
        .store
        .checkpoints_of(zombie.item, 100)
        .await
        .expect("list");
    assert_eq!(before.len(), 4, "three steps and recovery's error boundary");

    let pruned = f.store.checkpoints_prune(&zombie, 1, f.now()).await;
    assert_lease_lost(pruned, "a zombie's prune");
    let after = f
        .store
        .checkpoints_of(zombie.item, 100)
        .await
        .expect("list");
    assert_eq!(after, before, "the zombie's prune deleted checkpoints");

    assert_eq!(
        f.store
            .checkpoints_prune(&current, 1, f.now())
            .await
            .expect("the current holder's prune"),
        3
    );
}

/// A zombie's verification verdict is not recorded.
pub async fn zombie_verification_is_refused<S: Store + DurableStore>(store: Arc<S>) {
    let f = Fixture::new(store);
    let zombie = f.leased("w1").await;
    let id = f.committed_step(&zombie, 0).await;
    let current = f.take_over(&zombie).await;

    let verdict = Verification::Invalid {
        reason: "the zombie's view of the world".into(),
    };
    let recorded = f
        .store
        .checkpoint_record_verification(&zombie, id, &verdict, f.now())
        .await;
    assert_lease_lost(recorded, "a zombie's verification");
    let cp = f
        .store
        .checkpoint_get(id)
        .await
        .expect("get")
        .expect("checkpoint");
    assert_eq!(
        (cp.verification, cp.verified_at),
        (None, None),
        "the zombie's verdict was recorded"
    );

    // The current holder records on its own item's checkpoints only.
    let other = f.leased("w2").await;
    let err = f
        .store
        .checkpoint_record_verification(&other, id, &Verification::Valid, f.now())
        .await
        .expect_err("another item's checkpoint");
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
    f.store
        .checkpoint_record_verification(&current, id, &Verification::Valid, f.now())
        .await
        .expect("the current holder's verification");
    let cp = f
        .store
        .checkpoint_get(id)
        .await
        .expect("get")
        .expect("checkpoint");
    assert_eq!(cp.verification, Some(Verification::Valid));
}

/// A zombie's replay is not counted (and not served); the current holder's is.
pub async fn zombie_replay_count_is_refused<S: Store + DurableStore>(store: Arc<S>) {
    let f = Fixture::new(store);
    let zombie = f.leased("w1").await;
    let key = ledger_key("bash", "make", zombie.item, "step 0 #0");
    let id = f
        .store
        .step_begin(
            &zombie,
            &NewStep {
                step: None,
                name: "tool:bash".into(),
                checkpoint_type: CheckpointType::ToolExecuted,
                snapshot: json!({}),
            },
            f.now(),
        )
        .await
        .expect("begin");
    let evidence = EvidencePack::default();
    let tool = NewLedgerEntry {
        key: key.clone(),
        tool: "bash".into(),
        command: "make".into(),
        call: "step 0 #0".into(),
        result: json!({"exit": 0}),
        expires_at: f.now().plus(Duration::from_secs(3600)),
    };
    f.store
        .step_commit(
            &StepCommit {
                lease: &zombie,
                checkpoint: id,
                evidence: &evidence,
                snapshot: None,
                tool: Some(&tool),
            },
            f.now(),
        )
        .await
        .expect("commit with the tool's record");
    let current = f.take_over(&zombie).await;

    let replay = f.store.ledger_get(&key, Some(&zombie), f.now()).await;
    assert_lease_lost(replay, "a zombie's replay");
    let entry = f
        .store
        .ledger_get(&key, None, f.now())
        .await
        .expect("read")
        .expect("the record");
    assert_eq!(entry.replays, 0, "the zombie's replay was counted");
    assert_eq!(entry.call, "step 0 #0");

    let entry = f
        .store
        .ledger_get(&key, Some(&current), f.now())
        .await
        .expect("replay")
        .expect("the record");
    assert_eq!(entry.replays, 1);
    assert_eq!(entry.result, json!({"exit": 0}));
    // Another item's lease neither gets nor counts this item's record.
    let other = f.leased("w2").await;
    assert!(f
        .store
        .ledger_get(&key, Some(&other), f.now())
        .await
        .expect("read")
        .is_none());
    let entry = f
        .store
        .ledger_get(&key, None, f.now())
        .await
        .expect("read")
        .expect("the record");
    assert_eq!(entry.replays, 1);
}

/// A generator whose lease is taken over while it runs is stopped by its next (refused)
/// claim renewal: the caller gets `LeaseLost`, nothing is stored, and the new holder generates
/// at once instead of waiting for the zombie's output.
pub async fn a_zombie_generator_is_stopped_by_its_refused_renewal<S: Store + DurableStore>(
    store: Arc<S>,
) {
    let f = Fixture::new(store);
    let zombie = f.leased("w1").await;
    let cache = LlmCache::new(f.store.clone(), Arc::new(f.clock.clone()))
        .with_claim(Duration::from_millis(90), Duration::from_millis(5))
        .expect("claim settings");
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let generating = {
        let (cache, zombie) = (cache.clone(), zombie.clone());
        tokio::spawn(async move {
            cache
                .get_or_generate(&zombie, "plan", "p", "model-a", "t", || async move {
                    let _ = started_tx.send(());
                    // Never finishes by itself: only the refused renewal ends it.
                    std::future::pending::<Result<Value, DurableError>>().await
                })
                .await
        })
    };
    started.await.expect("the generator started");
    let current = f.take_over(&zombie).await;
    let out = tokio::time::timeout(Duration::from_secs(10), generating)
        .await
        .expect("the zombie's generation was not stopped")
        .expect("join");
    let err = out.expect_err("the zombie's generation");
    assert!(err.is_lease_lost(), "{err:?}");

    let fresh = cache
        .get_or_generate(&current, "plan", "p", "model-a", "t", || async {
            Ok(json!("fresh"))
        })
        .await
        .expect("the current holder generates at once");
    assert_eq!((fresh.output, fresh.hit), (json!("fresh"), false));
}

/// The same command twice in one step executes twice; after a crash, the rerun with a new
/// lease replays both results, in order, and executes nothing.
pub async fn the_same_command_twice_executes_twice_and_replays_twice<S: Store + DurableStore>(
    store: Arc<S>,
) {
    let f = Fixture::new(store);
    let runner = TaskRunner::new(f.store.clone(), Arc::new(f.clock.clone()));
    let runs = Arc::new(AtomicUsize::new(0));
    let task = |crash: bool| {
        let runs = runs.clone();
        move |task: leasehold_durable::Task| async move {
            task.step("build", |t| async move {
                let mut results = Vec::new();
                for _ in 0..2 {
                    let runs = runs.clone();
                    let r: ToolResult = t
                        .tool("bash", "make", || async move {
                            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                            Ok::<_, DurableError>(ToolOutput::from(json!({ "run": n })))
                        })
                        .await?;
                    results.push((r.result, r.replayed));
                }
                if crash {
                    // The worker dies after both tools ran, before the step committed.
                    return Err(DurableError::transient("killed"));
                }
                Ok::<_, DurableError>(json!(results))
            })
            .await
        }
    };

    let first = f.leased("w1").await;
    let err = runner
        .run_with_recovery(first.clone(), task(true))
        .await
        .expect_err("the first attempt dies");
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "both calls executed");

    let second = f.take_over(&first).await;
    let done = runner
        .run_with_recovery(second, task(false))
        .await
        .expect("the rerun");
    assert_eq!(
        done.output,
        json!([[{"run": 1}, true], [{"run": 2}, true]]),
        "both results replayed, in order"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2, "nothing executed again");
    assert_eq!(
        (done.report.tool_executions, done.report.tool_replays),
        (0, 2)
    );
    let history = f
        .store
        .ledger_history(first.item, 10)
        .await
        .expect("history");
    let calls: Vec<_> = history
        .iter()
        .rev()
        .map(|e| (e.call.as_str(), e.replays))
        .collect();
    assert_eq!(calls, vec![("step 0 #0", 1), ("step 0 #1", 1)]);

    // A caller-given key is the call's identity: the same key replays, another executes.
    let third = f.leased("w2").await;
    let keyed = runner
        .run_with_recovery(third, |task| async move {
            let mut replayed = Vec::new();
            for key in ["a", "a", "b"] {
                let r = task
                    .tool_keyed("bash", "make", key, || async {
                        Ok::<_, DurableError>(json!("made"))
                    })
                    .await?;
                replayed.push(r.replayed);
            }
            let empty = task
                .tool_keyed("bash", "make", "", || async {
                    Ok::<_, DurableError>(json!("never"))
                })
                .await;
            assert!(
                matches!(empty, Err(DurableError::InvalidInput(_))),
                "{empty:?}"
            );
            Ok::<_, DurableError>(replayed)
        })
        .await
        .expect("keyed calls");
    assert_eq!(keyed.output, vec![false, true, false]);
}

// Every case on a fresh SQLite file and in a fresh PostgreSQL schema.
durable_store_tests!(
    zombie_cache_put_is_refused,
    zombie_cache_claim_renewal_is_refused,
    a_live_claim_cannot_be_overwritten_by_another_put,
    zombie_prune_is_refused,
    zombie_verification_is_refused,
    zombie_replay_count_is_refused,
    a_zombie_generator_is_stopped_by_its_refused_renewal,
    the_same_command_twice_executes_twice_and_replays_twice,
);
