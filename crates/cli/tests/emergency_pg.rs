//! The emergency operations on PostgreSQL, with only `psql` and with the CLI, on the same
//! data: two fresh schemas get the same fleet (a live node, a dead one, a stopped one still
//! holding an item, and an expired item of the live node's previous incarnation); on one the
//! operator calls the SQL functions through `psql`, on the other runs `leasehold reap
//! --dead-nodes` and `leasehold reap`. Dry runs change nothing in either; the real runs report
//! the same items and leave every item in the same state. Skipped, with the reason printed,
//! without `LEASEHOLD_PG_URL` (or `psql`); a failure under `LEASEHOLD_REQUIRE_PG=1`.

use std::process::Command;
use std::time::Duration;

use leasehold_core::{
    AcquireRequest, Clock, Item, ItemFilter, NewItem, NodeRecord, NodeStatus, Store, SystemClock,
    Timestamp,
};
use leasehold_postgres::testing::{required, TestSchema};
use leasehold_postgres::PgStore;
use serde_json::{json, Value};

/// How long ago the fleet acquired its items: past a 30 s lease and a dead node's window
/// (3 × 60 s), within the hard stale limit (900 s), so liveness decides.
const AGO_MS: i64 = 600_000;

fn cli(db: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .env_remove("LEASEHOLD_DB")
        .env_remove("RUST_LOG")
        .arg("--db")
        .arg(db)
        .args(args)
        .arg("--json")
        .output()
        .expect("run leasehold");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Runs one statement through `psql` and returns its rows as `|`-separated lines.
fn psql(url: &str, sql: &str) -> Vec<String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn row(node: &str, incarnation: i64, at: Timestamp, status: NodeStatus) -> NodeRecord {
    NodeRecord {
        node_id: node.into(),
        incarnation,
        worker_type: "*".into(),
        status,
        current_item: None,
        task_text: None,
        last_heartbeat_at: at,
        heartbeat_interval_ms: 60_000,
        started_at: at,
        metadata: json!({}),
    }
}

/// The fleet: items 1–4 held by node-a (alive, incarnation 2), node-b (dead), node-c
/// (stopped), node-a's incarnation 1 (replaced); all acquired ten minutes ago with 30 s leases.
async fn fleet(store: &PgStore) {
    let now = SystemClock.now();
    let then = Timestamp(now.0 - AGO_MS);
    let items = (0..4)
        .map(|n| NewItem::new("k", json!({ "n": n })))
        .collect();
    store.items_enqueue(items, then).await.unwrap();
    for (owner, node, inc) in [
        ("a/w0", "node-a", 2),
        ("b/w0", "node-b", 1),
        ("c/w0", "node-c", 1),
        ("a/w1", "node-a", 1),
    ] {
        let req = AcquireRequest::new(owner, Duration::from_secs(30)).node(node, inc);
        store.item_acquire(&req, then).await.unwrap().unwrap();
    }
    let a = row("node-a", 2, now, NodeStatus::Processing);
    store.node_heartbeat(&a).await.unwrap();
    let b = row("node-b", 1, then, NodeStatus::Processing);
    store.node_heartbeat(&b).await.unwrap();
    let c = row("node-c", 1, then, NodeStatus::Stopped);
    store.node_heartbeat(&c).await.unwrap();
}

/// Every item's state, without the times (the two schemas ran a moment apart).
async fn states(store: &PgStore) -> Vec<(i64, String, i64, u32, Option<String>, Option<String>)> {
    let all: Vec<Item> = store.items_list(&ItemFilter::default()).await.unwrap();
    all.into_iter()
        .map(|i| {
            (
                i.id.0,
                i.status.to_string(),
                i.epoch,
                i.attempts,
                i.owner,
                i.error,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_functions_through_psql_do_what_the_cli_does_and_dry_runs_change_nothing() {
    if Command::new("psql").arg("--version").output().is_err() {
        assert!(!required(), "psql is needed for this test");
        eprintln!("sql_functions_through_psql: skipped: psql is not installed");
        return;
    }
    let (Ok(sql_side), Ok(cli_side)) = (
        TestSchema::create("lh_sql").await,
        TestSchema::create("lh_cli_em").await,
    ) else {
        eprintln!("sql_functions_through_psql: skipped: no PostgreSQL server");
        return;
    };
    let (a, b) = (
        sql_side.open().await.unwrap(),
        cli_side.open().await.unwrap(),
    );
    fleet(&a).await;
    fleet(&b).await;
    let base = std::env::var("LEASEHOLD_PG_URL").unwrap();
    let s = sql_side.schema();
    let before = states(&a).await;
    assert_eq!(before, states(&b).await, "the same data on both sides");

    // Dry runs: reported, nothing changed.
    let would = psql(
        &base,
        &format!(
            "SELECT node_id, item_id FROM {s}.leasehold_release_dead_nodes(p_dry_run => true)"
        ),
    );
    assert_eq!(would, vec!["node-b|2", "node-c|3"]);
    let cli_would = cli(&cli_side.url(), &["reap", "--dead-nodes", "--dry-run"]);
    let reap_would = psql(
        &base,
        &format!("SELECT item_id, outcome FROM {s}.leasehold_reap_expired(p_dry_run => true)"),
    );
    let cli_reap_would = cli(&cli_side.url(), &["reap", "--dry-run"]);
    assert_eq!(states(&a).await, before, "the SQL dry runs changed nothing");
    assert_eq!(states(&b).await, before, "the CLI dry runs changed nothing");
    let ids = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|n| n["items"].as_array().unwrap().iter())
            .map(|i| i["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&cli_would), vec![2, 3]);
    assert_eq!(
        reap_would,
        vec!["1|alive", "2|requeued", "3|requeued", "4|requeued"]
    );
    assert_eq!(
        (
            cli_reap_would["expired_found"].as_u64(),
            cli_reap_would["skipped_alive"].as_u64(),
            cli_reap_would["recovered"].as_u64()
        ),
        (Some(4), Some(1), Some(3))
    );

    // The real runs: the dead nodes' items at once, then the sweep takes the replaced
    // incarnation's expired item; the live node's stays.
    let released = psql(
        &base,
        &format!("SELECT node_id, item_id, dead_lettered FROM {s}.leasehold_release_dead_nodes()"),
    );
    assert_eq!(released, vec!["node-b|2|f", "node-c|3|f"]);
    assert_eq!(
        ids(&cli(&cli_side.url(), &["reap", "--dead-nodes"])),
        vec![2, 3]
    );
    let reaped = psql(
        &base,
        &format!("SELECT item_id, outcome FROM {s}.leasehold_reap_expired()"),
    );
    assert_eq!(reaped, vec!["1|alive", "4|requeued"]);
    let cli_reaped = cli(&cli_side.url(), &["reap"]);
    assert_eq!(cli_reaped["items"][0]["id"], json!(4));
    assert_eq!(cli_reaped["recovered"], json!(1));

    let after = states(&a).await;
    assert_eq!(
        after,
        states(&b).await,
        "psql and the CLI left the same state"
    );
    let statuses: Vec<&str> = after.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(statuses, ["in_progress", "pending", "pending", "pending"]);
    // Each take-back wrote its error_boundary record, on both sides alike.
    let boundaries = |schema: &str| {
        psql(
            &base,
            &format!(
                "SELECT item_id, snapshot->>'reason' FROM {schema}.durable_checkpoints \
                 WHERE checkpoint_type = 'error_boundary' ORDER BY item_id"
            ),
        )
    };
    assert_eq!(boundaries(s).len(), 3);
    assert_eq!(boundaries(s), boundaries(cli_side.schema()));
}
