//! Operators' actions on items and kinds: retry, cancel and delete items (by id or by a
//! filter), pause and resume a kind. Each is one store call that refuses a wrong state and
//! changes nothing, and whose dry run reports what it would do.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::item::{ItemId, ItemStatus};

/// Which items an action applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemSelector {
    /// Exactly these items. All or nothing: one missing id (`NotFound`) or one item in a status
    /// the action does not apply to (`InvalidState`, naming it) refuses the whole call.
    Ids(Vec<ItemId>),
    /// Every item that matches and is in a status the action applies to.
    Filter(ActionFilter),
}

/// The filter form of an action. At least one field must be set, so that no action applies to
/// every item by accident.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionFilter {
    /// Only this status; it must be one the action applies to (`InvalidInput` otherwise).
    /// `None`: every status the action applies to.
    pub status: Option<ItemStatus>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only items enqueued before this time (`created_at < before`).
    pub before: Option<Timestamp>,
}

impl ItemSelector {
    /// Refuses an empty id list and an empty filter.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ItemSelector::Ids(ids) if ids.is_empty() => Err("no item ids given".into()),
            ItemSelector::Filter(f)
                if f.status.is_none() && f.kind.is_none() && f.before.is_none() =>
            {
                Err("a filter needs at least one of status, kind or before".into())
            }
            ItemSelector::Filter(ActionFilter {
                kind: Some(kind), ..
            }) if kind.trim().is_empty() => Err("kind must not be empty".into()),
            _ => Ok(()),
        }
    }
}

/// An operator's action on items.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemAction {
    /// `failed` or `cancelled` → `pending`, ready now, its attempt count reset (its budget
    /// renewed) and its history kept.
    Retry,
    /// `pending` or `blocked` → `cancelled` (its blocked dependants too); `in_progress` → marked for cancellation (its holder ends it
    /// `cancelled` at its next renewal; whoever takes it back from a dead holder does too).
    Cancel,
    /// A finished item (`completed`, `failed`, `cancelled`) is removed with its checkpoints and
    /// history.
    Delete,
}

impl ItemAction {
    /// The action's name (`retry`).
    pub fn as_str(self) -> &'static str {
        match self {
            ItemAction::Retry => "retry",
            ItemAction::Cancel => "cancel",
            ItemAction::Delete => "delete",
        }
    }

    /// The statuses the action applies to.
    pub fn applies_to(self) -> &'static [ItemStatus] {
        match self {
            ItemAction::Retry => &[ItemStatus::Failed, ItemStatus::Cancelled],
            ItemAction::Cancel => &[
                ItemStatus::Pending,
                ItemStatus::Blocked,
                ItemStatus::Awaiting,
                ItemStatus::InProgress,
            ],
            ItemAction::Delete => &[
                ItemStatus::Completed,
                ItemStatus::Failed,
                ItemStatus::Cancelled,
            ],
        }
    }

    /// [`applies_to`](Self::applies_to) in words, for errors ("failed or cancelled").
    pub fn expected(self) -> &'static str {
        match self {
            ItemAction::Retry => "failed or cancelled",
            ItemAction::Cancel => "pending, blocked, awaiting or in_progress",
            ItemAction::Delete => "finished (completed, failed or cancelled)",
        }
    }

    /// The statuses a selector's filter picks for this action (all it applies to when the
    /// filter names none); a status the action does not apply to is refused, naming it.
    pub fn statuses(self, selector: &ItemSelector) -> Result<Vec<ItemStatus>, String> {
        match selector {
            ItemSelector::Filter(ActionFilter {
                status: Some(s), ..
            }) => {
                if self.applies_to().contains(s) {
                    Ok(vec![*s])
                } else {
                    Err(format!(
                        "{} applies to {} items, not {s}",
                        self.as_str(),
                        self.expected()
                    ))
                }
            }
            _ => Ok(self.applies_to().to_vec()),
        }
    }
}

/// One item an action changed (or, in a dry run, would change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionItem {
    /// The item.
    pub id: ItemId,
    /// Its kind.
    pub kind: String,
    /// Its status before.
    pub from: ItemStatus,
    /// Its status after (`in_progress` again for an in-progress item marked for cancellation;
    /// for a deleted item, the status it had).
    pub to: ItemStatus,
}

/// What an action did, or in a dry run would do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    /// The action.
    pub action: ItemAction,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// How many items it applied to.
    pub count: u64,
    /// Those items, by id.
    pub items: Vec<ActionItem>,
}

impl ActionReport {
    /// A report of `items`.
    pub fn new(action: ItemAction, dry_run: bool, items: Vec<ActionItem>) -> Self {
        ActionReport {
            action,
            dry_run,
            count: items.len() as u64,
            items,
        }
    }
}

/// A retry's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRequest {
    /// Which items.
    pub target: ItemSelector,
    /// The new retry budget (at least 1); `None` keeps each item's own. Either way the attempt
    /// count starts again at 0.
    pub max_attempts: Option<u32>,
    /// Report only; change nothing.
    pub dry_run: bool,
}

/// A kind whose acquisition is paused on every node of the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PausedKind {
    /// The kind.
    pub kind: String,
    /// Since when.
    pub paused_at: Timestamp,
}
