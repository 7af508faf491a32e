//! What the dashboard's tests share: a real SQLite file filled with a known mix of work, a
//! dashboard served on a free loopback port, and a plain HTTP/1.1 client over a TcpStream.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use leasehold_core::{
    AcquireRequest, FailDisposition, NewItem, NodeRecord, NodeStatus, Store, Timestamp,
};
use leasehold_dashboard::{Dashboard, DashboardConfig};
use leasehold_sqlite::SqliteStore;

/// The error stored on the dead-lettered item: markup, so the page must show it as text.
pub const FAILURE_ERROR: &str = "boom: <script>document.title='pwned'</script>";

/// What [`populate`] wrote, to compare the views with.
#[derive(Debug, Clone)]
pub struct Expected {
    pub alpha_lease_expires_at: Timestamp,
    pub failed_id: i64,
    pub in_flight_ids: Vec<i64>,
}

pub async fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(dir.path().join("dashboard.db"))
            .await
            .expect("open store"),
    )
}

fn row(
    node_id: &str,
    incarnation: i64,
    at: Timestamp,
    status: NodeStatus,
    stats: Value,
) -> NodeRecord {
    NodeRecord {
        node_id: node_id.into(),
        incarnation,
        worker_type: "email,report".into(),
        status,
        current_item: None,
        task_text: None,
        last_heartbeat_at: at,
        heartbeat_interval_ms: 10_000,
        started_at: at,
        metadata: json!({ "stats": stats }),
    }
}

/// As of `now`: pending 4 (3 email, 1 report), in progress 2 (one email held by alive node
/// "alpha", one report held by dead node "ghost" with an expired lease), completed 2 (one
/// 30 s ago, one 2 min ago), failed 1 (90 s ago, with [`FAILURE_ERROR`]), cancelled 1;
/// workers: alpha alive, ghost dead, charlie stopped; alpha reports recovered 2 + 3 + 1.
pub async fn populate(store: &dyn Store, now: Timestamp) -> Expected {
    let ago = |s: u64| now.minus(Duration::from_secs(s));
    let email = |n: i64| NewItem::new("email", json!({ "n": n }));
    let report = |n: i64| NewItem::new("report", json!({ "n": n }));
    // Done items first (acquired in id order by a kind filter each).
    let done = store
        .items_enqueue(
            vec![report(100), report(101), report(102), report(103)],
            ago(300),
        )
        .await
        .unwrap();
    let doer = AcquireRequest::new("old/w0", Duration::from_secs(600)).node("old", 1);
    let l = store.item_acquire(&doer, ago(200)).await.unwrap().unwrap();
    store
        .item_complete(&l.lease, json!("ok"), ago(120))
        .await
        .unwrap();
    let l = store.item_acquire(&doer, ago(200)).await.unwrap().unwrap();
    store
        .item_complete(&l.lease, json!("ok"), ago(30))
        .await
        .unwrap();
    let l = store.item_acquire(&doer, ago(200)).await.unwrap().unwrap();
    store
        .item_fail(&l.lease, FAILURE_ERROR, FailDisposition::Permanent, ago(90))
        .await
        .unwrap();
    let failed_id = l.item.id.0;
    store.item_cancel(done[3], ago(100)).await.unwrap();

    // Open work.
    store
        .items_enqueue(
            vec![email(1), email(2), email(3), email(4), report(5), report(6)],
            ago(60),
        )
        .await
        .unwrap();
    let alpha = AcquireRequest::new("alpha/w0", Duration::from_secs(600))
        .node("alpha", 1)
        .kinds(["email"]);
    let a = store.item_acquire(&alpha, ago(5)).await.unwrap().unwrap();
    let ghost = AcquireRequest::new("ghost/w0", Duration::from_secs(30))
        .node("ghost", 3)
        .kinds(["report"]);
    let g = store.item_acquire(&ghost, ago(60)).await.unwrap().unwrap();

    // Alpha heartbeats every 10 minutes: alive for half an hour, however slow the test runs.
    let alpha_row = NodeRecord {
        heartbeat_interval_ms: 600_000,
        current_item: Some(a.item.id),
        ..row(
            "alpha",
            1,
            ago(1),
            NodeStatus::Processing,
            json!({ "recovered_on_start": 2, "reaper_recovered": 3, "monitor_recovered": 1 }),
        )
    };
    store.node_heartbeat(&alpha_row).await.unwrap();
    store
        .node_heartbeat(&row("ghost", 3, ago(60), NodeStatus::Processing, json!({})))
        .await
        .unwrap();
    store
        .node_heartbeat(&row("charlie", 2, ago(50), NodeStatus::Idle, json!({})))
        .await
        .unwrap();
    store.node_stop("charlie", 2, ago(49)).await.unwrap();
    Expected {
        alpha_lease_expires_at: a.expires_at,
        failed_id,
        in_flight_ids: vec![a.item.id.0, g.item.id.0],
    }
}

/// Serves a dashboard over `store` on a free loopback port until the returned sender drops.
pub async fn serve(
    store: Arc<dyn Store>,
    cfg: DashboardConfig,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let dashboard = Dashboard::bind(store, cfg).await.expect("bind");
    let addr = dashboard.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dashboard.run(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `GET path`, with `Authorization: Bearer token` when given.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    request(addr, "GET", path, token, None).await
}

/// `POST path` with the JSON `body`, as the page's buttons send it.
pub async fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> Reply {
    request(addr, "POST", path, token, Some(("application/json", body))).await
}

/// `method path`, with `Authorization: Bearer token` when given and a body of the given
/// content type.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let (content, body) = match body {
        Some(("", b)) => (format!("Content-Length: {}\r\n", b.len()), b),
        Some((ty, b)) => (
            format!("Content-Type: {ty}\r\nContent-Length: {}\r\n", b.len()),
            b,
        ),
        None => (String::new(), ""),
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}{content}\r\n{body}"
    );
    stream.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers: head.to_string(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}
