//! `items_acquire`: lease up to `limit` ready items in one statement.

use leasehold_core::{AcquireRequest, Item, ItemStatus, LeaseRef, Leased, StoreError, Timestamp};
use rusqlite::{params, OptionalExtension, Transaction};

use crate::error::OpResult;
use crate::row::{self, item_columns};

/// The lease every acquisition writes: `?1` owner, `?2` node, `?3` incarnation, `?4` lease
/// expiry, `?5` now.
macro_rules! lease_set {
    () => {
        "UPDATE items SET status = 'in_progress', owner = ?1, owner_node = ?2, \
             owner_incarnation = ?3, epoch = epoch + 1, attempts = attempts + 1, \
             lease_expires_at = ?4, last_heartbeat_at = ?5, updated_at = ?5, started_at = ?5 "
    };
}

/// The ready pending items in acquisition order. The partial index `items_pending_ready` holds
/// pending items in exactly that order, so a scan reads the first ready entries and stops,
/// whatever the queue depth. `INDEXED BY` pins that plan: without table statistics SQLite
/// prefers the equality on `items_status` plus a sort of every pending item (and if the index
/// were ever missing, the statement fails loudly).
macro_rules! ready {
    () => {
        "SELECT id FROM items INDEXED BY items_pending_ready \
         WHERE status = 'pending' AND run_at <= ?5 "
    };
}

/// Leases the first `?6` ready items, of the kinds in the JSON array `?7` (NULL: any kind), of
/// group `?8` (NULL: any group) and of none of the paused kinds in the JSON array `?9` (NULL:
/// none paused): one cached statement serves every request. The limit is
/// `CAST(?6 AS INTEGER)`, not a bare `?6`: SQLite plans a bare parameter in `LIMIT` with its
/// bound value and marks the statement to be recompiled whenever that parameter is bound again,
/// which made every acquisition re-parse and re-plan this statement.
pub(crate) const ACQUIRE: &str = concat!(
    lease_set!(),
    "WHERE id IN (",
    ready!(),
    "AND (?7 IS NULL OR kind IN (SELECT value FROM json_each(?7))) \
       AND (?8 IS NULL OR group_id = ?8) \
       AND (?9 IS NULL OR kind NOT IN (SELECT value FROM json_each(?9))) \
     ORDER BY priority DESC, run_at, id \
     LIMIT CAST(?6 AS INTEGER)) \
     RETURNING ",
    item_columns!()
);

/// The hot path's shape: the first ready item of any kind (`?2` group or NULL), read, then
/// leased by [`LEASE_ONE`]. A read and an update by id instead of one `UPDATE … RETURNING`:
/// SQLite buffers `RETURNING` rows in an ephemeral B-tree opened per statement, which for a
/// single row cost more than the update itself. Both run in the caller's write transaction,
/// so nothing can take the row in between.
pub(crate) const HEAD: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM items INDEXED BY items_pending_ready \
     WHERE status = 'pending' AND run_at <= ?1 AND (?2 IS NULL OR group_id = ?2) \
     ORDER BY priority DESC, run_at, id LIMIT 1"
);

/// [`HEAD`] for one kind, `?3`: a node with a single handler.
pub(crate) const HEAD_OF_KIND: &str = concat!(
    "SELECT ",
    item_columns!(),
    " FROM items INDEXED BY items_pending_ready \
     WHERE status = 'pending' AND run_at <= ?1 AND kind = ?3 AND (?2 IS NULL OR group_id = ?2) \
     ORDER BY priority DESC, run_at, id LIMIT 1"
);

/// The paused kinds. Read by every acquisition, in its transaction, so a pause is obeyed from the
/// next acquisition on, by every process; the table is tiny (usually empty), and while it is
/// empty the acquisition takes the single-item shapes below unchanged.
pub(crate) const PAUSED: &str = "SELECT kind FROM paused_kinds";

/// Leases the item `?6` read by [`HEAD`] or [`HEAD_OF_KIND`] (parameters as in `lease_set!`).
pub(crate) const LEASE_ONE: &str = concat!(lease_set!(), "WHERE id = ?6 AND status = 'pending'");

