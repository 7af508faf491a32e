//! The hot path's batcher: acquisitions, completions, failed attempts and renewals from every
//! caller of one store, written together.
//!
//! Each of those calls goes to one task per store instead of to a pooled connection of its
//! own. The task takes whatever has queued up while its previous batch was in flight and
//! writes it in one transaction: one multi-row statement per kind of write, each fenced per
//! row (owner and epoch are part of the join, so a lost lease is a row missing from the
//! result), and one acquisition statement for all the requests that share a filter. `BEGIN`,
//! the statements and `COMMIT` go to the server pipelined, in one round trip: the whole batch
//! costs one commit, where each call used to be a commit of its own. A worker sends its
//! completion and its next acquisition together, so they land in the same batch.
//!
//! Every caller hears its own result, and only after the transaction has committed: an
//! acknowledged completion is as durable as one committed alone. If the transaction fails,
//! nothing of it applied, and every caller of the batch gets the error (and retries, as it
//! would after a failed write of its own); a deadlock or serialization failure is retried
//! here first, since nothing of the rolled-back batch applied.
//!
//! A caller that goes away after its call was queued (its future dropped) does not withdraw
//! it, as a statement already sent on a connection is not withdrawn either: the call is
//! written with its batch and its answer dropped.
//!
//! A batch never carries two writes to one item (a completion and a renewal of the same
//! lease, say): the later one waits for the next batch, so each caller's result is the one it
//! would get from a store that applied the calls one at a time, in some order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use leasehold_core::{
    AcquireRequest, FailDisposition, FailOutcome, LeaseRef, Leased, StoreError, StoreResult,
    Timestamp,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Row, Statement};

use crate::db::Db;
use crate::error::{from_pg, lease_lost, no_nul};
use crate::ops::acquire::{self, Acquisitions, Filter, PLAN_AS_USUAL, PLAN_IN_QUEUE_ORDER};
use crate::ops::complete::{Completions, COMPLETE_MANY};
use crate::ops::fail::{Failures, FAIL_MANY};
use crate::ops::renew::{Renewals, RENEW_MANY};

/// Batches in flight at once, each on a connection of its own. More batches in flight carry
/// fewer calls each, and every batch costs a commit. On the project's 2-core machine one
/// measured 10–15% faster than two, and 8 or 16 slower still (docs/performance.md). With one,
/// the workers a batch answers would come back while the next batch is already on its way;
/// `linger` keeps them together in one batch instead of two halves.
const IN_FLIGHT: usize = 1;

/// Opens a batch's transaction. Its statements are planned once per connection: left to
/// itself, PostgreSQL plans these statements anew for every execution (their generic plans'
/// estimates, made without the arrays' lengths, look dearer than the custom plans it tried
/// first), and planning them cost more than running them.
const BEGIN: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// The longest a batch waits for the holders the previous batch handed items to (see
/// `linger`).
const LINGER_MAX: Duration = Duration::from_millis(2);

/// The most calls one batch carries; the rest wait for the next.
const MAX_BATCH: usize = 1024;

/// How often a batch that failed on a deadlock or a serialization failure (and so applied
/// nothing) is tried again before its callers get the error.
const CONFLICT_RETRIES: usize = 3;

