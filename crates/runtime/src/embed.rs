//! Embedding a tree in a user's program: under a supervisor of the user's own ractor tree
//! ([`LeaseholdBuilder::start_linked`](crate::LeaseholdBuilder::start_linked)), the typed
//! [`Escalation`] that supervisor receives, the tree's [`TreeState`] for health checks, and
//! [`NodeHandle::await_result`].
//!
//! The tree joins the user's tree through one small **anchor** actor linked to the user's
//! supervisor, not through its own supervisor. ractor kills every descendant of a supervisor
//! that stops (no `post_stop` runs for them), so a tree whose supervisor hung directly under the
//! user's would lose its graceful drain whenever the user's supervisor stopped without asking
//! for one; the anchor is the only actor in the user's tree, and its end starts the drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use leasehold_core::{Item, ItemId, StoreError};

use crate::error::RuntimeError;
use crate::events::NodeEvent;
use crate::handle::{NodeHandle, TreeExit};
use crate::supervisor::SupervisorMsg;

/// The exit reason of the anchor's `ActorTerminated` event after a graceful shutdown.
pub const SHUTDOWN_REASON: &str = "leasehold: graceful shutdown";

/// Why a tree gave up, as the user's supervisor receives it: the error of the
/// [`SupervisionEvent::ActorFailed`](ractor::SupervisionEvent::ActorFailed) of a tree started
/// with [`start_linked`](crate::LeaseholdBuilder::start_linked). Downcast it:
///
/// ```
/// # use leasehold_runtime::embed::Escalation;
/// # fn on_failed(err: &ractor::ActorProcessingErr) {
/// if let Some(e) = err.downcast_ref::<Escalation>() {
///     eprintln!("tree {} (incarnation {}) escalated: {}", e.node_id, e.incarnation, e.reason);
/// }
/// # }
/// ```
///
/// When it arrives, no worker of that tree runs any more and its registry row is marked
/// stopped, so a new tree under the same node id starts at once and its workers'
/// `recover_mine` takes back whatever the escalated one held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("leasehold node {node_id:?} (incarnation {incarnation}) escalated: {reason}")]
pub struct Escalation {
    /// The tree's node id.
    pub node_id: String,
    /// The escalated incarnation.
    pub incarnation: i64,
    /// Why (e.g. `restart intensity exceeded: 3 restarts within 60s (limit 2); last: …`).
    pub reason: String,
}

/// What a tree is doing now ([`NodeHandle::state`]): what a service's health check reports.
/// New states may be added: match with a wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TreeState {
    /// Taking and running work.
    Running {
        /// Whether this node's last registry write reached the store. While it is false the
        /// tree keeps running and retrying (a store outage never escalates), takes no new work
        /// it cannot acquire, and its reaper and monitor stand down.
        store_reachable: bool,
    },
    /// A graceful shutdown is under way: no new work, in-flight work finishing or going back
    /// to pending.
    Draining,
    /// A graceful shutdown finished.
    Stopped,
    /// The tree gave up (restart intensity exceeded) and stopped.
    Escalated {
        /// Why.
        reason: String,
    },
    /// A newer incarnation of the node id replaced this one in the registry, and the tree
    /// stopped itself.
    Superseded {
        /// The store's account: which incarnation replaced which.
        reason: String,
    },
}

impl TreeState {
    /// Whether the tree takes and runs work (a health check's "ready").
    pub fn is_running(&self) -> bool {
        matches!(self, TreeState::Running { .. })
    }
}

/// How often [`NodeHandle::await_result`] looks at the store when no event of this node says
/// anything about its item (another node may run it, or an operator cancel it): starting here…
const AWAIT_FIRST_LOOK: Duration = Duration::from_millis(10);

