//! The connection handle: every operation runs as a closure on tokio-rusqlite's connection
//! thread, so no SQLite call ever blocks a tokio worker.

use leasehold_core::StoreResult;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::{from_call, OpResult};

/// One connection (one OS thread) shared by every clone of the store. SQLite allows one writer
/// at a time anyway; a single connection also serialises this process's operations without a
/// lock of our own.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    conn: tokio_rusqlite::Connection,
}

impl Db {
    pub(crate) fn new(conn: tokio_rusqlite::Connection) -> Self {
        Db { conn }
    }

    /// Runs `f` on the connection thread. `f` must not panic: a panic kills the thread, and
    /// every later call fails with `Closed`.
    pub(crate) async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Connection) -> OpResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.conn.call(f).await.map_err(from_call)
    }
}

/// Runs `f` in a write transaction and commits if it returns `Ok`; an `Err` rolls back, so a
/// refused operation (e.g. `LeaseLost`) leaves nothing behind.
///
/// `BEGIN IMMEDIATE` takes the write lock up front: a deferred transaction that reads first
/// and writes later can fail with `SQLITE_BUSY` when another process wrote in between, where
/// an immediate one waits (up to the busy timeout) and then sees the latest data.
pub(crate) fn write<T>(
    c: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> OpResult<T>,
) -> OpResult<T> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use leasehold_core::StoreError;

    use super::Db;

    #[tokio::test]
    async fn a_panic_on_the_connection_thread_leaves_the_store_closed() {
        let conn = tokio_rusqlite::Connection::open_in_memory()
            .await
            .expect("in-memory database");
        let db = Db::new(conn);
        let killed = db
            .call(|_| -> crate::error::OpResult<()> { panic!("a bug in an operation") })
            .await;
        assert!(matches!(killed, Err(StoreError::Closed)), "{killed:?}");
        let after = db.call(|_| Ok(())).await;
        assert!(matches!(after, Err(StoreError::Closed)), "{after:?}");
    }
}
