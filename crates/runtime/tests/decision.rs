//! The decision step through a running node: a handler parks its item with a question, the
//! item waits holding no lease (no worker retries it), `NodeHandle::decide` answers, and the
//! next attempt reads the answer and completes with it. A decision on an item that is not
//! parked is refused naming its status.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use leasehold_core::{DecisionRequest, ItemStatus, NewItem, Store};
use leasehold_runtime::{JobContext, JobError, Leasehold, NodeEvent, RuntimeError};
use leasehold_sqlite::SqliteStore;

mod common;
use common::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_item_waits_for_its_decision_and_resumes_with_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("decision.db"))
            .await
            .unwrap(),
    );
    let builder = Leasehold::builder(store.clone())
        .node_id("decider")
        .workers(2)
        .poll_interval(Duration::from_millis(20))
        .handler("lead", |ctx: JobContext| async move {
            match ctx.decision() {
                None => Err(JobError::awaiting_decision(DecisionRequest::new(
                    "no contact found for acme.com",
                    ["skip", "manual"],
                ))),
                Some(answer) => Ok(json!({ "answer": answer, "input": ctx.input() })),
            }
        });
    let mut events = builder.subscribe();
    let node = builder.start().await.unwrap();
    let id = node
        .enqueue(NewItem::new("lead", json!({ "domain": "acme.com" })))
        .await
        .unwrap();
    wait_for(&mut events, "the item parked", |e| match e {
        NodeEvent::Parked { item, question } if *item == id => Some(question.clone()),
        _ => None,
    })
    .await;
    let parked = store.item_get(id).await.unwrap().unwrap();
    assert_eq!(parked.status, ItemStatus::Awaiting);
    assert_eq!(parked.lease(), None);
    assert_eq!(parked.attempts, 0);
    assert_eq!(node.status().await.unwrap().awaiting, 1);

    match node.decide(id, "later").await {
        Err(RuntimeError::Store(e)) => assert!(e.to_string().contains("\"later\""), "{e}"),
        other => panic!("an answer not allowed must be refused, got {other:?}"),
    }
    assert_eq!(store.item_get(id).await.unwrap().unwrap(), parked);

    node.decide(id, "manual").await.unwrap();
    wait_for(&mut events, "the decided item completed", |e| match e {
        NodeEvent::Completed { item, .. } if *item == id => Some(()),
        _ => None,
    })
    .await;
    let done = store.item_get(id).await.unwrap().unwrap();
    assert_eq!(done.status, ItemStatus::Completed);
    assert_eq!(done.attempts, 1, "the parked attempt was given back");
    assert_eq!(
        done.output,
        Some(json!({
            "answer": "manual",
            "input": { "domain": "acme.com",
                       "decision": { "question": "no contact found for acme.com", "answer": "manual" } }
        }))
    );
    match node.decide(id, "skip").await {
        Err(RuntimeError::Store(e)) => {
            assert!(e.to_string().contains("is completed"), "{e}")
        }
        other => panic!("deciding a completed item must be refused, got {other:?}"),
    }
    node.shutdown(Duration::from_secs(5)).await.unwrap();
}
