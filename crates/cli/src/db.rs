//! Turning `--db` into a store.
//!
//! Read-only commands must not create a database as a side effect of a typo, so they check that
//! the file exists before `open_store` (which creates SQLite files) ever sees the path. A
//! `postgres://…` URL (every subcommand takes one) is opened the same way: commands that may
//! create open it through `open_store`, which creates and migrates the schema; read-only ones
//! refuse a database without the leasehold schema instead of creating it.

use std::path::Path;
use std::sync::Arc;

use leasehold_core::Store;

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

/// Opens the store `url` names.
pub(crate) async fn open(url: &str, access: Access) -> Result<Arc<dyn Store>, CliError> {
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
        let opts = leasehold::postgres::PgOptions::from_url(url)
            .map_err(|e| CliError::store(url, e))?
            .existing_only();
        let store = leasehold::PgStore::open_with(opts)
            .await
            .map_err(|e| CliError::store(url, e))?;
        return Ok(Arc::new(store));
    }
    leasehold::open_store(url)
        .await
        .map_err(|e| CliError::store(url, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_from_urls() {
        assert_eq!(sqlite_path("./a.db"), Some("./a.db"));
        assert_eq!(sqlite_path("sqlite://a.db"), Some("a.db"));
        assert_eq!(sqlite_path("sqlite:///tmp/a.db"), Some("/tmp/a.db"));
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }
}