impl NodeHandle {
    /// Waits until item `id` reaches a terminal status and returns it: `completed` with its
    /// `output`, `failed` (dead-lettered) with its `error`, or `cancelled`.
    ///
    /// It wakes on this node's own events for the item and otherwise looks at the store with
    /// a growing pause (10 ms doubling up to the node's poll interval), so an item another
    /// node runs, or an operator cancels, is seen too. Wrap it in `tokio::time::timeout` to
    /// bound the wait. An item that is already terminal is returned even after the tree
    /// stopped; otherwise, once the tree stops (shut down or escalated) it fails with
    /// [`RuntimeError::NotRunning`] or [`RuntimeError::Escalated`], and an id the store does
    /// not know fails with [`StoreError::NotFound`].
    ///
    /// ```no_run
    /// # async fn demo(node: leasehold_runtime::NodeHandle) -> Result<(), leasehold_runtime::RuntimeError> {
    /// let id = node.enqueue(node.item("greet", serde_json::json!({"name": "ada"}))).await?;
    /// let done = node.await_result(id).await?;
    /// println!("{:?}: {:?} {:?}", done.status, done.output, done.error);
    /// # Ok(()) }
    /// ```
    pub async fn await_result(&self, id: ItemId) -> Result<Item, RuntimeError> {
        // Subscribed before the first read, so a completion between the read and the wait is
        // not missed.
        let mut events = self.events();
        let mut exit = self.exit_receiver();
        let mut pause = AWAIT_FIRST_LOOK;
        loop {
            let item = self
                .store()
                .item_get(id)
                .await?
                .ok_or(StoreError::NotFound(id))?;
            if item.status.is_terminal() {
                return Ok(item);
            }
            self.ensure_running()?;
            let look_again = tokio::time::sleep(pause);
            tokio::pin!(look_again);
            loop {
                tokio::select! {
                    _ = &mut look_again => break,
                    changed = exit.changed() => {
                        if changed.is_err() && self.exit_status().is_none() {
                            // The supervisor is gone without saying why (as `wait` reports it).
                            return Err(RuntimeError::Escalated("the supervisor ended".into()));
                        }
                        break;
                    }
                    event = events.recv() => match event {
                        Ok(NodeEvent::Completed { item, .. })
                        | Ok(NodeEvent::AttemptFailed { item, dead_lettered: true }) if item == id => break,
                        Ok(_) => continue,
                        // Missed events may have been about this item: look at the store.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        // The handle holds the sender, so this does not happen; wait the pause.
                        Err(broadcast::error::RecvError::Closed) => {
                            look_again.as_mut().await;
                            break;
                        }
                    },
                }
            }
            pause = (pause * 2).min(self.config().poll_interval);
        }
    }

    /// What the tree is doing now: running (and whether its store answers), draining,
    /// stopped, or escalated.
    pub fn state(&self) -> TreeState {
        match self.exit_status() {
            Some(TreeExit::Shutdown) => TreeState::Stopped,
            Some(TreeExit::Escalated(reason)) => TreeState::Escalated { reason },
            Some(TreeExit::Superseded(reason)) => TreeState::Superseded { reason },
            None if self.is_draining() => TreeState::Draining,
            None => TreeState::Running {
                store_reachable: self
                    .ctx
                    .store_reachable
                    .load(std::sync::atomic::Ordering::Relaxed),
            },
        }
    }
}

/// The anchor's messages.
pub(crate) enum AnchorMsg {
    /// The tree stopped (`None`: its supervisor ended without saying why).
    TreeExited(Option<TreeExit>),
}

/// The actor a linked tree places in the user's supervision tree.
pub(crate) struct Anchor;

pub(crate) struct AnchorArgs {
    pub(crate) node_id: String,
    pub(crate) incarnation: i64,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    pub(crate) exit: watch::Receiver<Option<TreeExit>>,
    pub(crate) drain: Duration,
    /// The handle's flag: set by whoever starts the graceful shutdown.
    pub(crate) draining: Arc<AtomicBool>,
}

pub(crate) struct AnchorState {
    args: AnchorArgs,
    watcher: tokio::task::JoinHandle<()>,
}

