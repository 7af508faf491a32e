//! `items_enqueue`: all or nothing, one statement for the whole batch, and a notification for
//! idle workers when some of the items are ready now.

use deadpool_postgres::Transaction;
use leasehold_core::{
    DependantStart, ItemId, ItemStatus, NewItem, StoreError, StoreResult, Timestamp,
};
use serde_json::Value;

use crate::db::{finish, prepared, Db};
use crate::error::{from_pg, no_nul};

/// The batch arrives as parallel arrays; `ORDER BY ord` inserts in the caller's order, so the
/// identity values (and the sorted returned ids) follow it.
const INSERT: &str = "INSERT INTO items \
     (kind, input, status, attempts, max_attempts, priority, run_at, group_id, epoch, \
      created_at, updated_at, timeout_ms) \
     SELECT kind, input, 'pending', 0, max_attempts, priority, run_at, group_id, 0, $7, $7, \
            timeout_ms \
     FROM unnest($1::text[], $2::json[], $3::bigint[], $4::int[], $5::bigint[], $6::text[], \
                 $8::bigint[]) \
          WITH ORDINALITY AS b (kind, input, max_attempts, priority, run_at, group_id, \
                                timeout_ms, ord) \
     ORDER BY ord \
     RETURNING id";

/// An item with a unique key, one row at a time: inserted unless an open item holds the key
/// (the conflict target is `items_unique_open`, whose `WHERE` it repeats). Under READ
/// COMMITTED a concurrent, uncommitted insert of the same key makes this wait for that
/// transaction; if it commits, nothing is inserted here and [`OPEN_WITH_KEY`] (a new snapshot)
/// reads its id.
const INSERT_KEYED: &str = "INSERT INTO items \
     (kind, input, status, attempts, max_attempts, priority, run_at, group_id, epoch, \
      created_at, updated_at, timeout_ms, unique_key) \
     VALUES ($1, $2::json, 'pending', 0, $3, $4, $5, $6, 0, $7, $7, $8, $9) \
     ON CONFLICT (unique_key) \
         WHERE unique_key IS NOT NULL AND status IN ('pending', 'in_progress', 'awaiting', 'blocked') \
     DO NOTHING \
     RETURNING id";

/// An item with dependencies, in the status [`DependantStart`] judged, keyed or not (a `NULL`
/// key never conflicts).
const INSERT_DEPENDANT: &str = "INSERT INTO items \
     (kind, input, status, attempts, max_attempts, priority, run_at, group_id, epoch, \
      created_at, updated_at, timeout_ms, unique_key, deps_left, error, finished_at) \
     VALUES ($1, $2::json, $3, 0, $4, $5, $6, $7, 0, $8, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (unique_key) \
         WHERE unique_key IS NOT NULL AND status IN ('pending', 'in_progress', 'awaiting', 'blocked') \
     DO NOTHING \
     RETURNING id";

/// The dependencies' states, locked in id order: a concurrent completion of one waits for this
/// enqueue's commit and then sees its edge (and `has_dependants`), or this enqueue waits for
/// that completion and sees it completed.
const DEPENDENCIES: &str = "SELECT id, status, error FROM items WHERE id = ANY($1) \
     ORDER BY id FOR NO KEY UPDATE";

/// The edges; `done` where the dependency has already completed.
const EDGES: &str = "INSERT INTO item_deps (item_id, needs_id, done) \
     SELECT $1, needs, done FROM unnest($2::bigint[], $3::bool[]) AS e (needs, done)";

/// Arms the dependency trigger for these dependencies (schema version 10).
const MARK: &str = "UPDATE items SET has_dependants = true \
     WHERE id = ANY($1) AND NOT has_dependants";

/// The open item holding a key (at most one, by `items_unique_open`).
const OPEN_WITH_KEY: &str = "SELECT id FROM items \
     WHERE unique_key = $1 AND status IN ('pending', 'in_progress', 'awaiting', 'blocked')";

/// The item that answers for a key under `NewItem::unique_within`: the open one if there is
/// one, else the one that completed last at or after `$2` (by `items_unique_done`).
const WITHIN_WINDOW: &str = "SELECT id FROM ( \
         SELECT id, 1 AS open, 0::bigint AS finished_at FROM items \
         WHERE unique_key = $1 AND status IN ('pending', 'in_progress', 'awaiting', 'blocked') \
         UNION ALL \
         SELECT id, 0, finished_at FROM items \
         WHERE unique_key = $1 AND status = 'completed' AND finished_at >= $2) AS found \
     ORDER BY open DESC, finished_at DESC, id DESC LIMIT 1";

