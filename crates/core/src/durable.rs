//! The vocabulary of durable execution (seed 003): checkpoints with evidence, the LLM output
//! cache, the tool ledger, and [`DurableStore`], the backend-agnostic trait that stores them.
//!
//! The logic (verifying evidence, single-flight, replay, resuming a task) lives in
//! `leasehold-durable`; this module only says what is stored and which writes are fenced.
//!
//! # The fencing rule
//! Every durable write made on behalf of an item — beginning, committing, rolling back and
//! pruning checkpoints, recording a verification, recording a tool's result, counting a
//! replay, and claiming, renewing, filling or releasing an LLM cache key — carries the
//! holder's [`LeaseRef`] and applies only while that lease is current (the item is
//! `in_progress` under the same owner and epoch), checked in the same transaction as the
//! write. A stale holder (a "zombie" whose item was requeued, taken over or finished) gets
//! [`StoreError::LeaseLost`](crate::StoreError::LeaseLost) and changes nothing, exactly like
//! [`Store::checkpoint_save`](crate::Store::checkpoint_save). Only reads and maintenance that
//! acts on no item's behalf (`checkpoint_get`, `checkpoints_of`, `evidence_row_exists`, an
//! uncounted `ledger_get`, `ledger_history`, the purges, `cache_invalidate`) are unfenced.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::Timestamp;
use crate::error::StoreResult;
use crate::item::{ItemId, LeaseRef};

/// What a checkpoint marks (seed 003's valid checkpoint types). Anything else is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointType {
    /// The start of an iteration.
    IterationStart,
    /// The end of an iteration.
    IterationEnd,
    /// After a tool executed (written with the tool ledger's record).
    ToolExecuted,
    /// After an LLM call.
    LlmResponse,
    /// A point where a human approved.
    ApprovalPoint,
    /// A change of state.
    StateTransition,
    /// Written by hand.
    ManualCheckpoint,
    /// Written when a task was interrupted: by the reaper or `recover_mine` taking the item back.
    ErrorBoundary,
}

impl CheckpointType {
    /// Every type, in seed 003's order.
    pub const ALL: [CheckpointType; 8] = [
        CheckpointType::IterationStart,
        CheckpointType::IterationEnd,
        CheckpointType::ToolExecuted,
        CheckpointType::LlmResponse,
        CheckpointType::ApprovalPoint,
        CheckpointType::StateTransition,
        CheckpointType::ManualCheckpoint,
        CheckpointType::ErrorBoundary,
    ];

    /// The name as stored (`tool_executed`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointType::IterationStart => "iteration_start",
            CheckpointType::IterationEnd => "iteration_end",
            CheckpointType::ToolExecuted => "tool_executed",
            CheckpointType::LlmResponse => "llm_response",
            CheckpointType::ApprovalPoint => "approval_point",
            CheckpointType::StateTransition => "state_transition",
            CheckpointType::ManualCheckpoint => "manual_checkpoint",
            CheckpointType::ErrorBoundary => "error_boundary",
        }
    }
}

impl fmt::Display for CheckpointType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CheckpointType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CheckpointType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let valid: Vec<_> = CheckpointType::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "invalid checkpoint type {s:?}; valid types are {}",
                    valid.join(", ")
                )
            })
    }
}

/// Whether an artifact is a file or a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// One piece of evidence that a step did what it claims (seed 003's four evidence types).
///
/// Verification re-checks the claim against the world as it is now: a file hash is recomputed,
/// an artifact's presence is looked up, a database row is queried; a command's exit code is
/// compared with the one observed when the step ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Evidence {
    /// A command exited with the expected code.
    CommandExit {
        /// What the evidence shows, in words.
        description: String,
        /// The command that ran.
        command: String,
        /// The exit code that counts as success.
        expected: i32,
        /// The exit code observed.
        observed: i32,
    },
    /// A file or directory exists.
    ArtifactExists {
        /// What the evidence shows, in words.
        description: String,
        /// Its path.
        path: String,
        /// File or directory.
        kind: ArtifactKind,
    },
    /// A file's content has this SHA-256 (lowercase hex).
    FileSha256 {
        /// What the evidence shows, in words.
        description: String,
        /// The file.
        path: String,
        /// The expected digest, 64 lowercase hex digits.
        sha256: String,
    },
    /// A row of the store's database matches.
    DbRow {
        /// What the evidence shows, in words.
        description: String,
        /// The probe.
        row: RowProbe,
    },
}