/// What [`crate::PgStore::set_batch_commit_hook`] calls right before each batch commits: the
/// names of the calls it carries, in order (`acquire`, `complete`, `fail`, `renew`). The batch
/// commits when the returned future completes. A fault-injection hook: tests stop or kill the
/// process there.
pub type BatchCommitHook =
    Arc<dyn Fn(&[&'static str]) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The handle every clone of a store shares; the task ends when the last clone goes.
#[derive(Clone)]
pub(crate) struct Batcher {
    calls: mpsc::UnboundedSender<Call>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

/// Counters and the hook, shared with the task.
#[derive(Default)]
struct Shared {
    hook: Mutex<Option<BatchCommitHook>>,
    /// Ended attempts the history keeps per item (the store's `history_keep`).
    keep: u32,
    batches: AtomicU64,
    calls: AtomicU64,
}

impl Shared {
    fn hook(&self) -> Option<BatchCommitHook> {
        self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Committed batches and the calls they carried, since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Transactions the batcher committed.
    pub batches: u64,
    /// Calls (acquisitions, completions, failed attempts, renewals) those transactions carried.
    pub calls: u64,
}

/// One caller's call and where its answer goes.
enum Call {
    Acquire {
        req: AcquireRequest,
        now: Timestamp,
        reply: oneshot::Sender<StoreResult<Vec<Leased>>>,
    },
    Complete {
        lease: LeaseRef,
        output: Value,
        now: Timestamp,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    Fail {
        lease: LeaseRef,
        error: String,
        disposition: FailDisposition,
        now: Timestamp,
        reply: oneshot::Sender<StoreResult<FailOutcome>>,
    },
    Renew {
        lease: LeaseRef,
        duration: Duration,
        now: Timestamp,
        reply: oneshot::Sender<StoreResult<Timestamp>>,
    },
}

impl Call {
    fn name(&self) -> &'static str {
        match self {
            Call::Acquire { .. } => "acquire",
            Call::Complete { .. } => "complete",
            Call::Fail { .. } => "fail",
            Call::Renew { .. } => "renew",
        }
    }

    /// The item a holder's write changes (acquisitions change rows nobody holds).
    fn item(&self) -> Option<i64> {
        match self {
            Call::Acquire { .. } => None,
            Call::Complete { lease, .. } | Call::Fail { lease, .. } | Call::Renew { lease, .. } => {
                Some(lease.item.0)
            }
        }
    }

    /// Answers with the batch's failure.
    fn refuse(self, e: &SharedError) {
        // A caller that went away (cancelled) no longer needs its answer.
        match self {
            Call::Acquire { reply, .. } => drop(reply.send(Err(e.get()))),
            Call::Complete { reply, .. } => drop(reply.send(Err(e.get()))),
            Call::Fail { reply, .. } => drop(reply.send(Err(e.get()))),
            Call::Renew { reply, .. } => drop(reply.send(Err(e.get()))),
        }
    }
}

/// One failure, handed to every caller of the batch.
struct SharedError(StoreError);

impl SharedError {
    fn get(&self) -> StoreError {
        match &self.0 {
            StoreError::Closed => StoreError::Closed,
            StoreError::InvalidInput(m) => StoreError::InvalidInput(m.clone()),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            other => StoreError::Backend(other.to_string().into()),
        }
    }
}

impl Batcher {
    /// Starts the store's batcher task on the current tokio runtime.
    pub(crate) fn start(db: Db, keep: u32) -> Batcher {
        let (calls, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            keep,
            ..Shared::default()
        });
        tokio::spawn(run(db, rx, shared.clone()));
        Batcher { calls, shared }
    }

    pub(crate) fn set_hook(&self, hook: Option<BatchCommitHook>) {
        *self.shared.hook.lock().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    pub(crate) fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.shared.batches.load(Ordering::Relaxed),
            calls: self.shared.calls.load(Ordering::Relaxed),
        }
    }

    /// Queues a call and waits for its answer. Sent synchronously, before the first await,
    /// so calls a caller makes together (a completion and its next acquisition) are queued
    /// together.
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Call,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        self.calls.send(make(tx)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Leases up to `req.limit` items (see `ops::acquire`).
    pub(crate) async fn acquire(
        &self,
        req: &AcquireRequest,
        now: Timestamp,
    ) -> StoreResult<Vec<Leased>> {
        // Refused here, alone: a value the server refuses would fail the whole batch.
        req.validate().map_err(StoreError::InvalidInput)?;
        no_nul("owner", &req.owner)?;
        no_nul("node id", &req.node_id)?;
        for kind in &req.kinds {
            no_nul("kind", kind)?;
        }
        if let Some(group) = &req.group_id {
            no_nul("group id", group)?;
        }
        let req = req.clone();
        self.call(|reply| Call::Acquire { req, now, reply }).await
    }

    /// Completes the leased item with `output`, fenced.
    pub(crate) async fn complete(
        &self,
        lease: &LeaseRef,
        output: Value,
        now: Timestamp,
    ) -> StoreResult<()> {
        no_nul("owner", &lease.owner)?;
        let lease = lease.clone();
        self.call(|reply| Call::Complete {
            lease,
            output,
            now,
            reply,
        })
        .await
    }

    /// Records a failed attempt, fenced: a retry or a dead-letter, by the item's budget.
    pub(crate) async fn fail(
        &self,
        lease: &LeaseRef,
        error: &str,
        disposition: FailDisposition,
        now: Timestamp,
    ) -> StoreResult<FailOutcome> {
        no_nul("owner", &lease.owner)?;
        let (lease, error) = (lease.clone(), error.to_owned());
        self.call(|reply| Call::Fail {
            lease,
            error,
            disposition,
            now,
            reply,
        })
        .await
    }

    /// Extends a lease to `now + duration`, fenced; returns the new expiry.
    pub(crate) async fn renew(
        &self,
        lease: &LeaseRef,
        duration: Duration,
        now: Timestamp,
    ) -> StoreResult<Timestamp> {
        no_nul("owner", &lease.owner)?;
        let lease = lease.clone();
        self.call(|reply| Call::Renew {
            lease,
            duration,
            now,
            reply,
        })
        .await
    }
}

/// The task: up to [`IN_FLIGHT`] batches at a time; whatever
/// arrives while they are in flight is the next batch. A call to an item that a batch in
/// flight writes waits for that batch to finish, so two writes to one item are applied in the
/// order they came, never side by side.
async fn run(db: Db, mut rx: mpsc::UnboundedReceiver<Call>, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let finished = Arc::new(Notify::new());
    // What the last committed batch leased and how long it took (see `linger`).
    let last: Arc<Mutex<(usize, Duration)>> = Arc::new(Mutex::new((0, Duration::ZERO)));
    let mut waiting: VecDeque<Call> = VecDeque::new();
    let mut open = true;
    loop {
        if waiting.is_empty() {
            match rx.recv().await {
                Some(call) => waiting.push_back(call),
                None => return,
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        while open && waiting.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(call) => waiting.push_back(call),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let (returning, took) = *last.lock().unwrap_or_else(|p| p.into_inner());
        linger(&mut rx, &mut waiting, &mut open, returning, took).await;
        let mut batch = Vec::with_capacity(waiting.len().min(MAX_BATCH));
        let mut items = Vec::new();
        let mut later = VecDeque::new();
        {
            let mut busy = in_flight.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(call) = waiting.pop_front() {
                if batch.len() == MAX_BATCH {
                    later.push_back(call);
                    continue;
                }
                match call.item() {
                    // Already written by this batch or one in flight: the next batch.
                    Some(id) if !busy.insert(id) => later.push_back(call),
                    Some(id) => {
                        items.push(id);
                        batch.push(call);
                    }
                    None => batch.push(call),
                }
            }
        }
        waiting = later;
        if batch.is_empty() {
            // Everything waits on a batch in flight.
            drop(slot);
            tokio::select! {
                () = finished.notified() => {}
                call = rx.recv(), if open => match call {
                    Some(call) => waiting.push_back(call),
                    None => open = false,
                },
            }
            continue;
        }
        let (db, shared) = (db.clone(), shared.clone());
        let (in_flight, finished, last) = (in_flight.clone(), finished.clone(), last.clone());
        tokio::spawn(async move {
            let began = Instant::now();
            let leased = write(&db, batch, &shared).await;
            *last.lock().unwrap_or_else(|p| p.into_inner()) = (leased, began.elapsed());
            let mut busy = in_flight.lock().unwrap_or_else(|p| p.into_inner());
            for id in items {
                busy.remove(&id);
            }
            drop(busy);
            finished.notify_one();
            drop(slot);
        });
    }
}

/// Before a batch is sent, waits briefly for the holders the last batch handed items to.
///
/// With one batch in flight, the workers that a batch answers come back (a completion and
/// their next acquisition) while the next batch is already on its way: sent at once, batches
/// would alternate between two halves of the workers, each paying a whole commit for half of
/// them. So the next batch waits until as many completions and failed attempts have queued as
/// the last batch leased items (`returning`), or until [`LINGER_MAX`] (and no longer than
/// the last batch took, `took`: waiting never costs more than the commit it saves) has passed,
/// whichever is first. A batch after one that leased nothing (an idle node's acquisitions, a
/// heartbeat's renewals) does not wait: only a holder's return is waited for, and never past
/// the deadline, so a slow handler delays its batch by at most that once.
async fn linger(
    rx: &mut mpsc::UnboundedReceiver<Call>,
    waiting: &mut VecDeque<Call>,
    open: &mut bool,
    returning: usize,
    took: Duration,
) {
    let settled = |w: &VecDeque<Call>| {
        w.iter()
            .filter(|c| matches!(c, Call::Complete { .. } | Call::Fail { .. }))
            .count()
    };
    if returning == 0 || !*open || settled(waiting) >= returning {
        return;
    }
    let deadline = tokio::time::Instant::now() + took.min(LINGER_MAX);
    let mut back = settled(waiting);
    while back < returning && waiting.len() < MAX_BATCH {
        tokio::select! {
            call = rx.recv() => match call {
                Some(call) => {
                    if matches!(call, Call::Complete { .. } | Call::Fail { .. }) {
                        back += 1;
                    }
                    waiting.push_back(call);
                }
                None => {
                    *open = false;
                    return;
                }
            },
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// One batch's statements' inputs, built from its calls.
#[derive(Default)]
struct Parts {
    renewals: Renewals,
    failures: Failures,
    completions: Completions,
    acquisitions: Vec<Acquisitions>,
}

impl Parts {
    fn of(batch: &[Call], keep: u32) -> Parts {
        let mut parts = Parts {
            failures: Failures::new(keep),
            ..Parts::default()
        };
        for (i, call) in batch.iter().enumerate() {
            match call {
                Call::Acquire { req, now, .. } => {
                    let filter = Filter::of(req);
                    let pos = parts
                        .acquisitions
                        .iter()
                        .position(|a| a.filter() == &filter);
                    let group = match pos {
                        Some(p) => &mut parts.acquisitions[p],
                        None => {
                            parts.acquisitions.push(Acquisitions::new(filter));
                            parts.acquisitions.last_mut().expect("just pushed")
                        }
                    };
                    group.push(i, req, *now);
                }
                Call::Complete {
                    lease, output, now, ..
                } => parts.completions.push(lease, output.clone(), *now),
                Call::Fail {
                    lease,
                    error,
                    disposition,
                    now,
                    ..
                } => parts.failures.push(lease, error, *disposition, *now),
                Call::Renew {
                    lease,
                    duration,
                    now,
                    ..
                } => parts.renewals.push(lease, *duration, *now),
            }
        }
        // Those planned in queue order first (see `transaction`); a stable sort keeps the
        // order the requests came in within each.
        parts
            .acquisitions
            .sort_by_key(|a| !a.filter().in_queue_order());
        parts
    }
}

/// What a committed batch did.
struct Done {
    /// Current leases, each with whether its item is marked for cancellation (not renewed).
    renewed: HashMap<i64, bool>,
    failed: HashMap<i64, FailOutcome>,
    completed: HashSet<i64>,
    /// Leased rows by the index of the acquisition call they went to.
    leased: HashMap<usize, Vec<Row>>,
}

/// Writes one batch and answers its callers; returns how many items it leased.
async fn write(db: &Db, batch: Vec<Call>, shared: &Shared) -> usize {
    let parts = Parts::of(&batch, shared.keep);
    let names: Vec<&'static str> = batch.iter().map(Call::name).collect();
    let mut tries = 0;
    let result = loop {
        let conn = match db.conn().await {
            Ok(c) => c,
            Err(e) => break Err(SharedError(e)),
        };
        match transaction(&conn, &parts, shared.hook(), &names).await {
            Ok(done) => break Ok(done),
            Err(e) => {
                // The connection may be mid-transaction: never hand it back to the pool.
                drop(Object::take(conn));
                let conflict = matches!(
                    e.code(),
                    Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
                );
                if conflict && tries < CONFLICT_RETRIES {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "batch rolled back on a conflict; writing it again");
                    continue;
                }
                break Err(SharedError(from_pg(e)));
            }
        }
    };
    match result {
        Ok(done) => {
            shared.batches.fetch_add(1, Ordering::Relaxed);
            shared
                .calls
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let leased = done.leased.values().map(Vec::len).sum();
            answer(batch, done);
            leased
        }
        Err(e) => {
            tracing::warn!(error = %e.0, calls = batch.len(), "a batch of the hot path's writes failed; every call in it is refused");
            for call in batch {
                call.refuse(&e);
            }
            0
        }
    }
}

/// Runs the batch's statements in one transaction, pipelined: `BEGIN`, each statement and
/// `COMMIT` are all sent before the first answer is read. If any statement fails, the server
/// has aborted the transaction and answers the `COMMIT` with a rollback, so the statement's
/// error is what this returns. With a hook, the `COMMIT` waits for it instead.
async fn transaction(
    c: &Object,
    parts: &Parts,
    hook: Option<BatchCommitHook>,
    names: &[&'static str],
) -> Result<Done, tokio_postgres::Error> {
    let renew = prepare(c, !parts.renewals.is_empty(), RENEW_MANY).await?;
    let fail = prepare(c, !parts.failures.is_empty(), FAIL_MANY).await?;
    let complete = prepare(c, !parts.completions.is_empty(), COMPLETE_MANY).await?;
    let mut acquire = Vec::with_capacity(parts.acquisitions.len());
    for a in &parts.acquisitions {
        acquire.push(c.prepare_cached(a.filter().sql()).await?);
    }
    // `Parts::of` put the acquisitions planned in queue order first.
    let in_order = parts
        .acquisitions
        .iter()
        .take_while(|a| a.filter().in_queue_order())
        .count();
    let run_acquisitions = |range: std::ops::Range<usize>| {
        futures::future::join_all(
            parts.acquisitions[range.clone()]
                .iter()
                .zip(&acquire[range])
                .map(|(a, s)| a.run(c, s)),
        )
    };
    let set_planner = |needed: bool, sql: &'static str| async move {
        if needed {
            c.batch_execute(sql).await
        } else {
            Ok(())
        }
    };

    // `futures::join!` polls in the order written, and tokio-postgres sends a request when
    // its future is first polled: BEGIN goes first, then the writes in this order (renewals
    // before completions, so a lease still renews before it ends), acquisitions last.
    let statements = async {
        let (renewed, failed, completed, acquired) = futures::join!(
            async {
                match &renew {
                    Some(s) => parts.renewals.run(c, s).await,
                    None => Ok(HashMap::new()),
                }
            },
            async {
                match &fail {
                    Some(s) => parts.failures.run(c, s).await,
                    None => Ok(HashMap::new()),
                }
            },
            async {
                match &complete {
                    Some(s) => parts.completions.run(c, s).await,
                    None => Ok(HashSet::new()),
                }
            },
            async {
                let n = parts.acquisitions.len();
                let (ordered, in_order_rows, usual, other_rows) = futures::join!(
                    set_planner(in_order > 0, PLAN_IN_QUEUE_ORDER),
                    run_acquisitions(0..in_order),
                    set_planner(in_order > 0 && n > in_order, PLAN_AS_USUAL),
                    run_acquisitions(in_order..n),
                );
                ordered?;
                usual?;
                Ok::<_, tokio_postgres::Error>(in_order_rows.into_iter().chain(other_rows))
            },
        );
        let mut leased: HashMap<usize, Vec<Row>> = HashMap::new();
        for rows in acquired? {
            for (who, row) in rows? {
                leased.entry(who).or_default().push(row);
            }
        }
        Ok::<_, tokio_postgres::Error>(Done {
            renewed: renewed?,
            failed: failed?,
            completed: completed?,
            leased,
        })
    };
    match hook {
        None => {
            let (begun, done, committed) = futures::join!(
                c.batch_execute(BEGIN),
                statements,
                c.batch_execute("COMMIT")
            );
            begun?;
            let done = done?;
            committed?;
            Ok(done)
        }
        Some(hook) => {
            let (begun, done) = futures::join!(c.batch_execute(BEGIN), statements);
            begun?;
            let done = done?;
            hook(names).await;
            c.batch_execute("COMMIT").await?;
            Ok(done)
        }
    }
}

async fn prepare(
    c: &Object,
    needed: bool,
    sql: &str,
) -> Result<Option<Statement>, tokio_postgres::Error> {
    if needed {
        c.prepare_cached(sql).await.map(Some)
    } else {
        Ok(None)
    }
}

/// Tells each caller of a committed batch its own result.
fn answer(batch: Vec<Call>, mut done: Done) {
    for (i, call) in batch.into_iter().enumerate() {
        // A caller that went away (cancelled) no longer needs its answer.
        match call {
            Call::Acquire { req, now, reply } => {
                let rows = done.leased.remove(&i).unwrap_or_default();
                let _ = reply.send(acquire::leased(&req, now, &rows));
            }
            Call::Complete { lease, reply, .. } => {
                let r = if done.completed.contains(&lease.item.0) {
                    Ok(())
                } else {
                    Err(lease_lost(&lease))
                };
                let _ = reply.send(r);
            }
            Call::Fail { lease, reply, .. } => {
                let r = done
                    .failed
                    .get(&lease.item.0)
                    .copied()
                    .ok_or_else(|| lease_lost(&lease));
                let _ = reply.send(r);
            }
            Call::Renew {
                lease,
                duration,
                now,
                reply,
            } => {
                let r = match done.renewed.get(&lease.item.0) {
                    Some(false) => Ok(now.plus(duration)),
                    Some(true) => Err(StoreError::CancelRequested {
                        item: lease.item,
                        owner: lease.owner.clone(),
                        epoch: lease.epoch,
                    }),
                    None => Err(lease_lost(&lease)),
                };
                let _ = reply.send(r);
            }
        }
    }
}
