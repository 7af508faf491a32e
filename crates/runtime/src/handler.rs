//! What a handler sees ([`JobContext`]) and returns ([`JobError`]).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use leasehold_core::{
    Clock, DecisionRequest, Dependency, Item, ItemId, LeaseRef, NewItem, Store, StoreError,
};

use crate::faults::FaultPoints;

/// A handler as the tree stores it: an async function from a job's context to its output.
pub(crate) type Handler =
    Arc<dyn Fn(JobContext) -> BoxFuture<'static, Result<Value, JobError>> + Send + Sync>;

/// Wraps a user's async fn returning any serializable output into a [`Handler`].
pub(crate) fn boxed_handler<F, Fut, O>(f: F) -> Handler
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, JobError>> + Send + 'static,
    O: Serialize,
{
    Arc::new(move |ctx| {
        let fut = f(ctx);
        Box::pin(async move {
            let out = fut.await?;
            serde_json::to_value(out)
                .map_err(|e| JobError::permanent(format!("handler output is not JSON: {e}")))
        })
    })
}

/// A handler's failure: retryable (the item goes back to pending after a backoff, while its
/// retry budget lasts) or permanent (dead-lettered at once).
///
/// Any error converts into a retryable `JobError` with `?`; mark the ones that retrying cannot
/// fix with [`JobError::permanent`].
///
/// A retryable error's item waits its kind's backoff
/// ([`LeaseholdBuilder::kind_backoff`](crate::LeaseholdBuilder::kind_backoff)), else the
/// node's ([`LeaseholdBuilder::backoff`](crate::LeaseholdBuilder::backoff)), unless the error
/// asks for its own delay with [`JobError::retry_after`] (a rate limit's `Retry-After`).
///
/// ```
/// use leasehold_runtime::JobError;
/// use std::time::Duration;
/// fn parse(input: &str) -> Result<u32, JobError> {
///     input.parse::<u32>().map_err(JobError::permanent) // bad input never gets better
/// }
/// assert!(parse("x").unwrap_err().is_permanent());
/// let limited = JobError::retryable("429 Too Many Requests").retry_after(Duration::from_secs(30));
/// assert_eq!(limited.requested_delay(), Some(Duration::from_secs(30)));
/// ```
pub struct JobError {
    permanent: bool,
    /// The question the handler parks its item with, instead of failing it.
    decision: Option<DecisionRequest>,
    /// The delay the handler asked for; `None` leaves it to the backoff.
    retry_after: Option<Duration>,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl JobError {
    /// A failure worth retrying (a timeout, a rate limit, a flaky dependency).
    pub fn retryable(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        JobError {
            permanent: false,
            decision: None,
            retry_after: None,
            source: e.into(),
        }
    }

    /// Not a failure: parks the item until someone decides. The worker writes the park,
    /// fenced by this attempt's lease ([`Store::item_park`]): the item goes to `awaiting`,
    /// holding no lease, with `request`'s question and allowed answers, and its attempt is
    /// given back. An answer ([`NodeHandle::decide`](crate::NodeHandle::decide), `leasehold
    /// decide`) puts it back to pending; the next attempt reads the answer with
    /// [`JobContext::decision`] (and in its input under `"decision"` when the input is an
    /// object). A request that does not validate fails the attempt as a permanent error.
    ///
    /// ```
    /// use leasehold_runtime::{JobContext, JobError};
    /// use leasehold_core::DecisionRequest;
    /// async fn handler(ctx: JobContext) -> Result<String, JobError> {
    ///     match ctx.decision() {
    ///         Some("skip") => Ok("skipped".into()),
    ///         Some(other) => Ok(format!("decided {other}")),
    ///         None => Err(JobError::awaiting_decision(DecisionRequest::new(
    ///             "no contact found: skip or research by hand?",
    ///             ["skip", "manual"],
    ///         ))),
    ///     }
    /// }
    /// ```
    pub fn awaiting_decision(request: DecisionRequest) -> Self {
        JobError {
            permanent: false,
            source: format!("awaiting a decision: {}", request.question).into(),
            decision: Some(request),
            retry_after: None,
        }
    }

    /// The question this error parks its item with, if it is
    /// [`awaiting_decision`](JobError::awaiting_decision).
    pub fn decision_request(&self) -> Option<&DecisionRequest> {
        self.decision.as_ref()
    }

    /// A failure retrying cannot fix: the item is dead-lettered now.
    pub fn permanent(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        JobError {
            permanent: true,
            decision: None,
            retry_after: None,
            source: e.into(),
        }
    }

    /// Asks for the next attempt exactly `delay` from now, instead of the kind's or node's
    /// backoff (no jitter, no cap: the handler knows best, e.g. from a `Retry-After` header).
    /// The retry budget still applies: an item whose attempts are spent is dead-lettered, and
    /// a permanent error ignores the delay.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The delay asked for with [`retry_after`](JobError::retry_after), if any (`None` for a
    /// permanent error, which is never retried).
    pub fn requested_delay(&self) -> Option<Duration> {
        self.retry_after.filter(|_| !self.permanent)
    }

    /// Whether the item should be dead-lettered without further attempts.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The underlying error.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>> From<E> for JobError {
    fn from(e: E) -> Self {
        JobError::retryable(e)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobError")
            .field("permanent", &self.permanent)
            .field("retry_after", &self.retry_after)
            .field("decision", &self.decision)
            .field("source", &self.source)
            .finish()
    }
}

/// Everything a handler gets for one attempt at one item.
#[derive(Clone)]
pub struct JobContext {
    pub(crate) item: Arc<Item>,
    pub(crate) lease: LeaseRef,
    pub(crate) cancel: CancellationToken,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) faults: Arc<FaultPoints>,
    /// The execution timeout of this attempt, if any.
    pub(crate) timeout: Option<Duration>,
    /// Follow-ups asked for by [`JobContext::follow_up`]; a std mutex because it is held only
    /// to push or take, never across an await. The worker takes them when the handler returns.
    pub(crate) follow_ups: Arc<std::sync::Mutex<Vec<NewItem>>>,
    /// The node's metrics, under this item's kind.
    pub(crate) metrics: crate::metrics::JobMetrics,
    /// This worker's task as the registry row reports it.
    pub(crate) task: Arc<std::sync::Mutex<crate::node::WorkerTask>>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("item", &self.item.id)
            .field("kind", &self.item.kind)
            .field("lease", &self.lease)
            .finish()
    }
}