impl Actor for Anchor {
    type Msg = AnchorMsg;
    type State = AnchorState;
    type Arguments = AnchorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AnchorMsg>,
        args: AnchorArgs,
    ) -> Result<AnchorState, ActorProcessingErr> {
        // Reads the current value first, so a tree that stopped before the anchor started is
        // reported at once.
        let mut exit = args.exit.clone();
        let watcher = tokio::spawn(async move {
            let exited = loop {
                if let Some(e) = exit.borrow_and_update().clone() {
                    break Some(e);
                }
                if exit.changed().await.is_err() {
                    break exit.borrow().clone();
                }
            };
            let _ = myself.send_message(AnchorMsg::TreeExited(exited));
        });
        Ok(AnchorState { args, watcher })
    }

    /// An escalation fails the anchor with an [`Escalation`] (the user's supervisor receives
    /// `ActorFailed`); a graceful shutdown stops it with [`SHUTDOWN_REASON`].
    async fn handle(
        &self,
        myself: ActorRef<AnchorMsg>,
        msg: AnchorMsg,
        state: &mut AnchorState,
    ) -> Result<(), ActorProcessingErr> {
        let AnchorMsg::TreeExited(exit) = msg;
        let reason = match exit {
            Some(TreeExit::Shutdown) => {
                myself.stop(Some(SHUTDOWN_REASON.into()));
                return Ok(());
            }
            Some(TreeExit::Escalated(reason) | TreeExit::Superseded(reason)) => reason,
            None => "the tree's supervisor ended without a reason".to_string(),
        };
        Err(Box::new(Escalation {
            node_id: state.args.node_id.clone(),
            incarnation: state.args.incarnation,
            reason,
        }))
    }

    /// Stopped by someone else while the tree runs (the user's supervisor stopping its
    /// children): drain the tree first, so the stop waits for it.
    async fn post_stop(
        &self,
        _myself: ActorRef<AnchorMsg>,
        state: &mut AnchorState,
    ) -> Result<(), ActorProcessingErr> {
        state.watcher.abort();
        if state.args.exit.borrow().is_none() {
            drain(&state.args).await;
        }
        Ok(())
    }
}

/// Asks the tree's supervisor for a graceful shutdown and waits for it (or, when one is
/// already under way through the handle, waits for that one).
async fn drain(args: &AnchorArgs) {
    let drain = args.drain;
    let patience = drain + Duration::from_secs(60);
    if args.draining.swap(true, Ordering::Relaxed) {
        let mut exit = args.exit.clone();
        let _ = tokio::time::timeout(patience, exit.wait_for(|e| e.is_some())).await;
        return;
    }
    tracing::info!(node = %args.node_id, "the tree's anchor was stopped: shutting the tree down gracefully");
    let answer = args
        .supervisor
        .call(
            |reply| SupervisorMsg::Shutdown { drain, reply },
            Some(patience),
        )
        .await;
    if !matches!(answer, Ok(CallResult::Success(_))) {
        tracing::warn!(node = %args.node_id, "the tree did not complete its shutdown");
    }
}

/// Spawns the anchor linked to `supervisor`, and a task that drains the tree if the anchor is
/// killed (ractor kills the children of a supervisor that stops without stopping them first;
/// a killed actor runs no `post_stop`).
pub(crate) async fn spawn_anchor(
    name: String,
    args: AnchorArgs,
    supervisor: ActorCell,
) -> Result<ActorCell, RuntimeError> {
    let exit = args.exit.clone();
    let tree = args.supervisor.clone();
    let (node_id, incarnation, drain_for, draining) = (
        args.node_id.clone(),
        args.incarnation,
        args.drain,
        args.draining.clone(),
    );
    let (anchor, join) = Actor::spawn_linked(Some(name), Anchor, args, supervisor)
        .await
        .map_err(|e| RuntimeError::Spawn {
            what: "anchor".into(),
            reason: e.to_string(),
        })?;
    tokio::spawn(async move {
        let _ = join.await;
        if exit.borrow().is_none() {
            let args = AnchorArgs {
                node_id,
                incarnation,
                supervisor: tree,
                exit,
                drain: drain_for,
                draining,
            };
            drain(&args).await;
        }
    });
    Ok(anchor.get_cell())
}
