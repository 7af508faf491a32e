//! The runner: one [`Op`] applied to the real store and to the model, each result compared.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use leasehold_core::{
    AcquireRequest, FailDisposition, FailOutcome, Item, ItemFilter, ItemId, ItemStatus, LeaseRef,
    Liveness, LivenessCheck, NewItem, ReapCandidate, ReapRequest, Store, StoreResult, Timestamp,
};
use serde_json::json;

use super::state::{Model, Modelled};
use super::{Coverage, LeaseChoice, Op, Pick, OWNERS, STALE_LIMITS_MS};

/// The liveness answer of a sweep: per owner, and a log of who was asked.
pub(super) struct OwnerLiveness {
    pub(super) alive: [bool; 3],
    pub(super) asked: Mutex<Vec<ItemId>>,
}

impl OwnerLiveness {
    fn is_alive(&self, owner: &str) -> bool {
        OWNERS
            .iter()
            .position(|o| *o == owner)
            .is_some_and(|i| self.alive[i])
    }
}

#[async_trait]
impl LivenessCheck for OwnerLiveness {
    async fn check(&self, candidate: &ReapCandidate) -> Liveness {
        self.asked.lock().expect("asked log").push(candidate.item);
        if self.is_alive(&candidate.owner) {
            Liveness::Alive
        } else {
            Liveness::Dead
        }
    }
}

/// A holder's write, as the runner performs it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Write {
    Renew(Duration),
    Complete,
    FailRetry(Duration),
    FailPermanent,
    Release,
    Checkpoint,
}

/// What a holder's write returned.
#[derive(Debug, PartialEq)]
pub(super) enum Written {
    Renewed(Timestamp),
    Done,
    Failed(FailOutcome),
    Checkpointed,
}

pub(super) fn ok<T>(result: StoreResult<T>, what: &str) -> Result<T, String> {
    result.map_err(|e| format!("{what} failed: {e} ({e:?})"))
}

/// The store, the model, the clock and every lease ever handed out.
pub(super) struct Runner {
    pub(super) store: Arc<dyn Store>,
    pub(super) model: Model,
    pub(super) now: Timestamp,
    pub(super) issued: Vec<LeaseRef>,
    pub(super) inputs: i64,
    pub(super) coverage: Coverage,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("now", &self.now)
            .field("model", &self.model)
            .finish()
    }
}

pub(super) fn secs(s: u8) -> Duration {
    Duration::from_secs(u64::from(s))
}