/// Checks the request before it is queued for a group commit, so bad input is refused without
/// waiting for (or touching) the database.
pub(crate) fn validate(req: &AcquireRequest) -> Result<(), StoreError> {
    req.validate().map_err(StoreError::InvalidInput)
}

/// Leases up to `req.limit` items inside `tx` (one statement, so it may share a group commit);
/// returns them in acquisition order.
pub(crate) fn run(
    tx: &Transaction<'_>,
    req: &AcquireRequest,
    now: Timestamp,
) -> OpResult<Vec<Leased>> {
    validate(req)?;
    let expires_at = now.plus(req.lease);
    let lease = params![req.owner, req.node_id, req.incarnation, expires_at.0, now.0];
    let paused: Vec<String> = {
        let mut stmt = tx.prepare_cached(PAUSED)?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    // The asked kinds less the paused ones; with no kind asked, the paused ones are excluded
    // by the statement.
    let unpaused: Vec<String>;
    let (kinds, exclude) = if paused.is_empty() {
        (req.kinds.as_slice(), None)
    } else if req.kinds.is_empty() {
        (
            req.kinds.as_slice(),
            Some(serde_json::Value::from(paused).to_string()),
        )
    } else {
        unpaused = req
            .kinds
            .iter()
            .filter(|k| !paused.contains(k))
            .cloned()
            .collect();
        if unpaused.is_empty() {
            return Ok(Vec::new());
        }
        (unpaused.as_slice(), None)
    };
    let mut items = match (req.limit, kinds, &exclude) {
        (1, [], None) => lease_head(tx, req, now, HEAD, params![now.0, req.group_id])?,
        (1, [kind], None) => lease_head(
            tx,
            req,
            now,
            HEAD_OF_KIND,
            params![now.0, req.group_id, kind],
        )?,
        (limit, kinds, exclude) => {
            let kinds =
                (!kinds.is_empty()).then(|| serde_json::Value::from(kinds.to_vec()).to_string());
            let mut stmt = tx.prepare_cached(ACQUIRE)?;
            let params = [lease, params![limit, kinds, req.group_id, exclude]].concat();
            let rows = stmt.query_map(params.as_slice(), row::item)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        }
    };
    // RETURNING yields rows in no promised order.
    items.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    });
    Ok(items
        .into_iter()
        .map(|item| Leased {
            lease: LeaseRef {
                item: item.id,
                owner: req.owner.clone(),
                epoch: item.epoch,
            },
            expires_at: item.lease_expires_at.unwrap_or(expires_at),
            item,
        })
        .collect())
}

