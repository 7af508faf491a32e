//! A tree embedded in a user's own ractor tree, on a real SQLite file: the escalation reaches
//! the user's supervisor as a typed `ActorFailed` it acts on (by starting a new tree that takes
//! the work back), stopping the user's supervisor drains the tree, and a user's actor enqueues
//! and awaits results through the handle. Tests wait on channels and events (with an overall
//! timeout), never on sleeps.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use leasehold_core::{ItemId, ItemStatus, NodeStatus, Store};
use leasehold_runtime::embed::{Escalation, SHUTDOWN_REASON};
use leasehold_runtime::faults::check_invariants;
use leasehold_runtime::{
    JobContext, JobError, Leasehold, LeaseholdBuilder, NodeEvent, NodeHandle, TreeExit, TreeState,
};
use leasehold_sqlite::SqliteStore;

mod common;
use common::{wait_for, WAIT};

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(dir.path().join("embed.db"))
            .await
            .expect("open store"),
    )
}

/// Builds the tree the user's supervisor starts (again, after an escalation).
type MakeTree = Arc<dyn Fn() -> LeaseholdBuilder + Send + Sync>;

/// What the user's supervisor saw, reported to the test.
#[derive(Debug)]
enum Seen {
    /// A tree started under it.
    Started(Arc<NodeHandle>),
    /// Its tree escalated (the downcast error of `ActorFailed`).
    Escalated(Escalation),
    /// Its tree's anchor ended with this reason.
    Terminated(Option<String>),
    /// A child failed with an error that is not an `Escalation`.
    OtherFailure(#[allow(dead_code)] String),
}

/// A supervisor of the user's own: starts a tree linked to itself, reports what it sees, and
/// on an escalation starts a new tree under the same node id.
struct UserSupervisor;

struct UserArgs {
    make: MakeTree,
    seen: mpsc::UnboundedSender<Seen>,
    /// Whether its `post_stop` stops its children first (ractor's graceful stop), or leaves
    /// them to be killed.
    stop_children: bool,
}

struct UserState {
    args: UserArgs,
    node: Option<Arc<NodeHandle>>,
}

impl UserSupervisor {
    async fn start_tree(
        myself: &ActorRef<()>,
        state: &mut UserState,
    ) -> Result<(), ActorProcessingErr> {
        let node = Arc::new((state.args.make)().start_linked(myself.get_cell()).await?);
        state.node = Some(node.clone());
        let _ = state.args.seen.send(Seen::Started(node));
        Ok(())
    }
}

impl Actor for UserSupervisor {
    type Msg = ();
    type State = UserState;
    type Arguments = UserArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        args: UserArgs,
    ) -> Result<UserState, ActorProcessingErr> {
        let mut state = UserState { args, node: None };
        Self::start_tree(&myself, &mut state).await?;
        Ok(state)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        evt: SupervisionEvent,
        state: &mut UserState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(_, err) => match err.downcast_ref::<Escalation>() {
                Some(e) => {
                    let _ = state.args.seen.send(Seen::Escalated(e.clone()));
                    Self::start_tree(&myself, state).await?;
                }
                None => {
                    let _ = state.args.seen.send(Seen::OtherFailure(err.to_string()));
                }
            },
            SupervisionEvent::ActorTerminated(_, _, reason) => {
                let _ = state.args.seen.send(Seen::Terminated(reason));
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<()>,
        state: &mut UserState,
    ) -> Result<(), ActorProcessingErr> {
        if state.args.stop_children {
            myself
                .stop_children_and_wait(None, Some(Duration::from_secs(30)))
                .await;
        }
        Ok(())
    }
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>, what: &str) -> Seen {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("the user's supervisor is gone while waiting for {what}"))
}

