//! leasehold: durable work items on a supervised actor tree — work that must not be lost.
//!
//! This facade re-exports the member crates:
//! - [`core`]: items, leases, the [`Store`] trait, configuration, clock, errors;
//! - [`sqlite`]: the embedded SQLite store;
//! - [`postgres`]: the PostgreSQL store, for several processes or hosts on one queue;
//! - [`runtime`]: the supervised actor tree and the fault-injection harness;
//! - [`durable`]: durable execution — retry, checkpoints with evidence, the LLM output cache,
//!   the tool ledger and `run_with_recovery`.
//!
//! [`open_store`] turns a `--db` URL into a store; [`open_durable_store`] into a store for
//! durable execution as well (SQLite or PostgreSQL alike).

pub use leasehold_core as core;
pub use leasehold_durable as durable;
pub use leasehold_postgres as postgres;
pub use leasehold_runtime as runtime;
pub use leasehold_sqlite as sqlite;

pub use leasehold_core::*;
pub use leasehold_postgres::PgStore;
pub use leasehold_runtime::{
    ClockSource, Escalation, JobContext, JobError, Leasehold, LeaseholdBuilder, NodeEvent,
    NodeHandle, RuntimeConfig, RuntimeError, Schedule, TreeState,
};
pub use leasehold_sqlite::SqliteStore;

use std::sync::Arc;

/// Opens the store a `--db` URL names: a SQLite path, or `sqlite://PATH`
/// (`sqlite:///abs/path` for an absolute path), or `postgres://…` / `postgresql://…`
/// (PostgreSQL, in the schema `leasehold` unless `?schema=NAME` names another; created and
/// migrated if missing). Other schemes are refused with
/// [`StoreError::InvalidInput`].
///
/// ```no_run
/// # async fn demo() -> Result<(), leasehold::StoreError> {
/// let store = leasehold::open_store("./leasehold.db").await?;
/// println!("{:?}", store.items_count().await?);
/// # Ok(()) }
/// ```
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match open_backend(url).await? {
        Backend::Sqlite(s) => Arc::new(s),
        Backend::Postgres(p) => Arc::new(p),
    })
}

/// Opens the store a `--db` URL names (as [`open_store`]) for durable execution too: the
/// queue and the [`DurableStore`](core::durable::DurableStore) (checkpoints, tool ledger, LLM
/// cache) of one store, a [`SqliteStore`] or a [`PgStore`] — for `TaskRunner::new`,
/// `LlmCache::new`, … beside `Leasehold::builder`.
///
/// ```no_run
/// # async fn demo() -> Result<(), leasehold::StoreError> {
/// use std::sync::Arc;
/// let (store, durable) = leasehold::open_durable_store("postgres://u@db/app").await?;
/// let runner = leasehold::durable::TaskRunner::new(durable, Arc::new(leasehold::SystemClock));
/// # Ok(()) }
/// ```
pub async fn open_durable_store(
    url: &str,
) -> Result<(Arc<dyn Store>, Arc<dyn core::durable::DurableStore>), StoreError> {
    Ok(match open_backend(url).await? {
        Backend::Sqlite(s) => {
            let s = Arc::new(s);
            (s.clone(), s)
        }
        Backend::Postgres(p) => {
            let p = Arc::new(p);
            (p.clone(), p)
        }
    })
}

/// The store a URL names, with its concrete type.
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

async fn open_backend(url: &str) -> Result<Backend, StoreError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(StoreError::InvalidInput("--db must not be empty".into()));
    }
    if leasehold_postgres::is_postgres_url(url) {
        return Ok(Backend::Postgres(PgStore::open(url).await?));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::InvalidInput(format!("{url:?} names no file")));
        }
        return Ok(Backend::Sqlite(SqliteStore::open(path).await?));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(StoreError::InvalidInput(format!(
            "unsupported database URL scheme {scheme:?} in {url:?}; use a SQLite path, sqlite://PATH or postgres://…"
        )));
    }
    Ok(Backend::Sqlite(SqliteStore::open(url).await?))
}
