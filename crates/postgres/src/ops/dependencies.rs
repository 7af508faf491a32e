//! `item_dependencies`: what a dependant's handler reads of the items it waited for.

use leasehold_core::{Dependency, ItemId, StoreResult};

use crate::db::Db;
use crate::row;

/// One query: the edges by their primary key, each dependency by its id.
const LIST: &str = "SELECT i.id, i.kind, i.status, i.output \
     FROM item_deps d JOIN items i ON i.id = d.needs_id \
     WHERE d.item_id = $1 ORDER BY d.needs_id";

/// The item's dependencies in id order.
pub(crate) async fn list(db: &Db, id: ItemId) -> StoreResult<Vec<Dependency>> {
    let rows = db.query(LIST, &[&id.0]).await?;
    rows.iter().map(row::dependency).collect()
}