async fn started(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Arc<NodeHandle> {
    match next_seen(rx, "a tree to start").await {
        Seen::Started(node) => node,
        other => panic!("expected a started tree, got {other:?}"),
    }
}

/// Test settings: short heartbeats, a long lease, no periodic sweeps, a short drain.
fn tree(store: Arc<dyn Store>, node: &str) -> LeaseholdBuilder {
    Leasehold::builder(store)
        .node_id(node)
        .lease(Duration::from_secs(60))
        .heartbeat(Duration::from_millis(100))
        .sweep(Duration::from_secs(3600))
        .stale(Duration::from_secs(3600))
        .poll_interval(Duration::from_millis(50))
        .drain_timeout(Duration::from_millis(200))
        .record_completions(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_reaches_the_users_supervisor_which_starts_a_tree_that_takes_the_work_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let runs = Arc::new(AtomicU32::new(0));
    let make: MakeTree = {
        let (store, runs) = (store.clone(), runs.clone());
        Arc::new(move || {
            let runs = runs.clone();
            tree(store.clone(), "embedded")
                .workers(1)
                // The second restart within the window escalates.
                .restart_intensity(1, Duration::from_secs(60))
                .handler("job", move |ctx: JobContext| {
                    let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
                    async move {
                        if first {
                            ctx.cancelled().await;
                            return Err(JobError::retryable("cancelled"));
                        }
                        Ok(json!({ "done": ctx.input()["n"] }))
                    }
                })
        })
    };
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (sup, sup_join) = Actor::spawn(
        None,
        UserSupervisor,
        UserArgs {
            make,
            seen: seen_tx,
            stop_children: true,
        },
    )
    .await
    .unwrap();
    let first = started(&mut seen).await;
    let mut events = first.events();
    let id = first
        .enqueue(first.item("job", json!({ "n": 7 })))
        .await
        .unwrap();
    wait_for(&mut events, "the item in flight", |e| {
        matches!(e, NodeEvent::Acquired { item, .. } if *item == id).then_some(())
    })
    .await;

    // Two reaper crashes: the first is restarted, the second spends the intensity.
    assert!(first.faults().crash_reaper());
    wait_for(&mut events, "the reaper's restart", |e| {
        matches!(e, NodeEvent::ChildRestarted { child } if child == "Reaper").then_some(())
    })
    .await;
    wait_for(&mut events, "the restarted reaper's sweep", |e| {
        matches!(e, NodeEvent::Swept { .. }).then_some(())
    })
    .await;
    assert!(first.faults().crash_reaper());

    let escalation = match next_seen(&mut seen, "the escalation").await {
        Seen::Escalated(e) => e,
        other => panic!("expected the escalation, got {other:?}"),
    };
    assert_eq!(escalation.node_id, "embedded");
    assert_eq!(escalation.incarnation, first.incarnation());
    assert!(
        escalation.reason.contains("restart intensity exceeded")
            && escalation.reason.contains("Reaper"),
        "{escalation:?}"
    );
    assert!(matches!(first.exit_status(), Some(TreeExit::Escalated(_))));
    assert!(matches!(first.state(), TreeState::Escalated { .. }));

    // The supervisor acted on it: a new incarnation under the same id started at once
    // (the escalated row was marked stopped, so no NodeIdInUse) and took the item back.
    let second = started(&mut seen).await;
    assert_ne!(second.incarnation(), first.incarnation());
    let done = tokio::time::timeout(WAIT, second.await_result(id))
        .await
        .expect("the item completes under the new tree")
        .unwrap();
    assert_eq!(done.status, ItemStatus::Completed);
    assert_eq!(done.output, Some(json!({ "done": 7 })));
    // The first attempt died with the escalated tree and counted (recover_mine).
    assert_eq!(done.attempts, 2);
    let report = check_invariants(
        store.as_ref(),
        &[id],
        second.faults().completions().as_deref(),
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{report:?}");

    sup.stop(None);
    sup_join.await.unwrap();
    assert_eq!(second.exit_status(), Some(TreeExit::Shutdown));
    let row = store.node_get("embedded").await.unwrap().unwrap();
    assert_eq!(row.incarnation, second.incarnation());
    assert_eq!(row.status, NodeStatus::Stopped);
}

/// A tree whose one handler runs until it is cancelled, under a user's supervisor; returns the
/// supervisor, its join handle, the tree, and the id of the item in flight.
async fn supervised_item_in_flight(
    store: Arc<dyn Store>,
    node_id: &'static str,
    stop_children: bool,
) -> (
    ActorRef<()>,
    ractor::concurrency::JoinHandle<()>,
    Arc<NodeHandle>,
    ItemId,
) {
    let make: MakeTree = Arc::new(move || {
        tree(store.clone(), node_id)
            .workers(1)
            .handler("forever", |ctx: JobContext| async move {
                ctx.cancelled().await;
                Err::<Value, _>(JobError::retryable("cancelled"))
            })
    });
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (sup, join) = Actor::spawn(
        None,
        UserSupervisor,
        UserArgs {
            make,
            seen: seen_tx,
            stop_children,
        },
    )
    .await
    .unwrap();
    let node = started(&mut seen).await;
    let mut events = node.events();
    let id = node.enqueue(node.item("forever", json!({}))).await.unwrap();
    wait_for(&mut events, "the item in flight", |e| {
        matches!(e, NodeEvent::Acquired { item, .. } if *item == id).then_some(())
    })
    .await;
    assert_eq!(
        node.state(),
        TreeState::Running {
            store_reachable: true
        }
    );
    (sup, join, node, id)
}

/// After a graceful stop: the item went back to pending without spending an attempt, and the
/// registry row says stopped (invariant 7).
async fn assert_drained(store: &Arc<dyn Store>, node: &NodeHandle, id: ItemId) {
    let item = store.item_get(id).await.unwrap().unwrap();
    assert_eq!(item.status, ItemStatus::Pending, "{item:?}");
    assert_eq!(item.attempts, 0, "a drain costs no attempt: {item:?}");
    let row = store.node_get(node.node_id()).await.unwrap().unwrap();
    assert_eq!(row.incarnation, node.incarnation());
    assert_eq!(row.status, NodeStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_users_supervisor_drains_the_tree_before_the_stop_completes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let (sup, join, node, id) = supervised_item_in_flight(store.clone(), "drained", true).await;
    // Its post_stop stops its children and waits: the anchor's stop drains the tree first.
    sup.stop(None);
    tokio::time::timeout(WAIT, join).await.unwrap().unwrap();
    assert_eq!(node.exit_status(), Some(TreeExit::Shutdown));
    assert_eq!(node.state(), TreeState::Stopped);
    assert_drained(&store, &node, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_that_kills_its_children_still_leaves_the_tree_to_drain() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let (sup, join, node, id) = supervised_item_in_flight(store.clone(), "killed", false).await;
    // No stop_children in its post_stop: ractor kills the anchor, and the tree drains on its
    // own; `wait` says when.
    sup.stop(None);
    tokio::time::timeout(WAIT, join).await.unwrap().unwrap();
    let exit = tokio::time::timeout(WAIT, node.wait()).await.unwrap();
    assert_eq!(exit, TreeExit::Shutdown);
    assert_drained(&store, &node, id).await;
}

/// A user's actor that answers requests with the result of an item it enqueues and awaits.
struct Greeter;

enum GreeterMsg {
    Greet(String, RpcReplyPort<leasehold_core::Item>),
}

impl Actor for Greeter {
    type Msg = GreeterMsg;
    type State = Arc<NodeHandle>;
    type Arguments = Arc<NodeHandle>;

    async fn pre_start(
        &self,
        _myself: ActorRef<GreeterMsg>,
        node: Arc<NodeHandle>,
    ) -> Result<Arc<NodeHandle>, ActorProcessingErr> {
        Ok(node)
    }

    async fn handle(
        &self,
        _myself: ActorRef<GreeterMsg>,
        msg: GreeterMsg,
        node: &mut Arc<NodeHandle>,
    ) -> Result<(), ActorProcessingErr> {
        let GreeterMsg::Greet(name, reply) = msg;
        let id = node
            .enqueue(node.item("greet", json!({ "name": name })))
            .await?;
        let done = node.await_result(id).await?;
        let _ = reply.send(done);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_actor_enqueues_and_awaits_results_through_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let make: MakeTree = Arc::new(move || {
        tree(store.clone(), "greeter")
            .workers(2)
            .max_attempts(2)
            .handler("greet", |ctx: JobContext| async move {
                match ctx.input()["name"].as_str() {
                    Some("") => Err(JobError::permanent("no name")),
                    Some(name) => Ok(json!({ "greeting": format!("hello, {name}") })),
                    None => Err(JobError::permanent("name is not a string")),
                }
            })
    });
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let (sup, join) = Actor::spawn(
        None,
        UserSupervisor,
        UserArgs {
            make,
            seen: seen_tx,
            stop_children: true,
        },
    )
    .await
    .unwrap();
    let node = started(&mut seen).await;
    let (greeter, _) = Actor::spawn_linked(None, Greeter, node.clone(), sup.get_cell())
        .await
        .unwrap();

    let ok = call_t!(greeter, GreeterMsg::Greet, 30_000, "ada".to_string()).unwrap();
    assert_eq!(ok.status, ItemStatus::Completed);
    assert_eq!(ok.output, Some(json!({ "greeting": "hello, ada" })));
    let failed = call_t!(greeter, GreeterMsg::Greet, 30_000, String::new()).unwrap();
    assert_eq!(failed.status, ItemStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("no name"));

    // A result that is already there is returned at once, and an unknown id is refused.
    assert_eq!(node.await_result(ok.id).await.unwrap().id, ok.id);
    let err = node.await_result(ItemId(999_999)).await.unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");

    // A graceful shutdown through the handle reaches the user's supervisor as the anchor's
    // termination with the documented reason, before `shutdown` returns.
    node.shutdown(Duration::from_secs(5)).await.unwrap();
    match next_seen(&mut seen, "the anchor's termination").await {
        Seen::Terminated(reason) => assert_eq!(reason.as_deref(), Some(SHUTDOWN_REASON)),
        other => panic!("expected the anchor's termination, got {other:?}"),
    }
    // Waiting for a pending item of a stopped tree fails instead of hanging.
    let pending = node
        .store()
        .item_enqueue(
            leasehold_core::NewItem::new("greet", json!({ "name": "late" })),
            node.clock().now(),
        )
        .await
        .unwrap();
    let err = node.await_result(pending).await.unwrap_err();
    assert!(err.to_string().contains("shut down"), "{err}");
    sup.stop(None);
    tokio::time::timeout(WAIT, join).await.unwrap().unwrap();
}
