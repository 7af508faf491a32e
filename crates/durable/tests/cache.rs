//! The LLM output cache on a real SQLite file: single-flight under concurrency (in one process
//! and across two connections, as two processes would have), expiry, invalidation and stats.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Env, NowTs};
use leasehold_core::durable::{CacheClaim, DurableStore};
use leasehold_core::SystemClock;
use leasehold_durable::{cache_key, DurableError, LlmCache, DEFAULT_CACHE_TTL};
use serde_json::{json, Value};

async fn slow_generate(calls: Arc<AtomicUsize>) -> Result<Value, DurableError> {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    // Long enough that every other asker arrives while it runs.
    tokio::time::sleep(Duration::from_millis(150)).await;
    Ok(json!({"plan": "step 1, step 2", "generation": n}))
}

async fn concurrent_askers_run_the_generator_once<S: Backend>(env: Env<S>) {
    // A second connection (SQLite) or pool (PostgreSQL) on the same database: what another
    // process or host sharing the store sees.
    let other_store: Arc<dyn DurableStore> = env.another_node().await;
    let here = LlmCache::new(env.durable(), Arc::new(SystemClock))
        .with_claim(Duration::from_secs(30), Duration::from_millis(5))
        .expect("claim settings");
    let there = LlmCache::new(other_store, Arc::new(SystemClock))
        .with_claim(Duration::from_secs(30), Duration::from_millis(5))
        .expect("claim settings");
    // Each process asks under its own item's lease; the task scope makes it one key.
    let (lease_here, lease_there) = (env.leased("w1").await, env.leased("w2").await);
    let calls = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(24));
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (cache, lease) = if i % 3 == 0 {
            (there.clone(), lease_there.clone())
        } else {
            (here.clone(), lease_here.clone())
        };
        let (calls, barrier) = (calls.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            cache
                .get_or_generate(
                    &lease,
                    "plan",
                    "Generate a plan for task X",
                    "gpt-4",
                    "task-123",
                    || slow_generate(calls),
                )
                .await
        }));
    }
    let mut hits = 0;
    let mut outputs = Vec::new();
    for t in tasks {
        let c = t.await.expect("join").expect("cached");
        hits += usize::from(c.hit);
        outputs.push(c.output);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the generator ran more than once"
    );
    assert_eq!(hits, 23);
    assert!(outputs.iter().all(|o| o == &outputs[0]), "{outputs:?}");
    let (a, b) = (here.stats(), there.stats());
    assert_eq!(a.hits + b.hits, 23);
    assert_eq!(a.misses + b.misses, 1);
}

async fn entries_expire_after_seven_days_and_can_be_invalidated<S: Backend>(env: Env<S>) {
    let cache = LlmCache::new(env.durable(), env.clock());
    let lease = env.leased("w1").await;
    let lease = &lease;
    let calls = Arc::new(AtomicUsize::new(0));
    let ask = |cache: LlmCache, calls: Arc<AtomicUsize>| async move {
        cache
            .get_or_generate(
                lease,
                "research",
                "acme.com",
                "model-a",
                "7",
                || async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    Ok(json!({ "n": n }))
                },
            )
            .await
            .expect("cached")
    };
    let first = ask(cache.clone(), calls.clone()).await;
    assert!(!first.hit);
    assert!(ask(cache.clone(), calls.clone()).await.hit);
    // Another model, prompt or task is another key.
    let other = cache
        .get_or_generate(lease, "research", "acme.com", "model-b", "7", || async {
            Ok(json!(0))
        })
        .await
        .expect("other key");
    assert!(!other.hit);
    assert_ne!(
        cache_key("research", "acme.com", "model-a", "7"),
        cache_key("research", "acme.com", "model-a", "8")
    );

    env.clock
        .advance(DEFAULT_CACHE_TTL - Duration::from_millis(1));
    assert!(ask(cache.clone(), calls.clone()).await.hit, "still live");
    env.clock.advance(Duration::from_millis(1));
    let expired = ask(cache.clone(), calls.clone()).await;
    assert!(!expired.hit, "expired after 7 days");
    assert_eq!(expired.output, json!({"n": 2}));

    assert!(cache
        .invalidate("research", "acme.com", "model-a", "7")
        .await
        .expect("invalidate"));
    assert!(!ask(cache.clone(), calls.clone()).await.hit);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (2, 4));
    assert!((s.hit_rate - 2.0 / 6.0).abs() < 1e-9, "{s:?}");
    cache.reset_stats();
    assert_eq!(cache.stats().hits, 0);
    env.clock.advance(DEFAULT_CACHE_TTL * 2);
    assert_eq!(cache.purge_expired().await.expect("purge"), 2);
}

