//! Database-row evidence: does a row of one of the store's own tables match?
//!
//! Only the store's schema is read: the table must be one of that schema's tables or views
//! (looked up in `information_schema` with the names bound as parameters), and the query
//! names it qualified by that schema. Table and column names were validated as plain
//! identifiers and are double-quoted; every value is a bound parameter.

use leasehold_core::durable::RowProbe;
use leasehold_core::{StoreError, StoreResult};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use crate::db::Db;
use crate::error::from_pg;
use crate::row::col;

const TABLE: &str = "SELECT 1 FROM information_schema.tables \
     WHERE table_schema = $1 AND table_name = $2";

const COLUMNS: &str = "SELECT column_name::text, data_type::text FROM information_schema.columns \
     WHERE table_schema = $1 AND table_name = $2";

/// Whether a row matches.
pub(super) async fn exists(db: &Db, schema: &str, probe: &RowProbe) -> StoreResult<bool> {
    probe.validate().map_err(StoreError::InvalidInput)?;
    if db.query(TABLE, &[&schema, &probe.table]).await?.is_empty() {
        return Err(StoreError::InvalidInput(format!(
            "db_row evidence: the database has no table {:?}",
            probe.table
        )));
    }
    let columns: Vec<(String, String)> = db
        .query(COLUMNS, &[&schema, &probe.table])
        .await?
        .iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
        .collect::<StoreResult<_>>()?;
    let mut conditions = Vec::new();
    let mut args: Vec<Option<String>> = Vec::new();
    for (name, v) in probe.where_.iter().chain(probe.values.iter()) {
        let Some((_, ty)) = columns.iter().find(|(k, _)| k == name) else {
            return Err(StoreError::InvalidInput(format!(
                "db_row evidence: table {} has no column {name:?}",
                probe.table
            )));
        };
        let (expr, arg) = condition(name, ty, v, args.len() + 1);
        conditions.push(expr);
        args.push(arg);
    }
    // The schema was validated as a plain identifier when the store was opened.
    let sql = format!(
        "SELECT 1 FROM \"{schema}\".\"{}\" WHERE {} LIMIT 1",
        probe.table,
        conditions.join(" AND ")
    );
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as _).collect();
    let c = db.conn().await?;
    // Not prepared through the cache: the text differs per probe.
    let found = c.query_opt(&sql, &params).await.map_err(from_pg)?;
    Ok(found.is_some())
}

/// The comparison of column `name` (of PostgreSQL type `ty`) with `v`, as parameter `$n`
/// (bound as text or NULL), and the parameter. `IS NOT DISTINCT FROM`, so a JSON null matches
/// a NULL column. Numbers compare as numbers with numeric columns and booleans as booleans
/// with boolean ones (as 1 and 0 with numeric ones, as SQLite stores them); anything else
/// compares as text, so a mismatched type is no match rather than an error.
fn condition(name: &str, ty: &str, v: &Value, n: usize) -> (String, Option<String>) {
    let numeric = matches!(
        ty,
        "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision"
    );
    match v {
        Value::Null => (format!("\"{name}\" IS NULL AND ${n}::text IS NULL"), None),
        Value::Number(x) if numeric => (
            format!("\"{name}\"::numeric IS NOT DISTINCT FROM ${n}::text::numeric"),
            Some(x.to_string()),
        ),
        Value::Bool(b) if ty == "boolean" => (
            format!("\"{name}\" IS NOT DISTINCT FROM ${n}::text::boolean"),
            Some(b.to_string()),
        ),
        Value::Bool(b) if numeric => (
            format!("\"{name}\"::numeric IS NOT DISTINCT FROM ${n}::text::numeric"),
            Some(i64::from(*b).to_string()),
        ),
        Value::String(s) => (
            format!("\"{name}\"::text IS NOT DISTINCT FROM ${n}::text"),
            Some(s.clone()),
        ),
        other => (
            format!("\"{name}\"::text IS NOT DISTINCT FROM ${n}::text"),
            Some(other.to_string()),
        ),
    }
}
