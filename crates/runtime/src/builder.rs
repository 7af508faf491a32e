//! Building a node: store, handlers, configuration.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorCell;
use serde::Serialize;

use leasehold_core::{Backoff, Clock, Config, ConfigError, Item, Store};

use crate::clock_sync;
use crate::error::RuntimeError;
use crate::events::NodeEvent;
use crate::faults::FaultPoints;
use crate::handle::NodeHandle;
use crate::handler::{boxed_handler, Handler, JobContext, JobError};
use crate::node::{Metrics, NodeCtx};

/// The entry point: `Leasehold::builder(store)`.
#[derive(Debug)]
pub struct Leasehold;

impl Leasehold {
    /// A builder over `store`, with defaults overridden by the environment (`LEASEHOLD_*` and
    /// the seeds' `TASK_*` aliases). An unparsable variable is reported by
    /// [`start`](LeaseholdBuilder::start).
    pub fn builder(store: Arc<dyn Store>) -> LeaseholdBuilder {
        let (base, env_error) = match Config::from_env() {
            Ok(c) => (c, None),
            Err(e) => (Config::default(), Some(e)),
        };
        LeaseholdBuilder {
            store,
            handlers: HashMap::new(),
            fallback: None,
            cfg: RuntimeConfig::from_base(base),
            env_error,
            clock: None,
            faults: None,
            record_completions: false,
            events: tokio::sync::broadcast::channel(EVENT_CAPACITY).0,
            on_node_dead: None,
            schedules: Vec::new(),
        }
    }
}

/// Events buffered per subscriber before a slow one starts missing them.
const EVENT_CAPACITY: usize = 4096;

/// Everything a node runs with: the shared settings ([`Config`]) plus the runtime's own.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeConfig {
    /// The shared settings (lease, heartbeat, sweep, stale limit, max attempts, reap batch,
    /// worker id).
    pub base: Config,
    /// Workers in the tree.
    pub workers: usize,
    /// The longest an idle worker waits before it looks for work again (an enqueue through the
    /// handle wakes one at once).
    pub poll_interval: Duration,
    /// How long a graceful shutdown lets in-flight handlers finish before releasing their items.
    pub drain_timeout: Duration,
    /// Consecutive failed renewals after which a heartbeat gives the lease up.
    pub max_heartbeat_failures: u32,
    /// How long the reaper waits for a local owner to answer a ping.
    pub ping_timeout: Duration,
    /// At most this many restarts …
    pub max_restarts: u32,
    /// … within this window, then the supervisor escalates.
    pub restart_window: Duration,
    /// The retry schedule of retryable failures, for kinds without their own in
    /// `kind_backoffs`.
    pub backoff: Backoff,
    /// Per-kind retry schedules, overriding `backoff` for their kind. (A handler's
    /// [`JobError::retry_after`] overrides both for one failure.)
    pub kind_backoffs: BTreeMap<String, Backoff>,
    /// Seeds the retry jitter: with `Some`, an item's jitter depends only on the seed, the item
    /// id and the attempt ([`Backoff::seeded_sample`]), so a run's schedule is reproducible;
    /// `None` (the default) draws it at random.
    pub jitter_seed: Option<u64>,
    /// A remote node is dead after this many missed heartbeat intervals.
    pub dead_after_missed: u32,
    /// How long a cancelled handler may run on before its task is aborted (after a lost lease,
    /// a timeout, or a drain that ran out).
    pub cancel_grace: Duration,
    /// Per-kind execution timeouts, overriding the node's (`base.timeout`) for their kind; an
    /// item's own timeout overrides both (see [`timeout_for`](Self::timeout_for)).
    pub kind_timeouts: BTreeMap<String, Duration>,
    /// Whether the reaper runs in this node.
    pub reaper: bool,
    /// Whether the monitor runs in this node (default true, as in `leasehold work`): a dead
    /// node's silent items come back within its heartbeat window plus one monitor interval,
    /// without waiting for their leases to run out.
    pub monitor: bool,
    /// How often the monitor checks the registry for dead nodes; `None` (the default) checks
    /// every heartbeat interval.
    pub monitor_interval: Option<Duration>,
    /// How often a node on the database's clock measures its offset again (default 5
    /// minutes); unused on any other clock.
    pub clock_resync: Duration,
    /// What a start does when a live incarnation of its node id heartbeats in the registry:
    /// refuse with [`RuntimeError::NodeIdInUse`] (false, the default) or wait until that
    /// incarnation is dead (true).
    pub takeover: bool,
    /// Only items of this group (task) id are acquired by this node's workers; `None` (the
    /// default) takes items of any group and items without one. The reaper and the monitor
    /// are not filtered: they recover every expired or dead owner's item.
    pub group: Option<String>,
}

