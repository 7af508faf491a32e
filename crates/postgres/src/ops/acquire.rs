//! `items_acquire`: lease ready items for several requests (of one node's idle workers) in one
//! statement.

use leasehold_core::{AcquireRequest, LeaseRef, Leased, StoreResult, Timestamp};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::row::{self, item_columns};

/// The acquisition statement, with the item filter `$filter` spliced in (see [`Filter::sql`]).
///
/// Picks the first `$9` ready pending items in acquisition order (the partial index
/// `items_pending_ready` is in exactly that order) and leases each to one slot: slot `n` is
/// the `n`-th row of the unnested owner columns. `FOR UPDATE SKIP LOCKED` lets concurrent
/// acquirers on any number of hosts pass over each other's rows instead of queueing on them;
/// the row lock sits under the `LIMIT`, so a row another acquirer took between our snapshot
/// and our lock is re-checked, dropped, and replaced by the next one. The window function sits
/// outside the locking subquery because PostgreSQL allows no `FOR UPDATE` beside one. Paused
/// kinds are read once per statement into an array (an init plan), so the scan of the index
/// keeps its order and its `LIMIT` whatever is paused.
macro_rules! acquire_many {
    ($filter:literal) => {
        concat!(
            "WITH slots AS ( \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], \
                     $5::bigint[]) \
                     WITH ORDINALITY AS s(s_owner, s_node, s_incarnation, s_expires, s_now, s_n)), \
             picked AS ( \
                 SELECT picked_id, row_number() OVER (ORDER BY p_priority DESC, p_run_at, picked_id) \
                     AS p_n \
                 FROM (SELECT id AS picked_id, priority AS p_priority, run_at AS p_run_at FROM items \
                       WHERE status = 'pending' AND run_at <= $6 ",
            $filter,
            " AND kind <> ALL (ARRAY(SELECT kind FROM paused_kinds)) \
                       ORDER BY priority DESC, run_at, id \
                       LIMIT $7 \
                       FOR UPDATE SKIP LOCKED) AS locked) \
             UPDATE items SET status = 'in_progress', owner = s_owner, owner_node = s_node, \
                 owner_incarnation = s_incarnation, epoch = epoch + 1, attempts = attempts + 1, \
                 lease_expires_at = s_expires, last_heartbeat_at = s_now, updated_at = s_now, \
                 started_at = s_now \
             FROM picked JOIN slots ON s_n = p_n \
             WHERE items.id = picked_id \
             RETURNING ",
            item_columns!(),
            ", s_n"
        )
    };
}

/// Any ready item.
const ACQUIRE_ANY: &str = acquire_many!("");
/// Ready items of the kinds in `$8`.
const ACQUIRE_KINDS: &str = acquire_many!("AND kind = ANY($8::text[])");
/// Ready items of group `$8`.
const ACQUIRE_GROUP: &str = acquire_many!("AND group_id = $8::text");
/// Ready items of the kinds in `$8` in group `$9`.
const ACQUIRE_KINDS_GROUP: &str =
    acquire_many!("AND kind = ANY($8::text[]) AND group_id = $9::text");

/// Sent before the acquisitions without a group filter, in their transaction: their
/// statements are planned with sorting and bitmap scans off, so that they read the pending
/// index in its order and stop at the `LIMIT`. Without statistics (a table never analyzed, as
/// on a server with autovacuum off, or one that grew since its last `ANALYZE`) PostgreSQL
/// estimates a handful of pending rows and plans to read all of them and sort: at 20,000
/// pending items that took 8–12 ms a statement instead of 0.1 ms. With a group filter the
/// planner is left to choose (the group's own index and a sort of the group's rows is often
/// the better plan), so those statements run after [`PLAN_AS_USUAL`]. A disabled step is not
/// forbidden but priced out (the window function's small sort stays, at that price), and a
/// plan that dear would be compiled by JIT on every execution: JIT goes off with them.
pub(crate) const PLAN_IN_QUEUE_ORDER: &str =
    "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; SET LOCAL jit = off";

/// Restores the planner's settings for the acquisitions with a group filter.
pub(crate) const PLAN_AS_USUAL: &str = "RESET enable_sort; RESET enable_bitmapscan; RESET jit";

/// What separates acquisitions that cannot share one statement: the filter on the items.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Filter {
    kinds: Option<Vec<String>>,
    group_id: Option<String>,
}

impl Filter {
    pub(crate) fn of(req: &AcquireRequest) -> Filter {
        Filter {
            kinds: (!req.kinds.is_empty()).then(|| req.kinds.clone()),
            group_id: req.group_id.clone(),
        }
    }

    /// The statement for this filter: one text per shape of filter, so that each is planned
    /// for what it filters on (a generic plan of one text with `$n IS NULL OR …` for every
    /// filter would fit none of them).
    pub(crate) fn sql(&self) -> &'static str {
        match (&self.kinds, &self.group_id) {
            (None, None) => ACQUIRE_ANY,
            (Some(_), None) => ACQUIRE_KINDS,
            (None, Some(_)) => ACQUIRE_GROUP,
            (Some(_), Some(_)) => ACQUIRE_KINDS_GROUP,
        }
    }

    /// Whether the statement is run with [`PLAN_IN_QUEUE_ORDER`]: when no group narrows it.
    pub(crate) fn in_queue_order(&self) -> bool {
        self.group_id.is_none()
    }
}

/// The acquisitions of one batch that share a [`Filter`]: each request's `limit` slots, in
/// the order the requests came.
pub(crate) struct Acquisitions {
    filter: Filter,
    owners: Vec<String>,
    nodes: Vec<String>,
    incarnations: Vec<i64>,
    expires: Vec<i64>,
    nows: Vec<i64>,
    /// Which request each slot belongs to (an index into the caller's list).
    requester: Vec<usize>,
    /// The earliest `now` among the requests: an item is ready only if it is ready for every
    /// request of the statement, so none is handed an item before its `run_at`.
    ready_by: i64,
}