/// Reads the first ready item with `head` and leases it with [`LEASE_ONE`]; returns the item as
/// the update left it (the same values the statement wrote, so nothing is read back).
fn lease_head(
    tx: &Transaction<'_>,
    req: &AcquireRequest,
    now: Timestamp,
    head: &str,
    filter: &[&dyn rusqlite::ToSql],
) -> OpResult<Vec<Item>> {
    let Some(mut item) = tx
        .prepare_cached(head)?
        .query_row(filter, row::item)
        .optional()?
    else {
        return Ok(Vec::new());
    };
    let expires_at = now.plus(req.lease);
    let changed = tx.prepare_cached(LEASE_ONE)?.execute(params![
        req.owner,
        req.node_id,
        req.incarnation,
        expires_at.0,
        now.0,
        item.id.0
    ])?;
    if changed == 0 {
        // Unreachable inside one write transaction; never report a lease that was not written.
        return Ok(Vec::new());
    }
    item.status = ItemStatus::InProgress;
    item.owner = Some(req.owner.clone());
    item.owner_node = Some(req.node_id.clone());
    item.owner_incarnation = Some(req.incarnation);
    item.epoch += 1;
    item.attempts += 1;
    item.lease_expires_at = Some(expires_at);
    item.last_heartbeat_at = Some(now);
    item.updated_at = now;
    item.started_at = Some(now);
    Ok(vec![item])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use leasehold_core::{AcquireRequest, NewItem, Timestamp};
    use rusqlite::{params, Connection, StatementStatus};

    use super::{run, ACQUIRE, HEAD, HEAD_OF_KIND, LEASE_ONE};
    use crate::ops::enqueue;
    use crate::schema::migrate;

    fn queue() -> Connection {
        let mut c = Connection::open_in_memory().expect("in-memory database");
        migrate(&mut c).expect("migrate");
        let items = (0..60)
            .map(|i| NewItem::new(["a", "b", "c"][i % 3], serde_json::json!(i)))
            .collect();
        enqueue::run(&mut c, items, Timestamp(1_000)).expect("enqueue");
        c
    }

    fn acquire(c: &mut Connection, req: &AcquireRequest, now: i64) -> Vec<(i64, String)> {
        let tx = c.transaction().expect("transaction");
        let got = run(&tx, req, Timestamp(now)).expect("acquire");
        tx.commit().expect("commit");
        got.into_iter()
            .map(|l| (l.item.id.0, l.item.kind))
            .collect()
    }

    #[test]
    fn every_statement_shape_takes_the_first_ready_items_of_the_asked_kinds() {
        let mut c = queue();
        let mut req = AcquireRequest::new("w", Duration::from_secs(30));
        // One item, any kind: the oldest.
        assert_eq!(acquire(&mut c, &req, 2_000), vec![(1, "a".to_string())]);
        // One item of one kind: the oldest of that kind.
        req.kinds = vec!["c".into()];
        assert_eq!(acquire(&mut c, &req, 2_000), vec![(3, "c".to_string())]);
        // Several items of two kinds, in order.
        req.kinds = vec!["a".into(), "b".into()];
        req.limit = 3;
        let ids: Vec<i64> = acquire(&mut c, &req, 2_000)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ids, vec![2, 4, 5]);
        // Nothing of a kind nobody enqueued.
        req.kinds = vec!["z".into()];
        req.limit = 1;
        assert!(acquire(&mut c, &req, 2_000).is_empty());
    }

    #[test]
    fn acquiring_again_reuses_the_compiled_statements() {
        let mut c = queue();
        let mut acquired = 0i32;
        for i in 0..12u32 {
            let mut req = AcquireRequest::new(format!("w{i}"), Duration::from_secs(30));
            req.limit = 1 + i % 3;
            if i % 2 == 0 {
                req.kinds = vec!["a".into()];
            }
            let got = acquire(&mut c, &req, 2_000 + i64::from(i));
            assert!(!got.is_empty());
            acquired += i32::try_from(got.len()).expect("small");
        }
        let mut runs = Vec::new();
        for sql in [ACQUIRE, HEAD, HEAD_OF_KIND, LEASE_ONE] {
            let stmt = c.prepare_cached(sql).expect("cached statement");
            runs.push(stmt.get_status(StatementStatus::Run));
            assert_eq!(
                stmt.get_status(StatementStatus::RePrepare),
                0,
                "binding new values must not make SQLite recompile {sql}"
            );
        }
        // SQLite would count a run of a trigger's program with the statement's own runs; since
        // schema version 12 the dependency trigger is not part of any acquisition, so these
        // are the statements' runs alone.
        assert_eq!(
            runs[..3].iter().sum::<i32>(),
            12,
            "each acquisition ran one cached read or batch statement: {runs:?}, {acquired} acquired"
        );
        assert_eq!(
            runs[3], 4,
            "each single-item acquisition leased by id: {runs:?}"
        );
    }

    #[test]
    fn the_single_item_shapes_read_the_pending_index_in_order_without_temporary_tables() {
        let c = queue();
        for (sql, args) in [
            (HEAD, params![1_000, None::<String>].to_vec()),
            (HEAD, params![1_000, "g"].to_vec()),
            (HEAD_OF_KIND, params![1_000, None::<String>, "a"].to_vec()),
        ] {
            let mut stmt = c
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explain");
            let plan: Vec<String> = stmt
                .query_map(args.as_slice(), |r| r.get::<_, String>(3))
                .expect("plan rows")
                .collect::<rusqlite::Result<_>>()
                .expect("plan");
            assert!(
                plan.iter()
                    .any(|s| s.contains("USING INDEX items_pending_ready")),
                "{plan:#?}"
            );
            for step in &plan {
                assert!(!step.contains("TEMP B-TREE"), "a sort in {plan:#?}");
                assert!(
                    !step.starts_with("LIST SUBQUERY"),
                    "a temporary list in {plan:#?}"
                );
            }
        }
    }
}
