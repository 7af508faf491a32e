//! The connection pool and the two ways operations use it: one statement on a pooled
//! connection, or a transaction.

use deadpool_postgres::{Object, Pool, Transaction};
use leasehold_core::StoreResult;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use crate::error::{from_pg, from_pool};

/// A statement's parameters.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The pool every clone of the store shares. Each connection's `search_path` is the store's
/// schema (set in its startup options), so the SQL names tables unqualified.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pool: Pool,
}

impl Db {
    pub(crate) fn new(pool: Pool) -> Self {
        Db { pool }
    }

    /// A pooled connection.
    pub(crate) async fn conn(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(from_pool)
    }

    /// Runs one statement (prepared once per connection) and returns its rows.
    pub(crate) async fn query(&self, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
        let c = self.conn().await?;
        let stmt = c.prepare_cached(sql).await.map_err(from_pg)?;
        c.query(&stmt, params).await.map_err(from_pg)
    }

    /// Runs one statement and returns how many rows it changed.
    pub(crate) async fn execute(&self, sql: &str, params: Params<'_>) -> StoreResult<u64> {
        let c = self.conn().await?;
        let stmt = c.prepare_cached(sql).await.map_err(from_pg)?;
        c.execute(&stmt, params).await.map_err(from_pg)
    }
}

/// A statement prepared (and cached) on the transaction's connection.
pub(crate) async fn prepared(tx: &Transaction<'_>, sql: &str) -> StoreResult<Statement> {
    tx.prepare_cached(sql).await.map_err(from_pg)
}
