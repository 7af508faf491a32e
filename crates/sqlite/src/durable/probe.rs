//! Database-row evidence: does a row of the store's own database match?

use leasehold_core::durable::RowProbe;
use leasehold_core::StoreError;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde_json::Value;

use crate::error::OpResult;

/// Whether a row matches. The table and columns are checked against the schema first, and
/// were already checked to be plain identifiers, so quoting them cannot be escaped.
pub(super) fn exists(c: &mut Connection, probe: &RowProbe) -> OpResult<bool> {
    probe.validate().map_err(StoreError::InvalidInput)?;
    let known: Option<i64> = c
        .prepare_cached(
            "SELECT 1 FROM sqlite_schema WHERE type IN ('table', 'view') AND name = ?1",
        )?
        .query_row(params![probe.table], |r| r.get(0))
        .optional()?;
    if known.is_none() {
        return Err(StoreError::InvalidInput(format!(
            "db_row evidence: the database has no table {:?}",
            probe.table
        ))
        .into());
    }
    let columns: Vec<String> = {
        let mut stmt = c.prepare("SELECT name FROM pragma_table_info(?1)")?;
        let rows = stmt.query_map(params![probe.table], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut conditions = Vec::new();
    let mut args = Vec::new();
    for (col, v) in probe.where_.iter().chain(probe.values.iter()) {
        if !columns.iter().any(|k| k == col) {
            return Err(StoreError::InvalidInput(format!(
                "db_row evidence: table {} has no column {col:?}",
                probe.table
            ))
            .into());
        }
        args.push(sql_value(v));
        // `IS` so that a JSON null matches a NULL column.
        conditions.push(format!("\"{col}\" IS ?{}", args.len()));
    }
    let sql = format!(
        "SELECT 1 FROM \"{}\" WHERE {} LIMIT 1",
        probe.table,
        conditions.join(" AND ")
    );
    let found: Option<i64> = c
        .prepare(&sql)?
        .query_row(params_from_iter(args), |r| r.get(0))
        .optional()?;
    Ok(found.is_some())
}

fn sql_value(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        // Refused by `RowProbe::validate`.
        other => SqlValue::Text(other.to_string()),
    }
}
