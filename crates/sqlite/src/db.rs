//! The connection handle: every operation runs as a closure on tokio-rusqlite's connection
//! thread, so no SQLite call ever blocks a tokio worker.
//!
//! Two ways in:
//! - [`Db::call`] runs one closure, which opens its own transaction if it writes ([`write`]).
//! - [`Db::grouped`] is the hot path's group commit: the short fenced writes (acquire, renew,
//!   complete, fail) that arrive while the connection is busy queue up and then share one
//!   `BEGIN IMMEDIATE … COMMIT`. Each caller still gets its own result (its own `LeaseLost`),
//!   and gets it only after that transaction has committed, so an acknowledged write is durable
//!   exactly as if it had committed alone. A WAL commit writes every page the transaction
//!   dirtied; many leases and completions dirty the same few index pages, so one commit for a
//!   group costs little more than one for a single write.
//!
//! Faults it survives:
//! - A panic inside an operation kills tokio-rusqlite's connection thread for good (its
//!   transaction rolls back as the connection drops). The call that panicked fails; the handle
//!   then opens a new connection to the same file ([`Db::revive`]) before it answers, so the
//!   calls that follow work. Only a handle opened on a file can reopen.
//! - The group's flush runs as a spawned task. If that task is dropped before it hands the
//!   queue to the connection thread (its runtime shut down), a guard fails whatever is queued
//!   and clears the flag, so later writes schedule a flush of their own instead of waiting
//!   forever behind one that will never run.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use leasehold_core::{StoreError, StoreResult};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use crate::error::{from_call, OpError, OpResult};

/// Called on the connection thread right before a group's transaction commits, with the names
/// of its operations in order. A fault-injection hook: tests stop or kill the process there.
pub(crate) use crate::GroupCommitHook as CommitHook;

/// Opens a fresh connection to the store's file (checked and configured as at open).
pub(crate) type Opener = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = StoreResult<tokio_rusqlite::Connection>> + Send>>
        + Send
        + Sync,
>;

/// One connection (one OS thread) shared by every clone of the store. SQLite allows one writer
/// at a time anyway; a single connection also serialises this process's operations without a
/// lock of our own.
#[derive(Clone)]
pub(crate) struct Db {
    link: Arc<Link>,
    group: Arc<Group>,
}

/// The current connection and how to replace it.
struct Link {
    /// A std Mutex: held only to clone or swap the handle (a channel sender), never across an
    /// await.
    conn: Mutex<tokio_rusqlite::Connection>,
    /// `None` for a connection that cannot be reopened (an in-memory database).
    opener: Option<Opener>,
    /// One revival at a time, so that callers failing together open one connection, not one
    /// each. A tokio Mutex: it is held across the open.
    reviving: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// A handle on `conn`; `opener`, when given, replaces a connection whose thread died.
    pub(crate) fn new(conn: tokio_rusqlite::Connection, opener: Option<Opener>) -> Self {
        Db {
            link: Arc::new(Link {
                conn: Mutex::new(conn),
                opener,
                reviving: tokio::sync::Mutex::new(()),
            }),
            group: Arc::default(),
        }
    }

    fn conn(&self) -> tokio_rusqlite::Connection {
        self.link
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs `f` on the connection thread. If the thread dies during the call (a panic in `f`),
    /// the call fails with a backend error, and the connection has been reopened by the time it
    /// returns.
    pub(crate) async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Connection) -> OpResult<T> + Send + 'static,
        T: Send + 'static,
    {
        match self.conn().call(f).await.map_err(from_call) {
            Err(StoreError::Closed) => Err(self.died().await),
            other => other,
        }
    }

