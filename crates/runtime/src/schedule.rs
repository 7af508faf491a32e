//! Schedules: periodic work per kind from a cron expression, and the scheduler actor that
//! claims each due tick.
//!
//! A [`Schedule`] is given to the builder ([`LeaseholdBuilder::schedule`]); its expression is
//! parsed when the node starts (a bad one refuses the start, naming it) and the schedule is
//! registered in the store ([`Store::schedule_upsert`]). The scheduler then sleeps until the
//! earliest due tick of this node's schedules (tokio time, so paused-time tests move it), reads
//! the schedules' rows and claims each due one ([`Store::schedule_claim`]): a conditional update
//! of the row's `next_run_at` in the transaction that enqueues the tick's items. However many
//! nodes run a schedule, each tick is claimed by one of them, and its items enqueued once.
//!
//! The cron crate is [croner](https://docs.rs/croner): maintained, POSIX/Vixie semantics with
//! optional seconds (five or six fields) and the `L`, `W`, `#` extensions and `@hourly`-style
//! aliases; times are UTC.
//!
//! [`LeaseholdBuilder::schedule`]: crate::LeaseholdBuilder::schedule
//! [`Store::schedule_upsert`]: leasehold_core::Store::schedule_upsert
//! [`Store::schedule_claim`]: leasehold_core::Store::schedule_claim

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;

use leasehold_core::{
    CatchUp, ItemId, NewItem, ScheduleClaim, ScheduleRecord, ScheduleSpec, Timestamp,
};

use crate::error::RuntimeError;
use crate::events::NodeEvent;
use crate::node::NodeCtx;

/// The longest the scheduler sleeps between reads of the schedules' rows, so a row another
/// node re-registered with a new expression (or an operator removed) is seen within it.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How long the scheduler waits after the store failed before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Periodic work: every tick of `cron` enqueues one item of `kind` with `input`, once however
/// many nodes run the schedule (they share it by name).
///
/// ```
/// use leasehold_runtime::Schedule;
/// use leasehold_core::CatchUp;
/// let digest = Schedule::new("digest", "0 */5 * * * *", "send-digest")
///     .input(serde_json::json!({ "to": "ops" }))
///     .catch_up(CatchUp::All { max: 3 });
/// assert_eq!(digest.name(), "digest");
/// ```
#[derive(Clone, Debug)]
pub struct Schedule {
    name: String,
    cron: String,
    kind: String,
    input: Value,
    catch_up: CatchUp,
}

impl Schedule {
    /// A schedule named `name` (its key in the store) that enqueues an item of `kind` at every
    /// tick of the cron expression `cron`: five fields (minute granularity) or six (seconds
    /// first), in UTC. The expression is checked when the node starts. The input defaults to
    /// `{}` and the catch-up policy to [`CatchUp::Skip`].
    pub fn new(name: impl Into<String>, cron: impl Into<String>, kind: impl Into<String>) -> Self {
        Schedule {
            name: name.into(),
            cron: cron.into(),
            kind: kind.into(),
            input: Value::Object(serde_json::Map::new()),
            catch_up: CatchUp::Skip,
        }
    }

    /// The input of every item the schedule enqueues.
    pub fn input(mut self, input: Value) -> Self {
        self.input = input;
        self
    }

    /// What to do with the ticks that fell due while no node ran the schedule:
    /// [`CatchUp::Skip`] enqueues one item, for the latest of them;
    /// [`CatchUp::All`] one per missed tick, at most `max` (the latest ones).
    pub fn catch_up(mut self, policy: CatchUp) -> Self {
        self.catch_up = policy;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses and checks the schedule: the error names the schedule and what is wrong.
    pub(crate) fn compile(self) -> Result<Compiled, RuntimeError> {
        let refuse = |reason: String| RuntimeError::Schedule {
            name: self.name.clone(),
            reason,
        };
        let cron = Cron::from_str(&self.cron).map_err(|e| {
            refuse(format!(
                "cron expression {:?} does not parse: {e}",
                self.cron
            ))
        })?;
        let spec = ScheduleSpec {
            name: self.name.clone(),
            cron: self.cron.clone(),
            kind: self.kind.clone(),
            input: self.input.clone(),
            catch_up: self.catch_up,
            first_run_at: Timestamp(0),
        };
        spec.validate().map_err(refuse)?;
        Ok(Compiled { spec, cron })
    }
}

/// A schedule whose expression parsed: what the scheduler works from.
#[derive(Debug)]
pub(crate) struct Compiled {
    /// The spec as registered (`first_run_at` is filled in at registration).
    spec: ScheduleSpec,
    cron: Cron,
}

/// The ticks one claim enqueues and the `next_run_at` it writes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) ticks: Vec<Timestamp>,
    pub(crate) next: Timestamp,
}

impl Compiled {
    /// The schedule's name.
    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    /// The spec to register at `now`: its first run is the first tick after `now`.
    pub(crate) fn spec_at(&self, now: Timestamp) -> Result<ScheduleSpec, String> {
        Ok(ScheduleSpec {
            first_run_at: self.after(now)?,
            ..self.spec.clone()
        })
    }

