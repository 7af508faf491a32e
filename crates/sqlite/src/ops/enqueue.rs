//! `items_enqueue`: all or nothing.

use leasehold_core::{DependantStart, ItemId, ItemStatus, NewItem, StoreError, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::db::write;
use crate::error::OpResult;
use crate::row::{self, json_text};

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
         WHERE unique_key IS NOT NULL AND (status = 'pending' OR status = 'in_progress' OR status = 'awaiting' \
                                           OR status = 'blocked') \
     DO NOTHING";

/// The open item holding a key (at most one, by `items_unique_open`).
pub(crate) const OPEN_WITH_KEY: &str = "SELECT id FROM items \
     WHERE unique_key = ?1 AND (status = 'pending' OR status = 'in_progress' OR status = 'awaiting' \
                                OR status = 'blocked')";

/// The item that answers for a key under `NewItem::unique_within`: the open one if there is
/// one, else the one that completed last at or after `?2` (by `items_unique_done`).
const WITHIN_WINDOW: &str = "SELECT id FROM ( \
         SELECT id, 1 AS open, 0 AS finished_at FROM items \
         WHERE unique_key = ?1 AND (status = 'pending' OR status = 'in_progress' \
                                    OR status = 'awaiting' OR status = 'blocked') \
         UNION ALL \
         SELECT id, 0, finished_at FROM items \
         WHERE unique_key = ?1 AND status = 'completed' AND finished_at >= ?2) \
     ORDER BY open DESC, finished_at DESC, id DESC LIMIT 1";

/// An item with dependencies, in the status [`DependantStart`] judged, keyed or not (a `NULL`
/// key never conflicts).
const INSERT_DEPENDANT: &str = "INSERT INTO items \
     (kind, input, status, attempts, max_attempts, priority, run_at, group_id, epoch, \
      created_at, updated_at, timeout_ms, unique_key, deps_left, error, finished_at) \
     VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, 0, ?8, ?8, ?9, ?10, ?11, ?12, ?13) \
     ON CONFLICT (unique_key) \
         WHERE unique_key IS NOT NULL AND (status = 'pending' OR status = 'in_progress' OR status = 'awaiting' \
                                           OR status = 'blocked') \
     DO NOTHING";

/// A dependency's state at its dependant's enqueue.
const DEPENDENCY: &str = "SELECT status, error FROM items WHERE id = ?1";

/// One edge; `done` when the dependency has already completed.
const EDGE: &str = "INSERT INTO item_deps (item_id, needs_id, done) VALUES (?1, ?2, ?3)";

/// Arms the dependency triggers for this dependency (schema version 10).
const MARK: &str = "UPDATE items SET has_dependants = 1 WHERE id = ?1 AND has_dependants = 0";

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
/// open item holds (one inserted earlier in this batch included), or with `unique_within` one
/// that completed within the window, is not inserted: its id is that item's. One writer at a time holds the database, so check and insert cannot race.
pub(crate) fn insert(
    tx: &Transaction<'_>,
    checked: &Checked,
    now: Timestamp,
) -> OpResult<Vec<ItemId>> {
    let mut ids = Vec::with_capacity(checked.items.len());
    for (i, (item, input)) in checked.items.iter().zip(&checked.inputs).enumerate() {
        if let Some(id) = within_window(tx, item, now)? {
            ids.push(id);
            continue;
        }
        if !item.depends_on.is_empty() {
            ids.push(insert_dependant(tx, item, input, now, i)?);
            continue;
        }
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

/// The item that answers for `item`'s key when it has a `unique_within` window: an open one,
/// else one that completed within the window. `None` without a window or without such an item.
fn within_window(tx: &Transaction<'_>, item: &NewItem, now: Timestamp) -> OpResult<Option<ItemId>> {
    let (Some(key), Some(since)) = (&item.unique_key, item.unique_completed_since(now)) else {
        return Ok(None);
    };
    let id = tx
        .prepare_cached(WITHIN_WINDOW)?
        .query_row(params![key, since.0], |r| r.get(0))
        .optional()?;
    Ok(id.map(ItemId))
}

/// Inserts one item with dependencies: reads each dependency (one that does not exist yet, an
/// unknown id or a later item of the batch, refuses the batch naming it), inserts the item in
/// the status they call for, then its edges, and arms the triggers on its dependencies. An
/// item whose unique key an open item holds is not inserted: its id is that item's.
fn insert_dependant(
    tx: &Transaction<'_>,
    item: &NewItem,
    input: &str,
    now: Timestamp,
    index: usize,
) -> OpResult<ItemId> {
    let mut states = Vec::with_capacity(item.depends_on.len());
    for id in &item.depends_on {
        let state = tx
            .prepare_cached(DEPENDENCY)?
            .query_row(params![id.0], |r| {
                Ok((row::status(r, 0)?, r.get::<_, Option<String>>(1)?))
            })
            .optional()?;
        let Some((status, error)) = state else {
            return Err(StoreError::InvalidInput(format!(
                "item {index} of the batch: dependency {id} does not exist (an item may only \
                 depend on items that exist already or come earlier in its batch)"
            ))
            .into());
        };
        states.push((*id, status, error));
    }
    let start = DependantStart::judge(states.iter().map(|(id, s, e)| (*id, *s, e.as_deref())));
    let finished_at = (start.status == ItemStatus::Cancelled).then_some(now.0);
    let inserted = tx.prepare_cached(INSERT_DEPENDANT)?.execute(params![
        item.kind,
        input,
        start.status.as_str(),
        item.max_attempts,
        item.priority,
        now.plus(item.delay).0,
        item.group_id,
        now.0,
        item.timeout_ms(),
        item.unique_key,
        start.deps_left,
        start.error,
        finished_at,
    ])?;
    if inserted == 0 {
        let id = tx
            .prepare_cached(OPEN_WITH_KEY)?
            .query_row(params![item.unique_key], |r| r.get(0))?;
        return Ok(ItemId(id));
    }
    let id = tx.last_insert_rowid();
    for (needs, status, _) in &states {
        tx.prepare_cached(EDGE)?
            .execute(params![id, needs.0, *status == ItemStatus::Completed])?;
        tx.prepare_cached(MARK)?.execute(params![needs.0])?;
    }
    Ok(ItemId(id))
}