impl Evidence {
    /// The evidence kind's name (`command_exit`, `artifact_exists`, `file_sha256`, `db_row`).
    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::CommandExit { .. } => "command_exit",
            Evidence::ArtifactExists { .. } => "artifact_exists",
            Evidence::FileSha256 { .. } => "file_sha256",
            Evidence::DbRow { .. } => "db_row",
        }
    }

    /// Refuses evidence that could never verify: an empty path or command, a malformed
    /// digest, an invalid row probe.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Evidence::CommandExit { command, .. } if command.trim().is_empty() => {
                Err("command_exit evidence needs the command".into())
            }
            Evidence::ArtifactExists { path, .. } if path.is_empty() => {
                Err("artifact_exists evidence needs a path".into())
            }
            Evidence::FileSha256 { path, sha256, .. } => {
                if path.is_empty() {
                    return Err("file_sha256 evidence needs a path".into());
                }
                if sha256.len() != 64
                    || !sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(format!(
                        "file_sha256 evidence for {path}: {sha256:?} is not 64 lowercase hex digits"
                    ));
                }
                Ok(())
            }
            Evidence::DbRow { row, .. } => row.validate(),
            _ => Ok(()),
        }
    }
}

/// A database-row claim: a row of `table` where every `where_` column equals its value also has
/// every `values` column equal to its value (JSON `null` matches SQL `NULL`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowProbe {
    /// The table (a plain identifier).
    pub table: String,
    /// Columns that pick the row.
    #[serde(rename = "where")]
    pub where_: Map<String, Value>,
    /// Columns the row must have these values in.
    #[serde(default)]
    pub values: Map<String, Value>,
}

impl RowProbe {
    /// Refuses a table or column that is not a plain identifier (`[A-Za-z_][A-Za-z0-9_]*`), an
    /// empty `where`, or a value that is an object or array.
    pub fn validate(&self) -> Result<(), String> {
        check_ident("table", &self.table)?;
        if self.where_.is_empty() {
            return Err(format!(
                "db_row evidence on {}: `where` must name at least one column",
                self.table
            ));
        }
        for (col, v) in self.where_.iter().chain(self.values.iter()) {
            check_ident("column", col)?;
            if v.is_object() || v.is_array() {
                return Err(format!(
                    "db_row evidence on {}: column {col} compares with {v}, but only strings, numbers, booleans and null can be compared",
                    self.table
                ));
            }
        }
        Ok(())
    }
}

fn check_ident(what: &str, s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "db_row evidence: {what} {s:?} is not a plain identifier"
        ))
    }
}

/// The evidence a step commits with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvidencePack {
    /// The claims; all must verify for the checkpoint to be valid.
    pub evidence: Vec<Evidence>,
}

impl EvidencePack {
    /// A pack of these claims.
    pub fn new(evidence: Vec<Evidence>) -> Self {
        EvidencePack { evidence }
    }

    /// Refuses the pack if any of its claims is invalid (naming which).
    pub fn validate(&self) -> Result<(), String> {
        for (i, e) in self.evidence.iter().enumerate() {
            e.validate()
                .map_err(|why| format!("evidence #{i} ({}): {why}", e.kind()))?;
        }
        Ok(())
    }
}

/// Where a checkpoint is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointState {
    /// `begin_step` wrote it; the step has not committed (a crash leaves it here, unused).
    Begun,
    /// `commit_step` wrote its evidence: a candidate to resume from.
    Committed,
    /// A rollback to an earlier checkpoint set it aside.
    RolledBack,
}

impl CheckpointState {
    /// The name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointState::Begun => "begun",
            CheckpointState::Committed => "committed",
            CheckpointState::RolledBack => "rolled_back",
        }
    }
}

impl FromStr for CheckpointState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "begun" => Ok(CheckpointState::Begun),
            "committed" => Ok(CheckpointState::Committed),
            "rolled_back" => Ok(CheckpointState::RolledBack),
            _ => Err(format!("unknown checkpoint state {s:?}")),
        }
    }
}

