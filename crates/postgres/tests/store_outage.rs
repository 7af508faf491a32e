//! A PostgreSQL store that is down for a minute when the tree starts: the scenario of
//! crates/runtime/tests/outage_scenario, here over a [`PgStore`](leasehold_postgres::PgStore)
//! on a fresh schema. Skipped without `LEASEHOLD_PG_URL`.

use std::sync::Arc;

use leasehold_core::Store;
use leasehold_postgres::testing::store_or_skip;

#[path = "../../runtime/tests/outage_scenario/mod.rs"]
mod outage_scenario;

#[tokio::test]
async fn postgres_tree_survives_a_store_down_for_a_minute_at_start() {
    let test = "postgres_tree_survives_a_store_down_for_a_minute_at_start";
    let Some((store, _schema)) = store_or_skip(test, "outage").await else {
        return;
    };
    let real: Arc<dyn Store> = Arc::new(store);
    outage_scenario::tree_survives_a_store_down_at_start(real, "outage-postgres").await;
}
