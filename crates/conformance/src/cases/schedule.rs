//! Schedules: registration, the claim of a due tick (one winner, its items in the claim's
//! commit) and the listing.

use std::sync::Arc;

use leasehold_core::{
    CatchUp, ItemFilter, ItemStatus, NewItem, ScheduleClaim, ScheduleSpec, Store, StoreError,
    Timestamp,
};
use serde_json::json;

use crate::support::{acquire, at_s, req, T0};

fn spec(name: &str, cron: &str, first: Timestamp) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        cron: cron.into(),
        kind: "digest".into(),
        input: json!({ "to": "ops" }),
        catch_up: CatchUp::Skip,
        first_run_at: first,
    }
}

fn tick(name: &str, due: Timestamp, next: Timestamp) -> ScheduleClaim {
    ScheduleClaim {
        name: name.into(),
        due,
        last_tick: due,
        next,
        items: vec![NewItem::new("digest", json!({ "to": "ops" }))
            .unique_key(format!("schedule:{name}:{}", due.0))],
    }
}

/// Registering inserts the row; registering again with the same expression keeps its
/// `next_run_at` (missed ticks stay due) while updating kind, input and policy; a changed
/// expression takes the new first run. The listing returns every schedule by name.
pub async fn schedule_upsert_keeps_the_next_run_unless_the_expression_changed(
    store: Arc<dyn Store>,
) {
    let s = &*store;
    let first = s
        .schedule_upsert(&spec("digest", "0 */5 * * * *", at_s(300)), T0)
        .await
        .expect("register");
    assert_eq!(first.next_run_at, at_s(300));
    assert_eq!((first.last_run_at, first.updated_at), (None, T0));
    assert_eq!(first.catch_up, CatchUp::Skip);
    let mut again = spec("digest", "0 */5 * * * *", at_s(900));
    again.catch_up = CatchUp::All { max: 3 };
    again.input = json!({ "to": "everyone" });
    let kept = s
        .schedule_upsert(&again, at_s(10))
        .await
        .expect("register again");
    assert_eq!(
        kept.next_run_at,
        at_s(300),
        "same expression: the due tick is kept"
    );
    assert_eq!(kept.catch_up, CatchUp::All { max: 3 });
    assert_eq!(kept.input, json!({ "to": "everyone" }));
    assert_eq!(kept.updated_at, at_s(10));
    let changed = s
        .schedule_upsert(&spec("digest", "0 0 * * * *", at_s(3600)), at_s(20))
        .await
        .expect("register a new expression");
    assert_eq!(
        changed.next_run_at,
        at_s(3600),
        "a new expression starts afresh"
    );
    assert_eq!(changed.cron, "0 0 * * * *");
    s.schedule_upsert(&spec("backup", "0 0 3 * * *", at_s(7200)), T0)
        .await
        .expect("register another");
    let names: Vec<String> = s
        .schedules_list()
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["backup", "digest"]);
}

/// The claim of a due tick moves `next_run_at` on and enqueues the tick's items in one
/// commit; a second claimer that read the same due tick gets `None` and writes nothing, even
/// after the first tick's item has finished (when its unique key no longer guards it).
pub async fn schedule_claim_lets_one_claimer_win_each_tick(store: Arc<dyn Store>) {
    let s = &*store;
    s.schedule_upsert(&spec("digest", "0 */5 * * * *", at_s(300)), T0)
        .await
        .expect("register");
    let won = s
        .schedule_claim(&tick("digest", at_s(300), at_s(600)), at_s(300))
        .await
        .expect("claim")
        .expect("the first claimer wins");
    assert_eq!(won.len(), 1);
    // The tick's item runs to completion: its unique key is free again.
    let held = acquire(s, &req("worker-a"), at_s(301)).await;
    assert_eq!(held.lease.item, won[0]);
    s.item_complete(&held.lease, json!(null), at_s(302))
        .await
        .expect("complete");
    // A slow node that read the same due tick claims it late.
    let late = s
        .schedule_claim(&tick("digest", at_s(300), at_s(600)), at_s(303))
        .await
        .expect("a lost claim is not an error");
    assert_eq!(late, None, "the tick was won already");
    assert_eq!(
        s.items_count().await.expect("count").total(),
        1,
        "one item for the tick"
    );
    let row = &s.schedules_list().await.expect("list")[0];
    assert_eq!(
        (row.next_run_at, row.last_run_at),
        (at_s(600), Some(at_s(300)))
    );
    // An unknown schedule wins nothing either.
    let unknown = s
        .schedule_claim(&tick("nope", at_s(300), at_s(600)), at_s(303))
        .await
        .expect("claim of an unknown schedule");
    assert_eq!(unknown, None);
}

