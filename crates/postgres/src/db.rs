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

/// Ends `tx` by the outcome of the work done in it: commit on `Ok`, an awaited rollback on
/// `Err`. A refused write (a lost lease, bad input) so leaves no transaction open and no row
/// locked behind it; dropping the transaction instead would only queue the rollback on a
/// connection whose task may never run again (a runtime that is shutting down).
pub(crate) async fn finish<T>(tx: Transaction<'_>, outcome: StoreResult<T>) -> StoreResult<T> {
    match outcome {
        Ok(v) => {
            tx.commit().await.map_err(from_pg)?;
            Ok(v)
        }
        Err(e) => {
            if let Err(re) = tx.rollback().await {
                tracing::debug!(error = %re, "rollback after a refused write failed; the connection is dropped");
            }
            Err(e)
        }
    }
}
