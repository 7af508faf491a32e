//! `items_enqueue`: all or nothing, one statement for the whole batch, and a notification for
//! idle workers when some of the items are ready now.

use deadpool_postgres::Transaction;
use leasehold_core::{ItemId, NewItem, StoreError, StoreResult, Timestamp};
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
         WHERE unique_key IS NOT NULL AND status IN ('pending', 'in_progress', 'awaiting') \
     DO NOTHING \
     RETURNING id";

/// The open item holding a key (at most one, by `items_unique_open`).
const OPEN_WITH_KEY: &str = "SELECT id FROM items \
     WHERE unique_key = $1 AND status IN ('pending', 'in_progress', 'awaiting')";

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
    if items.iter().any(|i| i.unique_key.is_some()) {
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

/// Inserts a batch holding unique keys one row at a time, in order, so that each keyed item
/// sees the ones before it: an item whose key an open item holds (committed, or inserted
/// earlier in this batch) gets that item's id.
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
    for item in items {
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