/// Many claimers racing for one tick: exactly one wins, and the tick has one item.
pub async fn concurrent_schedule_claims_enqueue_each_tick_once(store: Arc<dyn Store>) {
    store
        .schedule_upsert(&spec("digest", "0 */5 * * * *", at_s(300)), T0)
        .await
        .expect("register");
    let calls = (0..16).map(|_| {
        let store = Arc::clone(&store);
        async move {
            store
                .schedule_claim(&tick("digest", at_s(300), at_s(600)), at_s(300))
                .await
                .expect("claim")
        }
    });
    let won: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(won.len(), 1, "one winner: {won:?}");
    let items = store
        .items_list(&ItemFilter::default())
        .await
        .expect("list");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].status, ItemStatus::Pending);
    assert_eq!(items[0].kind, "digest");
}

/// A catch-up claim enqueues every item it carries in its commit; an invalid claim (an
/// invalid item, a next run not after the due tick, no items, a bad spec) is `InvalidInput`
/// and changes nothing.
pub async fn schedule_claim_enqueues_every_tick_and_refuses_bad_input(store: Arc<dyn Store>) {
    let s = &*store;
    s.schedule_upsert(&spec("digest", "0 */5 * * * *", at_s(300)), T0)
        .await
        .expect("register");
    let mut bad = tick("digest", at_s(300), at_s(1200));
    bad.items.push(NewItem::new("", json!({})));
    let refused = s.schedule_claim(&bad, at_s(1100)).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidInput(_))),
        "{refused:?}"
    );
    let backwards = s
        .schedule_claim(&tick("digest", at_s(300), at_s(300)), at_s(1100))
        .await;
    assert!(
        matches!(backwards, Err(StoreError::InvalidInput(_))),
        "{backwards:?}"
    );
    let mut empty = tick("digest", at_s(300), at_s(1200));
    empty.items.clear();
    assert!(matches!(
        s.schedule_claim(&empty, at_s(1100)).await,
        Err(StoreError::InvalidInput(_))
    ));
    let mut zero = spec("other", "0 * * * * *", at_s(60));
    zero.catch_up = CatchUp::All { max: 0 };
    assert!(matches!(
        s.schedule_upsert(&zero, T0).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        s.schedule_upsert(&spec("", "0 * * * * *", at_s(60)), T0)
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    assert_eq!(s.items_count().await.expect("count").total(), 0);
    let rows = s.schedules_list().await.expect("list");
    assert_eq!(rows.len(), 1, "nothing registered by a refused spec");
    assert_eq!(
        rows[0].next_run_at,
        at_s(300),
        "nothing moved by a refused claim"
    );
    // Three missed ticks caught up in one claim.
    let mut all = tick("digest", at_s(300), at_s(1200));
    all.last_tick = at_s(900);
    all.items = [300, 600, 900]
        .iter()
        .map(|t| {
            NewItem::new("digest", json!({})).unique_key(format!("schedule:digest:{}", at_s(*t).0))
        })
        .collect();
    let ids = s
        .schedule_claim(&all, at_s(1100))
        .await
        .expect("claim")
        .expect("won");
    assert_eq!(ids.len(), 3);
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "in order: {ids:?}");
    let row = &s.schedules_list().await.expect("list")[0];
    assert_eq!(
        (row.next_run_at, row.last_run_at),
        (at_s(1200), Some(at_s(900)))
    );
}
