//! The write endpoints against a real SQLite file holding a known mix of work (see
//! `common::populate`, plus one item parked awaiting a decision): each action done, each
//! refused for a wrong state (`409`, the store's message naming the state), for bad input
//! (`400`), for an unknown item (`404`) and without the token (`401`) — and every refusal
//! changes nothing in the store. Also what `/api/status` adds for the overview: paused kinds,
//! awaiting items and the health rule; and the item page's attempt history.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use leasehold_core::Clock;
use leasehold_core::{
    AcquireRequest, DecisionRequest, ItemFilter, ItemId, ItemStatus, ManualClock, NewItem, Store,
    SystemClock, Timestamp,
};
use leasehold_dashboard::DashboardConfig;

use common::{get, loopback, open, populate, post, request, serve, Expected};

const TOKEN: &str = "act-token";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    expected: Expected,
    parked: i64,
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn fixture(token: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let now = SystemClock.now();
    let expected = populate(store.as_ref(), now).await;
    let id = store
        .items_enqueue(vec![NewItem::new("ask", json!({"lead": "acme"}))], now)
        .await
        .unwrap()[0];
    let l = store
        .item_acquire(
            &AcquireRequest::new("asker/w0", Duration::from_secs(60)).kinds(["ask"]),
            now,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l.item.id, id);
    store
        .item_park(
            &l.lease,
            &DecisionRequest::new("No contact found for acme: what now?", ["skip", "manual"]),
            now,
        )
        .await
        .unwrap();
    let mut cfg = DashboardConfig::new(loopback());
    cfg.clock = Arc::new(ManualClock::new(now));
    cfg.token = token.map(String::from);
    let (addr, stop) = serve(store.clone(), cfg).await;
    Fixture {
        _dir: dir,
        store,
        expected,
        parked: id.0,
        addr,
        _stop: stop,
    }
}

/// Everything an action could change: every item and the paused kinds.
async fn everything(store: &dyn Store) -> Value {
    let items = store
        .items_list(&ItemFilter {
            limit: 1000,
            ..ItemFilter::default()
        })
        .await
        .unwrap();
    let paused = store.kinds_paused().await.unwrap();
    json!({ "items": items, "paused": paused })
}

async fn item(store: &dyn Store, id: i64) -> leasehold_core::Item {
    store.item_get(ItemId(id)).await.unwrap().unwrap()
}

/// An id of an item in `status`.
async fn one_in(store: &dyn Store, status: ItemStatus) -> i64 {
    store
        .items_list(&ItemFilter {
            status: Some(status),
            limit: 1,
            ..ItemFilter::default()
        })
        .await
        .unwrap()[0]
        .id
        .0
}

/// `reply` is `status` with an error naming `needle`.
fn refused(reply: &common::Reply, status: u16, needle: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    let msg = reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains(needle),
        "{what}: {msg:?} should name {needle:?}"
    );
}

#[tokio::test]
async fn retry_puts_a_failed_item_back_and_refuses_other_states() {
    let f = fixture(None).await;
    let store = f.store.as_ref();
    let failed = f.expected.failed_id;
    let completed = one_in(store, ItemStatus::Completed).await;

    let before = everything(store).await;
    let wrong = post(f.addr, &format!("/api/items/{completed}/retry"), None, "{}").await;
    refused(&wrong, 409, "is completed", "retry of a completed item");
    assert!(
        wrong.json()["error"]
            .as_str()
            .unwrap()
            .contains("failed or cancelled"),
        "{}",
        wrong.body
    );
    refused(
        &post(f.addr, "/api/items/999999/retry", None, "{}").await,
        404,
        "999999",
        "unknown item",
    );
    let path = format!("/api/items/{failed}/retry");
    for (body, needle) in [
        ("{\"max_attempts\": \"x\"}", "max_attempts"),
        ("{\"bogus\": 1}", "bogus"),
        ("not json", "body"),
        ("{\"max_attempts\": 0}", "max attempts"),
        ("[5]", "object"),
    ] {
        refused(&post(f.addr, &path, None, body).await, 400, needle, body);
    }
    refused(
        &post(f.addr, "/api/items/x/retry", None, "{}").await,
        400,
        "id",
        "bad id",
    );
    refused(
        &post(f.addr, &format!("{path}?dry_run=1"), None, "{}").await,
        400,
        "dry_run",
        "query parameter",
    );
    // Without a JSON content type (what a cross-site form sends) nothing happens.
    let form = request(
        f.addr,
        "POST",
        &path,
        None,
        Some(("application/x-www-form-urlencoded", "a=1")),
    )
    .await;
    refused(&form, 400, "Content-Type", "form post");
    let bare = request(f.addr, "POST", &path, None, Some(("", ""))).await;
    assert_eq!(bare.status, 400, "no content type: {}", bare.body);
    assert_eq!(everything(store).await, before, "refusals changed nothing");

    let ok = post(f.addr, &path, None, "{\"max_attempts\": 5}").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let report = ok.json();
    assert_eq!(report["count"], 1);
    assert_eq!(report["items"][0]["from"], "failed");
    assert_eq!(report["items"][0]["to"], "pending");
    let i = item(store, failed).await;
    assert_eq!(
        (i.status, i.attempts, i.max_attempts),
        (ItemStatus::Pending, 0, 5)
    );
    // The same retry again: the item is pending now.
    refused(
        &post(f.addr, &path, None, "{}").await,
        409,
        "is pending",
        "second retry",
    );
}