    /// Runs `f` inside the next group transaction and returns its result once that transaction
    /// has committed. `name` says what the operation is (for the commit hook).
    ///
    /// The contract that lets writes share a transaction without savepoints: `f` writes with
    /// at most one statement, after any reads, or returns an error before writing. A refused
    /// operation then changed nothing, and a statement that fails is undone by SQLite itself, so
    /// an `Err` from `f` leaves the rest of the group intact. Only when an error ends the whole
    /// transaction (SQLite rolls it back on I/O errors, a full disk, …) does every operation of
    /// the group fail, with a backend error its caller may retry.
    pub(crate) async fn grouped<T, F>(&self, name: &'static str, f: F) -> StoreResult<T>
    where
        F: FnOnce(&Transaction<'_>) -> OpResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = Box::new(Pending {
            name,
            f: Some(f),
            result: None,
            reply,
        });
        if self.group.push(op) {
            self.flush();
        }
        match answer.await {
            Ok(Err(StoreError::Closed)) => Err(self.died().await),
            Ok(result) => result,
            // A dropped reply means the connection thread died with the group in hand.
            Err(_) => Err(self.died().await),
        }
    }

    /// Sets (or clears) the hook called right before each group commit.
    pub(crate) fn set_commit_hook(&self, hook: Option<CommitHook>) {
        *self.group.hook.lock().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    /// The error of a call whose connection thread died: the connection is revived first, so
    /// that the caller's next call finds a working one.
    async fn died(&self) -> StoreError {
        if self.revive().await {
            StoreError::Backend(
                "the SQLite connection thread died during this call (a panic inside an \
                 operation); the call did not complete and the connection was reopened"
                    .into(),
            )
        } else {
            StoreError::Closed
        }
    }

    /// Makes sure the current connection's thread is alive, reopening the file if it is not.
    /// Returns whether a working connection is in place.
    pub(crate) async fn revive(&self) -> bool {
        let _one_at_a_time = self.link.reviving.lock().await;
        // Another caller may have reopened it already; a trivial call tells.
        let alive = self
            .conn()
            .call(|_| -> Result<(), rusqlite::Error> { Ok(()) })
            .await
            .is_ok();
        if alive {
            return true;
        }
        let Some(opener) = &self.link.opener else {
            return false;
        };
        match opener().await {
            Ok(fresh) => {
                *self.link.conn.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
                tracing::warn!("the SQLite connection thread died; reopened the connection");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the SQLite connection thread died and reopening failed; the next call tries again");
                false
            }
        }
    }

    /// Asks the connection thread to commit whatever is queued when it gets there. Spawned, so
    /// that a caller whose future is dropped cannot strand the queue: exactly one flush is in
    /// flight while `scheduled` is set.
    fn flush(&self) {
        let conn = self.conn();
        let group = self.group.clone();
        // Dropped unfired only if the task never got the queue to the thread.
        let unflushed = Unflushed(Some(group.clone()));
        tokio::spawn(async move {
            let unflushed = unflushed;
            let on_thread = group.clone();
            let ran = conn
                .call(move |c| -> OpResult<()> {
                    commit_group(c, &on_thread);
                    Ok(())
                })
                .await;
            unflushed.disarm();
            if ran.is_err() {
                // The connection is gone: fail everyone queued (dropping a reply makes its
                // caller revive the connection), so later writes schedule a flush of their own.
                drop(group.take());
            }
        });
    }
}

/// Fails the queued writes if a flush task is dropped before its call returned: the task's
/// runtime shut down, so nobody would ever commit them, and `scheduled` would stay set.
struct Unflushed(Option<Arc<Group>>);

impl Unflushed {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Unflushed {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            // Each is answered with a retryable failure; none of them ran.
            answer_all(
                group.take(),
                Err("the flush task was dropped before it ran (its runtime shut down)"),
            );
        }
    }
}

/// The queue of writes waiting for the next group commit. A std Mutex: it is held for a push or
/// a swap, never across an await or a statement.
#[derive(Default)]
struct Group {
    queue: Mutex<Queue>,
    hook: Mutex<Option<CommitHook>>,
}

#[derive(Default)]
struct Queue {
    ops: Vec<Box<dyn GroupedOp>>,
    /// A flush is in flight that has not yet taken the queue.
    scheduled: bool,
}

