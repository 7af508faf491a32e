//! The batched hot path on PostgreSQL: concurrent calls share one transaction, and each caller
//! still hears its own result. Each test works in its own schema; without `LEASEHOLD_PG_URL`
//! each prints why it was skipped.
//!
//! The tests run on tokio's current-thread runtime on purpose: every call queues itself when
//! first polled, so calls joined in one `join!` are all queued before the store's batcher
//! task first runs, and they form one batch (the tests check that with the store's counts).

use std::time::Duration;

use leasehold_conformance::support::{
    acquire, at_s, enqueue, enqueue_n, expect_lease_lost, get, new_item, req, T0,
};
use leasehold_core::{FailDisposition, FailOutcome, ItemStatus, Leased, Store, StoreResult};
use leasehold_postgres::testing::store_or_skip;
use leasehold_postgres::BatchStats;
use serde_json::json;

#[tokio::test]
async fn a_batch_with_one_lost_lease_commits_the_others_and_refuses_that_one_alone() {
    let Some((store, _schema)) = store_or_skip(
        "a_batch_with_one_lost_lease_commits_the_others_and_refuses_that_one_alone",
        "lh_batch",
    )
    .await
    else {
        return;
    };
    let ids = enqueue_n(&store, "job", 5, T0).await;
    let mut leases = Vec::new();
    for w in 0..5 {
        leases.push(acquire(&store, &req(&format!("w{w}")), at_s(1)).await.lease);
    }
    // w1's and w4's leases are taken over: their previous incarnations recovered the items
    // (requeued, epoch bumped), so every write under the old leases must be refused.
    store.items_recover_owner("w1", at_s(2)).await.unwrap();
    store.items_recover_owner("w4", at_s(2)).await.unwrap();

    let before = store.batch_stats();
    let now = at_s(3);
    let (done0, lost1, failed2, renewed3, lost4) = tokio::join!(
        store.item_complete(&leases[0], json!("zero"), now),
        store.item_complete(&leases[1], json!("zombie"), now),
        store.item_fail(
            &leases[2],
            "boom",
            FailDisposition::Retry {
                delay: Duration::from_secs(10)
            },
            now
        ),
        store.lease_renew(&leases[3], Duration::from_secs(60), now),
        store.lease_renew(&leases[4], Duration::from_secs(60), now),
    );
    let after = store.batch_stats();
    assert_eq!(
        after,
        BatchStats {
            batches: before.batches + 1,
            calls: before.calls + 5,
        },
        "the five calls were written in one batch"
    );

    done0.expect("the holder's completion applies");
    expect_lease_lost(lost1, &leases[1], "a completion under a lost lease");
    assert_eq!(
        failed2.expect("the holder's failure applies"),
        FailOutcome::Retrying { run_at: at_s(13) }
    );
    assert_eq!(renewed3.expect("the holder's renewal applies"), at_s(63));
    expect_lease_lost(lost4, &leases[4], "a renewal under a lost lease");

    let zero = get(&store, ids[0]).await;
    assert_eq!(zero.status, ItemStatus::Completed);
    assert_eq!(zero.output, Some(json!("zero")));
    let one = get(&store, ids[1]).await;
    assert_eq!(one.status, ItemStatus::Pending, "{one:?}");
    assert_eq!(one.output, None, "the zombie's output was not written");
    let two = get(&store, ids[2]).await;
    assert_eq!(two.status, ItemStatus::Pending);
    assert_eq!(two.error.as_deref(), Some("boom"));
    assert_eq!(two.run_at, at_s(13));
    let three = get(&store, ids[3]).await;
    assert_eq!(three.lease_expires_at, Some(at_s(63)));
    let four = get(&store, ids[4]).await;
    assert_eq!(four.status, ItemStatus::Pending);
    assert_eq!(
        four.last_heartbeat_at, None,
        "the lost renewal changed nothing"
    );
}

#[tokio::test]
async fn idle_workers_acquisitions_share_one_statement_and_never_share_an_item() {
    let Some((store, _schema)) = store_or_skip(
        "idle_workers_acquisitions_share_one_statement_and_never_share_an_item",
        "lh_batch",
    )
    .await
    else {
        return;
    };
    enqueue_n(&store, "job", 5, T0).await;
    let reqs: Vec<_> = (0..8).map(|w| req(&format!("w{w}"))).collect();
    let before = store.batch_stats();
    let got = futures::future::join_all(reqs.iter().map(|r| store.item_acquire(r, at_s(1)))).await;
    assert_eq!(store.batch_stats().batches, before.batches + 1, "one batch");
    let mut items = std::collections::BTreeSet::new();
    let mut served = 0;
    for (r, leased) in reqs.iter().zip(got) {
        if let Some(leased) = leased.expect("acquire") {
            served += 1;
            assert_eq!(
                leased.lease.owner, r.owner,
                "leased to the worker that asked"
            );
            assert_eq!(leased.item.owner.as_deref(), Some(r.owner.as_str()));
            assert_eq!(leased.expires_at, at_s(1).plus(r.lease));
            assert!(items.insert(leased.item.id), "an item went to two workers");
        }
    }
    assert_eq!(
        served, 5,
        "five items for eight idle workers: five leased, no more"
    );
    // The statement leased one item per worker, so the rest wait as pending.
    assert_eq!(store.items_count().await.unwrap().in_progress, 5);
}