/// Delivered at commit: listeners hear of the items only once they can be acquired.
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// Refuses the batch, writing nothing, if any item is invalid; `what` names the items in the
/// error ("item", "follow-up").
pub(crate) fn check(items: &[NewItem], what: &str) -> StoreResult<()> {
    for (i, item) in items.iter().enumerate() {
        let refuse = |e: String| StoreError::InvalidInput(format!("{what} {i} of the batch: {e}"));
        item.validate().map_err(refuse)?;
        no_nul("kind", &item.kind).map_err(|e| refuse(e.to_string()))?;
        if let Some(g) = &item.group_id {
            no_nul("group id", g).map_err(|e| refuse(e.to_string()))?;
        }
        if let Some(k) = &item.unique_key {
            no_nul("unique key", k).map_err(|e| refuse(e.to_string()))?;
        }
    }
    Ok(())
}

/// Validates every item before writing any, then inserts them in one transaction.
pub(crate) async fn run(
    db: &Db,
    channel: &str,
    items: Vec<NewItem>,
    now: Timestamp,
) -> StoreResult<Vec<ItemId>> {
    check(&items, "item")?;
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = insert(&tx, channel, &items, now).await;
    finish(tx, outcome).await
}

/// Inserts checked items inside `tx` (an enqueue's own transaction, or a completion's for its
/// follow-ups) and queues the notification for the ready ones; returns their ids in order.
/// A batch with unique keys goes row by row ([`insert_keyed`]).
pub(crate) async fn insert(
    tx: &Transaction<'_>,
    channel: &str,
    items: &[NewItem],
    now: Timestamp,
) -> StoreResult<Vec<ItemId>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    if items
        .iter()
        .any(|i| i.unique_key.is_some() || !i.depends_on.is_empty())
    {
        return insert_keyed(tx, channel, items, now).await;
    }
    let kinds: Vec<&str> = items.iter().map(|i| i.kind.as_str()).collect();
    let inputs: Vec<&Value> = items.iter().map(|i| &i.input).collect();
    let budgets: Vec<i64> = items.iter().map(|i| i64::from(i.max_attempts)).collect();
    let priorities: Vec<i32> = items.iter().map(|i| i.priority).collect();
    let run_ats: Vec<i64> = items.iter().map(|i| now.plus(i.delay).0).collect();
    let groups: Vec<Option<&str>> = items.iter().map(|i| i.group_id.as_deref()).collect();
    let timeouts: Vec<Option<i64>> = items.iter().map(NewItem::timeout_ms).collect();
    let ready = items.iter().filter(|i| i.delay.is_zero()).count();

    let insert = prepared(tx, INSERT).await?;
    let rows = tx
        .query(
            &insert,
            &[
                &kinds,
                &inputs,
                &budgets,
                &priorities,
                &run_ats,
                &groups,
                &now.0,
                &timeouts,
            ],
        )
        .await
        .map_err(from_pg)?;
    let mut ids: Vec<ItemId> = rows.iter().map(|r| ItemId(r.get(0))).collect();
    ids.sort();
    if ids.len() != items.len() {
        return Err(StoreError::Corrupt(format!(
            "enqueue of {} items returned {} ids",
            items.len(),
            ids.len()
        )));
    }
    if ready > 0 {
        let notify = prepared(tx, NOTIFY).await?;
        tx.execute(&notify, &[&channel, &ready.to_string()])
            .await
            .map_err(from_pg)?;
    }
    Ok(ids)
}

/// Inserts a batch holding unique keys or dependencies one row at a time, in order, so that
/// each item sees the ones before it: an item whose key an open item holds (committed, or
/// inserted earlier in this batch), or with `unique_within` one that completed within the
/// window, gets that item's id, and an item may depend on one earlier
/// in the batch ([`insert_dependant`]).
async fn insert_keyed(
    tx: &Transaction<'_>,
    channel: &str,
    items: &[NewItem],
    now: Timestamp,
) -> StoreResult<Vec<ItemId>> {
    let keyed = prepared(tx, INSERT_KEYED).await?;
    let existing = prepared(tx, OPEN_WITH_KEY).await?;
    let mut ids = Vec::with_capacity(items.len());
    let mut ready = 0usize;
    for (i, item) in items.iter().enumerate() {
        if let Some(id) = within_window(tx, item, now).await? {
            ids.push(id);
            continue;
        }
        if !item.depends_on.is_empty() {
            let (id, ready_now) = insert_dependant(tx, item, now, i).await?;
            ids.push(id);
            ready += usize::from(ready_now);
            continue;
        }
        let Some(key) = &item.unique_key else {
            ids.extend(Box::pin(insert(tx, channel, std::slice::from_ref(item), now)).await?);
            continue;
        };
        let inserted = tx
            .query_opt(
                &keyed,
                &[
                    &item.kind,
                    &item.input,
                    &i64::from(item.max_attempts),
                    &item.priority,
                    &now.plus(item.delay).0,
                    &item.group_id,
                    &now.0,
                    &item.timeout_ms(),
                    key,
                ],
            )
            .await
            .map_err(from_pg)?;
        match inserted {
            Some(row) => {
                ids.push(ItemId(row.get(0)));
                ready += usize::from(item.delay.is_zero());
            }
            None => {
                let row = tx.query_one(&existing, &[key]).await.map_err(from_pg)?;
                ids.push(ItemId(row.get(0)));
            }
        }
    }
    if ready > 0 {
        let notify = prepared(tx, NOTIFY).await?;
        tx.execute(&notify, &[&channel, &ready.to_string()])
            .await
            .map_err(from_pg)?;
    }
    Ok(ids)
}