impl Group {
    /// Queues `op`; returns whether the caller must schedule a flush.
    fn push(&self, op: Box<dyn GroupedOp>) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.ops.push(op);
        !std::mem::replace(&mut q.scheduled, true)
    }

    /// Takes everything queued. What arrives afterwards schedules the next flush.
    fn take(&self) -> Vec<Box<dyn GroupedOp>> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.scheduled = false;
        std::mem::take(&mut q.ops)
    }

    fn hook(&self) -> Option<CommitHook> {
        self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One write in a group, with its caller's reply.
trait GroupedOp: Send {
    fn name(&self) -> &'static str;
    /// Runs the write; returns the error if it ended the whole transaction.
    fn run(&mut self, tx: &Transaction<'_>) -> Option<String>;
    /// Answers the caller: its own result if the group committed, else the group's failure.
    fn answer(self: Box<Self>, committed: Result<(), &str>);
}

struct Pending<T, F> {
    name: &'static str,
    f: Option<F>,
    result: Option<OpResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> GroupedOp for Pending<T, F>
where
    F: FnOnce(&Transaction<'_>) -> OpResult<T> + Send,
    T: Send,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn run(&mut self, tx: &Transaction<'_>) -> Option<String> {
        let f = self.f.take()?;
        let result = f(tx);
        let fatal = match &result {
            // SQLite rolled the whole transaction back: nothing of the group survives.
            Err(OpError::Db(e)) if tx.is_autocommit() => Some(e.to_string()),
            _ => None,
        };
        self.result = Some(result);
        fatal
    }

    fn answer(self: Box<Self>, committed: Result<(), &str>) {
        let out = match (committed, self.result) {
            (Ok(()), Some(result)) => result.map_err(StoreError::from),
            (Ok(()), None) => Err(group_failed("the operation did not run")),
            (Err(why), _) => Err(group_failed(why)),
        };
        // The caller may have gone away; its write committed (or not) all the same.
        let _ = self.reply.send(out);
    }
}

/// A group transaction failed as a whole: a backend failure, which callers may retry.
fn group_failed(why: &str) -> StoreError {
    StoreError::Backend(format!("group commit failed: {why}").into())
}

/// Runs every queued write in one write transaction, commits, then answers each caller. Runs on
/// the connection thread.
fn commit_group(c: &mut Connection, group: &Group) {
    let mut ops = group.take();
    if ops.is_empty() {
        return;
    }
    let tx = match c.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return answer_all(ops, Err(&e.to_string())),
    };
    for op in ops.iter_mut() {
        if let Some(why) = op.run(&tx) {
            drop(tx);
            return answer_all(ops, Err(&why));
        }
    }
    if let Some(hook) = group.hook() {
        let names: Vec<&'static str> = ops.iter().map(|op| op.name()).collect();
        hook(&names);
    }
    // Answers go out only now: an acknowledged write has committed.
    match tx.commit() {
        Ok(()) => answer_all(ops, Ok(())),
        Err(e) => answer_all(ops, Err(&e.to_string())),
    }
}

fn answer_all(ops: Vec<Box<dyn GroupedOp>>, committed: Result<(), &str>) {
    for op in ops {
        op.answer(committed);
    }
}

/// Runs `f` in a write transaction and commits if it returns `Ok`; an `Err` rolls back, so a
/// refused operation (e.g. `LeaseLost`) leaves nothing behind.
///
/// `BEGIN IMMEDIATE` takes the write lock up front: a deferred transaction that reads first
/// and writes later can fail with `SQLITE_BUSY` when another process wrote in between, where
/// an immediate one waits (up to the busy timeout) and then sees the latest data.
pub(crate) fn write<T>(
    c: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> OpResult<T>,
) -> OpResult<T> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use leasehold_core::{StoreError, StoreResult};
    use rusqlite::params;

    use super::Db;
    use crate::error::{OpError, OpResult};

    #[tokio::test]
    async fn a_panic_without_a_file_to_reopen_leaves_the_store_closed() {
        let conn = tokio_rusqlite::Connection::open_in_memory()
            .await
            .expect("in-memory database");
        let db = Db::new(conn, None);
        let killed = db
            .call(|_| -> crate::error::OpResult<()> { panic!("a bug in an operation") })
            .await;
        assert!(matches!(killed, Err(StoreError::Closed)), "{killed:?}");
        let after = db.call(|_| Ok(())).await;
        assert!(matches!(after, Err(StoreError::Closed)), "{after:?}");
        let grouped = db.grouped("after", |_| Ok(())).await;
        assert!(matches!(grouped, Err(StoreError::Closed)), "{grouped:?}");
    }

    /// A handle on a file, reopened the way the store reopens it.
    async fn file_db(dir: &tempfile::TempDir) -> Db {
        let path = dir.path().join("panic.db");
        let conn = crate::schema::open(&path, crate::SqliteOptions::default())
            .await
            .expect("open");
        let opener: super::Opener = Arc::new(move || {
            let path = path.clone();
            Box::pin(
                async move { crate::schema::open(&path, crate::SqliteOptions::default()).await },
            )
        });
        let db = Db::new(conn, Some(opener));
        db.call(|c| -> OpResult<()> {
            c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")?;
            Ok(())
        })
        .await
        .expect("table");
        db
    }

    fn count(db: &Db) -> impl std::future::Future<Output = StoreResult<i64>> + '_ {
        db.call(|c| -> OpResult<i64> {
            Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
        })
    }

    #[tokio::test]
    async fn a_panicking_call_fails_then_the_connection_is_reopened_and_later_calls_work() {
        let dir = tempfile::tempdir().unwrap();
        let db = file_db(&dir).await;
        db.call(|c| -> OpResult<()> {
            c.execute("INSERT INTO t (id, n) VALUES (1, 1)", [])?;
            Ok(())
        })
        .await
        .expect("insert");
        let killed = db
            .call(|c| -> OpResult<()> {
                let tx = c.transaction()?;
                tx.execute("INSERT INTO t (id, n) VALUES (2, 2)", [])?;
                panic!("a bug in an operation")
            })
            .await;
        let Err(e) = killed else {
            panic!("the panicking call succeeded")
        };
        assert!(e.is_backend_failure(), "{e:?}");
        assert!(e.to_string().contains("reopened"), "{e}");
        // The committed row survived; the panicking call's uncommitted write did not.
        assert_eq!(count(&db).await.expect("a working call after the panic"), 1);
        let grouped = db
            .grouped("insert", |tx| -> OpResult<()> {
                tx.execute("INSERT INTO t (id, n) VALUES (3, 3)", [])?;
                Ok(())
            })
            .await;
        assert!(grouped.is_ok(), "{grouped:?}");
        assert_eq!(count(&db).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_panic_inside_a_group_fails_that_group_then_the_connection_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let db = file_db(&dir).await;
        let killed = db
            .grouped("boom", |_| -> OpResult<()> {
                panic!("a bug in a grouped write")
            })
            .await;
        assert!(
            matches!(&killed, Err(e) if e.is_backend_failure()),
            "{killed:?}"
        );
        let after = db
            .grouped("insert", |tx| -> OpResult<()> {
                tx.execute("INSERT INTO t (id, n) VALUES (1, 1)", [])?;
                Ok(())
            })
            .await;
        assert!(after.is_ok(), "{after:?}");
        assert_eq!(count(&db).await.unwrap(), 1);
    }

    #[test]
    fn a_flush_whose_runtime_is_dropped_before_it_runs_does_not_strand_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let main = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let db = main.block_on(file_db(&dir));
        // A runtime that queues a write (its first poll spawns the flush task there) and is
        // dropped before that task ever runs.
        let doomed = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut stranded = Box::pin(db.grouped("stranded", |tx| -> OpResult<()> {
            tx.execute("INSERT INTO t (id, n) VALUES (1, 1)", [])?;
            Ok(())
        }));
        doomed.block_on(async {
            assert!(futures::poll!(stranded.as_mut()).is_pending());
        });
        drop(doomed);
        main.block_on(async {
            let later = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                db.grouped("later", |tx| -> OpResult<()> {
                    tx.execute("INSERT INTO t (id, n) VALUES (2, 2)", [])?;
                    Ok(())
                }),
            )
            .await
            .expect("a later write waited forever behind a flush that never ran");
            assert!(later.is_ok(), "{later:?}");
            // The stranded write was answered too: with a retryable failure, not silence.
            let first = tokio::time::timeout(std::time::Duration::from_secs(30), stranded)
                .await
                .expect("the stranded write was never answered");
            assert!(
                matches!(&first, Err(e) if e.is_backend_failure()),
                "{first:?}"
            );
            assert_eq!(count(&db).await.unwrap(), 1);
        });
    }

    async fn counter_db() -> Db {
        let conn = tokio_rusqlite::Connection::open_in_memory()
            .await
            .expect("in-memory database");
        let db = Db::new(conn, None);
        db.call(|c| -> OpResult<()> {
            c.execute_batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL CHECK (n < 100))",
            )?;
            Ok(())
        })
        .await
        .expect("schema");
        db
    }

    /// Holds the connection thread until `release` is dropped, so that writes queue up.
    /// Returns once the connection thread is held (so a write spawned afterwards cannot reach
    /// the thread first and commit alone); it is held until `release` is dropped.
    async fn block_connection(db: &Db) -> std::sync::mpsc::Sender<()> {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (held, holding) = tokio::sync::oneshot::channel::<()>();
        let db = db.clone();
        tokio::spawn(async move {
            db.call(move |_| -> OpResult<()> {
                let _ = held.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
        });
        holding
            .await
            .expect("the connection thread runs the blocker");
        release
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_that_arrive_together_share_one_commit_and_each_gets_its_own_result() {
        let db = counter_db().await;
        let groups = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (g, s) = (groups.clone(), sizes.clone());
        db.set_commit_hook(Some(Arc::new(move |names: &[&'static str]| {
            g.fetch_add(1, Ordering::SeqCst);
            s.lock().unwrap().push(names.len());
        })));
        let release = block_connection(&db).await;
        let writes: Vec<_> = (0..10i64)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.grouped("insert", move |tx| -> OpResult<i64> {
                        // Item 7 violates the CHECK: only its own statement is undone.
                        let n = if i == 7 { 1000 } else { i };
                        tx.prepare_cached("INSERT INTO t (id, n) VALUES (?1, ?2)")?
                            .execute(params![i, n])?;
                        Ok(i)
                    })
                    .await
                })
            })
            .collect();
        // Every write is queued behind the blocked thread before it is released.
        while db.group.queue.lock().unwrap().ops.len() < 10 {
            tokio::task::yield_now().await;
        }
        drop(release);
        for (i, w) in writes.into_iter().enumerate() {
            let r = w.await.expect("task");
            if i == 7 {
                assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
            } else {
                assert_eq!(r.expect("write"), i as i64);
            }
        }
        assert_eq!(groups.load(Ordering::SeqCst), 1, "one commit for the group");
        assert_eq!(*sizes.lock().unwrap(), vec![10]);
        let rows: i64 = db
            .call(|c| -> OpResult<i64> {
                Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(
            rows, 9,
            "the failed write left nothing; the others committed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_is_answered_only_to_its_caller_after_the_commit() {
        let db = counter_db().await;
        let committed = Arc::new(AtomicUsize::new(0));
        let seen = committed.clone();
        db.set_commit_hook(Some(Arc::new(move |_: &[&'static str]| {
            seen.fetch_add(1, Ordering::SeqCst);
        })));
        let refused = db
            .grouped("refuse", |_| -> OpResult<()> {
                Err(OpError::Store(StoreError::InvalidInput("no".into())))
            })
            .await;
        assert!(
            matches!(refused, Err(StoreError::InvalidInput(_))),
            "{refused:?}"
        );
        assert_eq!(committed.load(Ordering::SeqCst), 1);
    }
}