/// A batch's acquisitions with a group filter run after those without, under the planner's
/// usual settings (see `PLAN_IN_QUEUE_ORDER` in `ops::acquire`): each filter still gets its
/// own items, whichever order the requests came in.
#[tokio::test]
async fn acquisitions_with_different_filters_in_one_batch_each_get_their_own_items() {
    let Some((store, _schema)) = store_or_skip(
        "acquisitions_with_different_filters_in_one_batch_each_get_their_own_items",
        "lh_batch",
    )
    .await
    else {
        return;
    };
    let in_g = enqueue(&store, new_item("job", 0).group("g"), T0).await;
    let in_h = enqueue(&store, new_item("job", 1).group("h"), T0).await;
    let mail = enqueue(&store, new_item("mail", 2), T0).await;
    let task = enqueue(&store, new_item("task", 3), T0).await;
    let (g, h, m, t, none) = (
        req("wg").group("g"),
        req("wh").kinds(["job"]).group("h"),
        req("wm").kinds(["mail"]),
        req("wt").kinds(["task"]),
        req("wn").kinds(["job"]).group("nobody"),
    );
    let before = store.batch_stats();
    // The grouped requests come first, ahead of the ungrouped ones they will run after.
    let (g, h, none, m, t) = tokio::join!(
        store.item_acquire(&g, at_s(1)),
        store.item_acquire(&h, at_s(1)),
        store.item_acquire(&none, at_s(1)),
        store.item_acquire(&m, at_s(1)),
        store.item_acquire(&t, at_s(1)),
    );
    assert_eq!(store.batch_stats().batches, before.batches + 1, "one batch");
    let id = |l: StoreResult<Option<Leased>>, who: &str| {
        l.expect("acquire")
            .unwrap_or_else(|| panic!("{who} got nothing"))
            .item
            .id
    };
    assert_eq!(id(g, "wg"), in_g);
    assert_eq!(id(h, "wh"), in_h);
    assert_eq!(id(m, "wm"), mail);
    assert_eq!(id(t, "wt"), task);
    assert!(
        none.expect("acquire").is_none(),
        "no item is in group nobody"
    );
}

#[tokio::test]
async fn a_renewal_and_a_completion_of_one_lease_go_to_separate_batches() {
    let Some((store, _schema)) = store_or_skip(
        "a_renewal_and_a_completion_of_one_lease_go_to_separate_batches",
        "lh_batch",
    )
    .await
    else {
        return;
    };
    let ids = enqueue_n(&store, "job", 1, T0).await;
    let lease = acquire(&store, &req("w0"), at_s(1)).await.lease;
    let before = store.batch_stats();
    let (renewed, completed) = tokio::join!(
        store.lease_renew(&lease, Duration::from_secs(60), at_s(2)),
        store.item_complete(&lease, json!("done"), at_s(2)),
    );
    assert_eq!(
        store.batch_stats().batches,
        before.batches + 2,
        "one statement never writes one row twice"
    );
    // As if applied one at a time, in the order they came: the renewal, then the completion.
    assert_eq!(renewed.expect("renewed first"), at_s(62));
    completed.expect("completed second");
    assert_eq!(get(&store, ids[0]).await.status, ItemStatus::Completed);
}

/// Workers that complete an item and ask for the next together, many at once (on a
/// multi-threaded runtime, so their calls arrive while a batch is in flight and while the next
/// one waits for them): every call is answered, every item completed exactly once, and the
/// batches carried several calls each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_coming_back_together_are_each_answered_and_complete_each_item_once() {
    let Some((store, _schema)) = store_or_skip(
        "holders_coming_back_together_are_each_answered_and_complete_each_item_once",
        "lh_batch",
    )
    .await
    else {
        return;
    };
    const ITEMS: usize = 400;
    const WORKERS: usize = 8;
    let ids = enqueue_n(&store, "job", ITEMS as i64, T0).await;
    let before = store.batch_stats();
    let workers = (0..WORKERS).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let r = req(&format!("w{w}"));
            let mut done = Vec::new();
            let mut next = store.item_acquire(&r, at_s(1)).await.expect("acquire");
            while let Some(leased) = next {
                let (completed, acquired) = tokio::join!(
                    store.item_complete(&leased.lease, json!(w), at_s(2)),
                    store.item_acquire(&r, at_s(2)),
                );
                completed.expect("a holder's completion applies");
                done.push(leased.item.id);
                next = acquired.expect("acquire alongside a completion");
            }
            done
        })
    });
    let all = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(workers))
        .await
        .expect("every call answered within two minutes");
    let mut completed = std::collections::BTreeSet::new();
    for done in all {
        for id in done.expect("worker task") {
            assert!(completed.insert(id), "item {id:?} completed twice");
        }
    }
    assert_eq!(completed.len(), ITEMS, "every item completed");
    assert_eq!(completed, ids.into_iter().collect());
    assert_eq!(store.items_count().await.unwrap().completed, ITEMS as u64);
    let stats = store.batch_stats();
    let (batches, calls) = (stats.batches - before.batches, stats.calls - before.calls);
    // Each item is one completion and one acquisition, plus each worker's first and last.
    assert_eq!(calls, (2 * ITEMS + WORKERS) as u64);
    assert!(batches < calls, "{batches} batches for {calls} calls");
}