impl RuntimeConfig {
    fn from_base(base: Config) -> Self {
        RuntimeConfig {
            base,
            workers: 4,
            poll_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            max_heartbeat_failures: 3,
            ping_timeout: Duration::from_secs(1),
            max_restarts: 10,
            restart_window: Duration::from_secs(60),
            backoff: Backoff::default(),
            kind_backoffs: BTreeMap::new(),
            jitter_seed: None,
            dead_after_missed: 3,
            cancel_grace: Duration::from_secs(5),
            kind_timeouts: BTreeMap::new(),
            reaper: true,
            monitor: true,
            monitor_interval: None,
            clock_resync: Duration::from_secs(300),
            takeover: false,
            group: None,
        }
    }

    /// How often the monitor checks: its own interval, else the heartbeat interval.
    pub fn monitor_every(&self) -> Duration {
        self.monitor_interval.unwrap_or(self.base.heartbeat)
    }

    /// The retry schedule of `kind`: its own if it has one, else the node's.
    pub fn backoff_for(&self, kind: &str) -> &Backoff {
        self.kind_backoffs.get(kind).unwrap_or(&self.backoff)
    }

    /// The execution timeout of one attempt at `item`: the item's own, else its kind's, else
    /// the node's; `None` (no timeout anywhere) lets the attempt run as long as its heartbeat
    /// keeps the lease.
    pub fn timeout_for(&self, item: &Item) -> Option<Duration> {
        item.timeout
            .or_else(|| self.kind_timeouts.get(&item.kind).copied())
            .or(self.base.timeout)
    }

    /// Refuses settings the tree cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.base.validate()?;
        let invalid = |setting: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_string(),
            })
        };
        if self.workers == 0 {
            return invalid("workers", "must be at least 1");
        }
        if self.poll_interval.is_zero() {
            return invalid("poll_interval", "must be positive");
        }
        if self.max_heartbeat_failures == 0 {
            return invalid("max_heartbeat_failures", "must be at least 1");
        }
        if self.ping_timeout.is_zero() {
            return invalid("ping_timeout", "must be positive");
        }
        if self.max_restarts == 0 || self.restart_window.is_zero() {
            return invalid(
                "restart intensity",
                "needs at least 1 restart in a positive window",
            );
        }
        if self.clock_resync.is_zero() {
            return invalid("clock_resync", "must be positive");
        }
        if self.monitor_interval.is_some_and(|d| d.is_zero()) {
            return invalid("monitor_interval", "must be positive");
        }
        if self.group.as_ref().is_some_and(|g| g.trim().is_empty()) {
            return invalid("group", "must not be empty");
        }
        if self.dead_after_missed == 0 {
            return invalid("dead_after_missed", "must be at least 1");
        }
        if let Err(reason) = self.backoff.validate() {
            return invalid("backoff", &reason);
        }
        for (kind, t) in &self.kind_timeouts {
            if kind.trim().is_empty() {
                return invalid("kind_timeout", &format!("kind {kind:?} is empty"));
            }
            if *t < Duration::from_millis(1) {
                return invalid(
                    "kind_timeout",
                    &format!("kind {kind:?}: timeout {t:?} must be at least 1 ms"),
                );
            }
        }
        for (kind, b) in &self.kind_backoffs {
            if kind.trim().is_empty() {
                return invalid("kind_backoff", &format!("kind {kind:?} is empty"));
            }
            if let Err(reason) = b.validate() {
                return invalid("kind_backoff", &format!("kind {kind:?}: {reason}"));
            }
        }
        Ok(())
    }
}

