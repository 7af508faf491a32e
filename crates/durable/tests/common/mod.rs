//! What every durable test needs, for every backend: a fresh store (a real SQLite file, or a
//! schema of its own on the PostgreSQL server `LEASEHOLD_PG_URL` names), a manual clock, a
//! leased item, and a second handle on the same database — what another process or host would
//! have.
//!
//! A test is written once as `async fn name<S: Backend>(env: Env<S>)` and listed in its file's
//! [`durable_tests!`], which makes one `#[tokio::test]` per backend of it: `sqlite::name` and
//! `postgres::name`. Without a reachable PostgreSQL server the `postgres::` tests print why
//! and pass (or fail, under `LEASEHOLD_REQUIRE_PG=1`, through `TestSchema::create`).

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::durable::DurableStore;
use leasehold_core::{AcquireRequest, LeaseRef, ManualClock, NewItem, Store, Timestamp};
use leasehold_postgres::testing::TestSchema;
use leasehold_postgres::PgStore;
use leasehold_sqlite::SqliteStore;
use serde_json::json;

pub const T0: Timestamp = Timestamp(1_700_000_000_000);
pub const LEASE: Duration = Duration::from_secs(60);

/// Where a test's database lives.
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A fresh PostgreSQL schema, dropped when the test ends.
    Postgres(TestSchema),
}

impl Location {
    /// The `--db`-style address of the database: a file path or a `postgres://…?schema=` URL
    /// (what a child process is given).
    pub fn url(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(schema) => schema.url(),
        }
    }
}

/// A backend the durable suite runs on: both store traits, and a way to open another handle
/// on the same database.
pub trait Backend: Store + DurableStore + Sized {
    /// The backend's name, in messages.
    const NAME: &'static str;

    /// A fresh, empty database for `test`, or `None` (after printing why) when this backend
    /// cannot run here.
    fn location(test: &str, dir: &std::path::Path) -> impl Future<Output = Option<Location>>;

    /// Opens a handle on the database at `url` (its own connection or pool).
    fn open_at(url: &str) -> impl Future<Output = Self> + Send;
}

impl Backend for SqliteStore {
    const NAME: &'static str = "sqlite";

    async fn location(_test: &str, dir: &std::path::Path) -> Option<Location> {
        Some(Location::Sqlite(dir.join("durable.db")))
    }

    fn open_at(url: &str) -> impl Future<Output = Self> + Send {
        let url = url.to_owned();
        async move {
            SqliteStore::open(&url)
                .await
                .expect("open the SQLite store")
        }
    }
}

impl Backend for PgStore {
    const NAME: &'static str = "postgres";

    async fn location(test: &str, _dir: &std::path::Path) -> Option<Location> {
        match TestSchema::create("lh_durable").await {
            Ok(schema) => Some(Location::Postgres(schema)),
            Err(why) => {
                eprintln!("{test}: skipped (PostgreSQL not available): {why}");
                None
            }
        }
    }

    fn open_at(url: &str) -> impl Future<Output = Self> + Send {
        let url = url.to_owned();
        async move {
            PgStore::open(&url)
                .await
                .expect("open the PostgreSQL store")
        }
    }
}

pub struct Env<S: Backend> {
    /// Files the test makes (artifacts, a SQLite database).
    pub dir: tempfile::TempDir,
    pub store: Arc<S>,
    pub clock: ManualClock,
    pub location: Location,
}

impl<S: Backend> Env<S> {
    /// A fresh store for `test`, or `None` when the backend is not available.
    pub async fn new(test: &str) -> Option<Env<S>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = S::location(test, dir.path()).await?;
        let store = Arc::new(S::open_at(&location.url()).await);
        Some(Env {
            dir,
            store,
            clock: ManualClock::new(T0),
            location,
        })
    }

    /// Another handle on the same database, with its own connection (SQLite) or pool
    /// (PostgreSQL): what another process, or another host, sees.
    pub async fn another_node(&self) -> Arc<S> {
        Arc::new(S::open_at(&self.location.url()).await)
    }

    pub fn clock(&self) -> Arc<dyn leasehold_core::Clock> {
        Arc::new(self.clock.clone())
    }

    pub fn durable(&self) -> Arc<dyn DurableStore> {
        self.store.clone()
    }

    pub fn queue(&self) -> Arc<dyn Store> {
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

impl<S: Backend> Drop for Env<S> {
    /// Dropping a `TestSchema` blocks until `DROP SCHEMA` is done, which waits for any
    /// transaction a connection of this test still has open (a test that failed half-way); and
    /// a connection ends its transaction only while the test's runtime runs it. So the schema
    /// is dropped on the runtime's blocking pool, which the runtime waits for after it has
    /// dropped its tasks (and with them the connections), instead of on the runtime's thread.
    fn drop(&mut self) {
        if !matches!(self.location, Location::Postgres(_)) {
            return;
        }
        let location = std::mem::replace(&mut self.location, Location::Sqlite(PathBuf::new()));
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(location))),
            Err(_) => drop(location),
        }
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

/// Makes one test per backend of each listed `async fn name<S: Backend>(env: Env<S>)`:
/// `sqlite::name` on a fresh SQLite file and `postgres::name` in a fresh PostgreSQL schema
/// (skipped, saying why, when the server is not available). Each entry may carry its own
/// test attribute (default `#[tokio::test]`).
#[macro_export]
macro_rules! durable_tests {
    ($( $(#[$attr:meta])? $name:ident ),* $(,)?) => {
        $crate::durable_tests!(@backend sqlite, leasehold_sqlite::SqliteStore; $( $(#[$attr])? $name ),*);
        $crate::durable_tests!(@backend postgres, leasehold_postgres::PgStore; $( $(#[$attr])? $name ),*);
    };
    (@backend $module:ident, $store:ty; $( $(#[$attr:meta])? $name:ident ),*) => {
        mod $module {
            $(
                $crate::durable_tests!(@one $store; $(#[$attr])? $name);
            )*
        }
    };
    (@one $store:ty; #[$attr:meta] $name:ident) => {
        #[$attr]
        async fn $name() {
            let Some(env) = $crate::common::Env::<$store>::new(stringify!($name)).await else {
                return;
            };
            super::$name(env).await
        }
    };
    (@one $store:ty; $name:ident) => {
        $crate::durable_tests!(@one $store; #[tokio::test] $name);
    };
}

/// The same for cases that take the store itself, `async fn name<S: Store + DurableStore>(store:
/// Arc<S>)` (they make their own clock): `sqlite::name` and `postgres::name`, the database kept
/// until the case returns.
#[macro_export]
macro_rules! durable_store_tests {
    ($( $name:ident ),* $(,)?) => {
        $crate::durable_store_tests!(@backend sqlite, leasehold_sqlite::SqliteStore; $( $name ),*);
        $crate::durable_store_tests!(@backend postgres, leasehold_postgres::PgStore; $( $name ),*);
    };
    (@backend $module:ident, $store:ty; $( $name:ident ),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(env) =
                        $crate::common::Env::<$store>::new(stringify!($name)).await
                    else {
                        return;
                    };
                    super::$name(env.store.clone()).await;
                    drop(env);
                }
            )*
        }
    };
}
