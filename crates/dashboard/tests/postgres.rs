//! The dashboard over PostgreSQL: the same known mix of work as `api.rs`, in a fresh schema
//! of the server `LEASEHOLD_PG_URL` names; `/api/status`, `/api/workers`, `/api/items` and
//! `/metrics` must agree with the store. Skipped (with a line saying why) when no server is
//! configured.

mod common;

use std::sync::Arc;

use leasehold_core::{Clock, ItemStatus, ManualClock, Store, SystemClock};
use leasehold_dashboard::DashboardConfig;
use leasehold_postgres::testing::store_or_skip;

use common::{get, loopback, populate, serve};

#[tokio::test]
async fn status_and_metrics_match_a_postgres_store() {
    let Some((pg, _schema)) = store_or_skip("dashboard status", "dash").await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(pg);
    let now = SystemClock.now();
    let expected = populate(store.as_ref(), now).await;
    let mut cfg = DashboardConfig::new(loopback());
    cfg.clock = Arc::new(ManualClock::new(now));
    let (addr, _stop) = serve(store.clone(), cfg).await;

    let s = get(addr, "/api/status", None).await;
    assert_eq!(s.status, 200, "{}", s.body);
    let s = s.json();
    let counts = store.items_count().await.unwrap();
    for st in ItemStatus::ALL {
        assert_eq!(s["items"][st.as_str()], counts.get(st), "{st}");
    }
    assert_eq!(
        s["workers"],
        serde_json::json!({ "alive": 1, "dead": 1, "stopped": 1 })
    );
    assert_eq!(s["recovery"]["expired_leases"], 1);
    assert_eq!(s["recent_failures"][0]["error"], common::FAILURE_ERROR);

    let m = get(addr, "/metrics", None).await;
    assert_eq!(m.status, 200);
    assert!(
        m.body
            .lines()
            .any(|l| l == format!("leasehold_items{{status=\"pending\"}} {}", counts.pending)),
        "{}",
        m.body
    );

    let w = get(addr, "/api/workers", None).await;
    assert_eq!(w.status, 200, "{}", w.body);
    let states: Vec<(String, String)> = w
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["node_id"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("alpha".to_string(), "alive".to_string()),
            ("charlie".to_string(), "stopped".to_string()),
            ("ghost".to_string(), "dead".to_string())
        ]
    );
    let dead = get(addr, "/api/workers?state=dead", None).await.json();
    assert_eq!(dead.as_array().map(Vec::len), Some(1));

    let items = get(addr, "/api/items?status=in_progress", None).await;
    assert_eq!(items.status, 200, "{}", items.body);
    let ids: Vec<i64> = items
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, expected.in_flight_ids);
    let failed = get(addr, "/api/items?status=failed&kind=report", None)
        .await
        .json();
    assert_eq!(failed[0]["id"], expected.failed_id);
    assert_eq!(failed[0]["error"], common::FAILURE_ERROR);

    for bad in [
        "/api/items?status=bogus",
        "/api/items?limit=0",
        "/api/workers?state=zombie",
    ] {
        let r = get(addr, bad, None).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{bad}: {}", r.body);
    }
}
