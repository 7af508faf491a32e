//! Retry: the backoff schedule and its cap, jitter, transient versus permanent errors, and
//! policies per kind and per item.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{Backoff, Item, ItemId, ItemStatus, Timestamp};
use leasehold_durable::{retry, retry_with, DurableError, RetryPolicies, RetryPolicy};
use serde_json::json;

fn policy(max_attempts: u32, cap_s: u64, jitter: f64) -> RetryPolicy {
    RetryPolicy::new(
        Backoff {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(cap_s),
            jitter,
        },
        max_attempts,
    )
}

#[test]
fn default_schedule_is_one_two_four_seconds_and_the_cap_holds() {
    let d = RetryPolicy::default();
    assert_eq!(d.max_attempts, 3);
    let exact = RetryPolicy {
        backoff: Backoff {
            jitter: 0.0,
            ..d.backoff
        },
        max_attempts: 4,
        ..d
    };
    assert_eq!(
        exact.schedule(),
        vec![
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(4)
        ]
    );
    let capped = policy(7, 5, 0.0);
    let secs: Vec<u64> = capped.schedule().iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![1, 2, 4, 5, 5, 5]);
    // The default cap: nothing ever waits longer than 30 s.
    assert_eq!(d.delay(40, 0.0), Duration::from_secs(30));
}

#[test]
fn jitter_shortens_within_its_fraction_and_a_seed_reproduces_it() {
    let p = policy(3, 30, 0.5);
    for sample in [0.0, 0.3, 0.999] {
        let d = p.delay(3, sample);
        assert!(
            d <= Duration::from_secs(4) && d >= Duration::from_secs(2),
            "{d:?}"
        );
    }
    assert!(policy(0, 30, 0.0).validate().is_err());
    assert!(policy(3, 30, 1.5).validate().is_err());
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_the_schedule_until_success() {
    let calls = Arc::new(AtomicU32::new(0));
    let started = tokio::time::Instant::now();
    let mut waits = Vec::new();
    let c = calls.clone();
    let out: Result<u32, DurableError> = retry_with(
        &policy(4, 30, 0.0),
        |e: &DurableError| e.is_transient(),
        |f| waits.push(f.next_delay),
        || {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n < 4 {
                    Err(DurableError::transient(format!("timeout #{n}")))
                } else {
                    Ok(n)
                }
            }
        },
    )
    .await;
    assert_eq!(out.expect("fourth attempt succeeds"), 4);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let secs: Vec<_> = waits.iter().map(|d| d.map(|d| d.as_secs())).collect();
    assert_eq!(secs, vec![Some(1), Some(2), Some(4)]);
    assert_eq!(started.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let out: Result<(), DurableError> = retry(&policy(5, 30, 0.0), || {
        c.fetch_add(1, Ordering::SeqCst);
        async { Err(DurableError::permanent("invalid domain")) }
    })
    .await;
    let err = out.expect_err("permanent");
    assert!(err.is_permanent());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn transient_errors_stop_when_the_attempts_are_spent() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let started = tokio::time::Instant::now();
    let out: Result<(), DurableError> = retry(&policy(3, 30, 0.0), || {
        c.fetch_add(1, Ordering::SeqCst);
        async { Err(DurableError::transient("429 rate limited")) }
    })
    .await;
    assert!(out.expect_err("spent").is_transient());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(3),
        "1 s + 2 s between 3 attempts"
    );
}

#[tokio::test(start_paused = true)]
async fn a_seeded_policy_waits_the_same_jittered_delays_every_run() {
    async fn waits(seed: u64) -> Vec<Duration> {
        let mut w = Vec::new();
        let _: Result<(), DurableError> = retry_with(
            &policy(5, 30, 0.5).seeded(seed),
            |e: &DurableError| e.is_transient(),
            |f| w.extend(f.next_delay),
            || async { Err(DurableError::transient("timeout")) },
        )
        .await;
        w
    }
    let a = waits(42).await;
    assert_eq!(a, waits(42).await, "seed 42");
    assert_eq!(a.len(), 4);
    assert_ne!(a, waits(43).await, "another seed jitters differently");
}

fn item(kind: &str, input: serde_json::Value) -> Item {
    Item {
        id: ItemId(7),
        kind: kind.into(),
        input,
        status: ItemStatus::InProgress,
        attempts: 1,
        max_attempts: 3,
        priority: 0,
        run_at: Timestamp(0),
        group_id: None,
        owner: None,
        owner_node: None,
        owner_incarnation: None,
        epoch: 1,
        lease_expires_at: None,
        last_heartbeat_at: None,
        output: None,
        error: None,
        progress: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        finished_at: None,
        timeout: None,
        releases: 0,
        unique_key: None,
        started_at: None,
        cancel_requested_at: None,
        decision: None,
    }
}

#[test]
fn policies_per_kind_and_per_item_override() {
    let policies = RetryPolicies::new(RetryPolicy::default())
        .expect("default")
        .kind("llm", policy(6, 60, 0.0))
        .expect("llm policy");
    assert_eq!(policies.for_kind("email").max_attempts, 3);
    assert_eq!(policies.for_kind("llm").max_attempts, 6);
    let p = policies
        .for_item(&item(
            "llm",
            json!({"retry": {"max_attempts": 2, "initial_ms": 250}}),
        ))
        .expect("override");
    assert_eq!(p.max_attempts, 2);
    assert_eq!(p.backoff.initial, Duration::from_millis(250));
    assert_eq!(p.backoff.max, Duration::from_secs(60), "kind's cap kept");

    let bad = policies.for_item(&item("llm", json!({"retry": {"max_attempts": 0}})));
    let msg = bad.expect_err("zero attempts").to_string();
    assert!(msg.contains("max_attempts"), "{msg}");
    let unknown = policies.for_item(&item("llm", json!({"retry": {"tries": 2}})));
    assert!(unknown
        .expect_err("unknown field")
        .to_string()
        .contains("tries"));
    assert!(RetryPolicies::new(RetryPolicy::default())
        .expect("default")
        .kind("x", policy(0, 1, 0.0))
        .is_err());
}