impl Runner {
    pub(super) async fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Enqueue {
                priority,
                delay_s,
                max_attempts,
            } => self.enqueue(priority, delay_s, max_attempts).await,
            Op::Acquire {
                owner,
                limit,
                lease_s,
            } => self.acquire(owner, limit, lease_s).await,
            Op::Renew { ref pick, lease_s } => self.write(pick, Write::Renew(secs(lease_s))).await,
            Op::Complete { ref pick } => self.write(pick, Write::Complete).await,
            Op::FailRetry { ref pick, delay_s } => {
                self.write(pick, Write::FailRetry(secs(delay_s))).await
            }
            Op::FailPermanent { ref pick } => self.write(pick, Write::FailPermanent).await,
            Op::Release { ref pick } => self.write(pick, Write::Release).await,
            Op::Checkpoint { ref pick } => self.write(pick, Write::Checkpoint).await,
            Op::Reap {
                alive,
                stale,
                dry_run,
                max_attempts,
            } => self.reap(alive, stale, dry_run, max_attempts).await,
            Op::RecoverMine { owner } => self.recover(owner).await,
            Op::Advance { secs: s } => {
                self.now = self.now.plus(secs(s));
                Ok(())
            }
        }
    }

    pub(super) async fn enqueue(
        &mut self,
        priority: i32,
        delay_s: u8,
        max_attempts: u32,
    ) -> Result<(), String> {
        self.inputs += 1;
        let item = NewItem::new("job", json!({ "n": self.inputs }))
            .priority(priority)
            .delay(secs(delay_s))
            .max_attempts(max_attempts);
        let id = ok(
            self.store.item_enqueue(item, self.now).await,
            "item_enqueue",
        )?;
        ensure!(
            !self.model.items.contains_key(&id),
            "item_enqueue returned id {id}, which an earlier item has"
        );
        self.model.items.insert(
            id,
            Modelled {
                status: ItemStatus::Pending,
                attempts: 0,
                max_attempts,
                priority,
                run_at: self.now.plus(secs(delay_s)),
                epoch: 0,
                owner: None,
                expires: None,
                heartbeat: None,
                checkpoints: 0,
            },
        );
        Ok(())
    }

    pub(super) async fn acquire(
        &mut self,
        owner: usize,
        limit: u32,
        lease_s: u8,
    ) -> Result<(), String> {
        let owner_id = OWNERS[owner];
        let node = owner_id.split('/').next().unwrap_or(owner_id);
        let lease = secs(lease_s);
        let request = AcquireRequest::new(owner_id, lease)
            .node(node, 1)
            .limit(limit);
        let expected = self.model.acquisition_order(self.now, limit);
        let got = ok(
            self.store.items_acquire(&request, self.now).await,
            "items_acquire",
        )?;
        let got_ids: Vec<ItemId> = got.iter().map(|l| l.item.id).collect();
        let distinct: BTreeSet<ItemId> = got_ids.iter().copied().collect();
        ensure!(
            distinct.len() == got_ids.len(),
            "one batch leased an item twice: {got_ids:?}"
        );
        ensure_eq!(
            distinct,
            expected.iter().copied().collect::<BTreeSet<_>>(),
            "the items acquired (ready pending ones by priority, run_at, id; up to {limit})"
        );
        for leased in got {
            let id = leased.item.id;
            let m = self
                .model
                .items
                .get_mut(&id)
                .ok_or_else(|| format!("acquired unknown item {id}"))?;
            ensure!(
                m.status == ItemStatus::Pending,
                "item {id} was acquired while the model has it {}",
                m.status
            );
            ensure!(
                leased.lease.epoch > m.epoch,
                "the epoch must increase at every acquisition: item {id} had {}, got {}",
                m.epoch,
                leased.lease.epoch
            );
            ensure_eq!(leased.lease.epoch, m.epoch + 1, "item {id}'s new epoch");
            ensure_eq!(
                leased.lease.owner.as_str(),
                owner_id,
                "item {id}'s lease owner"
            );
            ensure_eq!(
                leased.item.status,
                ItemStatus::InProgress,
                "item {id}'s status"
            );
            ensure_eq!(leased.item.attempts, m.attempts + 1, "item {id}'s attempts");
            ensure_eq!(
                leased.expires_at,
                self.now.plus(lease),
                "item {id}'s expiry"
            );
            m.status = ItemStatus::InProgress;
            m.epoch = leased.lease.epoch;
            m.attempts += 1;
            m.owner = Some(owner_id.to_owned());
            m.expires = Some(self.now.plus(lease));
            m.heartbeat = Some(self.now);
            self.issued.push(leased.lease);
            self.coverage.acquired += 1;
        }
        Ok(())
    }

    /// The lease a pick names, and whether the write must apply.
    pub(super) fn choose(&self, pick: &Pick) -> Option<(LeaseRef, bool)> {
        let live = self.model.live_leases();
        match pick.choice {
            LeaseChoice::Current => {
                (!live.is_empty()).then(|| (live[pick.index.index(live.len())].clone(), true))
            }
            LeaseChoice::Stale => {
                let stale: Vec<&LeaseRef> =
                    self.issued.iter().filter(|l| !live.contains(l)).collect();
                (!stale.is_empty()).then(|| (stale[pick.index.index(stale.len())].clone(), false))
            }
            LeaseChoice::WrongOwner => (!live.is_empty()).then(|| {
                let mut lease = live[pick.index.index(live.len())].clone();
                let at = OWNERS.iter().position(|o| *o == lease.owner).unwrap_or(0);
                lease.owner = OWNERS[(at + 1) % OWNERS.len()].to_owned();
                (lease, false)
            }),
        }
    }

    pub(super) async fn call(&self, write: Write, lease: &LeaseRef) -> StoreResult<Written> {
        let (s, now) = (&self.store, self.now);
        match write {
            Write::Renew(d) => s.lease_renew(lease, d, now).await.map(Written::Renewed),
            Write::Complete => s
                .item_complete(
                    lease,
                    json!({ "by": lease.owner, "epoch": lease.epoch }),
                    now,
                )
                .await
                .map(|()| Written::Done),
            Write::FailRetry(delay) => s
                .item_fail(lease, "transient", FailDisposition::Retry { delay }, now)
                .await
                .map(Written::Failed),
            Write::FailPermanent => s
                .item_fail(lease, "permanent", FailDisposition::Permanent, now)
                .await
                .map(Written::Failed),
            Write::Release => s
                .item_release(lease, None, now)
                .await
                .map(|_| Written::Done),
            Write::Checkpoint => s
                .checkpoint_save(lease, "step", json!({ "epoch": lease.epoch }), now)
                .await
                .map(|_| Written::Checkpointed),
        }
    }

    pub(super) async fn write(&mut self, pick: &Pick, write: Write) -> Result<(), String> {
        let Some((lease, valid)) = self.choose(pick) else {
            return Ok(());
        };
        let id = lease.item;
        if !valid {
            return self.fenced(write, &lease).await;
        }
        let result = ok(
            self.call(write, &lease).await,
            &format!("{write:?} with {lease:?}"),
        )?;
        self.coverage.applied += 1;
        let now = self.now;
        let m = self.model.items.get_mut(&id).expect("a live lease's item");
        match write {
            Write::Renew(d) => {
                ensure_eq!(result, Written::Renewed(now.plus(d)), "the renewal");
                m.expires = Some(now.plus(d));
                m.heartbeat = Some(now);
            }
            Write::Complete => {
                m.status = ItemStatus::Completed;
            }
            Write::FailRetry(delay) => {
                if m.attempts >= m.max_attempts {
                    ensure_eq!(
                        result,
                        Written::Failed(FailOutcome::DeadLettered),
                        "a retryable failure with the budget spent"
                    );
                    m.status = ItemStatus::Failed;
                } else {
                    ensure_eq!(
                        result,
                        Written::Failed(FailOutcome::Retrying {
                            run_at: now.plus(delay)
                        }),
                        "a retryable failure"
                    );
                    m.status = ItemStatus::Pending;
                    m.run_at = now.plus(delay);
                }
            }
            Write::FailPermanent => {
                ensure_eq!(
                    result,
                    Written::Failed(FailOutcome::DeadLettered),
                    "a permanent failure"
                );
                m.status = ItemStatus::Failed;
            }
            Write::Release => {
                m.status = ItemStatus::Pending;
                m.attempts -= 1;
            }
            Write::Checkpoint => {
                m.checkpoints += 1;
                let saved = ok(self.store.checkpoints_list(id).await, "checkpoints_list")?;
                ensure_eq!(saved.len(), m.checkpoints, "item {id}'s checkpoints");
            }
        }
        match m.status {
            ItemStatus::Completed => self.coverage.completed += 1,
            ItemStatus::Failed => self.coverage.dead_lettered += 1,
            _ => {}
        }
        if m.status != ItemStatus::InProgress {
            m.owner = None;
            m.expires = None;
            m.heartbeat = None;
        }
        if matches!(write, Write::Release) {
            self.take_run_at(id).await?;
        }
        Ok(())
    }

    /// A write with a lease that is not held: `LeaseLost`, and nothing changed.
    pub(super) async fn fenced(&mut self, write: Write, lease: &LeaseRef) -> Result<(), String> {
        let id = lease.item;
        let before = ok(self.store.item_get(id).await, "item_get")?;
        let checkpoints = ok(self.store.checkpoints_list(id).await, "checkpoints_list")?;
        match self.call(write, lease).await {
            Err(e) if e.is_lease_lost() => {}
            other => {
                return Err(format!(
                    "{write:?} with the stale lease {lease:?} must be refused with LeaseLost, got {other:?}"
                ))
            }
        }
        ensure_eq!(
            ok(self.store.item_get(id).await, "item_get")?,
            before,
            "item {id} after a refused {write:?}"
        );
        ensure_eq!(
            ok(self.store.checkpoints_list(id).await, "checkpoints_list")?,
            checkpoints,
            "item {id}'s checkpoints after a refused {write:?}"
        );
        self.coverage.fenced += 1;
        Ok(())
    }

    /// A requeue (release, reap, `recover_mine`) makes the item ready now; the exact `run_at`
    /// is the store's to choose, so the model adopts it once checked.
    pub(super) async fn take_run_at(&mut self, id: ItemId) -> Result<(), String> {
        let item = self.stored(id).await?;
        ensure!(
            item.run_at <= self.now,
            "requeued item {id} must be ready at once: run_at {} > now {}",
            item.run_at,
            self.now
        );
        if let Some(m) = self.model.items.get_mut(&id) {
            m.run_at = item.run_at;
        }
        Ok(())
    }

    pub(super) async fn stored(&self, id: ItemId) -> Result<Item, String> {
        ok(self.store.item_get(id).await, "item_get")?.ok_or_else(|| format!("item {id} is gone"))
    }

    pub(super) async fn all_items(&self) -> Result<Vec<Item>, String> {
        ok(
            self.store
                .items_list(&ItemFilter {
                    limit: 100_000,
                    ..ItemFilter::default()
                })
                .await,
            "items_list",
        )
    }

    /// Applies a requeue or dead-letter by a sweep or `recover_mine`.
    pub(super) async fn take_back(
        &mut self,
        id: ItemId,
        dead_lettered: bool,
    ) -> Result<(), String> {
        let m = self.model.items.get_mut(&id).expect("a taken item");
        m.owner = None;
        m.expires = None;
        m.heartbeat = None;
        if dead_lettered {
            m.status = ItemStatus::Failed;
            self.coverage.dead_lettered += 1;
        } else {
            m.status = ItemStatus::Pending;
            m.epoch += 1;
            self.coverage.requeued += 1;
            self.take_run_at(id).await?;
        }
        Ok(())
    }

    pub(super) async fn reap(
        &mut self,
        alive: [bool; 3],
        stale: usize,
        dry_run: bool,
        max_attempts: Option<u32>,
    ) -> Result<(), String> {
        let stale_after = Duration::from_millis(STALE_LIMITS_MS[stale]);
        let liveness = OwnerLiveness {
            alive,
            asked: Mutex::new(Vec::new()),
        };
        let plan = self.model.reap_plan(
            self.now,
            stale_after,
            &|o| liveness.is_alive(o),
            max_attempts,
        );
        let mut request = ReapRequest::new(1_000, stale_after);
        request.dry_run = dry_run;
        request.max_attempts = max_attempts;
        let before = if dry_run {
            Some(self.all_items().await?)
        } else {
            None
        };
        let stats = ok(
            self.store
                .items_reap_expired(&request, &liveness, self.now)
                .await,
            "items_reap_expired",
        )?;
        let reported: BTreeMap<ItemId, bool> = stats
            .items
            .iter()
            .map(|r| (r.id, r.dead_lettered))
            .collect();
        ensure_eq!(
            reported,
            plan.taken,
            "the items the sweep took (id → dead-lettered)"
        );
        ensure_eq!(
            stats.items.len(),
            plan.taken.len(),
            "the sweep's item reports"
        );
        ensure_eq!(stats.expired_found, plan.found, "expired_found");
        ensure_eq!(
            stats.recovered,
            plan.taken.values().filter(|d| !**d).count() as u64,
            "recovered"
        );
        ensure_eq!(
            stats.failed,
            plan.taken.values().filter(|d| **d).count() as u64,
            "failed"
        );
        ensure_eq!(stats.skipped_alive, plan.skipped_alive, "skipped_alive");
        ensure_eq!(
            stats.skipped_changed,
            0,
            "skipped_changed (nobody wrote during the sweep)"
        );
        ensure_eq!(stats.dry_run, dry_run, "dry_run");
        let asked: BTreeSet<ItemId> = liveness
            .asked
            .lock()
            .expect("asked log")
            .iter()
            .copied()
            .collect();
        ensure_eq!(asked, plan.asked, "the items whose owner was asked");
        if let Some(before) = before {
            ensure_eq!(self.all_items().await?, before, "the items after a dry run");
            return Ok(());
        }
        self.coverage.skipped_alive += plan.skipped_alive;
        for (id, dead_lettered) in plan.taken {
            self.take_back(id, dead_lettered).await?;
        }
        Ok(())
    }

    pub(super) async fn recover(&mut self, owner: usize) -> Result<(), String> {
        let owner_id = OWNERS[owner];
        let expected: BTreeMap<ItemId, (i64, bool)> = self
            .model
            .items
            .iter()
            .filter(|(_, m)| {
                m.status == ItemStatus::InProgress && m.owner.as_deref() == Some(owner_id)
            })
            .map(|(id, m)| (*id, (m.epoch, m.attempts >= m.max_attempts)))
            .collect();
        let got = ok(
            self.store.items_recover_owner(owner_id, self.now).await,
            "items_recover_owner",
        )?;
        let got_map: BTreeMap<ItemId, (i64, bool)> = got
            .iter()
            .map(|r| (r.id, (r.previous_epoch, r.dead_lettered)))
            .collect();
        ensure_eq!(
            got.len(),
            got_map.len(),
            "recover_mine's reports (one per item)"
        );
        ensure_eq!(
            got_map,
            expected,
            "recover_mine of {owner_id} (id → previous epoch, dead-lettered)"
        );
        for (id, (_, dead_lettered)) in expected {
            self.take_back(id, dead_lettered).await?;
        }
        Ok(())
    }
}
