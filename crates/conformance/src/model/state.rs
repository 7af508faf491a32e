//! The protocol in memory: what the model knows of each item, and what it says each
//! operation does.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use leasehold_core::{ItemId, ItemStatus, LeaseRef, StatusCounts, Timestamp};

/// What the model knows of one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Modelled {
    pub(super) status: ItemStatus,
    pub(super) attempts: u32,
    pub(super) max_attempts: u32,
    pub(super) priority: i32,
    pub(super) run_at: Timestamp,
    pub(super) epoch: i64,
    pub(super) owner: Option<String>,
    pub(super) expires: Option<Timestamp>,
    pub(super) heartbeat: Option<Timestamp>,
    pub(super) checkpoints: usize,
}

/// What a sweep should find and do.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ReapPlan {
    pub(super) found: u64,
    pub(super) skipped_alive: u64,
    /// Item → dead-lettered.
    pub(super) taken: BTreeMap<ItemId, bool>,
    /// Expired items within the stale limit: the ones whose owner is asked.
    pub(super) asked: BTreeSet<ItemId>,
}

/// The protocol in memory.
#[derive(Debug, Default)]
pub(super) struct Model {
    pub(super) items: BTreeMap<ItemId, Modelled>,
}

impl Model {
    /// The leases the model says are held, by item.
    pub(super) fn live_leases(&self) -> Vec<LeaseRef> {
        self.items
            .iter()
            .filter(|(_, m)| m.status == ItemStatus::InProgress)
            .map(|(id, m)| LeaseRef {
                item: *id,
                owner: m.owner.clone().expect("an in-progress item has an owner"),
                epoch: m.epoch,
            })
            .collect()
    }

    /// The ready items `limit` acquisitions take, in acquisition order.
    pub(super) fn acquisition_order(&self, now: Timestamp, limit: u32) -> Vec<ItemId> {
        let mut ready: Vec<_> = self
            .items
            .iter()
            .filter(|(_, m)| m.status == ItemStatus::Pending && m.run_at <= now)
            .collect();
        ready.sort_by_key(|(id, m)| (Reverse(m.priority), m.run_at, **id));
        ready
            .into_iter()
            .take(limit as usize)
            .map(|(id, _)| *id)
            .collect()
    }

    /// What a sweep at `now` should do.
    pub(super) fn reap_plan(
        &self,
        now: Timestamp,
        stale_after: Duration,
        alive: &dyn Fn(&str) -> bool,
        limit: Option<u32>,
    ) -> ReapPlan {
        let mut plan = ReapPlan::default();
        for (id, m) in &self.items {
            if m.status != ItemStatus::InProgress {
                continue;
            }
            let expired = m.expires.is_some_and(|e| e <= now);
            let past_stale = m.heartbeat.is_some_and(|h| now.since(h) > stale_after);
            if !expired && !past_stale {
                continue;
            }
            plan.found += 1;
            let owner = m.owner.as_deref().unwrap_or_default();
            if !past_stale {
                plan.asked.insert(*id);
                if alive(owner) {
                    plan.skipped_alive += 1;
                    continue;
                }
            }
            let budget = limit.map_or(m.max_attempts, |l| l.min(m.max_attempts));
            plan.taken.insert(*id, m.attempts >= budget);
        }
        plan
    }

    /// The counts by status.
    pub(super) fn counts(&self) -> StatusCounts {
        let mut c = StatusCounts::default();
        for m in self.items.values() {
            c.set(m.status, c.get(m.status) + 1);
        }
        c
    }
}