async fn a_failed_generation_is_not_cached_and_releases_the_claim<S: Backend>(env: Env<S>) {
    let cache = LlmCache::new(env.durable(), env.clock());
    let lease = env.leased("w1").await;
    let someone_else = env.leased("w2").await;
    let err = cache
        .get_or_generate(&lease, "plan", "p", "m", "t", || async {
            Err(DurableError::transient("429 rate limited"))
        })
        .await
        .expect_err("generator failed");
    assert!(err.is_transient());
    // Another process would be free to generate at once: no claim lingers.
    let claim = env
        .store
        .cache_claim(
            &cache_key("plan", "p", "m", "t"),
            &someone_else,
            Duration::from_secs(60),
            env.clock.now_ts(),
        )
        .await
        .expect("claim");
    assert!(matches!(claim, CacheClaim::Claimed { .. }), "{claim:?}");
    assert_eq!(cache.stats().errors, 1);
    let bad = cache
        .get_or_generate(&lease, "", "p", "m", "t", || async { Ok(json!(1)) })
        .await
        .expect_err("no operation");
    assert!(bad.to_string().contains("operation"), "{bad}");
    assert!(LlmCache::new(env.durable(), env.clock())
        .with_ttl(Duration::ZERO)
        .is_err());
}

async fn a_dead_claimants_claim_lapses_and_the_next_asker_generates<S: Backend>(env: Env<S>) {
    let key = cache_key("plan", "p", "m", "t");
    let (crashed, me) = (env.leased("crashed-process").await, env.leased("me").await);
    let now = env.clock.now_ts();
    let dead = env
        .store
        .cache_claim(&key, &crashed, Duration::from_secs(10), now)
        .await
        .expect("claim");
    assert!(matches!(dead, CacheClaim::Claimed { .. }));
    let busy = env
        .store
        .cache_claim(&key, &me, Duration::from_secs(10), now)
        .await
        .expect("claim");
    assert!(matches!(busy, CacheClaim::Busy { ref holder, .. } if holder == &crashed));
    env.clock.advance(Duration::from_secs(11));
    let cache = LlmCache::new(env.durable(), env.clock());
    let got = cache
        .get_or_generate(&me, "plan", "p", "m", "t", || async { Ok(json!("fresh")) })
        .await
        .expect("generate after the lapse");
    assert!(!got.hit);
    assert_eq!(got.output, json!("fresh"));
}

async fn an_items_entries_are_listed_newest_first_with_its_open_claims<S: Backend>(env: Env<S>) {
    let cache = LlmCache::new(env.durable(), env.clock());
    let mine = env.leased("w1").await;
    let other = env.leased("w2").await;
    let scope = mine.item.to_string();
    cache
        .get_or_generate(&mine, "plan", "p1", "m", &scope, || async { Ok(json!(1)) })
        .await
        .expect("first");
    env.clock.advance(Duration::from_secs(1));
    cache
        .get_or_generate(&mine, "research", "p2", "m", &scope, || async {
            Ok(json!(2))
        })
        .await
        .expect("second");
    // Another item's entry, and a claim of ours still generating.
    cache
        .get_or_generate(
            &other,
            "plan",
            "p1",
            "m",
            &other.item.to_string(),
            || async { Ok(json!(3)) },
        )
        .await
        .expect("other item's");
    env.clock.advance(Duration::from_secs(1));
    let claim_key = cache_key("plan", "p3", "m", "shared-scope");
    let claimed = env
        .durable()
        .cache_claim(
            &claim_key,
            &mine,
            Duration::from_secs(30),
            env.clock.now_ts(),
        )
        .await
        .expect("claim");
    assert!(matches!(claimed, CacheClaim::Claimed { .. }));
    // A hit counts on the listing.
    cache
        .get_or_generate(&mine, "plan", "p1", "m", &scope, || async {
            Ok(json!("no"))
        })
        .await
        .expect("hit");

    let listed = env
        .durable()
        .cache_entries_of(mine.item, 10)
        .await
        .expect("list");
    let keys: Vec<&str> = listed.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            claim_key.as_str(),
            cache_key("research", "p2", "m", &scope).as_str(),
            cache_key("plan", "p1", "m", &scope).as_str(),
        ]
    );
    assert_eq!(listed[0].state, "generating");
    assert_eq!(listed[0].expires_at, None);
    assert_eq!(listed[2].state, "ready");
    assert_eq!(listed[2].operation.as_deref(), Some("plan"));
    assert_eq!(listed[2].model.as_deref(), Some("m"));
    assert_eq!(listed[2].hits, 1);
    let limited = env
        .durable()
        .cache_entries_of(mine.item, 1)
        .await
        .expect("list");
    assert_eq!(limited.len(), 1);
    let others = env
        .durable()
        .cache_entries_of(other.item, 10)
        .await
        .expect("list");
    assert_eq!(others.len(), 1);
}

durable_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    concurrent_askers_run_the_generator_once,
    an_items_entries_are_listed_newest_first_with_its_open_claims,
    entries_expire_after_seven_days_and_can_be_invalidated,
    a_failed_generation_is_not_cached_and_releases_the_claim,
    a_dead_claimants_claim_lapses_and_the_next_asker_generates,
);
