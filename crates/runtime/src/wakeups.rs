//! The node's listener: wakes idle workers when the store says items became ready, whoever
//! wrote them.
//!
//! An enqueue through the node's own handle, and its own reaper's and monitor's requeues, wake
//! idle workers directly. Items written by *another* process (another node, the CLI) are seen
//! only if the store can say so ([`Store::wakeups`](leasehold_core::Store::wakeups):
//! PostgreSQL's LISTEN/NOTIFY); without that, idle workers find them on their next timed poll.

use std::sync::Arc;

use leasehold_core::store::Wakeups;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::handle::TreeExit;
use crate::node::NodeCtx;

/// Subscribes to the store's wake-ups, if it has any. Called before the tree starts, so that
/// whatever commits after the node is up reaches it; a failure costs only promptness (workers
/// still poll), so it is logged, not fatal.
pub(crate) async fn subscribe(ctx: &NodeCtx) -> Option<Box<dyn Wakeups>> {
    match ctx.store.wakeups().await {
        Ok(source) => source,
        Err(e) => {
            tracing::warn!(node = %ctx.node_id, error = %e, "cannot listen for wake-ups; idle workers will find other writers' items by polling");
            None
        }
    }
}

/// Spawns the task that calls [`NodeCtx::wake`] for every wake-up until the tree stops (its
/// exit is set, or the supervisor that holds the exit sender is gone) or the source ends.
pub(crate) fn spawn(
    ctx: Arc<NodeCtx>,
    mut source: Box<dyn Wakeups>,
    mut exit: watch::Receiver<Option<TreeExit>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if exit.borrow_and_update().is_some() {
                return;
            }
            tokio::select! {
                count = source.next() => match count {
                    // WAKE_ALL (u64::MAX) saturates: every idle worker.
                    Some(n) => ctx.wake(usize::try_from(n).unwrap_or(usize::MAX)),
                    None => {
                        tracing::warn!(node = %ctx.node_id, "the store's wake-ups ended; idle workers fall back to polling");
                        return;
                    }
                },
                changed = exit.changed() => if changed.is_err() {
                    return;
                },
            }
        }
    })
}
