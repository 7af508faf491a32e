//! Turning `--db` into a store.
//!
//! Read-only commands must not create a database as a side effect of a typo, so they check that
//! the file exists before `open_store` (which creates SQLite files) ever sees the path. A
//! `postgres://…` URL (every subcommand takes one) is opened the same way: commands that may
//! create open it through `open_store`, which creates and migrates the schema; read-only ones
//! refuse a database without the leasehold schema instead of creating it.
//!
//! Commands that write or judge times open through [`open_clocked`], which pairs the store with
//! its clock: the database server's on PostgreSQL, where processes on several hosts share it.
//! `work` needs no clock from here: its node chooses the same one itself.

use std::path::Path;
use std::sync::Arc;

use leasehold::postgres::PgOptions;
use leasehold::PgStore;
use leasehold_core::durable::DurableStore;
use leasehold_core::{Clock, Store, SystemClock};

use crate::error::CliError;

/// Whether a command may create the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// The database must already exist (`status`, `items`, `reap --dry-run`).
    Existing,
    /// The database is created if missing (`enqueue`, `reap`).
    Create,
}

/// The SQLite file a `--db` URL names, or `None` for a URL of another scheme (which
/// `open_store` judges).
fn sqlite_path(url: &str) -> Option<&str> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Some(path);
    }
    if url.contains("://") {
        return None;
    }
    Some(url)
}

/// A store and the clock lease times and liveness are judged by on it.
pub(crate) struct Clocked {
    /// The store.
    pub(crate) store: Arc<dyn Store>,
    /// The same store's checkpoints, tool ledger and LLM cache (the dashboard's item page).
    pub(crate) durable: Arc<dyn DurableStore>,
    /// The system clock on SQLite (one host), the database server's clock on PostgreSQL, so
    /// that processes on several hosts write and judge lease times by the one clock they share.
    pub(crate) clock: Arc<dyn Clock>,
}

/// Opens the store `url` names with its clock — the one a node on it would take
/// ([`Store::clock_sync`]): on `postgres://` the database server's clock (a few round trips),
/// else the system clock. For every command that writes lease or run times or judges expiry
/// and liveness.
pub(crate) async fn open_clocked(url: &str, access: Access) -> Result<Clocked, CliError> {
    let (store, durable) = open_durable(url, access).await?;
    let shared = store
        .clock_sync()
        .await
        .map_err(|e| CliError::store(url.trim(), e))?;
    let clock: Arc<dyn Clock> = match shared {
        Some(c) => {
            tracing::debug!(
                offset_ms = c.offset_ms(),
                "lease times from the database server's clock"
            );
            c.as_clock()
        }
        None => Arc::new(SystemClock),
    };
    Ok(Clocked {
        store,
        durable,
        clock,
    })
}

/// Opens a PostgreSQL store; with [`Access::Existing`] a database without the leasehold schema
/// is refused instead of created.
async fn open_postgres(url: &str, access: Access) -> Result<PgStore, CliError> {
    let mut opts = PgOptions::from_url(url).map_err(|e| CliError::store(url, e))?;
    if access == Access::Existing {
        opts = opts.existing_only();
    }
    PgStore::open_with(opts)
        .await
        .map_err(|e| CliError::store(url, e))
}

/// Opens the store `url` names.
pub(crate) async fn open(url: &str, access: Access) -> Result<Arc<dyn Store>, CliError> {
    Ok(open_durable(url, access).await?.0)
}

/// Opens the store `url` names, as the queue and as the durable store.
async fn open_durable(
    url: &str,
    access: Access,
) -> Result<(Arc<dyn Store>, Arc<dyn DurableStore>), CliError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(CliError::usage("--db must not be empty"));
    }
    if let Some(path) = sqlite_path(url).filter(|p| !p.is_empty()) {
        let p = Path::new(path);
        if p.is_dir() {
            return Err(CliError::usage(format!(
                "--db {path} is a directory, not a database file"
            )));
        }
        if access == Access::Existing && !p.exists() {
            return Err(CliError::usage(format!("no database at {path}")));
        }
    }
    tracing::debug!(db = url, ?access, "opening store");
    if access == Access::Existing && leasehold::postgres::is_postgres_url(url) {
        let pg = Arc::new(open_postgres(url, access).await?);
        return Ok((pg.clone(), pg));
    }
    leasehold::open_durable_store(url)
        .await
        .map_err(|e| CliError::store(url, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn postgres_urls_get_the_database_clock_and_sqlite_paths_the_system_clock() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("clocked.db");
        let sqlite = open_clocked(path.to_str().expect("utf-8 path"), Access::Create)
            .await
            .expect("open SQLite");
        assert!(
            sqlite.store.clock_sync().await.expect("clock").is_none(),
            "SQLite runs on the system clock"
        );

        let test = "postgres_urls_get_the_database_clock_and_sqlite_paths_the_system_clock";
        let schema = match leasehold_postgres::testing::TestSchema::create("lh_cli_clock").await {
            Ok(s) => s,
            Err(why) => {
                eprintln!("{test}: PostgreSQL part skipped: {why}");
                return;
            }
        };
        // Read-only access refuses a schema that does not exist yet, before any clock.
        assert!(open_clocked(&schema.url(), Access::Existing).await.is_err());
        let pg = open_clocked(&schema.url(), Access::Create)
            .await
            .expect("open PostgreSQL");
        let db_clock = pg
            .store
            .clock_sync()
            .await
            .expect("clock")
            .expect("a database clock");
        let server = PgStore::open(&schema.url())
            .await
            .expect("reopen")
            .database_time()
            .await
            .expect("server time");
        // The clock handed to commands is the database clock: within a second of the server's.
        let now = pg.clock.now();
        assert!(
            (now.0 - server.0).abs() < 1_000,
            "clock {now:?} vs server {server:?}"
        );
        println!(
            "{test}: database clock offset {} ms; commands' clock {} ms from the server's",
            db_clock.offset_ms(),
            now.0 - server.0
        );
        let existing = open_clocked(&schema.url(), Access::Existing)
            .await
            .expect("open the existing schema");
        assert!(existing.store.clock_sync().await.expect("clock").is_some());
    }

    #[test]
    fn sqlite_paths_from_urls() {
        assert_eq!(sqlite_path("./a.db"), Some("./a.db"));
        assert_eq!(sqlite_path("sqlite://a.db"), Some("a.db"));
        assert_eq!(sqlite_path("sqlite:///tmp/a.db"), Some("/tmp/a.db"));
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }
}