/// The last verification's result, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Verification {
    /// Every claim held.
    Valid,
    /// A claim failed; the reason names it.
    Invalid {
        /// Which claim failed and why.
        reason: String,
    },
}

/// A step to begin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewStep {
    /// The step's position in its task (0-based; steps run in this order), or `None` for a
    /// checkpoint that is evidence only (a tool's execution) and never a place to resume from.
    pub step: Option<i64>,
    /// The step's name.
    pub name: String,
    /// What it marks.
    pub checkpoint_type: CheckpointType,
    /// The task's state to resume from once this step has committed.
    pub snapshot: Value,
}

/// The arguments of [`DurableStore::step_commit`].
#[derive(Clone, Copy, Debug)]
pub struct StepCommit<'a> {
    /// The lease that began the step.
    pub lease: &'a LeaseRef,
    /// The begun checkpoint.
    pub checkpoint: i64,
    /// The evidence.
    pub evidence: &'a EvidencePack,
    /// The state after the step, replacing the one written at begin.
    pub snapshot: Option<&'a Value>,
    /// A tool execution to record in the same transaction.
    pub tool: Option<&'a NewLedgerEntry>,
}

/// A durable checkpoint (seed 003's checkpoint), as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Its id (increasing per store).
    pub id: i64,
    /// The item (task) it belongs to.
    pub item: ItemId,
    /// The epoch of the lease that wrote it.
    pub epoch: i64,
    /// The step's position, `None` for an error boundary written by recovery.
    pub step: Option<i64>,
    /// The step's name.
    pub name: String,
    /// What it marks.
    pub checkpoint_type: CheckpointType,
    /// Where it is in its life.
    pub state: CheckpointState,
    /// The task's state to resume from.
    pub snapshot: Value,
    /// The evidence it committed with.
    pub evidence: EvidencePack,
    /// The last verification's result, if any.
    pub verification: Option<Verification>,
    /// When it was last verified.
    pub verified_at: Option<Timestamp>,
    /// When `begin_step` wrote it.
    pub created_at: Timestamp,
    /// When `commit_step` committed it.
    pub committed_at: Option<Timestamp>,
}

/// A tool execution to record with its step's checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewLedgerEntry {
    /// The ledger key (a digest of tool, command, task and call).
    pub key: String,
    /// The tool's name.
    pub tool: String,
    /// The command it ran.
    pub command: String,
    /// The call's identity within its task (its position within its step, or a key the
    /// caller chose), so that the same command run twice in one task is two records.
    pub call: String,
    /// Its result.
    pub result: Value,
    /// When the entry stops being replayed.
    pub expires_at: Timestamp,
}

/// A recorded tool execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Its id.
    pub id: i64,
    /// The ledger key.
    pub key: String,
    /// The item (task) that ran it.
    pub item: ItemId,
    /// The epoch of the lease that ran it.
    pub epoch: i64,
    /// The tool.
    pub tool: String,
    /// The command.
    pub command: String,
    /// The call's identity within its task (see [`NewLedgerEntry::call`]); empty for records
    /// written before calls had one.
    pub call: String,
    /// The recorded result, replayed instead of executing again.
    pub result: Value,
    /// The `tool_executed` checkpoint committed with it.
    pub checkpoint_id: Option<i64>,
    /// When it ran.
    pub executed_at: Timestamp,
    /// When it stops being replayed.
    pub expires_at: Timestamp,
    /// How many times it was replayed.
    pub replays: u64,
}

/// An LLM output to store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewCacheEntry {
    /// The cache key (a digest of operation, prompt, model and task).
    pub key: String,
    /// The operation (`plan`, `research`, …).
    pub operation: String,
    /// The model.
    pub model: String,
    /// The task scope.
    pub task: String,
    /// The output.
    pub output: Value,
    /// When it expires.
    pub expires_at: Timestamp,
}

/// A cached LLM output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The cache key.
    pub key: String,
    /// The output.
    pub output: Value,
    /// When it was stored.
    pub created_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// How many times it was served.
    pub hits: u64,
}

