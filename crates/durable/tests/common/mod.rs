//! What every durable test needs: a real SQLite file, a manual clock, and a leased item.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{AcquireRequest, LeaseRef, ManualClock, NewItem, Store, Timestamp};
use leasehold_sqlite::SqliteStore;
use serde_json::json;

pub const T0: Timestamp = Timestamp(1_700_000_000_000);
pub const LEASE: Duration = Duration::from_secs(60);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub clock: ManualClock,
}

impl Env {
    pub async fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqliteStore::open(dir.path().join("durable.db"))
                .await
                .expect("open store"),
        );
        Env {
            dir,
            store,
            clock: ManualClock::new(T0),
        }
    }

    pub fn clock(&self) -> Arc<dyn leasehold_core::Clock> {
        Arc::new(self.clock.clone())
    }

    pub fn durable(&self) -> Arc<dyn leasehold_core::durable::DurableStore> {
        self.store.clone()
    }

    /// Enqueues one item and leases it to `owner`.
    pub async fn leased(&self, owner: &str) -> LeaseRef {
        let now = self.clock.now_ts();
        self.store
            .item_enqueue(NewItem::new("task", json!({})), now)
            .await
            .expect("enqueue");
        self.acquire(owner).await.expect("an item to lease")
    }

    /// Leases the next ready item to `owner`.
    pub async fn acquire(&self, owner: &str) -> Option<LeaseRef> {
        let now = self.clock.now_ts();
        self.store
            .item_acquire(&AcquireRequest::new(owner, LEASE), now)
            .await
            .expect("acquire")
            .map(|l| l.lease)
    }

    /// What a crashed-and-restarted worker does first: recover_mine, then lease again.
    pub async fn crash_and_reacquire(&self, owner: &str) -> LeaseRef {
        let now = self.clock.now_ts();
        let back = self
            .store
            .items_recover_owner(owner, now)
            .await
            .expect("recover_mine");
        assert_eq!(back.len(), 1, "recover_mine should take the item back");
        self.acquire(owner).await.expect("the requeued item")
    }
}

pub trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl NowTs for ManualClock {
    fn now_ts(&self) -> Timestamp {
        leasehold_core::Clock::now(self)
    }
}