    /// The first tick strictly after `t`.
    fn after(&self, t: Timestamp) -> Result<Timestamp, String> {
        let found = self
            .cron
            .find_next_occurrence(&to_dt(t)?, false)
            .map_err(|e| format!("schedule {:?}: no tick after {t}: {e}", self.spec.name))?;
        Ok(from_dt(found))
    }

    /// The latest tick at or before `t`, if any.
    fn at_or_before(&self, t: Timestamp, inclusive: bool) -> Option<Timestamp> {
        let dt = to_dt(t).ok()?;
        self.cron
            .find_previous_occurrence(&dt, inclusive)
            .ok()
            .map(from_dt)
    }

    /// What to claim when the row's next run is `due` and the time is `now`: `None` while it
    /// is not due. The ticks are those of the expression in `[due, now]` (with `due` itself
    /// standing for them when the expression changed under the row): the latest one for
    /// `Skip`, the latest `max` for `All`, oldest first. The next run is the first tick after
    /// `now`, so ticks are never claimed twice and missed ones are judged once.
    pub(crate) fn plan(&self, due: Timestamp, now: Timestamp) -> Result<Option<Plan>, String> {
        if due > now {
            return Ok(None);
        }
        let limit = match self.spec.catch_up {
            CatchUp::Skip => 1,
            CatchUp::All { max } => max.max(1) as usize,
        };
        let mut ticks = Vec::new();
        let mut cursor = self.at_or_before(now, true);
        while let Some(t) = cursor {
            if t < due || ticks.len() == limit {
                break;
            }
            ticks.push(t);
            cursor = self.at_or_before(t, false);
        }
        if ticks.is_empty() {
            ticks.push(due);
        }
        ticks.reverse();
        Ok(Some(Plan {
            ticks,
            next: self.after(now)?,
        }))
    }

    /// The claim of `plan` for the row's due tick: one item per tick, each with the tick's
    /// unique key (`schedule:<name>:<tick ms>`), so a tick also never has two open items.
    fn claim(&self, due: Timestamp, plan: &Plan) -> ScheduleClaim {
        ScheduleClaim {
            name: self.spec.name.clone(),
            due,
            last_tick: *plan.ticks.last().unwrap_or(&due),
            next: plan.next,
            items: plan
                .ticks
                .iter()
                .map(|t| {
                    NewItem::new(self.spec.kind.clone(), self.spec.input.clone())
                        .unique_key(format!("schedule:{}:{}", self.spec.name, t.0))
                })
                .collect(),
        }
    }
}

fn to_dt(t: Timestamp) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(t.0).ok_or_else(|| format!("time {t} is out of range"))
}

fn from_dt(d: DateTime<Utc>) -> Timestamp {
    Timestamp(d.timestamp_millis())
}

/// Messages the scheduler handles.
pub(crate) enum SchedulerMsg {
    /// Claim what is due, then sleep until the next due tick (sent by itself: at start, then
    /// after each round).
    Tick,
}

/// The scheduler actor: one per node that has schedules.
pub(crate) struct Scheduler;

pub(crate) struct SchedulerState {
    ctx: Arc<NodeCtx>,
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = Arc<NodeCtx>;

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        ctx: Arc<NodeCtx>,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        // The first round at once: ticks missed while no node ran are due now.
        myself.send_message(SchedulerMsg::Tick)?;
        Ok(SchedulerState { ctx })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Tick => {
                let sleep = run_once(&state.ctx).await;
                myself.send_after(sleep, || SchedulerMsg::Tick);
            }
        }
        Ok(())
    }
}

/// One round: claims every due tick of this node's schedules, re-registers a schedule whose
/// row is gone, and returns how long to sleep until the earliest next tick (at most
/// [`MAX_SLEEP`]; [`RETRY_AFTER`] when the store failed). Errors are logged, never raised:
/// a failing store must not crash the tree, and the next round tries again.
pub(crate) async fn run_once(ctx: &Arc<NodeCtx>) -> Duration {
    let now = ctx.clock.now();
    let rows = match ctx.store.schedules_list().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "scheduler could not read the schedules; trying again");
            return RETRY_AFTER;
        }
    };
    let mut earliest: Option<Timestamp> = None;
    let mut failed = false;
    for schedule in ctx.schedules.iter() {
        let next = match rows.iter().find(|r| r.name == schedule.name()) {
            Some(row) => claim_due(ctx, schedule, row, now).await,
            None => register(ctx, schedule, now).await.map(|r| r.next_run_at),
        };
        match next {
            Some(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
            None => failed = true,
        }
    }
    if failed {
        return RETRY_AFTER;
    }
    earliest.map_or(MAX_SLEEP, |t| t.since(ctx.clock.now()).min(MAX_SLEEP))
}

