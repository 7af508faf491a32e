//! The schema, its migrations, and the order in which a database file is opened.
//!
//! The schema version lives in `PRAGMA user_version` (and leasehold's mark in
//! `PRAGMA application_id`). [`MIGRATIONS`]`[n]` takes version `n` to `n + 1`; all pending ones run
//! in one `BEGIN IMMEDIATE` transaction together with the version bump, so a crash mid-way
//! leaves the old version intact and two processes opening the same new file migrate once.
//!
//! Opening never writes to a file it should refuse, nor leaves files beside it: [`open`] first
//! reads the header bytes itself (not SQLite at all → `NotADatabase`; `user_version` newer than
//! [`SCHEMA_VERSION`] → `SchemaTooNew`; another `application_id` → `NotADatabase`). Only when a
//! non-empty write-ahead log sits beside the file, and may hold a newer header, does it ask
//! SQLite through a read-only connection. Then it opens for writing, checks again with reads
//! only (a version-0 file with tables of ours is someone else's), switches to WAL and migrates.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leasehold_core::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::{from_sqlite, OpError, OpResult};
use crate::options::{SqliteOptions, Synchronous};

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// `PRAGMA application_id` of a leasehold database ("LHLD").
pub(crate) const APPLICATION_ID: i32 = 0x4C48_4C44;

/// How long a statement waits for another connection's lock before failing with `Backend`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The tables leasehold owns: a version-0 database that already has one of these was written
/// by someone else and is refused rather than migrated over.
const OWN_TABLES: [&str; 10] = [
    "items",
    "item_attempts",
    "item_deps",
    "paused_kinds",
    "schedules",
    "checkpoints",
    "workers",
    "durable_checkpoints",
    "tool_ledger",
    "llm_cache",
];

/// Every SQLite database file starts with these 16 bytes.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Schema migrations, oldest first; `MIGRATIONS[n]` takes version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12, V13];

/// Version 1: items, their checkpoints, and the worker registry.
///
/// `workers` holds every field of `NodeRecord` plus `stopped_at`, the `now` of `node_stop`
/// (cleared by the next heartbeat), for the clean-up of old stopped rows.
///
/// `STRICT` tables make SQLite refuse a value of the wrong type instead of storing it. The
/// partial indexes hold only the rows their query can return: `items_pending_ready` is in
/// exactly the order acquisition takes items, so acquiring reads the first `limit` ready entries
/// whatever the queue depth, and `items_lease_expiry` holds only leased items (bounded by the
/// number of workers), in the order the reaper judges them.
const V1: &str = "
CREATE TABLE items (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT    NOT NULL CHECK (kind <> ''),
    input             TEXT    NOT NULL CHECK (json_valid(input)),
    status            TEXT    NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'in_progress', 'completed', 'failed', 'cancelled')),
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      INTEGER NOT NULL CHECK (max_attempts >= 1),
    priority          INTEGER NOT NULL DEFAULT 0,
    run_at            INTEGER NOT NULL,
    group_id          TEXT,
    owner             TEXT,
    owner_node        TEXT,
    owner_incarnation INTEGER,
    epoch             INTEGER NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    lease_expires_at  INTEGER,
    last_heartbeat_at INTEGER,
    output            TEXT    CHECK (json_valid(output)),
    error             TEXT,
    progress          TEXT    CHECK (json_valid(progress)),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    CHECK (status <> 'in_progress'
           OR (owner IS NOT NULL AND lease_expires_at IS NOT NULL AND last_heartbeat_at IS NOT NULL))
) STRICT;

