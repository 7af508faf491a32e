//! The `leasehold` binary with `--db postgres://…`: every subcommand against a fresh schema of
//! its own on the server `LEASEHOLD_PG_URL` names (skipped, with the reason printed, when the
//! variable is unset or the server does not answer).

use std::process::{Command, Output};
use std::time::Duration;

use leasehold_core::{AcquireRequest, Clock, ItemStatus, Store, StoreError, SystemClock};
use leasehold_postgres::testing::TestSchema;
use leasehold_postgres::{PgOptions, PgStore};
use serde_json::Value;

fn run(db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .env_remove("LEASEHOLD_DB")
        .env_remove("LEASEHOLD_WORKER_ID")
        .env_remove("RUST_LOG")
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("run leasehold")
}

fn json(db: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = run(db, &all);
    assert!(
        out.status.success(),
        "{all:?} failed with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{all:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn refused(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(needle),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_works_on_postgres_and_reads_never_create_the_schema() {
    let schema = match TestSchema::create("lh_cli").await {
        Ok(s) => s,
        Err(why) => {
            eprintln!("every_subcommand_works_on_postgres: skipped: {why}");
            return;
        }
    };
    let db = schema.url();
    let existing_only = || PgOptions::from_url(&db).expect("url").existing_only();

    // Read-only commands refuse a database without the schema, and create nothing.
    for args in [
        &["status"][..],
        &["items"],
        &["workers"],
        &["reap", "--dry-run"],
        &["cleanup", "--dry-run"],
    ] {
        refused(&run(&db, args), 2, "no leasehold schema");
    }
    assert!(matches!(
        PgStore::open_with(existing_only()).await,
        Err(StoreError::NotADatabase(_))
    ));
    // A bad schema name is bad input.
    let bad = db.replace(schema.schema(), "Not-A-Schema");
    refused(&run(&bad, &["status"]), 2, "schema");

    // enqueue creates the schema; the reads see the items.
    for n in 0..3 {
        let v = json(
            &db,
            &[
                "enqueue",
                "--kind",
                "k",
                "--input",
                &format!("{{\"n\": {n}}}"),
            ],
        );
        assert!(v["id"].as_i64().is_some(), "{v}");
    }
    assert_eq!(json(&db, &["status"])["pending"], 3);
    assert_eq!(json(&db, &["items"]).as_array().map(Vec::len), Some(3));

    // A worker elsewhere took one with a 1 ms lease and vanished: expired by the next command.
    let store = PgStore::open_with(existing_only())
        .await
        .expect("open existing");
    let leased = store
        .item_acquire(
            &AcquireRequest::new("gone/w0", Duration::from_millis(1)).node("gone", 1),
            SystemClock.now(),
        )
        .await
        .expect("acquire")
        .expect("an item");
    assert_eq!(json(&db, &["status"])["in_progress"], 1);
    let dry = json(&db, &["reap", "--dry-run"]);
    assert_eq!(dry["recovered"], 1, "{dry}");
    assert_eq!(
        json(&db, &["status"])["in_progress"],
        1,
        "a dry run changes nothing"
    );
    let reaped = json(&db, &["reap"]);
    assert_eq!(reaped["recovered"], 1, "{reaped}");
    let item = store
        .item_get(leased.item.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(item.status, ItemStatus::Pending);
    assert!(
        item.epoch > leased.lease.epoch,
        "the requeue fenced the old holder out"
    );

    assert_eq!(json(&db, &["workers"]).as_array().map(Vec::len), Some(0));
    json(&db, &["cleanup", "--dry-run"]);

    // work drains the queue on PostgreSQL too.
    let out = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args([
            "--db",
            &db,
            "work",
            "--workers",
            "2",
            "--exec",
            "cat",
            "--exit-when-done",
        ])
        .env("LEASEHOLD_WORKER_ID", "cli-pg")
        .env("LEASEHOLD_HEARTBEAT_S", "0.2")
        .env("LEASEHOLD_LEASE_S", "2")
        .output()
        .expect("run work");
    assert!(
        out.status.success(),
        "work: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = json(&db, &["status"]);
    assert_eq!(
        (status["completed"].as_u64(), status["pending"].as_u64()),
        (Some(3), Some(0)),
        "{status}"
    );
}
