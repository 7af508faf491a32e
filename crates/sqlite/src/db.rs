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

use std::sync::{Arc, Mutex};

use leasehold_core::{StoreError, StoreResult};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use crate::error::{from_call, OpError, OpResult};

/// Called on the connection thread right before a group's transaction commits, with the names
/// of its operations in order. A fault-injection hook: tests stop or kill the process there.
pub(crate) use crate::GroupCommitHook as CommitHook;

/// One connection (one OS thread) shared by every clone of the store. SQLite allows one writer
/// at a time anyway; a single connection also serialises this process's operations without a
/// lock of our own.
#[derive(Clone)]
pub(crate) struct Db {
    conn: tokio_rusqlite::Connection,
    group: Arc<Group>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    pub(crate) fn new(conn: tokio_rusqlite::Connection) -> Self {
        Db {
            conn,
            group: Arc::default(),
        }
    }

    /// Runs `f` on the connection thread. `f` must not panic: a panic kills the thread, and
    /// every later call fails with `Closed`.
    pub(crate) async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: FnOnce(&mut Connection) -> OpResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.conn.call(f).await.map_err(from_call)
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
        // A dropped reply means the connection thread died with the group in hand.
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Sets (or clears) the hook called right before each group commit.
    pub(crate) fn set_commit_hook(&self, hook: Option<CommitHook>) {
        *self.group.hook.lock().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    /// Asks the connection thread to commit whatever is queued when it gets there. Spawned, so
    /// that a caller whose future is dropped cannot strand the queue: exactly one flush is in
    /// flight while `scheduled` is set.
    fn flush(&self) {
        let conn = self.conn.clone();
        let group = self.group.clone();
        tokio::spawn(async move {
            let on_thread = group.clone();
            let ran = conn
                .call(move |c| -> OpResult<()> {
                    commit_group(c, &on_thread);
                    Ok(())
                })
                .await;
            if ran.is_err() {
                // The connection is gone: fail everyone queued (dropping a reply answers
                // `Closed`), so later writes schedule a flush of their own and fail the same way.
                drop(group.take());
            }
        });
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

    use leasehold_core::StoreError;
    use rusqlite::params;

    use super::Db;
    use crate::error::{OpError, OpResult};

    #[tokio::test]
    async fn a_panic_on_the_connection_thread_leaves_the_store_closed() {
        let conn = tokio_rusqlite::Connection::open_in_memory()
            .await
            .expect("in-memory database");
        let db = Db::new(conn);
        let killed = db
            .call(|_| -> crate::error::OpResult<()> { panic!("a bug in an operation") })
            .await;
        assert!(matches!(killed, Err(StoreError::Closed)), "{killed:?}");
        let after = db.call(|_| Ok(())).await;
        assert!(matches!(after, Err(StoreError::Closed)), "{after:?}");
        let grouped = db.grouped("after", |_| Ok(())).await;
        assert!(matches!(grouped, Err(StoreError::Closed)), "{grouped:?}");
    }

    async fn counter_db() -> Db {
        let conn = tokio_rusqlite::Connection::open_in_memory()
            .await
            .expect("in-memory database");
        let db = Db::new(conn);
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
    fn block_connection(db: &Db) -> std::sync::mpsc::Sender<()> {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let db = db.clone();
        tokio::spawn(async move {
            db.call(move |_| -> OpResult<()> {
                let _ = wait.recv();
                Ok(())
            })
            .await
        });
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
        let release = block_connection(&db);
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