/// An LLM cache entry as an operator lists it: what it is and whose, not its output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheKeyInfo {
    /// The cache key.
    pub key: String,
    /// `ready` (an output is stored) or `generating` (a claimant holds the key).
    pub state: String,
    /// The operation (`plan`, `research`, …), once an output is stored.
    pub operation: Option<String>,
    /// The model, once an output is stored.
    pub model: Option<String>,
    /// The task scope the key was made for, once an output is stored.
    pub task: Option<String>,
    /// When the output was stored, or the claim taken.
    pub created_at: Timestamp,
    /// When the output expires (`None` while generating).
    pub expires_at: Option<Timestamp>,
    /// How many times it was served.
    pub hits: u64,
}

/// The answer to a claim on a cache key (single-flight across processes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CacheClaim {
    /// A live entry exists: use it (its hit count was incremented).
    Hit(CacheEntry),
    /// The caller holds the key until `until`: generate, then put or release.
    Claimed {
        /// When the claim lapses and another claimant may take over.
        until: Timestamp,
    },
    /// Another current lease is generating this key until at most `until`: wait and ask
    /// again. (A claim whose lease is no longer current is never `Busy`: it is dead at once.)
    Busy {
        /// The lease that holds the claim.
        holder: LeaseRef,
        /// When its claim lapses unless renewed.
        until: Timestamp,
    },
}

