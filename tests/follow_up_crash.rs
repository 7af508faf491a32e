//! Follow-ups are enqueued in the completion's commit: a process killed (SIGKILL) between a
//! handler's return and that commit leaves the item to be retried and no follow-up; the
//! restarted node runs it again and its follow-up then appears exactly once.
//!
//! The test runs itself as a child process (the ignored `child_completes_with_a_follow_up_and_stops_at_commit`,
//! selected by an environment variable): the child's store holds its connection thread right
//! before the group transaction carrying the completion and its follow-up commits, and says so
//! on stdout; the parent then SIGKILLs it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use leasehold::runtime::{JobContext, JobError, Leasehold};
use leasehold::{ItemFilter, ItemStatus, NewItem, NodeEvent, SqliteStore, Store};

const CHILD_DB: &str = "LEASEHOLD_FOLLOW_UP_CHILD_DB";
const NODE: &str = "follow-up-crash";
/// Short, so the killed child's registry row goes stale soon and the restart is not refused
/// for long.
const BEAT: Duration = Duration::from_millis(200);

/// The handler both processes run: research a company, then ask for its contacts.
async fn research(ctx: JobContext) -> Result<serde_json::Value, JobError> {
    let company = ctx.input()["company"].clone();
    ctx.follow_up(NewItem::new(
        "contacts",
        json!({ "company": company, "attempt": ctx.attempt() }),
    ))?;
    Ok(json!({ "researched": company, "attempt": ctx.attempt() }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_before_the_completions_commit_leaves_no_follow_up_and_retries_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("follow-up.db");
    support::kill_child_at(
        "child_completes_with_a_follow_up_and_stops_at_commit",
        CHILD_DB,
        &db,
        support::AT_COMMIT,
        "the child reached the commit of its completion",
    );

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let all = store.items_list(&ItemFilter::default()).await.unwrap();
    assert_eq!(
        all.len(),
        1,
        "the killed completion's follow-up must not exist: {all:?}"
    );
    let left = all.into_iter().next().unwrap();
    let id = left.id;
    assert_eq!(left.status, ItemStatus::InProgress, "{left:?}");
    assert_eq!(
        left.output, None,
        "nothing of the uncommitted group is in the file"
    );

    // The node restarts under the same id; its worker's recover_mine takes the item back and
    // the retry completes it with its follow-up.
    let builder = Leasehold::builder(store.clone())
        .node_id(NODE)
        .heartbeat(BEAT)
        .takeover(true)
        .workers(1)
        .handler("research", research)
        .handler("contacts", |ctx: JobContext| async move {
            Ok::<_, JobError>(ctx.input().clone())
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();
    let mut completed = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while completed.len() < 2 {
            match events.recv().await {
                Ok(NodeEvent::Completed { item, .. }) => completed.push(item),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("the restarted node completed the item and its follow-up");
    node.shutdown(Duration::from_secs(5)).await.unwrap();

    let all = store.items_list(&ItemFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2, "one follow-up, from the retry: {all:?}");
    let done = &all[0];
    assert_eq!(done.id, id);
    assert_eq!(done.status, ItemStatus::Completed);
    assert_eq!(done.attempts, 2, "the killed attempt counted");
    let follow_up = &all[1];
    assert_eq!(follow_up.kind, "contacts");
    assert_eq!(follow_up.status, ItemStatus::Completed);
    assert_eq!(
        follow_up.input,
        json!({ "company": "acme", "attempt": 2 }),
        "the follow-up is the retry's, not the killed attempt's"
    );
}

/// The child half of the test above; does nothing unless started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by kill_before_the_completions_commit_leaves_no_follow_up_and_retries_the_item"]
async fn child_completes_with_a_follow_up_and_stops_at_commit() {
    let Some(db) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let sqlite = SqliteStore::open(&db).await.unwrap();
    support::hold_group_commit_of(&sqlite, "complete_with_follow_ups");
    let builder = Leasehold::builder(Arc::new(sqlite))
        .node_id(NODE)
        .heartbeat(BEAT)
        .workers(1)
        .handler("research", research);
    let node = builder.start().await.unwrap();
    node.enqueue(NewItem::new("research", json!({ "company": "acme" })))
        .await
        .unwrap();
    std::future::pending::<()>().await;
}
