//! `item_dependencies`: what a dependant's handler reads of the items it waited for.

use leasehold_core::{Dependency, ItemId};
use rusqlite::{params, Connection};

use crate::error::OpResult;
use crate::row;

/// One query: the edges by their primary key, each dependency by its id.
const LIST: &str = "SELECT i.id, i.kind, i.status, i.output \
     FROM item_deps d JOIN items i ON i.id = d.needs_id \
     WHERE d.item_id = ?1 ORDER BY d.needs_id";

/// The item's dependencies in id order.
pub(crate) fn list(c: &mut Connection, id: ItemId) -> OpResult<Vec<Dependency>> {
    let mut stmt = c.prepare_cached(LIST)?;
    let rows = stmt.query_map(params![id.0], row::dependency)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