CREATE INDEX items_pending_ready ON items (priority DESC, run_at, id) WHERE status = 'pending';
CREATE INDEX items_lease_expiry ON items (lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX items_owner_in_progress ON items (owner) WHERE status = 'in_progress';
CREATE INDEX items_status ON items (status, id);
CREATE INDEX items_kind ON items (kind, id);
CREATE INDEX items_group ON items (group_id, id) WHERE group_id IS NOT NULL;
CREATE INDEX items_finished ON items (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE checkpoints (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id    INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    payload    TEXT    NOT NULL CHECK (json_valid(payload)),
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX checkpoints_item ON checkpoints (item_id, id);

CREATE TABLE workers (
    node_id               TEXT    PRIMARY KEY NOT NULL,
    incarnation           INTEGER NOT NULL,
    worker_type           TEXT    NOT NULL,
    status                TEXT    NOT NULL
                          CHECK (status IN ('active', 'idle', 'processing', 'stopped')),
    current_item          INTEGER,
    task_text             TEXT,
    last_heartbeat_at     INTEGER NOT NULL,
    heartbeat_interval_ms INTEGER NOT NULL,
    started_at            INTEGER NOT NULL,
    metadata              TEXT    NOT NULL CHECK (json_valid(metadata)),
    stopped_at            INTEGER
) STRICT, WITHOUT ROWID;
";

/// Version 2: durable execution (`leasehold-durable`): checkpoints with evidence, the tool
/// ledger and the LLM output cache.
///
/// `durable_checkpoints.step` is NULL only for the `error_boundary` rows recovery writes. The
/// ledger's `key` is unique: one recorded execution per (tool, command, task), which is what
/// makes a replay exact. `llm_cache` rows are `generating` while a claimant holds the key
/// (single-flight across processes) and `ready` once the output is stored; a claim past
/// `claim_expires_at` may be taken over. Checkpoints and ledger rows go with their item.
const V2: &str = "
CREATE TABLE durable_checkpoints (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id         INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    epoch           INTEGER NOT NULL,
    step            INTEGER CHECK (step IS NULL OR step >= 0),
    name            TEXT    NOT NULL,
    checkpoint_type TEXT    NOT NULL CHECK (checkpoint_type IN ('iteration_start', 'iteration_end',
                        'tool_executed', 'llm_response', 'approval_point', 'state_transition',
                        'manual_checkpoint', 'error_boundary')),
    state           TEXT    NOT NULL CHECK (state IN ('begun', 'committed', 'rolled_back')),
    snapshot        TEXT    NOT NULL CHECK (json_valid(snapshot)),
    evidence        TEXT    NOT NULL CHECK (json_valid(evidence)),
    verification    TEXT    CHECK (verification IS NULL OR json_valid(verification)),
    verified_at     INTEGER,
    created_at      INTEGER NOT NULL,
    committed_at    INTEGER
) STRICT;

CREATE INDEX durable_checkpoints_item ON durable_checkpoints (item_id, id);

CREATE TABLE tool_ledger (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    key           TEXT    NOT NULL UNIQUE,
    item_id       INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    epoch         INTEGER NOT NULL,
    tool          TEXT    NOT NULL,
    command       TEXT    NOT NULL,
    result        TEXT    NOT NULL CHECK (json_valid(result)),
    checkpoint_id INTEGER REFERENCES durable_checkpoints (id) ON DELETE SET NULL,
    executed_at   INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    replays       INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX tool_ledger_item ON tool_ledger (item_id, id);
CREATE INDEX tool_ledger_expiry ON tool_ledger (expires_at);

CREATE TABLE llm_cache (
    key              TEXT    PRIMARY KEY NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('generating', 'ready')),
    operation        TEXT,
    model            TEXT,
    task             TEXT,
    output           TEXT    CHECK (output IS NULL OR json_valid(output)),
    claimant         TEXT,
    claim_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER,
    hits             INTEGER NOT NULL DEFAULT 0,
    CHECK (state <> 'ready' OR (output IS NOT NULL AND expires_at IS NOT NULL))
) STRICT, WITHOUT ROWID;

CREATE INDEX llm_cache_expiry ON llm_cache (expires_at) WHERE state = 'ready';
";

/// Version 3: the hot path's `items` table, rebuilt (SQLite cannot alter a CHECK constraint).
///
/// - The status CHECK is a chain of `=` instead of `IN (…)`: SQLite evaluates a CHECK with an
///   `IN` list of literals by building an ephemeral B-tree (its own pager and a zeroed page) on
///   every insert and every update that changes the status, which cost about half the
///   instructions of an acquire/complete cycle.
/// - `items_status (status, id)` and `items_owner_in_progress` are gone: every acquisition and
///   completion paid four and two B-tree writes for them. Counts now read the partial indexes
///   (pending: `items_pending_ready`, in progress: `items_lease_expiry`, finished:
///   `items_finished`, which now leads with `status`); lookups by owner or node scan
///   `items_lease_expiry`, which holds only leased items (bounded by the number of workers);
///   listing failed or cancelled items, rare among many completed ones, has `items_dead`.
///
/// Foreign keys are off while it runs ([`migrate`]), or dropping the old table would cascade
/// into the checkpoints; its `sqlite_sequence` row moves to the new table first, so ids are never
/// reused.
const V3: &str = "
CREATE TABLE items_v3 (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT    NOT NULL CHECK (kind <> ''),
    input             TEXT    NOT NULL CHECK (json_valid(input)),
    status            TEXT    NOT NULL DEFAULT 'pending'
                      CHECK (status = 'pending' OR status = 'in_progress' OR status = 'completed'
                             OR status = 'failed' OR status = 'cancelled'),
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      INTEGER NOT NULL CHECK (max_attempts >= 1),
    priority          INTEGER NOT NULL DEFAULT 0,
    run_at            INTEGER NOT NULL,
    group_id          TEXT,
    owner             TEXT,
    owner_node        TEXT,
    owner_incarnation INTEGER,
    epoch             INTEGER NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    lease_expires_at  INTEGER,
    last_heartbeat_at INTEGER,
    output            TEXT    CHECK (json_valid(output)),
    error             TEXT,
    progress          TEXT    CHECK (json_valid(progress)),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    CHECK (status <> 'in_progress'
           OR (owner IS NOT NULL AND lease_expires_at IS NOT NULL AND last_heartbeat_at IS NOT NULL))
) STRICT;

INSERT INTO items_v3 SELECT id, kind, input, status, attempts, max_attempts, priority, run_at,
    group_id, owner, owner_node, owner_incarnation, epoch, lease_expires_at, last_heartbeat_at,
    output, error, progress, created_at, updated_at, finished_at FROM items;
DELETE FROM sqlite_sequence WHERE name = 'items_v3';
UPDATE sqlite_sequence SET name = 'items_v3' WHERE name = 'items';
DROP TABLE items;
ALTER TABLE items_v3 RENAME TO items;

CREATE INDEX items_pending_ready ON items (priority DESC, run_at, id) WHERE status = 'pending';
CREATE INDEX items_lease_expiry ON items (lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX items_kind ON items (kind, id);
CREATE INDEX items_group ON items (group_id, id) WHERE group_id IS NOT NULL;
CREATE INDEX items_finished ON items (status, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX items_dead ON items (status, id) WHERE status = 'failed' OR status = 'cancelled';
";

/// Version 4: fenced cache claims and the tool call's identity.
///
/// - `llm_cache.claim_item` and `claim_epoch` record, beside `claimant` (the owner), the lease
///   that holds a `generating` row's claim: a claim is live only while that lease is still
///   current, so a zombie's claim is dead at once and its renewals and puts are refused.
///   Claims written before this version have no lease and count as dead.
/// - `tool_ledger.call` is the call's identity within its task (its position within its
///   step, or a key the caller chose); the key digests it too, so the same command run twice
///   in one task is two records. Rows written before this version have an empty call.
const V4: &str = "
ALTER TABLE llm_cache ADD COLUMN claim_item INTEGER;
ALTER TABLE llm_cache ADD COLUMN claim_epoch INTEGER;
ALTER TABLE tool_ledger ADD COLUMN call TEXT NOT NULL DEFAULT '';
";

/// Version 5: an item's own execution timeout, in milliseconds (NULL: its kind's or the
/// node's applies). On the item, not in a node's configuration, because any node may run it.
const V5: &str = "
ALTER TABLE items ADD COLUMN timeout_ms INTEGER CHECK (timeout_ms IS NULL OR timeout_ms > 0);
";

/// Version 6: graceful releases per item, so that past the configured limit a release counts as an
/// attempt (`item_release`). Existing items start at 0.
const V6: &str = "
ALTER TABLE items ADD COLUMN releases INTEGER NOT NULL DEFAULT 0 CHECK (releases >= 0);
";

/// Version 7: unique keys (`NewItem::unique_key`). The partial unique index holds only open
/// items with a key, so two enqueues of one key while an item with it is pending or in
/// progress cannot both insert (the second finds the first through `ON CONFLICT`), while
/// finished items free their key; it stays as small as the open keyed work.
const V7: &str = "
ALTER TABLE items ADD COLUMN unique_key TEXT CHECK (unique_key IS NULL OR unique_key <> '');
CREATE UNIQUE INDEX items_unique_open ON items (unique_key)
    WHERE unique_key IS NOT NULL AND (status = 'pending' OR status = 'in_progress');
";

/// Version 8: operators' actions and attempt history.
///
/// - `items.started_at`: when the current (or last) attempt was acquired, written by the
///   acquisition's own update, so that recording an attempt when it ends needs no write when it
///   starts.
/// - `items.cancel_requested_at`: an operator's cancel of an in-progress item, for its holder
///   (or whoever takes it back) to act on.
/// - `item_attempts`: one row per ended attempt, keyed by the acquisition's epoch (unique per
///   attempt of an item), written in the transaction that ended it and trimmed to the store's
///   `history_keep` newest per item. Deleting an item deletes its history.
/// - `paused_kinds`: kinds no node acquires until resumed.
const V8: &str = "
ALTER TABLE items ADD COLUMN started_at INTEGER;
ALTER TABLE items ADD COLUMN cancel_requested_at INTEGER;
CREATE TABLE item_attempts (
    item_id           INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    epoch             INTEGER NOT NULL,
    attempt           INTEGER NOT NULL CHECK (attempt >= 0),
    started_at        INTEGER,
    ended_at          INTEGER NOT NULL,
    owner             TEXT    NOT NULL,
    owner_node        TEXT,
    owner_incarnation INTEGER,
    outcome           TEXT    NOT NULL
                      CHECK (outcome = 'completed' OR outcome = 'failed' OR outcome = 'timed_out'
                             OR outcome = 'released' OR outcome = 'cancelled'
                             OR outcome = 'recovered_by_owner' OR outcome = 'reaped'
                             OR outcome = 'taken_back_by_monitor'),
    error             TEXT,
    PRIMARY KEY (item_id, epoch)
) STRICT, WITHOUT ROWID;
CREATE TABLE paused_kinds (
    kind      TEXT    PRIMARY KEY CHECK (kind <> ''),
    paused_at INTEGER NOT NULL
) STRICT;
";

/// Version 9: the decision step. `items` rebuilt (as in version 3: SQLite cannot alter a CHECK)
/// so that its status may be `awaiting` (or `blocked`, used from version 10), with a `decision` column (the parked item's question,
/// allowed answers and, once decided, the answer, as JSON), and `items_awaiting`, which holds
/// only parked items, for their count and listing. A parked item keeps its unique key:
/// `items_unique_open` now counts `awaiting` as open.
///
/// The copy names the new table's columns but selects `*`: a column added to `items` by a
/// migration before this one makes it fail loudly rather than drop that column's data.
const V9: &str = "
CREATE TABLE items_v9 (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT    NOT NULL CHECK (kind <> ''),
    input             TEXT    NOT NULL CHECK (json_valid(input)),
    status            TEXT    NOT NULL DEFAULT 'pending'
                      CHECK (status = 'pending' OR status = 'in_progress' OR status = 'completed'
                             OR status = 'failed' OR status = 'cancelled'
                             OR status = 'awaiting' OR status = 'blocked'),
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      INTEGER NOT NULL CHECK (max_attempts >= 1),
    priority          INTEGER NOT NULL DEFAULT 0,
    run_at            INTEGER NOT NULL,
    group_id          TEXT,
    owner             TEXT,
    owner_node        TEXT,
    owner_incarnation INTEGER,
    epoch             INTEGER NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    lease_expires_at  INTEGER,
    last_heartbeat_at INTEGER,
    output            TEXT    CHECK (json_valid(output)),
    error             TEXT,
    progress          TEXT    CHECK (json_valid(progress)),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    timeout_ms        INTEGER CHECK (timeout_ms IS NULL OR timeout_ms > 0),
    releases          INTEGER NOT NULL DEFAULT 0 CHECK (releases >= 0),
    unique_key        TEXT    CHECK (unique_key IS NULL OR unique_key <> ''),
    started_at        INTEGER,
    cancel_requested_at INTEGER,
    decision          TEXT    CHECK (decision IS NULL OR json_valid(decision)),
    CHECK (status <> 'in_progress'
           OR (owner IS NOT NULL AND lease_expires_at IS NOT NULL AND last_heartbeat_at IS NOT NULL)),
    CHECK (status <> 'awaiting' OR (decision IS NOT NULL AND lease_expires_at IS NULL))
) STRICT;

INSERT INTO items_v9 (id, kind, input, status, attempts, max_attempts, priority, run_at,
    group_id, owner, owner_node, owner_incarnation, epoch, lease_expires_at, last_heartbeat_at,
    output, error, progress, created_at, updated_at, finished_at, timeout_ms, releases, unique_key,
    started_at, cancel_requested_at)
    SELECT * FROM items;
DELETE FROM sqlite_sequence WHERE name = 'items_v9';
UPDATE sqlite_sequence SET name = 'items_v9' WHERE name = 'items';
DROP TABLE items;
ALTER TABLE items_v9 RENAME TO items;

CREATE INDEX items_pending_ready ON items (priority DESC, run_at, id) WHERE status = 'pending';
CREATE INDEX items_lease_expiry ON items (lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX items_kind ON items (kind, id);
CREATE INDEX items_group ON items (group_id, id) WHERE group_id IS NOT NULL;
CREATE INDEX items_finished ON items (status, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX items_dead ON items (status, id) WHERE status = 'failed' OR status = 'cancelled';
CREATE INDEX items_awaiting ON items (id) WHERE status = 'awaiting';
CREATE UNIQUE INDEX items_unique_open ON items (unique_key)
    WHERE unique_key IS NOT NULL
      AND (status = 'pending' OR status = 'in_progress' OR status = 'awaiting');
";

/// The dependency trigger, watching `$column` (version 10: `status`; version 12: `finished_at`).
/// Its `WHEN` reads only the updated row, so an item nobody waits for costs one flag test.
macro_rules! dependants_trigger {
    ($column:literal) => {
        concat!(
            "CREATE TRIGGER items_dependants AFTER UPDATE OF ",
            $column,
            " ON items
WHEN NEW.has_dependants = 1
     AND (NEW.status = 'completed' OR NEW.status = 'failed' OR NEW.status = 'cancelled')
     AND OLD.status <> NEW.status
BEGIN
    UPDATE items SET deps_left = deps_left - 1,
           status = CASE WHEN deps_left = 1 THEN 'pending' ELSE 'blocked' END,
           updated_at = NEW.updated_at
     WHERE NEW.status = 'completed' AND status = 'blocked'
       AND id IN (SELECT item_id FROM item_deps WHERE needs_id = NEW.id AND done = 0);
    UPDATE items SET status = 'cancelled',
           error = CASE WHEN NEW.status = 'failed'
                        THEN 'dependency ' || NEW.id || ' failed: ' || coalesce(NEW.error, 'no error recorded')
                        ELSE 'dependency ' || NEW.id || ' was cancelled' END,
           finished_at = NEW.updated_at,
           updated_at = NEW.updated_at
     WHERE NEW.status <> 'completed' AND status = 'blocked'
       AND id IN (SELECT item_id FROM item_deps WHERE needs_id = NEW.id AND done = 0);
    UPDATE item_deps SET done = 1 WHERE NEW.status = 'completed' AND needs_id = NEW.id AND done = 0;
END;
"
        )
    };
}

/// Version 10: dependencies. `item_deps` holds one row per (dependant, dependency), `done` once
/// that dependency has completed; `items.deps_left` counts a blocked item's dependencies not yet
/// done, and `items.has_dependants` marks the items some item waits for.
///
/// One trigger on `UPDATE OF status`, `items_dependants` (on `finished_at` since version 12),
/// moves the dependants, so every write
/// path that ends an item (completion, failure, reap, recover, release, cancel, take-back, an
/// operator's action) does it in its own transaction without its statement changing. Its
/// `WHEN` reads only the updated row: an item nobody waits for (the common case) costs one
/// flag test (SQLite runs the trigger's program for each updated row and that program's first
/// step is the test).
/// - completed: each blocked dependant whose edge is not yet done counts it down, and becomes
///   `pending` when it was the last; the edges are marked done, so a completed dependency that
///   an operator retries and that completes again does not count twice.
/// - failed or cancelled: each blocked dependant whose edge is not done ends `cancelled`
///   naming it. That update fires the trigger again for the dependant's own dependants
///   (transitively: the connection sets `recursive_triggers`, see `configure`).
///
/// A blocked item holds its unique key: `items_unique_open` counts it as open.
const V10: &str = concat!(
    "
ALTER TABLE items ADD COLUMN deps_left INTEGER NOT NULL DEFAULT 0 CHECK (deps_left >= 0);
ALTER TABLE items ADD COLUMN has_dependants INTEGER NOT NULL DEFAULT 0;
CREATE TABLE item_deps (
    item_id  INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    needs_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    done     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (item_id, needs_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX item_deps_needs ON item_deps (needs_id, item_id);
CREATE INDEX items_blocked ON items (id) WHERE status = 'blocked';
DROP INDEX items_unique_open;
CREATE UNIQUE INDEX items_unique_open ON items (unique_key)
    WHERE unique_key IS NOT NULL
      AND (status = 'pending' OR status = 'in_progress' OR status = 'awaiting'
           OR status = 'blocked');

",
    dependants_trigger!("status")
);

/// Version 11: schedules, one row per name. `next_run_at` is the next due tick; a node claims it
/// by moving it on with a conditional update in the transaction that enqueues the tick's items
/// (`ops/schedule.rs`), so one node wins each tick. `catch_up_max` is set exactly for `all`.
const V11: &str = "
CREATE TABLE schedules (
    name         TEXT    PRIMARY KEY CHECK (name <> ''),
    cron         TEXT    NOT NULL CHECK (cron <> ''),
    kind         TEXT    NOT NULL CHECK (kind <> ''),
    input        TEXT    NOT NULL CHECK (json_valid(input)),
    catch_up     TEXT    NOT NULL CHECK (catch_up = 'skip' OR catch_up = 'all'),
    catch_up_max INTEGER CHECK ((catch_up = 'all') = (catch_up_max IS NOT NULL) AND (catch_up_max IS NULL OR catch_up_max >= 1)),
    next_run_at  INTEGER NOT NULL,
    last_run_at  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
";

/// Version 12: the dependency trigger watches `finished_at` instead of `status`. SQLite builds
/// a trigger into every statement whose `SET` names a column the trigger is `OF`: as `OF
/// status` it rode along in every acquisition (and retry and requeue), which paid for the old
/// and new rows its `WHEN` reads and a statement journal, about 2 µs an item on the hot path,
/// although no acquisition ends an item. Every write that ends an item sets `finished_at` in
/// the same `SET` (the `items_finished` index and retention rely on it, and the trigger's own
/// cascade sets it), so the trigger still sees every ending; the body is version 10's.
const V12: &str = concat!(
    "
DROP TRIGGER items_dependants;
",
    dependants_trigger!("finished_at")
);

/// Version 13: completed items by unique key, for an enqueue with `NewItem::unique_within`
/// (the key's item that completed within the window counts as the key's item). Only keyed
/// items that completed are in it: the hot path's unkeyed items never touch it.
const V13: &str = "
CREATE INDEX items_unique_done ON items (unique_key, finished_at)
    WHERE unique_key IS NOT NULL AND status = 'completed';
";

/// Opens (creating if needed) the database at `path`, checks it, configures the connection and
/// migrates it to [`SCHEMA_VERSION`].
pub(crate) async fn open(
    path: &Path,
    options: SqliteOptions,
) -> StoreResult<tokio_rusqlite::Connection> {
    match inspect(path).await? {
        FileState::New => {}
        FileState::Sqlite(header) => check_header(path, &header)?,
        FileState::SqliteWithWal => probe(path).await?,
    }
    let conn = tokio_rusqlite::Connection::open(path)
        .await
        .map_err(|e| at_path(path, from_sqlite(e)))?;
    let reported = path.to_path_buf();
    conn.call(move |c| -> OpResult<()> {
        c.busy_timeout(BUSY_TIMEOUT)?;
        // Still only reads: a refused file must not even be switched to WAL.
        check_version(c, &reported)?;
        configure(c, &reported, options.synchronous)?;
        migrate(c)
    })
    .await
    .map_err(|e| at_path(path, crate::error::from_call(e)))?;
    Ok(conn)
}

/// What is at the path before SQLite is let near it.
enum FileState {
    /// Nothing, or an empty file: SQLite treats both as a new database.
    New,
    /// A SQLite database whose header is current (no write-ahead log with frames beside it).
    Sqlite(Box<[u8; HEADER_LEN]>),
    /// A SQLite database with a non-empty write-ahead log (left by a crash, or a writer is
    /// running), which may hold a newer header than the file: only SQLite can read it.
    SqliteWithWal,
}

/// The SQLite database header: magic, page size, …, `user_version` at 60, `application_id` at
/// 68 (big-endian).
const HEADER_LEN: usize = 100;

async fn inspect(path: &Path) -> StoreResult<FileState> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || inspect_blocking(&owned))
        .await
        .map_err(StoreError::backend)?
}

fn inspect_blocking(path: &Path) -> StoreResult<FileState> {
    let not_db = |why: &str| StoreError::NotADatabase(format!("{}: {why}", path.display()));
    let io = |e: std::io::Error| at_path(path, StoreError::backend(e));
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileState::New),
        Err(e) => return Err(io(e)),
    };
    if meta.is_dir() {
        return Err(not_db("is a directory"));
    }
    if meta.len() == 0 {
        return Ok(FileState::New);
    }
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    std::fs::File::open(path)
        .and_then(|f| f.take(HEADER_LEN as u64).read_to_end(&mut bytes))
        .map_err(io)?;
    if !bytes.starts_with(SQLITE_MAGIC) {
        return Err(not_db("not a SQLite database (no SQLite header)"));
    }
    let Ok(header) = <[u8; HEADER_LEN]>::try_from(bytes.as_slice()) else {
        return Err(not_db("a truncated SQLite database (incomplete header)"));
    };
    let header = Box::new(header);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::metadata(PathBuf::from(wal)) {
        Ok(m) if m.len() > 0 => Ok(FileState::SqliteWithWal),
        Ok(_) => Ok(FileState::Sqlite(header)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileState::Sqlite(header)),
        Err(e) => Err(io(e)),
    }
}

/// The version and application checks of [`check_version`], on the header bytes.
fn check_header(path: &Path, header: &[u8; HEADER_LEN]) -> StoreResult<()> {
    let be = |at: usize| {
        i32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (version, app) = (i64::from(be(60)), be(68));
    judge(path, version, app)
}

/// Refuses a newer schema or another application's database.
fn judge(path: &Path, version: i64, app: i32) -> StoreResult<()> {
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if app != 0 && app != APPLICATION_ID {
        return Err(StoreError::NotADatabase(format!(
            "{}: a SQLite database of another application (application_id {app:#x})",
            path.display()
        )));
    }
    Ok(())
}

/// Reads the schema version through a read-only connection (when a write-ahead log may hold a
/// newer header than the file) and refuses a database this build must not touch.
async fn probe(path: &Path) -> StoreResult<()> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = tokio_rusqlite::Connection::open_with_flags(path, flags)
        .await
        .map_err(|e| at_path(path, from_sqlite(e)))?;
    let reported = path.to_path_buf();
    let checked = conn
        .call(move |c| -> OpResult<()> {
            c.busy_timeout(BUSY_TIMEOUT)?;
            check_version(c, &reported)
        })
        .await
        .map_err(|e| at_path(path, crate::error::from_call(e)));
    // Closed before the writer opens; a failure to close a read-only connection loses nothing.
    let _ = conn.close().await;
    checked
}

/// Refuses a newer schema, another application's database, or a version-0 database whose
/// tables would collide with ours. Reads only.
fn check_version(c: &Connection, path: &Path) -> OpResult<()> {
    let version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let app: i32 = c.pragma_query_value(None, "application_id", |r| r.get(0))?;
    judge(path, version, app)?;
    if version == 0 {
        let mut stmt = c.prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' \
             AND name IN (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let taken: Vec<String> = stmt
            .query_map(OWN_TABLES, |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if !taken.is_empty() {
            return Err(StoreError::NotADatabase(format!(
                "{}: a SQLite database that is not leasehold's (it already has table(s) {} \
                 but no leasehold schema version)",
                path.display(),
                taken.join(", ")
            ))
            .into());
        }
    }
    Ok(())
}

/// Per-connection settings. WAL lets readers in other processes (the CLI beside a running
/// tree) proceed while this connection writes. `synchronous` is the caller's choice
/// ([`Synchronous`]): `NORMAL` is durable across process crashes in WAL mode and only risks the
/// last commits on power loss; `FULL` syncs the log at every commit. `recursive_triggers` lets
/// a dependant cancelled by the dependency trigger (version 10) cancel its own dependants.
pub(crate) fn configure(c: &mut Connection, path: &Path, sync: Synchronous) -> OpResult<()> {
    c.set_prepared_statement_cache_capacity(64);
    let mode: String = c.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode = %mode, "SQLite refused WAL mode; continuing with this journal mode");
    }
    c.pragma_update(None, "synchronous", sync.keyword())?;
    c.pragma_update(None, "foreign_keys", true)?;
    c.pragma_update(None, "recursive_triggers", true)?;
    Ok(())
}

/// Applies the pending migrations in one write transaction. An up-to-date database is only
/// read (no write lock: the CLI opens the file beside a running tree all the time). Otherwise
/// the version is checked again under the write lock, since another process may have migrated
/// in between.
pub(crate) fn migrate(c: &mut Connection) -> OpResult<()> {
    let current: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    // A table rebuild (version 3) must not cascade its DROP into the checkpoints, and
    // `foreign_keys` cannot change inside a transaction: off around it, checked before commit.
    c.pragma_update(None, "foreign_keys", false)?;
    let migrated = migrate_pending(c);
    c.pragma_update(None, "foreign_keys", true)?;
    migrated
}

fn migrate_pending(c: &mut Connection) -> OpResult<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let path = tx.path().map(PathBuf::from).unwrap_or_default();
    check_version(&tx, &path)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version_index(version)?) {
        tx.execute_batch(sql)?;
        tracing::info!(from, to = from + 1, "applied leasehold schema migration");
    }
    let dangling: i64 = tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
        r.get(0)
    })?;
    if dangling > 0 {
        return Err(OpError::Store(StoreError::Corrupt(format!(
            "{dangling} row(s) refer to items that do not exist; migration rolled back"
        ))));
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.commit()?;
    Ok(())
}

fn version_index(version: i64) -> OpResult<usize> {
    usize::try_from(version).map_err(|_| {
        OpError::Store(StoreError::Corrupt(format!(
            "negative schema version {version}"
        )))
    })
}

/// Names the file in an error that does not already say which file it is about.
fn at_path(path: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::NotADatabase(why) if !why.contains(&*path.to_string_lossy()) => {
            StoreError::NotADatabase(format!("{}: {why}", path.display()))
        }
        StoreError::Backend(inner) => {
            StoreError::Backend(format!("{}: {inner}", path.display()).into())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::{params, Connection};

    use super::{migrate, SCHEMA_VERSION};
    use crate::ops::acquire::ACQUIRE;
    use crate::ops::reap::SCAN;

    fn migrated() -> Connection {
        let mut c = Connection::open_in_memory().expect("in-memory database");
        migrate(&mut c).expect("migrate");
        c
    }

    #[test]
    fn migrating_an_up_to_date_database_changes_nothing() {
        let mut c = migrated();
        let schema = |c: &Connection| -> Vec<String> {
            let mut stmt = c
                .prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name")
                .expect("schema");
            stmt.query_map([], |r| r.get(0))
                .expect("rows")
                .collect::<rusqlite::Result<_>>()
                .expect("schema")
        };
        let before = schema(&c);
        migrate(&mut c).expect("second migrate");
        assert_eq!(schema(&c), before);
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_version_1_database_migrates_to_the_current_version_keeping_items_checkpoints_and_ids() {
        let mut c = Connection::open_in_memory().expect("in-memory database");
        c.execute_batch(super::V1).expect("v1");
        c.pragma_update(None, "user_version", 1).expect("version 1");
        c.pragma_update(None, "foreign_keys", true)
            .expect("foreign keys");
        for _ in 0..3 {
            c.execute(
                "INSERT INTO items (kind, input, max_attempts, run_at, created_at, updated_at) \
                 VALUES ('k', '{}', 3, 0, 0, 0)",
                [],
            )
            .expect("v1 item");
        }
        // The newest id is gone: a rebuilt table must not hand it out again.
        c.execute("DELETE FROM items WHERE id = 3", [])
            .expect("delete");
        c.execute(
            "INSERT INTO checkpoints (item_id, epoch, name, payload, created_at) \
             VALUES (1, 0, 'step', '{}', 0)",
            [],
        )
        .expect("v1 checkpoint");
        migrate(&mut c).expect("migrate 1 -> current");
        let version: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).expect(sql) };
        assert_eq!(count("SELECT count(*) FROM items"), 2);
        assert_eq!(
            count("SELECT count(*) FROM checkpoints WHERE item_id = 1"),
            1,
            "the rebuild of items must not cascade into its checkpoints"
        );
        for table in ["durable_checkpoints", "tool_ledger", "llm_cache"] {
            assert_eq!(
                count(&format!("SELECT count(*) FROM {table}")),
                0,
                "{table}"
            );
        }
        let on: bool = c
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .expect("foreign_keys");
        assert!(on, "foreign keys are on again after the migration");
        c.execute(
            "INSERT INTO items (kind, input, max_attempts, run_at, created_at, updated_at) \
             VALUES ('k', '{}', 3, 0, 0, 0)",
            [],
        )
        .expect("item after the migration");
        assert_eq!(
            count("SELECT max(id) FROM items"),
            4,
            "ids are never reused"
        );
        // Idempotent: a second run changes nothing and does not fail on existing tables.
        migrate(&mut c).expect("migrate again");
    }

    /// Whether the compiled program of `sql` opens an ephemeral table (an `IN` list, a
    /// `RETURNING` buffer, a sort): each costs a B-tree, a pager and a zeroed page per run.
    /// Looks at the statement's own program only: SQLite lists a trigger's program after it
    /// (addresses start again at 0), and the dependency trigger's runs only past its `WHEN`
    /// (an item some item waits for ending), never on the hot path's plain items.
    fn opens_ephemeral_table(c: &Connection, sql: &str) -> bool {
        let mut stmt = c.prepare(&format!("EXPLAIN {sql}")).expect("explain");
        let unbound = vec![rusqlite::types::Null; stmt.parameter_count()];
        let ops: Vec<(i64, String)> = stmt
            .query_map(rusqlite::params_from_iter(unbound), |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .expect("opcodes")
            .collect::<rusqlite::Result<_>>()
            .expect("opcodes");
        let main = ops
            .iter()
            .enumerate()
            .take_while(|(i, (addr, _))| *i == 0 || *addr != 0);
        main.map(|(_, (_, op))| op)
            .any(|op| op == "OpenEphemeral" || op == "SorterOpen")
    }

    #[test]
    fn the_hot_path_statements_open_no_ephemeral_tables() {
        let c = migrated();
        for sql in crate::ops::HOT_PATH {
            assert!(
                !opens_ephemeral_table(&c, sql),
                "an ephemeral table on the hot path: {sql}"
            );
        }
        // The check can see one: the version 1 status CHECK (`IN (…)`) opened one per update.
        let old = Connection::open_in_memory().expect("in-memory database");
        old.execute_batch(super::V1).expect("v1");
        assert!(opens_ephemeral_table(
            &old,
            "UPDATE items SET status = 'completed' WHERE id = 1"
        ));
    }

    /// Whether the compiled program of `sql` calls a trigger's program (opcode `Program`).
    fn runs_a_trigger(c: &Connection, sql: &str) -> bool {
        let mut stmt = c.prepare(&format!("EXPLAIN {sql}")).expect("explain");
        let unbound = vec![rusqlite::types::Null; stmt.parameter_count()];
        let ops: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(unbound), |r| r.get(1))
            .expect("opcodes")
            .collect::<rusqlite::Result<_>>()
            .expect("opcodes");
        ops.iter().any(|op| op == "Program")
    }

    /// The dependency trigger rides only with the writes that can end an item (version 12):
    /// an acquisition, which cannot, carries none of it.
    #[test]
    fn acquisitions_carry_no_trigger_and_endings_carry_the_dependency_trigger() {
        let c = migrated();
        for sql in [
            crate::ops::acquire::LEASE_ONE,
            crate::ops::acquire::ACQUIRE,
            crate::ops::renew::RENEW,
        ] {
            assert!(!runs_a_trigger(&c, sql), "a trigger rides along: {sql}");
        }
        for sql in [
            crate::ops::complete::COMPLETE,
            crate::ops::fail::DEAD_LETTER,
        ] {
            assert!(runs_a_trigger(&c, sql), "no dependency trigger: {sql}");
        }
    }

    /// The `detail` column of `EXPLAIN QUERY PLAN sql`, one line per step.
    fn plan(c: &Connection, sql: &str, args: impl rusqlite::Params) -> Vec<String> {
        let mut stmt = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        stmt.query_map(args, |r| r.get::<_, String>(3))
            .expect("plan rows")
            .collect::<rusqlite::Result<_>>()
            .expect("plan")
    }

    fn assert_no_full_scan(plan: &[String]) {
        for step in plan {
            assert!(
                !step.starts_with("SCAN items") || step.contains("USING INDEX"),
                "full table scan of items in {plan:#?}"
            );
            assert!(!step.contains("TEMP B-TREE"), "a sort in {plan:#?}");
        }
    }

    #[test]
    fn acquire_reads_the_partial_pending_index_in_order() {
        let c = migrated();
        for (kinds, group, paused) in [
            (None, None, None),
            (Some(r#"["email","sms"]"#), None, None),
            (None, Some("g1"), None),
            (Some(r#"["email"]"#), Some("g1"), None),
            (None, None, Some(r#"["sms"]"#)),
        ] {
            let p = plan(
                &c,
                ACQUIRE,
                params!["w", "n", 1, 2_000, 1_000, 10, kinds, group, paused],
            );
            assert!(
                p.iter()
                    .any(|s| s.contains("USING INDEX items_pending_ready")),
                "acquire does not use items_pending_ready: {p:#?}"
            );
            assert_no_full_scan(&p);
        }
    }

    #[test]
    fn reaper_scan_reads_only_leased_items() {
        let c = migrated();
        let p = plan(&c, SCAN, params![1_000, 500, 200, i64::MIN, i64::MIN]);
        assert!(
            p.iter().any(|s| s.contains("items_lease_expiry")),
            "the reaper scan does not use items_lease_expiry: {p:#?}"
        );
        assert_no_full_scan(&p);
    }
    #[test]
    fn operator_reads_use_the_partial_indexes_not_the_table() {
        use crate::ops::{activity, cleanup, read, recover};
        let c = migrated();
        for sql in [
            read::COUNT,
            read::OF_OWNER,
            activity::DEPTH_BY_KIND,
            activity::FINISHED_SINCE,
            activity::RECENTLY_FINISHED,
            recover::HELD_BY_OWNER,
            recover::HELD_BY_NODE,
            cleanup::REMOVE_NODE,
            cleanup::REMOVE_CHECKPOINTS,
            cleanup::REMOVE_ITEMS,
        ] {
            let mut stmt = c
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explain");
            let unbound = vec![rusqlite::types::Null; stmt.parameter_count()];
            let p: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(unbound), |r| {
                    r.get::<_, String>(3)
                })
                .expect("plan rows")
                .collect::<rusqlite::Result<_>>()
                .expect("plan");
            for step in &p {
                assert!(
                    !step.starts_with("SCAN items") || step.contains("USING"),
                    "a full scan of items for {sql}: {p:#?}"
                );
            }
        }
    }
}
