//! `items_enqueue`: all or nothing.

use leasehold_core::{ItemId, NewItem, StoreError, Timestamp};
use rusqlite::{params, Connection, Transaction};

use crate::db::write;
use crate::error::OpResult;
use crate::row::json_text;

pub(crate) const INSERT: &str = "INSERT INTO items \
     (kind, input, status, attempts, max_attempts, priority, run_at, group_id, epoch, \
      created_at, updated_at, timeout_ms) \
     VALUES (?1, ?2, 'pending', 0, ?3, ?4, ?5, ?6, 0, ?7, ?7, ?8)";

/// An item with a unique key: inserted unless an open item holds the key (the conflict target
/// is `items_unique_open`, whose `WHERE` it repeats). A statement of its own, so the unkeyed
/// hot path's [`INSERT`] is unchanged.
pub(crate) const INSERT_KEYED: &str = "INSERT INTO items \
     (kind, input, status, attempts, max_attempts, priority, run_at, group_id, epoch, \
      created_at, updated_at, timeout_ms, unique_key) \
     VALUES (?1, ?2, 'pending', 0, ?3, ?4, ?5, ?6, 0, ?7, ?7, ?8, ?9) \
     ON CONFLICT (unique_key) \
         WHERE unique_key IS NOT NULL AND (status = 'pending' OR status = 'in_progress' OR status = 'awaiting') \
     DO NOTHING";

/// The open item holding a key (at most one, by `items_unique_open`).
pub(crate) const OPEN_WITH_KEY: &str = "SELECT id FROM items \
     WHERE unique_key = ?1 AND (status = 'pending' OR status = 'in_progress' OR status = 'awaiting')";

/// Items checked and their inputs serialised, ready to insert: made off the connection thread
/// where possible, and before any write, so one invalid item refuses the batch untouched.
#[derive(Debug)]
pub(crate) struct Checked {
    items: Vec<NewItem>,
    inputs: Vec<String>,
}

impl Checked {
    /// Validates every item; `what` names them in the error ("item", "follow-up").
    pub(crate) fn new(items: Vec<NewItem>, what: &str) -> OpResult<Checked> {
        let mut inputs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            item.validate()
                .map_err(|e| StoreError::InvalidInput(format!("{what} {i} of the batch: {e}")))?;
            inputs.push(json_text(&item.input)?);
        }
        Ok(Checked { items, inputs })
    }

    /// Whether there is nothing to insert.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Validates every item before writing any, then inserts them in one transaction.
pub(crate) fn run(
    c: &mut Connection,
    items: Vec<NewItem>,
    now: Timestamp,
) -> OpResult<Vec<ItemId>> {
    let checked = Checked::new(items, "item")?;
    if checked.is_empty() {
        return Ok(Vec::new());
    }
    write(c, |tx| insert(tx, &checked, now))
}

/// Inserts checked items inside `tx` (the caller's transaction: an enqueue's own, or a
/// completion's for its follow-ups); returns their ids in order. An item whose unique key an
/// open item holds (one inserted earlier in this batch included) is not inserted: its id is
/// that item's. One writer at a time holds the database, so check and insert cannot race.
pub(crate) fn insert(
    tx: &Transaction<'_>,
    checked: &Checked,
    now: Timestamp,
) -> OpResult<Vec<ItemId>> {
    let mut ids = Vec::with_capacity(checked.items.len());
    for (item, input) in checked.items.iter().zip(&checked.inputs) {
        if let Some(key) = &item.unique_key {
            let inserted = tx.prepare_cached(INSERT_KEYED)?.execute(params![
                item.kind,
                input,
                item.max_attempts,
                item.priority,
                now.plus(item.delay).0,
                item.group_id,
                now.0,
                item.timeout_ms(),
                key,
            ])?;
            if inserted == 1 {
                ids.push(ItemId(tx.last_insert_rowid()));
            } else {
                let id = tx
                    .prepare_cached(OPEN_WITH_KEY)?
                    .query_row(params![key], |r| r.get(0))?;
                ids.push(ItemId(id));
            }
            continue;
        }
        tx.prepare_cached(INSERT)?.execute(params![
            item.kind,
            input,
            item.max_attempts,
            item.priority,
            now.plus(item.delay).0,
            item.group_id,
            now.0,
            item.timeout_ms(),
        ])?;
        ids.push(ItemId(tx.last_insert_rowid()));
    }
    Ok(ids)
}
