//! The state every actor of one node shares: set once at start, then read-mostly.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;

use leasehold_core::{Clock, ItemId, Store, StoreError};

use crate::builder::RuntimeConfig;
use crate::events::NodeEvent;
use crate::faults::FaultPoints;
use crate::handler::Handler;
use crate::worker::WorkerMsg;

/// One node's shared context.
pub(crate) struct NodeCtx {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) cfg: RuntimeConfig,
    pub(crate) node_id: String,
    pub(crate) incarnation: i64,
    pub(crate) handlers: HashMap<String, Handler>,
    /// The handler of kinds without their own.
    pub(crate) fallback: Option<Handler>,
    /// The kinds workers acquire: exactly those with a handler here, or every kind (empty) when
    /// there is a fallback handler. (The reaper does not look at kinds at all.)
    pub(crate) kinds: Vec<String>,
    pub(crate) metrics: Metrics,
    /// The counts by kind and the histograms this node publishes (see [`crate::metrics`]).
    pub(crate) recorder: Arc<crate::metrics::Recorder>,
    pub(crate) faults: Arc<FaultPoints>,
    /// Workers waiting for work, by index; a std Mutex because it is held for a push or pop only.
    pub(crate) idle: Mutex<BTreeSet<usize>>,
    /// Each worker's current item id (0 when idle): what the registry row reports.
    pub(crate) busy: Vec<AtomicI64>,
    /// Each worker's current task: since when it holds its item, and the text its handler set
    /// ([`JobContext::set_task`](crate::JobContext::set_task)); what the registry row reports
    /// under `metadata.workers`. A std Mutex: held for a copy or a swap only.
    pub(crate) tasks: Vec<Arc<Mutex<WorkerTask>>>,
    /// Whether this node's last registry write reached the store: the reaper stands down when
    /// it did not, so a sick database never looks like dead owners.
    pub(crate) store_reachable: AtomicBool,
    /// The event stream; sending with no subscriber costs next to nothing.
    pub(crate) events: tokio::sync::broadcast::Sender<NodeEvent>,
    /// The user's alert for a dead node (the monitor calls it).
    pub(crate) on_node_dead: Option<crate::monitor::DeadNodeCallback>,
    /// This node's schedules, parsed; the scheduler runs when there is one.
    pub(crate) schedules: Vec<crate::schedule::Compiled>,
}

impl NodeCtx {
    /// The stable owner id of worker `i`: the same across the worker's restarts and across
    /// restarts of the node under the same id.
    pub(crate) fn owner_id(&self, i: usize) -> String {
        format!("{}/w{}", self.node_id, i)
    }

    /// The worker index an owner id names, if it is one of this node's.
    pub(crate) fn worker_index(&self, owner: &str) -> Option<usize> {
        let rest = owner.strip_prefix(&self.node_id)?.strip_prefix("/w")?;
        let i: usize = rest.parse().ok()?;
        (i < self.cfg.workers).then_some(i)
    }

    /// The actor-registry name of worker `i` (unique per node incarnation, so several trees can
    /// share one process).
    pub(crate) fn worker_name(&self, i: usize) -> String {
        format!(
            "leasehold:{}:{}:worker:{}",
            self.node_id, self.incarnation, i
        )
    }

    /// The name of the reaper, registry or supervisor.
    pub(crate) fn actor_name(&self, what: &str) -> String {
        format!("leasehold:{}:{}:{}", self.node_id, self.incarnation, what)
    }

    /// The live worker `i`, if it is running.
    pub(crate) fn worker(&self, i: usize) -> Option<ActorRef<WorkerMsg>> {
        ractor::registry::where_is(self.worker_name(i)).map(ActorRef::from)
    }

    /// Wakes up to `n` idle workers (after an enqueue through the handle, a requeue by this
    /// node's reaper or monitor, or a wake-up from the store).
    pub(crate) fn wake(&self, n: usize) {
        for _ in 0..n {
            let next = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.pop_first()
            };
            let Some(i) = next else { return };
            if let Some(w) = self.worker(i) {
                let _ = w.cast(WorkerMsg::Poll { woken: true });
            }
        }
    }

    pub(crate) fn set_idle(&self, i: usize, idle: bool) {
        let mut set = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle {
            set.insert(i);
        } else {
            set.remove(&i);
        }
    }

    pub(crate) fn set_busy(&self, i: usize, item: Option<ItemId>) {
        if let Some(slot) = self.busy.get(i) {
            slot.store(item.map_or(0, |id| id.0), Ordering::Relaxed);
        }
        if let Some(task) = self.tasks.get(i) {
            let now = self.clock.now();
            *task.lock().unwrap_or_else(|p| p.into_inner()) = WorkerTask {
                item,
                since: item.map(|_| now),
                text: None,
            };
        }
    }

    /// Every worker's current task, by index: the registry row's `metadata.workers`.
    pub(crate) fn worker_tasks(&self) -> Vec<serde_json::Value> {
        self.tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let t = t.lock().unwrap_or_else(|p| p.into_inner()).clone();
                serde_json::json!({
                    "worker": i,
                    "owner": self.owner_id(i),
                    "item": t.item,
                    "since": t.since,
                    "task": t.text,
                })
            })
            .collect()
    }

    pub(crate) fn emit(&self, event: NodeEvent) {
        let _ = self.events.send(event);
    }

    /// The items workers hold right now.
    pub(crate) fn busy_items(&self) -> Vec<ItemId> {
        self.busy
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .filter(|id| *id != 0)
            .map(ItemId)
            .collect()
    }
}

/// What one worker is doing, for the registry row.
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkerTask {
    /// The item it holds.
    pub(crate) item: Option<ItemId>,
    /// Since when.
    pub(crate) since: Option<leasehold_core::Timestamp>,
    /// The handler's own words for what it is doing.
    pub(crate) text: Option<String>,
}

/// Counters shared by the actors; read by [`NodeHandle::stats`](crate::NodeHandle::stats).
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) acquired: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) lease_lost: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) recovered_on_start: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) heartbeat_deaths: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) reaper_scans: AtomicU64,
    pub(crate) reaper_recovered: AtomicU64,
    pub(crate) reaper_failed: AtomicU64,
    pub(crate) reaper_skipped_alive: AtomicU64,
    pub(crate) reaper_stand_downs: AtomicU64,
    pub(crate) reaper_last_scan_us: AtomicU64,
    pub(crate) monitor_dead_nodes: AtomicU64,
    pub(crate) monitor_recovered: AtomicU64,
    pub(crate) monitor_dead_lettered: AtomicU64,
    pub(crate) monitor_stand_downs: AtomicU64,
    pub(crate) renewals_succeeded: AtomicU64,
    pub(crate) renewals_failed: AtomicU64,
    /// Every acknowledged completion (item, epoch), when the builder asked to record them: the
    /// invariant checker counts items acknowledged twice.
    pub(crate) completions: Option<Mutex<Vec<(ItemId, i64)>>>,
}

impl Metrics {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Retries a store write through backend failures until `deadline`; a refusal (LeaseLost,
/// InvalidState, …) is returned at once.
pub(crate) async fn retry_store<T, F, Fut>(
    deadline: tokio::time::Instant,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(10);
    loop {
        match op().await {
            Err(e) if e.is_backend_failure() && tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, "store write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}
