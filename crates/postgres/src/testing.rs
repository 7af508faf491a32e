//! Fresh schemas for tests against a real PostgreSQL server.
//!
//! Tests read the server's URL from [`URL_ENV`] (`LEASEHOLD_PG_URL`). Each test works in a
//! schema of its own, created empty and dropped when its [`TestSchema`] goes, so tests run in
//! parallel and runs do not disturb each other.
//!
//! Where the variable is unset or the server does not answer, [`TestSchema::create`] either
//! fails the test — when [`REQUIRE_ENV`] (`LEASEHOLD_REQUIRE_PG=1`, which CI sets) asks for a
//! server — or returns why, after writing one `skipped` line to the terminal. That line goes
//! to the process's standard error directly rather than through `eprintln!`, which the test
//! harness would swallow for a passing test: a newcomer's `cargo test --workspace` shows every
//! PostgreSQL test it skipped and why.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

use crate::{PgOptions, PgStore};

/// The environment variable naming the test server.
pub const URL_ENV: &str = "LEASEHOLD_PG_URL";

/// Set to `1` (or `true`) to make a PostgreSQL test fail, not skip, when the server is missing.
pub const REQUIRE_ENV: &str = "LEASEHOLD_REQUIRE_PG";

/// How long a test waits for the server to answer before skipping.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A schema for one test, dropped (with everything in it) when this goes.
#[derive(Debug)]
pub struct TestSchema {
    base_url: String,
    schema: String,
}

impl TestSchema {
    /// A new, not yet created, uniquely named schema (`<prefix>_<pid>_<n>_<ns>`) on the
    /// server [`URL_ENV`] names, after checking that the server answers. `Err` says why the
    /// test cannot run (the variable is unset, or the server is unreachable), after that
    /// reason was written to the terminal as a `skipped` line.
    ///
    /// # Panics
    /// When the server is missing and [`REQUIRE_ENV`] asks for one: CI must not pass
    /// without its PostgreSQL tests.
    pub async fn create(prefix: &str) -> Result<TestSchema, String> {
        let found = match std::env::var(URL_ENV) {
            Err(_) => Err(format!(
                "{URL_ENV} is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
            )),
            Ok(url) => TestSchema::at(&url, prefix)
                .await
                .map_err(|e| format!("{URL_ENV}={e}")),
        };
        found.map_err(|why| skip_or_fail(&why))
    }

    /// The same on the server `url` names (a benchmark run's fresh schema, say); a schema the
    /// URL names is ignored. `Err` says why: a bad URL, or an unreachable server.
    pub async fn at(url: &str, prefix: &str) -> Result<TestSchema, String> {
        let base_url = PgOptions::from_url(url)
            .map_err(|e| format!("{url:?}: {e}"))?
            .url;
        reachable(&base_url)
            .await
            .map_err(|e| format!("{url:?}: the server does not answer: {e}"))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let schema = format!(
            "{prefix}_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Ok(TestSchema { base_url, schema })
    }

    /// The schema's name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A `--db` URL for this schema (`…?schema=NAME`), e.g. for a child process.
    pub fn url(&self) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}schema={}", self.base_url, self.schema)
    }

    /// Refreshes the planner's statistics of the schema's tables (`ANALYZE`), as autovacuum
    /// would before long: for a benchmark that bulk-loads a fresh schema on a server that runs
    /// without autovacuum, where the planner would otherwise keep judging the tables empty.
    pub async fn analyze(&self) -> Result<(), String> {
        let (client, connection) = self
            .base_url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| e.to_string())?
            .connect(NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(connection);
        let s = &self.schema;
        let r = client
            .batch_execute(&format!("ANALYZE {s}.items, {s}.checkpoints, {s}.workers"))
            .await
            .map_err(|e| e.to_string());
        drop(client);
        let _ = conn.await;
        r
    }

    /// Opens (creating and migrating) a store on this schema.
    pub async fn open(&self) -> leasehold_core::StoreResult<PgStore> {
        PgStore::open(&self.url()).await
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let url = self.base_url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        // Drop may run inside a tokio runtime, which must not be blocked on: a thread of its
        // own with a runtime of its own does the drop.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let (client, connection) = url
                    .parse::<tokio_postgres::Config>()
                    .map_err(|e| e.to_string())?
                    .connect(NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                let conn = tokio::spawn(connection);
                let r = client.batch_execute(&sql).await.map_err(|e| e.to_string());
                drop(client);
                let _ = conn.await;
                r
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = dropped.map_err(|_| "panicked".to_string()) {
            eprintln!("warning: could not drop test schema {}: {e}", self.schema);
        }
    }
}

/// Whether [`REQUIRE_ENV`] asks for a server.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// Fails the calling test when a server is required; otherwise announces the skip on the
/// terminal (past the harness's capture) and gives the reason back.
fn skip_or_fail(why: &str) -> String {
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("a PostgreSQL test")
        .to_string();
    if required() {
        panic!("{test}: {REQUIRE_ENV} is set but PostgreSQL is not available: {why}");
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "skipped {test}: PostgreSQL not available: {why}"
    );
    why.to_string()
}

/// Connects once and runs `SELECT 1`, within [`REACH_TIMEOUT`].
async fn reachable(url: &str) -> Result<(), String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    config.connect_timeout(REACH_TIMEOUT);
    let attempt = async {
        let (client, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
        let conn = tokio::spawn(connection);
        let r = client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        drop(client);
        let _ = conn.await;
        r
    };
    tokio::time::timeout(REACH_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no answer within {REACH_TIMEOUT:?}"))?
}

/// A store on a fresh schema and its guard, or `None` when the test is skipped (the reason
/// was written to the terminal).
pub async fn store_or_skip(test: &str, prefix: &str) -> Option<(PgStore, TestSchema)> {
    match TestSchema::create(prefix).await {
        Ok(schema) => {
            let store = schema
                .open()
                .await
                .unwrap_or_else(|e| panic!("{test}: open a fresh PostgreSQL schema: {e}"));
            Some((store, schema))
        }
        // `create` has announced the skip (or failed the test when a server is required).
        Err(_) => None,
    }
}
