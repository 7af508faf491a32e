//! `item_complete_with_follow_ups`: a completion and the items it enqueues, in one commit.

use leasehold_core::{ItemId, LeaseRef, Timestamp};
use rusqlite::Transaction;

use crate::error::OpResult;
use crate::ops::complete;
use crate::ops::enqueue::{self, Checked};

/// Runs inside a group commit, whose contract is "one statement, or an error that changed
/// nothing" (see `Db::grouped`). This operation writes several statements, so it brackets them
/// in a savepoint and rolls back to it on any error: a lost lease (the fenced completion runs
/// first, so a zombie inserts nothing) or a failed insert leaves the rest of the group intact
/// and this item in progress.
pub(crate) fn run(
    tx: &Transaction<'_>,
    lease: &LeaseRef,
    output: &str,
    follow_ups: &Checked,
    now: Timestamp,
) -> OpResult<Vec<ItemId>> {
    tx.execute_batch("SAVEPOINT follow_ups")?;
    let written =
        complete::run(tx, lease, output, now).and_then(|()| enqueue::insert(tx, follow_ups, now));
    match written {
        Ok(ids) => {
            tx.execute_batch("RELEASE follow_ups")?;
            Ok(ids)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO follow_ups; RELEASE follow_ups")?;
            Err(e)
        }
    }
}
