//! Every endpoint against a real SQLite file holding a known mix of work (see
//! `common::populate`), the 400s for bad query parameters, and the token check. The
//! dashboard's clock is a ManualClock, so ages and minute buckets are exact.

mod common;

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{Clock, ItemStatus, ManualClock, Store, SystemClock, Timestamp};
use leasehold_dashboard::{DashboardConfig, DashboardError};

use common::{get, loopback, open, populate, serve, FAILURE_ERROR};

/// A whole minute plus 45 s, so the done items fall in known minute buckets.
fn fixed_now() -> Timestamp {
    let t = SystemClock.now().0;
    Timestamp(t - t.rem_euclid(60_000) + 45_000)
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    now: Timestamp,
    expected: common::Expected,
    addr: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn fixture(token: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let now = fixed_now();
    let expected = populate(store.as_ref(), now).await;
    let mut cfg = DashboardConfig::new(loopback());
    cfg.clock = Arc::new(ManualClock::new(now));
    cfg.token = token.map(String::from);
    let (addr, stop) = serve(store.clone(), cfg).await;
    Fixture {
        _dir: dir,
        store,
        now,
        expected,
        addr,
        _stop: stop,
    }
}

#[tokio::test]
async fn status_reports_what_the_store_holds() {
    let f = fixture(None).await;
    let next = f.now.plus(std::time::Duration::from_secs(300));
    f.store
        .schedule_upsert(
            &leasehold_core::ScheduleSpec {
                name: "digest".into(),
                cron: "0 */5 * * * *".into(),
                kind: "email".into(),
                input: serde_json::json!({}),
                catch_up: leasehold_core::CatchUp::Skip,
                first_run_at: next,
            },
            f.now,
        )
        .await
        .unwrap();
    let r = get(f.addr, "/api/status", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = r.json();
    let counts = f.store.items_count().await.unwrap();
    for st in ItemStatus::ALL {
        assert_eq!(s["items"][st.as_str()], counts.get(st), "{st}");
    }
    assert_eq!(
        (
            counts.pending,
            counts.in_progress,
            counts.completed,
            counts.failed,
            counts.cancelled
        ),
        (4, 2, 2, 1, 1)
    );
    assert_eq!(s["total"], 10);
    assert_eq!(s["schedules"][0]["name"], "digest");
    assert_eq!(s["schedules"][0]["next_run_at"], next.0);
    assert_eq!(
        s["by_kind"],
        serde_json::json!([
            { "kind": "email", "pending": 3, "in_progress": 1 },
            { "kind": "report", "pending": 1, "in_progress": 1 }
        ])
    );
    assert_eq!(
        s["workers"],
        serde_json::json!({ "alive": 1, "dead": 1, "stopped": 1 })
    );
    assert_eq!(
        s["workers_by_type"],
        serde_json::json!([{ "worker_type": "email,report", "alive": 1, "dead": 1, "stopped": 1 }])
    );

    // 15 one-minute buckets ending with the current minute; the finished items in theirs.
    let buckets = s["throughput"]["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 15);
    let minute = |ago_s: i64| (f.now.0 - ago_s * 1000).div_euclid(60_000) * 60_000;
    let at = |start: i64, key: &str| {
        buckets
            .iter()
            .find(|b| b["start"] == start)
            .map(|b| b[key].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no bucket at {start}"))
    };
    assert_eq!(buckets[14]["start"], minute(0));
    assert_eq!(at(minute(30), "completed"), 1);
    assert_eq!(at(minute(120), "completed"), 1);
    assert_eq!(at(minute(90), "failed"), 1);
    let total = |key: &str| {
        buckets
            .iter()
            .map(|b| b[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        (total("completed"), total("failed"), total("cancelled")),
        (2, 1, 1)
    );

    let failures = s["recent_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["id"], f.expected.failed_id);
    assert_eq!(failures[0]["error"], FAILURE_ERROR);

    let rec = &s["recovery"];
    assert_eq!(rec["expired_leases"], 1, "ghost's lease ran out");
    assert_eq!(rec["held_by_dead_nodes"], 1);
    assert_eq!(rec["recovered_total"], 6);
    assert_eq!(
        (
            rec["recovered_on_start"].as_u64(),
            rec["reaper_recovered"].as_u64(),
            rec["monitor_recovered"].as_u64()
        ),
        (Some(2), Some(3), Some(1))
    );
}

#[tokio::test]
async fn workers_lists_every_row_with_its_state_and_silence() {
    let f = fixture(None).await;
    let r = get(f.addr, "/api/workers", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = r.json();
    let rows = rows.as_array().unwrap();
    let seen: Vec<(String, String, f64)> = rows
        .iter()
        .map(|w| {
            (
                w["node_id"].as_str().unwrap().to_string(),
                w["state"].as_str().unwrap().to_string(),
                w["seconds_since_heartbeat"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("alpha".into(), "alive".into(), 1.0),
            ("charlie".into(), "stopped".into(), 50.0),
            ("ghost".into(), "dead".into(), 60.0)
        ]
    );
    assert_eq!(rows[0]["current_item"], f.expected.in_flight_ids[0]);
    assert_eq!(
        rows[0]["lease_expires_at"], f.expected.alpha_lease_expires_at.0,
        "alpha's current item's lease"
    );
    assert!(
        rows[2]["lease_expires_at"].is_null(),
        "ghost reports no current item"
    );
    let dead = get(f.addr, "/api/workers?state=dead", None).await.json();
    assert_eq!(dead.as_array().unwrap().len(), 1);
    assert_eq!(dead[0]["node_id"], "ghost");
    assert_eq!(dead[0]["alive"], false);
}

#[tokio::test]
async fn items_filters_by_status_and_kind_and_pages() {
    let f = fixture(None).await;
    let ids = |path: &str| {
        let addr = f.addr;
        let path = path.to_string();
        async move {
            let r = get(addr, &path, None).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            r.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_i64().unwrap())
                .collect::<Vec<i64>>()
        }
    };
    assert_eq!(
        ids("/api/items?status=in_progress").await,
        f.expected.in_flight_ids
    );
    assert_eq!(ids("/api/items?status=pending&kind=email").await.len(), 3);
    assert_eq!(
        ids("/api/items?kind=report&status=failed").await,
        [f.expected.failed_id]
    );
    let all = ids("/api/items").await;
    assert_eq!(all.len(), 10);
    assert_eq!(ids("/api/items?limit=3").await, all[..3]);
    assert_eq!(
        ids(&format!("/api/items?after={}&limit=2", all[3])).await,
        all[4..6]
    );
}

#[tokio::test]
async fn bad_query_parameters_get_400_naming_the_problem() {
    let f = fixture(None).await;
    let cases = [
        ("/api/items?status=running", "running"),
        ("/api/items?limit=0", "limit"),
        ("/api/items?limit=abc", "limit"),
        ("/api/items?limit=1001", "limit"),
        ("/api/items?after=-1", "after"),
        ("/api/items?after=x", "after"),
        ("/api/items?kind=", "kind"),
        ("/api/items?group=", "group"),
        ("/api/items?id=0", "id"),
        ("/api/items?id=x", "id"),
        ("/api/items/x", "id"),
        ("/api/items/-3", "id"),
        ("/api/items/1?full=1", "full"),
        ("/api/items?bogus=1", "bogus"),
        ("/api/items?status=pending&status=failed", "more than once"),
        ("/api/status?verbose=1", "verbose"),
        ("/api/workers?state=zombie", "zombie"),
        ("/metrics?x=1", "\"x\""),
    ];
    for (path, needle) in cases {
        let r = get(f.addr, path, None).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            msg.contains(needle),
            "{path}: {msg:?} should name {needle:?}"
        );
    }
    // Bad requests change nothing.
    assert_eq!(f.store.items_count().await.unwrap().total(), 10);
}

#[tokio::test]
async fn item_page_api_returns_the_item_and_refuses_unknown_ones() {
    let f = fixture(None).await;
    let id = f.expected.failed_id;
    let r = get(f.addr, &format!("/api/items/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let page = r.json();
    assert_eq!(page["item"]["id"], id);
    assert_eq!(page["item"]["error"], FAILURE_ERROR);
    assert_eq!(page["checkpoints"], serde_json::json!([]));
    assert!(page["durable"].is_null(), "no durable store configured");
    assert_eq!(page["history"][0]["outcome"], "failed", "its one attempt");
    let missing = get(f.addr, "/api/items/999999", None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("999999"));
    // One item by id, subject to the other filters.
    let one = get(f.addr, &format!("/api/items?id={id}"), None)
        .await
        .json();
    assert_eq!(one.as_array().unwrap().len(), 1);
    let none = get(f.addr, &format!("/api/items?id={id}&status=pending"), None)
        .await
        .json();
    assert_eq!(none, serde_json::json!([]));
}

#[tokio::test]
async fn metrics_exposes_gauges_and_counters_in_prometheus_text() {
    let f = fixture(None).await;
    let r = get(f.addr, "/metrics", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.headers
    );
    let sample = |name: &str| {
        r.body
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no sample {name} in\n{}", r.body))
    };
    let counts = f.store.items_count().await.unwrap();
    for st in ItemStatus::ALL {
        assert_eq!(
            sample(&format!("leasehold_items{{status=\"{st}\"}}")),
            counts.get(st),
            "{st}"
        );
    }
    assert_eq!(sample("leasehold_workers{state=\"alive\"}"), 1);
    assert_eq!(sample("leasehold_workers{state=\"dead\"}"), 1);
    assert_eq!(sample("leasehold_workers{state=\"stopped\"}"), 1);
    assert_eq!(
        sample("leasehold_queue_depth{kind=\"email\",status=\"pending\"}"),
        3
    );
    assert_eq!(sample("leasehold_items_completed_total"), 2);
    assert_eq!(sample("leasehold_items_failed_total"), 1);
    assert_eq!(sample("leasehold_items_recovered_total"), 6);
    assert_eq!(sample("leasehold_expired_leases"), 1);
    assert!(r
        .body
        .contains("# TYPE leasehold_items_completed_total counter"));
    assert!(r.body.contains("# TYPE leasehold_items gauge"));
}

#[tokio::test]
async fn page_is_served_without_data_and_with_its_script() {
    let f = fixture(None).await;
    let r = get(f.addr, "/", None).await;
    assert_eq!(r.status, 200);
    assert!(r
        .headers
        .to_ascii_lowercase()
        .contains("content-type: text/html"));
    for id in [
        "count-pending",
        "workers-dead",
        "chart",
        "failures",
        "recovery-recovered",
    ] {
        assert!(r.body.contains(&format!("id=\"{id}\"")), "no #{id}");
    }
    assert!(r.body.contains("const REFRESH_MS = 2000;"));
    // Nothing from the network: no external script, style, font or image (the SVG
    // namespace URI is a name, never fetched).
    let body = r.body.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "nothing from the network"
    );
    assert!(!body.contains("<link") && !body.contains("@import") && !body.contains(" src="));
    assert_eq!(get(f.addr, "/nope", None).await.status, 404);
}

#[tokio::test]
async fn token_is_required_for_the_api_and_metrics_when_configured() {
    let f = fixture(Some("s3cret-token")).await;
    for path in ["/api/status", "/api/workers", "/api/items", "/metrics"] {
        let none = get(f.addr, path, None).await;
        assert_eq!(none.status, 401, "{path} without a token");
        assert!(none.json()["error"]
            .as_str()
            .unwrap()
            .contains("Authorization"));
        assert_eq!(
            get(f.addr, path, Some("s3cret-tokeN")).await.status,
            401,
            "{path} wrong token"
        );
        assert_eq!(
            get(f.addr, path, Some("s3cret")).await.status,
            401,
            "{path} prefix of the token"
        );
        assert_eq!(
            get(f.addr, path, Some("s3cret-token")).await.status,
            200,
            "{path} right token"
        );
    }
    // The page holds no data; its script sends the token from the URL fragment.
    assert_eq!(get(f.addr, "/", None).await.status, 200);
    // With a token, a bad parameter is still a 400, not a leak or a 500.
    assert_eq!(
        get(f.addr, "/api/items?limit=0", Some("s3cret-token"))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn non_loopback_address_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let open_addr: std::net::SocketAddr = "0.0.0.0:0".parse().unwrap();
    let refused =
        leasehold_dashboard::Dashboard::bind(store.clone(), DashboardConfig::new(open_addr)).await;
    match refused {
        Err(e @ DashboardError::TokenRequired(_)) => {
            assert!(e.to_string().contains("--token"), "{e}")
        }
        other => panic!("expected TokenRequired, got {other:?}"),
    }
    assert!(DashboardConfig::new(open_addr)
        .token("t0ken")
        .validate()
        .is_ok());
    for bad in ["", "has space", "tab\t"] {
        assert!(
            matches!(
                DashboardConfig::new(loopback()).token(bad).validate(),
                Err(DashboardError::InvalidToken(_))
            ),
            "{bad:?}"
        );
    }
    let mut cfg = DashboardConfig::new(loopback());
    cfg.refresh = Duration::from_millis(10);
    assert!(matches!(
        cfg.validate(),
        Err(DashboardError::InvalidConfig { .. })
    ));
    let v6: std::net::SocketAddr = "[::1]:0".parse().unwrap();
    assert!(
        DashboardConfig::new(v6).validate().is_ok(),
        "::1 is loopback"
    );
}