impl JobContext {
    /// The item's id.
    pub fn id(&self) -> ItemId {
        self.item.id
    }

    /// The node's metrics under this item's kind, for counts the handler knows and the node
    /// does not (LLM cache lookups, tool calls: the durable crate's task runner reports them).
    pub fn metrics(&self) -> &crate::metrics::JobMetrics {
        &self.metrics
    }

    /// The item's kind.
    pub fn kind(&self) -> &str {
        &self.item.kind
    }

    /// The item's input.
    pub fn input(&self) -> &Value {
        &self.item.input
    }

    /// The input decoded into `T`; a mismatch is a permanent error (retrying cannot fix it).
    pub fn input_as<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_value(self.item.input.clone()).map_err(|e| {
            JobError::permanent(format!("input does not match the expected shape: {e}"))
        })
    }

    /// Which attempt this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.item.attempts
    }

    /// The item's retry budget.
    pub fn max_attempts(&self) -> u32 {
        self.item.max_attempts
    }

    /// The lease's epoch (the fencing token).
    pub fn epoch(&self) -> i64 {
        self.lease.epoch
    }

    /// The lease this attempt writes with.
    pub fn lease(&self) -> &LeaseRef {
        &self.lease
    }

    /// The whole item as acquired.
    pub fn item(&self) -> &Item {
        &self.item
    }

    /// The answer to the question this item was last parked with
    /// ([`JobError::awaiting_decision`]), once someone decided; `None` before it was ever
    /// parked. The whole record (question, allowed answers, times) is
    /// [`Item::decision`](leasehold_core::Item::decision).
    pub fn decision(&self) -> Option<&str> {
        self.item.decision.as_ref()?.answer.as_deref()
    }

    /// The execution timeout of this attempt (the item's own, else its kind's, else the
    /// node's), if it has one. At the deadline the attempt is failed and then this context is
    /// cancelled: the handler's later writes are refused, and it is aborted after the grace
    /// period.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the lease was lost, the attempt timed out or the node is stopping: stop work
    /// and return.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the lease is lost, the attempt times out or the node stops; `select!` on
    /// it around long work.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// The cancellation token itself, to hand to sub-tasks.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Records a progress report on the item (fenced: `LeaseLost` once the lease is gone).
    pub async fn progress(&self, progress: Value) -> Result<(), StoreError> {
        self.store
            .item_progress(&self.lease, progress, self.clock.now())
            .await
    }

    /// Saves a checkpoint payload for the item (fenced).
    pub async fn checkpoint(&self, name: &str, payload: Value) -> Result<i64, StoreError> {
        self.store
            .checkpoint_save(&self.lease, name, payload, self.clock.now())
            .await
    }

    /// Asks for `item` to be enqueued when this attempt completes, in the completion's own
    /// transaction: it appears if and only if this attempt's output is committed. If the
    /// handler fails, the attempt times out, or the lease is lost (a zombie's completion is
    /// refused), the follow-up is dropped; a retried attempt asks again. Nothing is written
    /// until the handler returns `Ok`.
    ///
    /// An invalid item is refused here with `InvalidInput` naming the problem, so the handler
    /// hears of it rather than its completion failing later.
    ///
    /// ```no_run
    /// use leasehold_runtime::{JobContext, JobError};
    /// use leasehold_core::NewItem;
    /// async fn research(ctx: JobContext) -> Result<serde_json::Value, JobError> {
    ///     let company = ctx.input()["company"].clone();
    ///     ctx.follow_up(NewItem::new("contacts", serde_json::json!({ "company": company })))?;
    ///     Ok(serde_json::json!({ "researched": true }))
    /// }
    /// ```
    pub fn follow_up(&self, item: NewItem) -> Result<(), StoreError> {
        item.validate()
            .map_err(|e| StoreError::InvalidInput(format!("follow-up: {e}")))?;
        self.follow_ups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(item);
        Ok(())
    }

    /// Says what this worker is doing now ("Researching example.com"), for people: the
    /// worker registry shows it beside the worker's item from the next registry heartbeat
    /// (`leasehold workers`, the dashboard). Cleared when the item is settled. A call after
    /// this attempt ended (its lease lost, say) changes nothing.
    pub fn set_task(&self, text: impl Into<String>) {
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.item == Some(self.item.id) {
            task.text = Some(text.into());
        }
    }

    /// The items this one was enqueued to wait for ([`NewItem::after`]), in id order, with
    /// their outputs: one query. Empty for an item without dependencies.
    ///
    /// [`NewItem::after`]: leasehold_core::NewItem::after
    pub async fn dependencies(&self) -> Result<Vec<Dependency>, StoreError> {
        self.store.item_dependencies(self.id()).await
    }

    /// The store, for anything else the handler needs to read.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A named fault point: panics here if a test armed it through
    /// [`NodeHandle::faults`](crate::NodeHandle::faults) (e.g. `"after_effect"` between a side
    /// effect and the return); does nothing otherwise.
    pub fn fault_point(&self, name: &str) {
        self.faults.hit(name, self.item.id);
    }
}
