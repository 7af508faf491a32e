//! The checks after every step: the store and the model agree item by item, and invariants
//! 1–4 hold.

use std::collections::BTreeSet;

use leasehold_core::{ItemId, ItemStatus};

use super::runner::{ok, Runner};
use super::OWNERS;

impl Runner {
    /// The store agrees with the model, and invariants 1–4 hold.
    pub(super) async fn check(&self) -> Result<(), String> {
        let items = self.all_items().await?;
        let ids: Vec<ItemId> = items.iter().map(|i| i.id).collect();
        let model_ids: Vec<ItemId> = self.model.items.keys().copied().collect();
        ensure_eq!(ids, model_ids, "invariant 1: the ids of all items");
        let counts = ok(self.store.items_count().await, "items_count")?;
        ensure_eq!(
            counts,
            self.model.counts(),
            "invariant 1: the counts by status"
        );
        ensure_eq!(
            counts.total(),
            items.len() as u64,
            "invariant 1: every item counted in exactly one status"
        );
        for item in &items {
            let id = item.id;
            let m = &self.model.items[&id];
            ensure_eq!(item.status, m.status, "item {id}'s status");
            ensure_eq!(item.attempts, m.attempts, "item {id}'s attempts");
            ensure_eq!(item.max_attempts, m.max_attempts, "item {id}'s budget");
            ensure_eq!(item.epoch, m.epoch, "item {id}'s epoch");
            ensure!(
                item.attempts <= item.max_attempts,
                "invariant 4: item {id} has {} attempts of {}",
                item.attempts,
                item.max_attempts
            );
            match item.status {
                ItemStatus::InProgress => {
                    ensure_eq!(item.owner, m.owner, "item {id}'s owner");
                    ensure_eq!(item.lease_expires_at, m.expires, "item {id}'s lease expiry");
                    ensure_eq!(item.last_heartbeat_at, m.heartbeat, "item {id}'s heartbeat");
                }
                ItemStatus::Pending => {
                    ensure_eq!(item.run_at, m.run_at, "item {id}'s run_at");
                    ensure_eq!(item.lease(), None, "pending item {id}'s lease");
                }
                ItemStatus::Failed => {
                    ensure!(
                        item.error.is_some(),
                        "invariant 4: failed item {id} must keep an error"
                    );
                }
                // The model never parks an item nor gives one dependencies: the decision and
                // dependency cases cover those statuses.
                ItemStatus::Completed
                | ItemStatus::Cancelled
                | ItemStatus::Awaiting
                | ItemStatus::Blocked => {}
            }
        }
        for owner in OWNERS {
            let held: BTreeSet<ItemId> =
                ok(self.store.leases_of_owner(owner).await, "leases_of_owner")?
                    .into_iter()
                    .map(|i| i.id)
                    .collect();
            let modelled: BTreeSet<ItemId> = self
                .model
                .items
                .iter()
                .filter(|(_, m)| {
                    m.status == ItemStatus::InProgress && m.owner.as_deref() == Some(owner)
                })
                .map(|(id, _)| *id)
                .collect();
            ensure_eq!(held, modelled, "invariant 2: the leases of {owner}");
        }
        Ok(())
    }
}
