//! How PostgreSQL's and the pool's errors become [`StoreError`]s.

use leasehold_core::{LeaseRef, StoreError};

/// SQLSTATEs that mean the caller's value cannot be stored (a NUL byte in text, a value out of
/// range): bad input, not a failing database.
const INPUT_STATES: [&str; 4] = ["22P05", "22021", "22003", "22P02"];

/// Maps a tokio-postgres error: a lost connection is `Closed`, a value the server refused is
/// `InvalidInput`, a value that does not decode is `Corrupt`, anything else is `Backend`.
pub(crate) fn from_pg(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() {
        return StoreError::Closed;
    }
    if let Some(db) = e.as_db_error() {
        if INPUT_STATES.contains(&db.code().code()) {
            return StoreError::InvalidInput(format!(
                "PostgreSQL refused a value: {}",
                db.message()
            ));
        }
        return StoreError::Backend(
            format!("PostgreSQL: {} ({})", db.message(), db.code().code()).into(),
        );
    }
    let text = e.to_string();
    if text.contains("error deserializing column") {
        return StoreError::Corrupt(text);
    }
    StoreError::backend(e)
}

/// Maps a pool error: no connection could be had (server down, pool exhausted past its wait).
pub(crate) fn from_pool(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => from_pg(e),
        other => StoreError::Backend(format!("PostgreSQL connection pool: {other}").into()),
    }
}

/// The fenced write did not apply: `lease` no longer holds its item.
pub(crate) fn lease_lost(lease: &LeaseRef) -> StoreError {
    StoreError::LeaseLost {
        item: lease.item,
        owner: lease.owner.clone(),
        epoch: lease.epoch,
    }
}

/// A stored value that does not decode.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// Refuses text PostgreSQL cannot store (a NUL character) before anything is written.
pub(crate) fn no_nul(what: &str, value: &str) -> Result<(), StoreError> {
    if value.contains('\0') {
        return Err(StoreError::InvalidInput(format!(
            "{what} must not contain a NUL character"
        )));
    }
    Ok(())
}
