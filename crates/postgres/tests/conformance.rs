//! The cross-backend conformance suite, unchanged, run against [`PgStore`]: one test per
//! case, each in a fresh schema of its own on the server `LEASEHOLD_PG_URL` names. Without
//! that variable, or with the server unreachable, each test prints why it was skipped and
//! passes.

use std::sync::Arc;

use leasehold_core::Store;
use leasehold_postgres::testing::{store_or_skip, TestSchema};

/// A fresh store in its own schema (dropped with the guard), or `None` when skipped.
async fn fresh() -> Option<(Arc<dyn Store>, TestSchema)> {
    let (store, schema) = store_or_skip("conformance", "lh_conf").await?;
    Some((Arc::new(store), schema))
}

// The macro evaluates its factory inside each test's body: a skipped test returns from there
// before any case runs.
leasehold_conformance::conformance_tests!(match fresh().await {
    Some(fixture) => std::future::ready(fixture),
    None => return,
});