/// Storage for durable execution: checkpoints, the tool ledger and the LLM output cache.
///
/// Backend-agnostic and object-safe (`Arc<dyn DurableStore>`); `now` comes from the caller's
/// clock. **Fencing:** every method that takes a [`LeaseRef`] writes on behalf of that lease's
/// item and applies only while the lease is current — the item is `in_progress` under the
/// same owner and epoch, read in the same transaction as the write. Otherwise it fails with
/// [`StoreError::LeaseLost`](crate::StoreError::LeaseLost) and changes nothing (no row, no
/// counter, no claim). Checks of the arguments alone (an empty name, a zero ttl) may come
/// before the fence; everything that reads stored state comes after it.
#[async_trait]
pub trait DurableStore: Send + Sync + fmt::Debug + 'static {
    /// Writes a `begun` checkpoint for `step` of the lease's item; returns its id.
    ///
    /// Fenced (`LeaseLost`). `InvalidInput` for a negative position or an empty name.
    async fn step_begin(
        &self,
        lease: &LeaseRef,
        step: &NewStep,
        now: Timestamp,
    ) -> StoreResult<i64>;

    /// Commits a begun checkpoint with its evidence, replacing its snapshot when `snapshot`
    /// is given (the state after the step); with `tool`, records the tool execution in the
    /// same transaction (replacing an earlier record of the same key), so a crash can never
    /// leave one without the other.
    ///
    /// Fenced (`LeaseLost`), and only the epoch that began a step commits it: `InvalidInput`
    /// if `checkpoint` is not a begun checkpoint of this lease's item and epoch.
    async fn step_commit(
        &self,
        commit: &StepCommit<'_>,
        now: Timestamp,
    ) -> StoreResult<CheckpointRecord>;

    /// One checkpoint. A read: not fenced.
    async fn checkpoint_get(&self, id: i64) -> StoreResult<Option<CheckpointRecord>>;

    /// An item's checkpoints, newest first, at most `limit`. A read: not fenced.
    async fn checkpoints_of(&self, item: ItemId, limit: u32) -> StoreResult<Vec<CheckpointRecord>>;

    /// Records a verification result on checkpoint `id` of the lease's item.
    ///
    /// Fenced (`LeaseLost`): verifying is done by the holder resuming the item, and a stale
    /// holder's verdict (taken against a world that may have moved on) must not overwrite the
    /// current holder's. `InvalidInput` if `id` is not a checkpoint of the lease's item.
    async fn checkpoint_record_verification(
        &self,
        lease: &LeaseRef,
        id: i64,
        verification: &Verification,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Sets aside (`rolled_back`) every checkpoint of the lease's item newer than `to`;
    /// returns how many.
    ///
    /// Fenced (`LeaseLost`). `InvalidInput` if `to` is not a committed checkpoint of that item.
    async fn checkpoints_rollback(
        &self,
        lease: &LeaseRef,
        to: i64,
        now: Timestamp,
    ) -> StoreResult<u64>;

    /// Deletes the lease's item's oldest checkpoints beyond the newest `keep` (retention);
    /// returns how many.
    ///
    /// Fenced (`LeaseLost`): a stale holder must not delete the checkpoint the current holder
    /// is about to resume from. `InvalidInput` if `keep` is 0 (checked after the fence).
    async fn checkpoints_prune(
        &self,
        lease: &LeaseRef,
        keep: u32,
        now: Timestamp,
    ) -> StoreResult<u64>;

    /// Whether a row matching `probe` exists in the store's database. `InvalidInput` for an
    /// unknown table or column. A read: not fenced.
    async fn evidence_row_exists(&self, probe: &RowProbe) -> StoreResult<bool>;

    /// The live ledger entry for `key` (expired entries are not returned).
    ///
    /// With `replay: None` a plain read, not fenced. With `replay: Some(lease)` the lookup is
    /// a replay on behalf of the lease's item and counts one on the entry in the same
    /// statement: fenced (`LeaseLost`, nothing counted), and only an entry of the lease's
    /// item is replayed (an entry of another item is not returned and not counted).
    async fn ledger_get(
        &self,
        key: &str,
        replay: Option<&LeaseRef>,
        now: Timestamp,
    ) -> StoreResult<Option<LedgerEntry>>;

    /// An item's ledger, newest first, at most `limit`. A read: not fenced.
    async fn ledger_history(&self, item: ItemId, limit: u32) -> StoreResult<Vec<LedgerEntry>>;

    /// Deletes expired ledger entries; returns how many. Maintenance: not fenced.
    async fn ledger_purge_expired(&self, now: Timestamp) -> StoreResult<u64>;

    /// Returns the live entry for `key` (counting a hit), or claims the key for `lease` for
    /// `ttl`, or reports the other lease that holds it ([`CacheClaim::Busy`]).
    ///
    /// Fenced (`LeaseLost`, nothing changed — no hit counted, no claim taken or renewed).
    /// The claim records the lease's item, owner and epoch. A claim is live while it has not
    /// lapsed (`claim_expires_at > now`) **and** its lease is still current; a claim whose
    /// lease is no longer current (its holder became a zombie) is dead at once and is taken
    /// over without waiting for it to lapse. Asking again under the lease that holds the
    /// claim renews it (`Claimed` with the new `until`). `InvalidInput` for a zero `ttl`.
    async fn cache_claim(
        &self,
        key: &str,
        lease: &LeaseRef,
        ttl: Duration,
        now: Timestamp,
    ) -> StoreResult<CacheClaim>;

    /// Stores an output for `entry.key` and ends the lease's claim on it.
    ///
    /// Fenced (`LeaseLost`). The key's row must be a claim made by this lease (item, owner
    /// and epoch); a claim that lapsed but that no one took over still counts. Otherwise —
    /// another lease claimed the key, an output is already stored, or there is no claim —
    /// [`StoreError::ClaimNotHeld`](crate::StoreError::ClaimNotHeld) and nothing changes:
    /// a put never overwrites another claimant's claim or a stored output. `InvalidInput` if
    /// the entry expires at or before `now`.
    async fn cache_put(
        &self,
        entry: &NewCacheEntry,
        lease: &LeaseRef,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Ends the lease's claim on `key` without an output (the generator failed); returns
    /// whether there was such a claim (another lease's claim or a stored output is left
    /// alone). Fenced (`LeaseLost`, nothing changed).
    async fn cache_release(&self, key: &str, lease: &LeaseRef, now: Timestamp)
        -> StoreResult<bool>;

    /// The cache entries of an item, newest first, at most `limit`: the stored outputs whose
    /// task scope is the item's id (as the durable task runner scopes its LLM calls) and the
    /// claims one of its leases holds. A read: not fenced.
    async fn cache_entries_of(&self, item: ItemId, limit: u32) -> StoreResult<Vec<CacheKeyInfo>>;

    /// Removes the entry (or claim) for `key`; returns whether there was one. An operator's
    /// action on no item's behalf: not fenced.
    async fn cache_invalidate(&self, key: &str) -> StoreResult<bool>;

    /// Deletes expired entries and claims that lapsed or whose lease is no longer current;
    /// returns how many. Maintenance: not fenced.
    async fn cache_purge_expired(&self, now: Timestamp) -> StoreResult<u64>;
}
