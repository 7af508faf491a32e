//! Random histories of the lease protocol against a real PostgreSQL schema and the in-memory
//! model of `leasehold_conformance::model` (the same strategy and runner the SQLite backend's
//! property test uses), checking after every step that they agree and that invariants 1–4
//! hold. Skipped, with the reason printed, when `LEASEHOLD_PG_URL` is unset or unreachable.

use std::sync::{Arc, Mutex};

use leasehold_conformance::model::{self, Coverage};
use leasehold_postgres::testing::TestSchema;
use proptest::test_runner::{TestCaseError, TestRunner};

#[test]
fn postgres_store_agrees_with_the_lease_model() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(why) = runtime.block_on(TestSchema::create("lh_model")) {
        eprintln!("postgres_store_agrees_with_the_lease_model: skipped: {why}");
        return;
    }
    let total = Mutex::new(Coverage::default());
    let mut runner = TestRunner::new(model::config());
    let result = runner.run(&model::ops(), |ops| {
        let coverage = runtime
            .block_on(async {
                // A fresh schema per case, dropped after it.
                let schema = TestSchema::create("lh_model")
                    .await
                    .expect("server answers");
                let store = schema.open().await.expect("open a fresh PostgreSQL schema");
                let out = model::run(Arc::new(store), &ops).await;
                drop(schema);
                out
            })
            .map_err(TestCaseError::fail)?;
        total.lock().expect("coverage").add(&coverage);
        Ok(())
    });
    if let Err(e) = result {
        panic!("the PostgreSQL store disagrees with the model: {e}");
    }
    let total = *total.lock().expect("coverage");
    println!("coverage over all cases: {total:?}");
    assert!(
        total.all_at_least(u64::from(model::config().cases) / 8),
        "the generated histories exercised too little of the protocol: {total:?}"
    );
}