/// Registers the schedule (at start, or when its row was removed); the row, or `None` after
/// logging a failure.
pub(crate) async fn register(
    ctx: &NodeCtx,
    schedule: &Compiled,
    now: Timestamp,
) -> Option<ScheduleRecord> {
    let spec = match schedule.spec_at(now) {
        Ok(spec) => spec,
        Err(e) => {
            tracing::error!(schedule = schedule.name(), error = %e, "schedule has no next tick");
            return None;
        }
    };
    match ctx.store.schedule_upsert(&spec, now).await {
        Ok(row) => Some(row),
        Err(e) => {
            tracing::warn!(schedule = schedule.name(), error = %e, "could not register the schedule");
            None
        }
    }
}

/// Claims the row's tick when it is due; returns the row's next run as this node now knows it
/// (`None` after a failure, logged).
async fn claim_due(
    ctx: &NodeCtx,
    schedule: &Compiled,
    row: &ScheduleRecord,
    now: Timestamp,
) -> Option<Timestamp> {
    let plan = match schedule.plan(row.next_run_at, now) {
        Ok(Some(plan)) => plan,
        Ok(None) => return Some(row.next_run_at),
        Err(e) => {
            tracing::error!(schedule = schedule.name(), error = %e, "cannot compute the schedule's ticks");
            return None;
        }
    };
    let claim = schedule.claim(row.next_run_at, &plan);
    match ctx.store.schedule_claim(&claim, now).await {
        Ok(Some(items)) => {
            tracing::info!(
                schedule = schedule.name(),
                ticks = plan.ticks.len(),
                next = plan.next.0,
                "schedule tick claimed"
            );
            fired(ctx, schedule.name(), plan.ticks, items);
            Some(plan.next)
        }
        // Another node won this tick; the row has moved on (to the same next tick, unless
        // that node runs another expression: the next round reads it).
        Ok(None) => Some(plan.next),
        Err(e) => {
            tracing::warn!(schedule = schedule.name(), error = %e, "schedule claim failed");
            None
        }
    }
}

fn fired(ctx: &NodeCtx, name: &str, ticks: Vec<Timestamp>, items: Vec<ItemId>) {
    ctx.wake(items.len());
    ctx.emit(NodeEvent::ScheduleFired {
        name: name.to_string(),
        ticks,
        items,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(cron: &str, catch_up: CatchUp) -> Compiled {
        Schedule::new("s", cron, "k")
            .catch_up(catch_up)
            .compile()
            .expect("compiles")
    }

    /// 2026-01-01T00:00:00Z.
    const MIDNIGHT: i64 = 1_767_225_600_000;

    fn at(s: i64) -> Timestamp {
        Timestamp(MIDNIGHT + s * 1000)
    }

    #[test]
    fn next_tick_is_strictly_after_now_even_within_a_second() {
        let c = compiled("0 */5 * * * *", CatchUp::Skip);
        assert_eq!(c.after(at(0)).unwrap(), at(300));
        assert_eq!(c.after(Timestamp(at(0).0 + 300)).unwrap(), at(300));
        assert_eq!(c.after(Timestamp(at(300).0 - 1)).unwrap(), at(300));
    }

    #[test]
    fn a_tick_not_yet_due_plans_nothing() {
        let c = compiled("0 */5 * * * *", CatchUp::Skip);
        assert_eq!(c.plan(at(300), at(299)).unwrap(), None);
    }

    #[test]
    fn skip_claims_the_latest_missed_tick_and_resumes_after_now() {
        let c = compiled("0 */5 * * * *", CatchUp::Skip);
        let plan = c
            .plan(at(300), Timestamp(at(1700).0 + 250))
            .unwrap()
            .unwrap();
        assert_eq!(plan.ticks, vec![at(1500)]);
        assert_eq!(plan.next, at(1800));
        let on_time = c.plan(at(300), at(300)).unwrap().unwrap();
        assert_eq!(
            on_time,
            Plan {
                ticks: vec![at(300)],
                next: at(600)
            }
        );
    }

    #[test]
    fn all_claims_the_latest_max_missed_ticks_oldest_first() {
        let c = compiled("0 */5 * * * *", CatchUp::All { max: 3 });
        let plan = c.plan(at(300), at(1700)).unwrap().unwrap();
        assert_eq!(plan.ticks, vec![at(900), at(1200), at(1500)]);
        assert_eq!(plan.next, at(1800));
        let two = c.plan(at(300), at(600)).unwrap().unwrap();
        assert_eq!(two.ticks, vec![at(300), at(600)]);
    }

    #[test]
    fn a_due_time_off_the_expression_still_claims_one_tick() {
        // The row's next run came from another expression: it stands for the tick.
        let c = compiled("0 0 * * * *", CatchUp::All { max: 5 });
        let plan = c.plan(at(300), at(400)).unwrap().unwrap();
        assert_eq!(plan.ticks, vec![at(300)]);
        assert_eq!(plan.next, at(3600));
    }

    #[test]
    fn a_bad_expression_is_refused_naming_the_schedule_and_the_expression() {
        let err = Schedule::new("digest", "every five minutes", "k")
            .compile()
            .expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("digest") && text.contains("every five minutes"),
            "{text}"
        );
    }
}