impl Acquisitions {
    pub(crate) fn new(filter: Filter) -> Acquisitions {
        Acquisitions {
            filter,
            owners: Vec::new(),
            nodes: Vec::new(),
            incarnations: Vec::new(),
            expires: Vec::new(),
            nows: Vec::new(),
            requester: Vec::new(),
            ready_by: i64::MAX,
        }
    }

    pub(crate) fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Adds `req`'s slots for requester number `who` (already validated).
    pub(crate) fn push(&mut self, who: usize, req: &AcquireRequest, now: Timestamp) {
        let expires_at = now.plus(req.lease);
        for _ in 0..req.limit {
            self.owners.push(req.owner.clone());
            self.nodes.push(req.node_id.clone());
            self.incarnations.push(req.incarnation);
            self.expires.push(expires_at.0);
            self.nows.push(now.0);
            self.requester.push(who);
        }
        self.ready_by = self.ready_by.min(now.0);
    }

    /// Runs the statement; returns the rows it leased, each with its requester, undecoded
    /// (decoding errors are the requester's alone).
    pub(crate) async fn run(
        &self,
        c: &Client,
        stmt: &Statement,
    ) -> Result<Vec<(usize, tokio_postgres::Row)>, tokio_postgres::Error> {
        let slots = self.owners.len() as i64;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &self.owners,
            &self.nodes,
            &self.incarnations,
            &self.expires,
            &self.nows,
            &self.ready_by,
            &slots,
        ];
        if let Some(kinds) = &self.filter.kinds {
            params.push(kinds);
        }
        if let Some(group) = &self.filter.group_id {
            params.push(group);
        }
        let rows = c.query(stmt, &params).await?;
        rows.into_iter()
            .map(|r| {
                let n: i64 = r.try_get("s_n")?;
                // Ordinality counts from 1; every slot number comes from our own arrays.
                let who = self.requester[(n - 1) as usize];
                Ok((who, r))
            })
            .collect()
    }
}

/// Decodes one requester's leased rows and orders them in
/// acquisition order, as `RETURNING` promises none.
pub(crate) fn leased(
    req: &AcquireRequest,
    now: Timestamp,
    rows: &[tokio_postgres::Row],
) -> StoreResult<Vec<Leased>> {
    let expires_at = now.plus(req.lease);
    let mut items = rows
        .iter()
        .map(row::item)
        .collect::<StoreResult<Vec<_>>>()?;
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

#[cfg(test)]
mod tests {
    use leasehold_core::{NewItem, Store, Timestamp};
    use serde_json::json;

    use super::*;
    use crate::testing::store_or_skip;

    /// The plan the batcher's connection makes of an acquisition statement: generic (as the
    /// batcher's `BEGIN` asks) and under the settings it sends before it.
    async fn generic_plan(store: &crate::PgStore, filter: &Filter) -> String {
        let c = store.db.conn().await.expect("a connection");
        let settings = if filter.in_queue_order() {
            PLAN_IN_QUEUE_ORDER
        } else {
            PLAN_AS_USUAL
        };
        c.batch_execute(&format!(
            "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; {settings}; \
             PREPARE acquire_plan AS {}",
            filter.sql()
        ))
        .await
        .expect("prepare the statement");
        let mut args = vec![
            "'{w}'",
            "'{n}'",
            "'{1}'",
            "'{99000}'",
            "'{2000}'",
            "2000",
            "4",
        ];
        if filter.kinds.is_some() {
            args.push("'{job}'");
        }
        if filter.group_id.is_some() {
            args.push("'g'");
        }
        let rows = c
            .simple_query(&format!(
                "EXPLAIN EXECUTE acquire_plan({})",
                args.join(", ")
            ))
            .await
            .expect("explain the statement");
        c.batch_execute("ROLLBACK; DEALLOCATE acquire_plan")
            .await
            .expect("roll back");
        rows.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// With thousands of pending items and no statistics (this server may run without
    /// autovacuum, and the store's own `ANALYZE` comes only after 10,000 enqueued), every
    /// ungrouped acquisition reads the pending index in queue order and stops at its limit.
    /// Planned as PostgreSQL would without `PLAN_IN_QUEUE_ORDER`, they read every pending item
    /// and sorted them: 8–12 ms a statement at 20,000 pending.
    #[tokio::test]
    async fn ungrouped_acquisitions_read_the_pending_index_in_queue_order() {
        let Some((store, _schema)) = store_or_skip(
            "ungrouped_acquisitions_read_the_pending_index_in_queue_order",
            "lh_acq_plan",
        )
        .await
        else {
            return;
        };
        let items = (0..5_000)
            .map(|i| NewItem::new("job", json!(i)))
            .collect::<Vec<_>>();
        store
            .items_enqueue(items, Timestamp(1_000))
            .await
            .expect("enqueue");
        for kinds in [None, Some(vec!["job".to_string()])] {
            let filter = Filter {
                kinds,
                group_id: None,
            };
            let plan = generic_plan(&store, &filter).await;
            assert!(
                plan.contains("Index Scan using items_pending_ready")
                    && !plan.contains("Bitmap Heap Scan on items"),
                "{}:\n{plan}",
                filter.sql()
            );
        }
        // A group's acquisition is left to the planner, which must still find the group's rows
        // by an index rather than by reading the table.
        let grouped = Filter {
            kinds: Some(vec!["job".to_string()]),
            group_id: Some("g".to_string()),
        };
        let plan = generic_plan(&store, &grouped).await;
        assert!(!plan.contains("Seq Scan on items"), "{plan}");
    }
}
