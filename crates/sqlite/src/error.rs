//! How SQLite's errors become [`StoreError`]s.
//!
//! Operations run as closures on the connection's thread and return [`OpError`], which holds
//! either a raw rusqlite error (so `?` works on every rusqlite call) or an already-decided
//! [`StoreError`] such as `LeaseLost`. [`from_call`] turns the result of a `conn.call` into the
//! trait's error type once, at the boundary.

use leasehold_core::{LeaseRef, NodeRecord, StoreError};
use rusqlite::ErrorCode;

/// An operation's failure, inside a connection closure.
#[derive(Debug)]
pub(crate) enum OpError {
    /// SQLite (or rusqlite's decoding) failed.
    Db(rusqlite::Error),
    /// The operation decided its own outcome (lease lost, not found, invalid state…).
    Store(StoreError),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Db(e) => e.fmt(f),
            OpError::Store(e) => e.fmt(f),
        }
    }
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> Self {
        OpError::Db(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}

impl From<OpError> for StoreError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Db(e) => from_sqlite(e),
            OpError::Store(e) => e,
        }
    }
}

/// The result of an operation inside a connection closure.
pub(crate) type OpResult<T> = Result<T, OpError>;

/// The registry write did not apply: incarnation `current` of the node id holds the row.
pub(crate) fn superseded(node: &NodeRecord, current: i64) -> OpError {
    OpError::Store(StoreError::Superseded {
        node_id: node.node_id.clone(),
        incarnation: node.incarnation,
        current,
    })
}

/// The fenced write did not apply: `lease` no longer holds its item.
pub(crate) fn lease_lost(lease: &LeaseRef) -> OpError {
    OpError::Store(StoreError::LeaseLost {
        item: lease.item,
        owner: lease.owner.clone(),
        epoch: lease.epoch,
    })
}

/// Maps a rusqlite error: a file that is not a database, a value that does not decode, or
/// anything else (busy, I/O, SQL) as a backend failure.
pub(crate) fn from_sqlite(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::NotADatabase => {
            StoreError::NotADatabase(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DatabaseCorrupt => {
            StoreError::Corrupt(e.to_string())
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::backend(e),
    }
}

/// Maps the outcome of `tokio_rusqlite::Connection::call`. A closed connection (its thread is
/// gone, e.g. after a panic) is [`StoreError::Closed`]: the caller must reopen the store.
pub(crate) fn from_call(e: tokio_rusqlite::Error<OpError>) -> StoreError {
    match e {
        tokio_rusqlite::Error::ConnectionClosed => StoreError::Closed,
        tokio_rusqlite::Error::Error(e) => e.into(),
        tokio_rusqlite::Error::Close((_, e)) => from_sqlite(e),
        other => StoreError::Backend(other.to_string().into()),
    }
}

/// A decoding failure for a column, in rusqlite's terms (mapped to `Corrupt` by
/// [`from_sqlite`]).
pub(crate) fn bad_column(index: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, what.into())
}