#[tokio::test]
async fn delete_removes_a_finished_item_and_refuses_an_open_one() {
    let f = fixture(None).await;
    let store = f.store.as_ref();
    let completed = one_in(store, ItemStatus::Completed).await;
    let pending = one_in(store, ItemStatus::Pending).await;

    let before = everything(store).await;
    refused(
        &post(f.addr, &format!("/api/items/{pending}/delete"), None, "{}").await,
        409,
        "is pending",
        "delete of a pending item",
    );
    refused(
        &post(f.addr, "/api/items/999999/delete", None, "{}").await,
        404,
        "999999",
        "unknown item",
    );
    let path = format!("/api/items/{completed}/delete");
    refused(
        &post(f.addr, &path, None, "{\"dry_run\": true}").await,
        400,
        "dry_run",
        "unknown field",
    );
    assert_eq!(everything(store).await, before, "refusals changed nothing");

    let ok = post(f.addr, &path, None, "{}").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["count"], 1);
    assert_eq!(ok.json()["items"][0]["from"], "completed");
    assert_eq!(store.item_get(ItemId(completed)).await.unwrap(), None);
    refused(
        &post(f.addr, &path, None, "{}").await,
        404,
        &completed.to_string(),
        "a second delete",
    );
}

#[tokio::test]
async fn cancel_ends_a_pending_item_and_marks_a_running_one() {
    let f = fixture(None).await;
    let store = f.store.as_ref();
    let pending = one_in(store, ItemStatus::Pending).await;
    let running = f.expected.in_flight_ids[0];
    let completed = one_in(store, ItemStatus::Completed).await;

    let before = everything(store).await;
    refused(
        &post(
            f.addr,
            &format!("/api/items/{completed}/cancel"),
            None,
            "{}",
        )
        .await,
        409,
        "is completed",
        "cancel of a completed item",
    );
    refused(
        &post(
            f.addr,
            &format!("/api/items/{pending}/cancel"),
            None,
            "{\"x\":1}",
        )
        .await,
        400,
        "x",
        "unknown field",
    );
    refused(
        &post(f.addr, "/api/items/0/cancel", None, "{}").await,
        400,
        "id",
        "id 0",
    );
    assert_eq!(everything(store).await, before, "refusals changed nothing");

    let ok = post(f.addr, &format!("/api/items/{pending}/cancel"), None, "{}").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["items"][0]["to"], "cancelled");
    assert_eq!(item(store, pending).await.status, ItemStatus::Cancelled);

    let ok = post(f.addr, &format!("/api/items/{running}/cancel"), None, "{}").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let i = item(store, running).await;
    assert_eq!(i.status, ItemStatus::InProgress, "marked, still leased");
    assert!(i.cancel_requested_at.is_some());
}

#[tokio::test]
async fn decide_resumes_an_awaiting_item_with_an_allowed_answer() {
    let f = fixture(None).await;
    let store = f.store.as_ref();
    let pending = one_in(store, ItemStatus::Pending).await;
    let path = format!("/api/items/{}/decide", f.parked);

    let before = everything(store).await;
    refused(
        &post(f.addr, &path, None, "{\"answer\": \"maybe\"}").await,
        400,
        "maybe",
        "answer not allowed",
    );
    refused(
        &post(f.addr, &path, None, "{}").await,
        400,
        "answer",
        "no answer",
    );
    refused(
        &post(
            f.addr,
            &format!("/api/items/{pending}/decide"),
            None,
            "{\"answer\": \"skip\"}",
        )
        .await,
        409,
        "is pending",
        "decide on a pending item",
    );
    assert_eq!(everything(store).await, before, "refusals changed nothing");

    // The overview lists it with its question before the decision.
    let s = get(f.addr, "/api/status", None).await.json();
    assert_eq!(s["items"]["awaiting"], 1);
    assert_eq!(s["awaiting"][0]["id"], f.parked);
    assert_eq!(
        s["awaiting"][0]["question"],
        "No contact found for acme: what now?"
    );
    assert_eq!(s["awaiting"][0]["answers"], json!(["skip", "manual"]));

    let ok = post(f.addr, &path, None, "{\"answer\": \"manual\"}").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["status"], "pending");
    let i = item(store, f.parked).await;
    assert_eq!(i.status, ItemStatus::Pending);
    assert_eq!(i.input["decision"]["answer"], "manual");
    let s = get(f.addr, "/api/status", None).await.json();
    assert_eq!(s["awaiting"], json!([]));
}

