//! Random histories of the lease protocol against a real SQLite file and the in-memory model of
//! `leasehold_conformance::model`, checking after every step that they agree and that
//! invariants 1–4 hold. On failure proptest shrinks the history and the panic prints it.

use std::sync::{Arc, Mutex};

use leasehold_conformance::model::{self, Coverage};
use leasehold_sqlite::SqliteStore;
use proptest::test_runner::{TestCaseError, TestRunner};

#[test]
fn sqlite_store_agrees_with_the_lease_model() {
    let total = Mutex::new(Coverage::default());
    let mut runner = TestRunner::new(model::config());
    let result = runner.run(&model::ops(), |ops| {
        // One runtime per case: nothing (a connection thread, a task) leaks between cases.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let coverage = runtime
            .block_on(async {
                let dir = tempfile::tempdir().expect("temporary directory");
                let store = SqliteStore::open(dir.path().join("model.db"))
                    .await
                    .expect("open a fresh SQLite store");
                model::run(Arc::new(store), &ops).await
            })
            .map_err(TestCaseError::fail)?;
        total.lock().expect("coverage").add(&coverage);
        Ok(())
    });
    if let Err(e) = result {
        panic!("the SQLite store disagrees with the model: {e}");
    }
    // Vacuity guard: the histories must have exercised every kind of step.
    let total = *total.lock().expect("coverage");
    println!("coverage over all cases: {total:?}");
    assert!(
        total.all_at_least(u64::from(model::config().cases) / 8),
        "the generated histories exercised too little of the protocol: {total:?}"
    );
}