/// The item that answers for `item`'s key when it has a `unique_within` window: an open one,
/// else one that completed within the window. `None` without a window or without such an item.
/// (Under READ COMMITTED a completion committing while this runs may be missed: the enqueue
/// then adds an item, as it would a moment later with the window passed.)
async fn within_window(
    tx: &Transaction<'_>,
    item: &NewItem,
    now: Timestamp,
) -> StoreResult<Option<ItemId>> {
    let (Some(key), Some(since)) = (&item.unique_key, item.unique_completed_since(now)) else {
        return Ok(None);
    };
    let stmt = prepared(tx, WITHIN_WINDOW).await?;
    let row = tx
        .query_opt(&stmt, &[key, &since.0])
        .await
        .map_err(from_pg)?;
    Ok(row.map(|r| ItemId(r.get(0))))
}

/// Inserts one item with dependencies: locks and reads each dependency (one that does not
/// exist yet, an unknown id or a later item of the batch, refuses the batch naming it),
/// inserts the item in the status they call for, then its edges, and arms the trigger on its
/// dependencies. An item whose unique key an open item holds is not inserted: its id is that
/// item's. Returns the id and whether the item is ready now.
async fn insert_dependant(
    tx: &Transaction<'_>,
    item: &NewItem,
    now: Timestamp,
    index: usize,
) -> StoreResult<(ItemId, bool)> {
    let needs: Vec<i64> = item.depends_on.iter().map(|id| id.0).collect();
    let stmt = prepared(tx, DEPENDENCIES).await?;
    let rows = tx.query(&stmt, &[&needs]).await.map_err(from_pg)?;
    let mut states = Vec::with_capacity(needs.len());
    for id in &item.depends_on {
        let Some(row) = rows.iter().find(|r| r.get::<_, i64>(0) == id.0) else {
            return Err(StoreError::InvalidInput(format!(
                "item {index} of the batch: dependency {id} does not exist (an item may only \
                 depend on items that exist already or come earlier in its batch)"
            )));
        };
        states.push((
            *id,
            crate::row::status(row, 1)?,
            row.get::<_, Option<String>>(2),
        ));
    }
    let start = DependantStart::judge(states.iter().map(|(id, s, e)| (*id, *s, e.as_deref())));
    let finished_at = (start.status == ItemStatus::Cancelled).then_some(now.0);
    let deps_left = i32::try_from(start.deps_left).unwrap_or(i32::MAX);
    let insert = prepared(tx, INSERT_DEPENDANT).await?;
    let inserted = tx
        .query_opt(
            &insert,
            &[
                &item.kind,
                &item.input,
                &start.status.as_str(),
                &i64::from(item.max_attempts),
                &item.priority,
                &now.plus(item.delay).0,
                &item.group_id,
                &now.0,
                &item.timeout_ms(),
                &item.unique_key,
                &deps_left,
                &start.error,
                &finished_at,
            ],
        )
        .await
        .map_err(from_pg)?;
    let Some(row) = inserted else {
        let existing = prepared(tx, OPEN_WITH_KEY).await?;
        let row = tx
            .query_one(&existing, &[&item.unique_key])
            .await
            .map_err(from_pg)?;
        return Ok((ItemId(row.get(0)), false));
    };
    let id: i64 = row.get(0);
    let done: Vec<bool> = states
        .iter()
        .map(|(_, s, _)| *s == ItemStatus::Completed)
        .collect();
    let edges = prepared(tx, EDGES).await?;
    tx.execute(&edges, &[&id, &needs, &done])
        .await
        .map_err(from_pg)?;
    let mark = prepared(tx, MARK).await?;
    tx.execute(&mark, &[&needs]).await.map_err(from_pg)?;
    let ready = start.status == ItemStatus::Pending && item.delay.is_zero();
    Ok((ItemId(id), ready))
}