#[tokio::test]
async fn pause_and_resume_a_kind() {
    let f = fixture(None).await;
    let store = f.store.as_ref();
    let ok = post(f.addr, "/api/kinds/email/pause", None, "{}").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        ok.json(),
        json!({ "kind": "email", "paused": true, "changed": true })
    );
    let again = post(f.addr, "/api/kinds/email/pause", None, "{}").await;
    assert_eq!(again.json()["changed"], false);
    let paused = store.kinds_paused().await.unwrap();
    assert_eq!(
        paused.iter().map(|p| p.kind.as_str()).collect::<Vec<_>>(),
        ["email"]
    );
    let s = get(f.addr, "/api/status", None).await.json();
    assert_eq!(s["paused_kinds"][0]["kind"], "email");

    let before = everything(store).await;
    refused(
        &post(f.addr, "/api/kinds/%20/pause", None, "{}").await,
        400,
        "kind",
        "blank kind",
    );
    refused(
        &post(f.addr, "/api/kinds/email/resume", None, "[]").await,
        400,
        "body",
        "an array body",
    );
    assert_eq!(everything(store).await, before, "refusals changed nothing");

    let ok = post(f.addr, "/api/kinds/email/resume", None, "{}").await;
    assert_eq!(
        ok.json(),
        json!({ "kind": "email", "paused": false, "changed": true })
    );
    assert!(store.kinds_paused().await.unwrap().is_empty());
    let again = post(f.addr, "/api/kinds/email/resume", None, "{}").await;
    assert_eq!(again.json()["changed"], false);
}

#[tokio::test]
async fn writes_without_the_token_are_refused_and_change_nothing() {
    let f = fixture(Some(TOKEN)).await;
    let store = f.store.as_ref();
    let failed = f.expected.failed_id;
    let pending = one_in(store, ItemStatus::Pending).await;
    let writes = [
        (format!("/api/items/{failed}/retry"), "{}"),
        (format!("/api/items/{pending}/cancel"), "{}"),
        (
            format!("/api/items/{}/decide", f.parked),
            "{\"answer\": \"skip\"}",
        ),
        ("/api/kinds/email/pause".to_string(), "{}"),
    ];
    let before = everything(store).await;
    for (path, body) in &writes {
        refused(
            &post(f.addr, path, None, body).await,
            401,
            "Authorization",
            path,
        );
        refused(
            &post(f.addr, path, Some("act-tokeN"), body).await,
            401,
            "wrong",
            path,
        );
    }
    assert_eq!(
        everything(store).await,
        before,
        "no write without the token"
    );
    for (path, body) in &writes {
        let ok = post(f.addr, path, Some(TOKEN), body).await;
        assert_eq!(ok.status, 200, "{path} with the token: {}", ok.body);
    }
    let resume = post(f.addr, "/api/kinds/email/resume", None, "{}").await;
    assert_eq!(resume.status, 401);
    assert_eq!(store.kinds_paused().await.unwrap().len(), 1);
}

#[tokio::test]
async fn item_page_api_returns_the_attempt_history() {
    let f = fixture(None).await;
    let id = f.expected.failed_id;
    let page = get(f.addr, &format!("/api/items/{id}"), None).await.json();
    let history = page["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["outcome"], "failed");
    assert_eq!(history[0]["owner"], "old/w0");
    assert_eq!(history[0]["error"], common::FAILURE_ERROR);
    assert_eq!(history[0]["attempt"], 1);
}

#[tokio::test]
async fn health_is_degraded_by_a_dead_node_and_down_without_a_live_one() {
    let f = fixture(None).await;
    let s = get(f.addr, "/api/status", None).await.json();
    assert_eq!(s["health"]["state"], "degraded", "{}", s["health"]);
    assert_eq!(s["health"]["dead_nodes"], json!(["ghost (incarnation 3)"]));
    let reasons = s["health"]["reasons"].to_string();
    assert!(reasons.contains("1 node(s) dead"), "{reasons}");
    assert!(
        reasons.contains("1 item(s) dead-lettered in the last 5 minutes"),
        "{reasons}"
    );

    // A store whose registry has no live node: down.
    let dir = tempfile::tempdir().unwrap();
    let empty = open(&dir).await;
    let mut cfg = DashboardConfig::new(loopback());
    cfg.clock = Arc::new(ManualClock::new(Timestamp(SystemClock.now().0)));
    let (addr, _stop) = serve(empty, cfg).await;
    let s = get(addr, "/api/status", None).await.json();
    assert_eq!(s["health"]["state"], "down");
    assert_eq!(s["health"]["dead_nodes"], json!([]));
}