/// Configures and starts a node. Builder settings override the environment.
pub struct LeaseholdBuilder {
    store: Arc<dyn Store>,
    handlers: HashMap<String, Handler>,
    fallback: Option<Handler>,
    cfg: RuntimeConfig,
    env_error: Option<ConfigError>,
    clock: Option<Arc<dyn Clock>>,
    faults: Option<Arc<FaultPoints>>,
    record_completions: bool,
    events: tokio::sync::broadcast::Sender<NodeEvent>,
    on_node_dead: Option<crate::monitor::DeadNodeCallback>,
    schedules: Vec<crate::schedule::Schedule>,
}

impl std::fmt::Debug for LeaseholdBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseholdBuilder")
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl LeaseholdBuilder {
    /// Registers the handler for `kind`: an async fn from a [`JobContext`] to a serializable
    /// output or a [`JobError`]. Workers acquire only kinds that have a handler.
    pub fn handler<F, Fut, O>(mut self, kind: impl Into<String>, f: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, JobError>> + Send + 'static,
        O: Serialize,
    {
        self.handlers.insert(kind.into(), boxed_handler(f));
        self
    }

    /// Registers the handler for every kind without one of its own. With a fallback, workers
    /// acquire items of any kind (the `leasehold work` command runs one this way).
    pub fn fallback_handler<F, Fut, O>(mut self, f: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, JobError>> + Send + 'static,
        O: Serialize,
    {
        self.fallback = Some(boxed_handler(f));
        self
    }

    /// Workers in the tree (default 4).
    pub fn workers(mut self, n: usize) -> Self {
        self.cfg.workers = n;
        self
    }

    /// Replaces the shared settings ([`Config`]) wholesale (e.g. a `Config` you read yourself).
    pub fn config(mut self, base: Config) -> Self {
        self.cfg.base = base;
        self.env_error = None;
        self
    }

    /// Lease duration.
    pub fn lease(mut self, d: Duration) -> Self {
        self.cfg.base.lease = d;
        self
    }

    /// Heartbeat interval.
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.cfg.base.heartbeat = d;
        self
    }

    /// Reaper sweep interval.
    pub fn sweep(mut self, d: Duration) -> Self {
        self.cfg.base.sweep = d;
        self
    }

    /// Hard stale limit.
    pub fn stale(mut self, d: Duration) -> Self {
        self.cfg.base.stale = d;
        self
    }

    /// Default retry budget of items made with [`NodeHandle::item`].
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.cfg.base.max_attempts = n;
        self
    }

    /// Items per reaper batch.
    pub fn reap_batch(mut self, n: u32) -> Self {
        self.cfg.base.reap_batch = n;
        self
    }

    /// Graceful releases of one item that give their attempt back (default 3,
    /// `LEASEHOLD_MAX_RELEASES`); later releases count as attempts (see
    /// [`Config::max_releases`]).
    pub fn max_releases(mut self, n: u32) -> Self {
        self.cfg.base.max_releases = n;
        self
    }

    /// This node's id (default: `LEASEHOLD_WORKER_ID`, else derived from host and pid).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.cfg.base.worker_id = Some(id.into());
        self
    }

    /// What [`start`](Self::start) does when a live incarnation of this node id heartbeats in
    /// the worker registry: with `false` (the default) it fails at once with
    /// [`RuntimeError::NodeIdInUse`]; with `true` it waits until that incarnation is dead (its
    /// heartbeat older than [`dead_after_missed`](Self::dead_after_missed) of its intervals,
    /// or stopped), then starts and takes back its items. Either way two live processes never
    /// share a node id. A row left by a crash that is already stale never delays a start.
    pub fn takeover(mut self, on: bool) -> Self {
        self.cfg.takeover = on;
        self
    }

    /// Makes this node's workers acquire only items of group (task) id `g` (default: every
    /// group, and items without one). Handlers still select by kind within the group.
    pub fn group(mut self, g: impl Into<String>) -> Self {
        self.cfg.group = Some(g.into());
        self
    }

    /// The longest idle wait between looks for work.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.cfg.poll_interval = d;
        self
    }

    /// Default drain timeout of a graceful shutdown on a signal.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.cfg.drain_timeout = d;
        self
    }

    /// Consecutive failed renewals before a heartbeat gives up the lease (default 3).
    pub fn max_heartbeat_failures(mut self, n: u32) -> Self {
        self.cfg.max_heartbeat_failures = n;
        self
    }

    /// How long the reaper waits for a local owner's answer (default 1 s).
    pub fn ping_timeout(mut self, d: Duration) -> Self {
        self.cfg.ping_timeout = d;
        self
    }

    /// Restart intensity: at most `max` restarts within `window`, then escalate (default 10 in
    /// 60 s).
    pub fn restart_intensity(mut self, max: u32, window: Duration) -> Self {
        self.cfg.max_restarts = max;
        self.cfg.restart_window = window;
        self
    }

    /// The node's retry schedule (default 1 s, 2 s, 4 s, … capped at 5 minutes, up to 10 %
    /// jitter), for kinds without their own [`kind_backoff`](Self::kind_backoff).
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.cfg.backoff = b;
        self
    }

    /// `kind`'s own retry schedule, instead of the node's [`backoff`](Self::backoff). Checked
    /// at [`start`](Self::start) like the other settings: an invalid schedule, or one for a kind
    /// this node has no handler for (without a fallback handler), is refused, naming
    /// `kind_backoff`.
    pub fn kind_backoff(mut self, kind: impl Into<String>, b: Backoff) -> Self {
        self.cfg.kind_backoffs.insert(kind.into(), b);
        self
    }

    /// Makes the retry jitter reproducible (see [`RuntimeConfig::jitter_seed`]).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.cfg.jitter_seed = Some(seed);
        self
    }

    /// How long a cancelled handler may run on before it is aborted (default 5 s).
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.cfg.cancel_grace = d;
        self
    }

    /// The node's default execution timeout of one attempt, for items and kinds without their
    /// own (default: `LEASEHOLD_TIMEOUT_S`, else none). At the deadline the handler is
    /// cancelled, the attempt fails as retryable ("timed out after …"), the heartbeat stops
    /// renewing the lease, and a handler still running [`cancel_grace`](Self::cancel_grace)
    /// later is aborted. Precedence: [`NewItem::timeout`](leasehold_core::NewItem::timeout),
    /// then [`kind_timeout`](Self::kind_timeout), then this.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.cfg.base.timeout = Some(d);
        self
    }

    /// `kind`'s own execution timeout, instead of the node's [`timeout`](Self::timeout); an
    /// item's own timeout still wins. Checked at [`start`](Self::start): under 1 ms, or for a
    /// kind this node has no handler for (without a fallback handler), is refused, naming
    /// `kind_timeout`.
    pub fn kind_timeout(mut self, kind: impl Into<String>, d: Duration) -> Self {
        self.cfg.kind_timeouts.insert(kind.into(), d);
        self
    }

    /// Whether to run a reaper in this node (default true).
    pub fn reaper(mut self, on: bool) -> Self {
        self.cfg.reaper = on;
        self
    }

    /// Whether to run the monitor in this node (default true): it takes back the items of
    /// nodes the worker registry declares dead — those whose own heartbeat is as old — and
    /// raises an alert for each.
    pub fn monitor(mut self, on: bool) -> Self {
        self.cfg.monitor = on;
        self
    }

    /// How often the monitor checks (default: every heartbeat interval).
    pub fn monitor_interval(mut self, d: Duration) -> Self {
        self.cfg.monitor_interval = Some(d);
        self
    }

    /// How often a node on the database's clock measures its offset again (default 5
    /// minutes).
    pub fn clock_resync(mut self, every: Duration) -> Self {
        self.cfg.clock_resync = every;
        self
    }

    /// Heartbeat intervals a node may miss before it counts as dead, for the reaper's
    /// registry check and the monitor alike (default 3).
    pub fn dead_after_missed(mut self, n: u32) -> Self {
        self.cfg.dead_after_missed = n;
        self
    }

    /// Called by the monitor once per node incarnation it finds dead, after it took back that
    /// node's items. Runs on the monitor's task: keep it short and non-blocking (send to a
    /// channel); a panic in it is caught and logged.
    pub fn on_node_dead(
        mut self,
        f: impl Fn(&crate::monitor::DeadNode) + Send + Sync + 'static,
    ) -> Self {
        self.on_node_dead = Some(Arc::new(f));
        self
    }

    /// Adds a schedule: periodic work from a cron expression
    /// ([`Schedule`](crate::Schedule)). At start the expression is parsed (a bad one refuses
    /// the start with [`RuntimeError::Schedule`] naming the schedule and the expression) and
    /// the schedule is registered in the store under its name; then the node's scheduler
    /// claims each due tick. Nodes that add a schedule of the same name share it: each tick
    /// is enqueued once, by whichever of them claims it first. The kind need not have a handler
    /// on this node (another node may run it).
    pub fn schedule(mut self, schedule: crate::Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// The clock lease times come from. By default the node asks its store
    /// ([`Store::clock_sync`]): on PostgreSQL it takes the
    /// database server's clock (resynced every [`clock_resync`](Self::clock_resync)), so hosts
    /// whose own clocks drift still agree on every lease; on SQLite, the system clock. Tests
    /// pass a [`TokioClock`](leasehold_core::TokioClock) to move time with tokio's paused clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Shares a set of fault points with the handlers' [`JobContext::fault_point`] calls.
    pub fn fault_points(mut self, faults: Arc<FaultPoints>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Records every acknowledged completion for the invariant checker (tests and chaos runs).
    pub fn record_completions(mut self, on: bool) -> Self {
        self.record_completions = on;
        self
    }

    /// The configuration as it stands.
    pub fn runtime_config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// Subscribes to the node's events from the moment it starts, including every worker's
    /// start, which [`NodeHandle::events`] may subscribe too late to see.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Starts the tree as [`start`](Self::start) does, then places it under `supervisor`, an
    /// actor of the caller's own ractor tree, through one anchor actor linked to it
    /// ([`NodeHandle::anchor`]). That supervisor then receives:
    ///
    /// - `SupervisionEvent::ActorFailed(anchor, err)` when the tree **escalates** (its restart
    ///   intensity is spent): `err.downcast_ref::<`[`Escalation`](crate::embed::Escalation)`>()`
    ///   names the node, the incarnation and the reason. No worker of the tree runs any more and
    ///   its registry row is marked stopped: start a new tree (its `recover_mine` takes back
    ///   what this one held), or stop.
    /// - `SupervisionEvent::ActorTerminated(anchor, _, Some(`[`SHUTDOWN_REASON`](crate::embed::SHUTDOWN_REASON)`))`
    ///   after a graceful [`NodeHandle::shutdown`].
    ///
    /// Stopping the anchor — as `stop_children_and_wait` in the supervisor's `post_stop` does —
    /// drains the tree gracefully (drain timeout [`drain_timeout`](Self::drain_timeout)) before
    /// the stop completes. A supervisor that stops without stopping its children first kills the
    /// anchor; the tree then drains on its own in the background, and
    /// [`NodeHandle::wait`] returns when it has. ractor's default `handle_supervisor_evt` stops
    /// a supervisor when any child ends: override it to act on these events. docs/embedding.md
    /// has the whole contract.
    pub async fn start_linked(self, supervisor: ActorCell) -> Result<NodeHandle, RuntimeError> {
        let node = self.start().await?;
        if let Err(e) = node.link_to(supervisor).await {
            // Unlinked, the tree would run where nobody supervises it: stop it.
            let _ = node.shutdown(node.config().drain_timeout).await;
            return Err(e);
        }
        Ok(node)
    }

    /// Validates everything, claims the node id, and starts the tree: every worker runs
    /// `recover_mine` for its owner id before it acquires anything, and the reaper starts
    /// sweeping.
    ///
    /// The claim ([`Store::node_register`]) fails with [`RuntimeError::NodeIdInUse`] while a
    /// live incarnation of the node id heartbeats in the registry, unless
    /// [`takeover`](Self::takeover) is set (then it waits). While the store fails with a
    /// backend error, the claim is retried: this call returns once the store answers.
    pub async fn start(self) -> Result<NodeHandle, RuntimeError> {
        if let Some(e) = self.env_error {
            return Err(RuntimeError::Config(e));
        }
        self.cfg.validate()?;
        if self.handlers.is_empty() && self.fallback.is_none() {
            return Err(RuntimeError::Setup(
                "no handlers registered: add at least one with .handler(kind, fn)".into(),
            ));
        }
        if let Some(k) = self.handlers.keys().find(|k| k.trim().is_empty()) {
            return Err(RuntimeError::Setup(format!("handler kind {k:?} is empty")));
        }
        // A schedule for a kind nothing here runs is a typo that would silently do nothing.
        if self.fallback.is_none() {
            if let Some(k) = self
                .cfg
                .kind_backoffs
                .keys()
                .find(|k| !self.handlers.contains_key(*k))
            {
                return Err(RuntimeError::Config(ConfigError::Invalid {
                    setting: "kind_backoff",
                    reason: format!("no handler is registered for kind {k:?}"),
                }));
            }
            if let Some(k) = self
                .cfg
                .kind_timeouts
                .keys()
                .find(|k| !self.handlers.contains_key(*k))
            {
                return Err(RuntimeError::Config(ConfigError::Invalid {
                    setting: "kind_timeout",
                    reason: format!("no handler is registered for kind {k:?}"),
                }));
            }
        }
        let mut schedules = Vec::with_capacity(self.schedules.len());
        for s in self.schedules {
            if schedules
                .iter()
                .any(|c: &crate::schedule::Compiled| c.name() == s.name())
            {
                return Err(RuntimeError::Schedule {
                    name: s.name().to_string(),
                    reason: "two schedules of this node share the name".into(),
                });
            }
            schedules.push(s.compile()?);
        }
        let chosen = clock_sync::choose(self.clock, self.store.as_ref()).await?;
        let clock = chosen.clock.clone();
        let node_id = self
            .cfg
            .base
            .worker_id
            .clone()
            .unwrap_or_else(default_node_id);
        // With a fallback handler every kind is served: an empty filter acquires any kind.
        let mut kinds: Vec<String> = if self.fallback.is_some() {
            Vec::new()
        } else {
            self.handlers.keys().cloned().collect()
        };
        kinds.sort();
        let worker_type = if kinds.is_empty() {
            "*".to_string()
        } else {
            kinds.join(",")
        };
        let incarnation = crate::identity::claim(
            self.store.as_ref(),
            clock.as_ref(),
            &self.cfg,
            &node_id,
            &worker_type,
            &self.events,
        )
        .await?;
        let workers = self.cfg.workers;
        let metrics = Metrics {
            completions: self.record_completions.then(|| Mutex::new(Vec::new())),
            ..Metrics::default()
        };
        let ctx = Arc::new(NodeCtx {
            store: self.store,
            clock,
            cfg: self.cfg,
            node_id: node_id.clone(),
            incarnation,
            handlers: self.handlers,
            fallback: self.fallback,
            kinds,
            metrics,
            recorder: Arc::default(),
            faults: self.faults.unwrap_or_default(),
            idle: Mutex::new(BTreeSet::new()),
            busy: (0..workers).map(|_| AtomicI64::new(0)).collect(),
            tasks: (0..workers).map(|_| Arc::default()).collect(),
            store_reachable: AtomicBool::new(true),
            events: self.events,
            on_node_dead: self.on_node_dead,
            schedules,
        });
        let (store, clock) = (ctx.store.clone(), ctx.clock.clone());
        // Registered before the tree runs, so `status` shows them once `start` returns and a
        // refusal reaches the caller.
        let mut registered = Ok(());
        for s in &ctx.schedules {
            let now = clock.now();
            let spec = match s.spec_at(now) {
                Ok(spec) => spec,
                Err(reason) => {
                    registered = Err(RuntimeError::Schedule {
                        name: s.name().to_string(),
                        reason,
                    });
                    break;
                }
            };
            if let Err(e) = store.schedule_upsert(&spec, now).await {
                registered = Err(e.into());
                break;
            }
        }
        let started = match registered {
            Ok(()) => NodeHandle::start(ctx, chosen).await,
            Err(e) => Err(e),
        };
        if started.is_err() {
            // Nothing runs under this incarnation: free the id now rather than after the window.
            let _ = store.node_stop(&node_id, incarnation, clock.now()).await;
        }
        started
    }
}

/// `host-pid`, from `HOSTNAME` or /etc/hostname.
fn default_node_id() -> String {
    format!("{}-{}", crate::identity::host(), std::process::id())
}
