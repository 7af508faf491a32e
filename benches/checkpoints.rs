//! Checkpoints with evidence (seed 003: "< 10 ms per checkpoint creation, < 50 ms per
//! verification"), measured with criterion on SQLite (a real file) and on PostgreSQL (a fresh
//! schema on the server `LEASEHOLD_PG_URL` names; skipped, with a printed line, when it is unset
//! or the server does not answer, unless `LEASEHOLD_REQUIRE_PG=1` asks for it):
//!
//! - `checkpoint_create/<backend>`: one step begun and committed through [`CheckpointManager`]
//!   with an evidence pack of one claim of each kind (exit code, artifact, file hash, database
//!   row), as a handler's step does;
//! - `checkpoint_verify/<backend>/<kind>`: [`CheckpointManager::verify_checkpoint`] of a
//!   committed checkpoint whose evidence is one claim of that kind (`all_four`: one of each).
//!   It reads the checkpoint, checks the evidence against the world now (hashes the file,
//!   looks up the artifact, queries the row) and records the result, fenced by the lease.
//!
//! The file hashed is 64 KiB (`file_sha256`) or 1 MiB (`file_sha256_1mib`).
//!
//! Run with `cargo bench --bench checkpoints` (a minute or two; one backend:
//! `cargo bench --bench checkpoints -- sqlite`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};
use tokio::runtime::Runtime;

use leasehold::core::durable::{DurableStore, Evidence, EvidencePack, RowProbe, Verification};
use leasehold::durable::{evidence, CheckpointManager};
use leasehold::postgres::testing::TestSchema;
use leasehold::{AcquireRequest, LeaseRef, ManualClock, NewItem, Store, Timestamp};

const T0: Timestamp = Timestamp(1_700_000_000_000);
/// Longer than any run, so the manual clock never lets the lease lapse.
const LEASE: Duration = Duration::from_secs(24 * 3600);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// One backend's store, the lease of an item it holds, and what keeps its database alive.
struct Bench {
    name: &'static str,
    manager: CheckpointManager,
    lease: LeaseRef,
    /// The PostgreSQL schema, dropped when the bench ends.
    _schema: Option<TestSchema>,
}

/// The SQLite bench on a fresh file in `dir`, and the PostgreSQL one when a server is named
/// and answers (else a printed line says why it is skipped).
fn backends(rt: &Runtime, dir: &tempfile::TempDir) -> Vec<Bench> {
    let mut out = Vec::new();
    let path = dir.path().join("checkpoints.db");
    out.push(rt.block_on(open("sqlite", &path.display().to_string(), None)));
    // `create` announces a skip (and fails under `LEASEHOLD_REQUIRE_PG=1`), as in the tests.
    match rt.block_on(TestSchema::create("bench_cp")) {
        Err(why) => println!("skipped the PostgreSQL checkpoint benches: {why}"),
        Ok(schema) => {
            let url = schema.url();
            out.push(rt.block_on(open("postgres", &url, Some(schema))));
        }
    }
    out
}

async fn open(name: &'static str, url: &str, schema: Option<TestSchema>) -> Bench {
    let (store, durable): (Arc<dyn Store>, Arc<dyn DurableStore>) =
        leasehold::open_durable_store(url)
            .await
            .unwrap_or_else(|e| panic!("open the {name} store at {url}: {e}"));
    store
        .items_enqueue(vec![NewItem::new("bench", json!({}))], T0)
        .await
        .expect("enqueue");
    let lease = store
        .item_acquire(&AcquireRequest::new("bench/w0", LEASE), T0)
        .await
        .expect("acquire")
        .expect("an item")
        .lease;
    let manager = CheckpointManager::new(durable, Arc::new(ManualClock::new(T0)));
    Bench {
        name,
        manager,
        lease,
        _schema: schema,
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

/// A file of `len` bytes in `dir`.
fn file(dir: &tempfile::TempDir, name: &str, len: usize) -> std::path::PathBuf {
    let path = dir.path().join(name);
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, bytes).expect("write the artifact");
    path
}

/// One claim of each kind, all true: the held item's row, an exit code, a file and its hash.
async fn claims(b: &Bench, artifact: &std::path::Path) -> Vec<(&'static str, Evidence)> {
    vec![
        ("command_exit", evidence::command_exit("make test", 0, 0)),
        ("artifact_exists", evidence::file_exists(artifact)),
        (
            "file_sha256",
            evidence::file_unchanged(artifact).await.expect("hash"),
        ),
        (
            "db_row",
            evidence::db_row(RowProbe {
                table: "items".into(),
                where_: obj(json!({ "id": b.lease.item.0 })),
                values: obj(json!({ "status": "in_progress", "owner": "bench/w0" })),
            }),
        ),
    ]
}

/// Begins and commits one step with `pack`; returns the checkpoint's id.
async fn checkpoint(b: &Bench, step: i64, pack: EvidencePack) -> i64 {
    let id = b
        .manager
        .begin_step(
            &b.lease,
            step,
            "step",
            "iteration_start",
            json!({ "step": step }),
        )
        .await
        .expect("begin");
    b.manager
        .commit_step(&b.lease, id, pack)
        .await
        .expect("commit")
        .id
}

fn checkpoint_create(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let artifact = file(&dir, "out.bin", 64 * 1024);
    let mut g = c.benchmark_group("checkpoint_create");
    let mut step = 0i64;
    for b in backends(&rt, &dir) {
        let pack = EvidencePack::new(
            rt.block_on(claims(&b, &artifact))
                .into_iter()
                .map(|(_, e)| e)
                .collect(),
        );
        g.bench_function(b.name, |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        step += 1;
                        checkpoint(&b, step, pack.clone()).await;
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn checkpoint_verify(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let small = file(&dir, "small.bin", 64 * 1024);
    let large = file(&dir, "large.bin", 1024 * 1024);
    let mut g = c.benchmark_group("checkpoint_verify");
    for b in backends(&rt, &dir) {
        let mut cases = rt.block_on(claims(&b, &small));
        let all: Vec<Evidence> = cases.iter().map(|(_, e)| e.clone()).collect();
        cases.push((
            "file_sha256_1mib",
            rt.block_on(evidence::file_unchanged(&large)).expect("hash"),
        ));
        let mut packs: Vec<(&str, EvidencePack)> = cases
            .into_iter()
            .map(|(kind, e)| (kind, EvidencePack::new(vec![e])))
            .collect();
        packs.push(("all_four", EvidencePack::new(all)));
        for (step, (kind, pack)) in packs.into_iter().enumerate() {
            let id = rt.block_on(checkpoint(&b, step as i64, pack));
            g.bench_function(format!("{}/{kind}", b.name), |bench| {
                bench.iter_custom(|iters| {
                    rt.block_on(async {
                        let t = Instant::now();
                        for _ in 0..iters {
                            let v = b
                                .manager
                                .verify_checkpoint(&b.lease, id)
                                .await
                                .expect("verify");
                            assert_eq!(v, Verification::Valid, "{kind} on {}", b.name);
                        }
                        t.elapsed()
                    })
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = checkpoint_create, checkpoint_verify
}
criterion_main!(benches);
