//! `items_acquire`: lease ready items for several requests (of one node's idle workers) in one
//! statement.

use leasehold_core::{AcquireRequest, LeaseRef, Leased, StoreResult, Timestamp};
use tokio_postgres::{Client, Statement};

use crate::row::{self, item_columns};

/// Picks the first `$9` ready pending items in acquisition order (the partial index
/// `items_pending_ready` is in exactly that order) and leases each to one slot: slot `n` is
/// the `n`-th row of the unnested owner columns. `FOR UPDATE SKIP LOCKED` lets concurrent
/// acquirers on any number of hosts pass over each other's rows instead of queueing on them;
/// the row lock sits under the `LIMIT`, so a row another acquirer took between our snapshot
/// and our lock is re-checked, dropped, and replaced by the next one. The window function sits
/// outside the locking subquery because PostgreSQL allows no `FOR UPDATE` beside one. Paused
/// kinds are read once per statement into an array (an init plan), so the scan of the index
/// keeps its order and its `LIMIT` whatever is paused.
pub(crate) const ACQUIRE_MANY: &str = concat!(
    "WITH slots AS ( \
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) \
             WITH ORDINALITY AS s(s_owner, s_node, s_incarnation, s_expires, s_now, s_n)), \
     picked AS ( \
         SELECT picked_id, row_number() OVER (ORDER BY p_priority DESC, p_run_at, picked_id) \
             AS p_n \
         FROM (SELECT id AS picked_id, priority AS p_priority, run_at AS p_run_at FROM items \
               WHERE status = 'pending' AND run_at <= $6 \
                 AND ($7::text[] IS NULL OR kind = ANY($7::text[])) \
                 AND ($8::text IS NULL OR group_id = $8::text) \
                 AND kind <> ALL (ARRAY(SELECT kind FROM paused_kinds)) \
               ORDER BY priority DESC, run_at, id \
               LIMIT $9 \
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
);

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
        let rows = c
            .query(
                stmt,
                &[
                    &self.owners,
                    &self.nodes,
                    &self.incarnations,
                    &self.expires,
                    &self.nows,
                    &self.ready_by,
                    &self.filter.kinds,
                    &self.filter.group_id,
                    &slots,
                ],
            )
            .await?;
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
