//! Schedules: periodic work per kind. The store keeps one row per schedule name with its next
//! due tick; a node claims a tick with a conditional update ([`Store::schedule_claim`]) that
//! enqueues the tick's items in the same transaction, so exactly one node wins each tick.
//!
//! The store never parses a cron expression: it stores the text for `status` and the dashboard,
//! and the runtime computes the times (`leasehold_runtime::Schedule`).
//!
//! [`Store::schedule_claim`]: crate::Store::schedule_claim

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::item::NewItem;

/// What a node does with the ticks that fell due while no node ran the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum CatchUp {
    /// Enqueue one item, for the latest due tick, then resume from now (the default).
    Skip,
    /// Enqueue an item for each missed tick, at most `max` of them (the latest ones).
    All {
        /// The most ticks one claim enqueues (at least 1).
        max: u32,
    },
}

impl CatchUp {
    /// The policy's name as stored: `skip` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::All { .. } => "all",
        }
    }

    /// The stored form back: `skip`, or `all` with its `max`; anything else is `None`.
    pub fn from_parts(policy: &str, max: Option<i64>) -> Option<CatchUp> {
        match (policy, max) {
            ("skip", _) => Some(CatchUp::Skip),
            ("all", Some(m)) => u32::try_from(m).ok().map(|max| CatchUp::All { max }),
            _ => None,
        }
    }

    /// The `max` column: `None` for `Skip`.
    pub fn max(self) -> Option<i64> {
        match self {
            CatchUp::Skip => None,
            CatchUp::All { max } => Some(i64::from(max)),
        }
    }
}

impl std::fmt::Display for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatchUp::Skip => f.write_str("skip"),
            CatchUp::All { max } => write!(f, "all (max {max})"),
        }
    }
}

/// A schedule as a node registers it ([`Store::schedule_upsert`](crate::Store::schedule_upsert)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// The schedule's name, its key.
    pub name: String,
    /// The cron expression, as written (stored for display; the runtime parses it).
    pub cron: String,
    /// The kind of the items each tick enqueues.
    pub kind: String,
    /// The input of the items each tick enqueues.
    pub input: Value,
    /// What to do with ticks missed while no node ran.
    pub catch_up: CatchUp,
    /// The first due tick, used when the schedule is new or its cron expression changed; an
    /// existing row with the same expression keeps its own (so ticks missed while no node ran
    /// are still seen as due).
    pub first_run_at: Timestamp,
}

impl ScheduleSpec {
    /// Checks what the store can: names and kind not empty, a `max` of at least 1.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("schedule name must not be empty".into());
        }
        if self.cron.trim().is_empty() {
            return Err(format!(
                "schedule {:?}: cron expression must not be empty",
                self.name
            ));
        }
        if self.kind.trim().is_empty() {
            return Err(format!("schedule {:?}: kind must not be empty", self.name));
        }
        if let CatchUp::All { max: 0 } = self.catch_up {
            return Err(format!(
                "schedule {:?}: catch-up max must be at least 1",
                self.name
            ));
        }
        Ok(())
    }
}

/// One claim of a schedule's due tick ([`Store::schedule_claim`](crate::Store::schedule_claim)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleClaim {
    /// The schedule's name.
    pub name: String,
    /// The `next_run_at` the claimer read: the claim applies only if the row still has it.
    pub due: Timestamp,
    /// The latest tick the claim enqueues (written as `last_run_at`): at or after `due`,
    /// before `next`.
    pub last_tick: Timestamp,
    /// The `next_run_at` to write: after `due`.
    pub next: Timestamp,
    /// The tick's items (one per tick enqueued), inserted in the claim's transaction.
    pub items: Vec<NewItem>,
}

impl ScheduleClaim {
    /// Checks the claim before anything is written: a name, `next` after `due`, at least one
    /// item, and every item valid.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("schedule name must not be empty".into());
        }
        if self.next <= self.due {
            return Err(format!(
                "schedule {:?}: next run {} must be after the due tick {}",
                self.name, self.next, self.due
            ));
        }
        if self.last_tick < self.due || self.last_tick >= self.next {
            return Err(format!(
                "schedule {:?}: last tick {} must be from the due tick {} to before the next {}",
                self.name, self.last_tick, self.due, self.next
            ));
        }
        if self.items.is_empty() {
            return Err(format!(
                "schedule {:?}: a claim enqueues at least one item",
                self.name
            ));
        }
        for (i, item) in self.items.iter().enumerate() {
            item.validate()
                .map_err(|e| format!("schedule {:?}: item {i}: {e}", self.name))?;
        }
        Ok(())
    }
}

/// A schedule's row, for the runtime, `leasehold status` and the dashboard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The schedule's name.
    pub name: String,
    /// The cron expression, as registered.
    pub cron: String,
    /// The kind of the items each tick enqueues.
    pub kind: String,
    /// The input of the items each tick enqueues.
    pub input: Value,
    /// What to do with ticks missed while no node ran.
    pub catch_up: CatchUp,
    /// The next tick due.
    pub next_run_at: Timestamp,
    /// The latest tick enqueued by the last claim, if any.
    pub last_run_at: Option<Timestamp>,
    /// When the schedule was last registered.
    pub updated_at: Timestamp,
}
