//! `item_complete_with_follow_ups`: a completion and the items it enqueues, in one commit.
//!
//! Not part of the batcher's shared transaction: a completion that carries follow-ups runs in
//! a transaction of its own, so that a refused or failed insert can roll back exactly its own
//! completion and nothing of anyone else's. Completions without follow-ups keep the batched
//! path.

use leasehold_core::{ItemId, LeaseRef, NewItem, StoreResult, Timestamp};
use serde_json::Value;

use crate::db::{finish, prepared, Db};
use crate::error::{from_pg, lease_lost};
use crate::ops::complete::COMPLETE_MANY;
use crate::ops::enqueue;

/// Checks the follow-ups, then completes (fenced, first: a zombie inserts nothing) and inserts
/// them in one transaction.
pub(crate) async fn run(
    db: &Db,
    channel: &str,
    lease: &LeaseRef,
    output: Value,
    follow_ups: Vec<NewItem>,
    now: Timestamp,
) -> StoreResult<Vec<ItemId>> {
    enqueue::check(&follow_ups, "follow-up")?;
    let mut c = db.conn().await?;
    let tx = c.transaction().await.map_err(from_pg)?;
    let outcome = async {
        // The batched statement with one row: one completion statement to keep in step.
        let complete = prepared(&tx, COMPLETE_MANY).await?;
        let done = tx
            .query(
                &complete,
                &[
                    &vec![lease.item.0],
                    &vec![lease.owner.as_str()],
                    &vec![lease.epoch],
                    &vec![&output],
                    &vec![now.0],
                ],
            )
            .await
            .map_err(from_pg)?;
        if done.is_empty() {
            return Err(lease_lost(lease));
        }
        enqueue::insert(&tx, channel, &follow_ups, now).await
    }
    .await;
    finish(tx, outcome).await
}
