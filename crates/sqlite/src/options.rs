//! How a store opens its file: the durability setting, from the environment or the caller.

use leasehold_core::{StoreError, StoreResult};

/// The environment variable that chooses [`Synchronous`] when the caller does not.
pub const SYNC_VAR: &str = "LEASEHOLD_SQLITE_SYNC";

/// SQLite's `PRAGMA synchronous` in WAL mode: when a commit waits for the disk.
///
/// Both survive a crash of the process (the write-ahead log is in the OS's page cache).
/// They differ on a power cut or an OS crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// `NORMAL` (the default): a commit returns before the log is synced; the log is synced at
    /// each checkpoint. A power cut may lose the last commits, acknowledged completions
    /// included (their items then run again); the database stays consistent.
    #[default]
    Normal,
    /// `FULL`: every commit syncs the write-ahead log before it returns, so an acknowledged
    /// write survives a power cut. Costs one `fsync` per commit (per group of writes, with the
    /// group commit).
    Full,
}

impl Synchronous {
    /// The value `PRAGMA synchronous` takes and reports (`NORMAL` = 1, `FULL` = 2).
    pub fn pragma_value(self) -> i64 {
        match self {
            Synchronous::Normal => 1,
            Synchronous::Full => 2,
        }
    }

    /// Reads `normal` or `full` (any case, or SQLite's `1`/`2`); anything else is refused with
    /// an error naming `setting`.
    pub fn parse(setting: &str, raw: &str) -> StoreResult<Synchronous> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "normal" | "1" => Ok(Synchronous::Normal),
            "full" | "2" => Ok(Synchronous::Full),
            _ => Err(StoreError::InvalidInput(format!(
                "{setting}: cannot parse {raw:?}: expected \"normal\" or \"full\""
            ))),
        }
    }

    /// The SQL keyword.
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Options of [`SqliteStore::open_with`](crate::SqliteStore::open_with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// The durability of a commit (default [`Synchronous::Normal`]).
    pub synchronous: Synchronous,
    /// How many ended attempts the history keeps per item (at least 1; default
    /// [`DEFAULT_HISTORY_KEEP`](leasehold_core::DEFAULT_HISTORY_KEEP), 25). Older ones are
    /// trimmed when a newer one is recorded.
    pub history_keep: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::default(),
            history_keep: leasehold_core::DEFAULT_HISTORY_KEEP,
        }
    }
}

impl SqliteOptions {
    /// The defaults, overridden by `LEASEHOLD_SQLITE_SYNC` when it is set. An unparsable value
    /// is refused with `InvalidInput` naming the variable.
    pub fn from_env() -> StoreResult<SqliteOptions> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`from_env`](Self::from_env) with the variables read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> StoreResult<SqliteOptions> {
        let mut options = SqliteOptions::default();
        if let Some(raw) = lookup(SYNC_VAR) {
            options.synchronous = Synchronous::parse(SYNC_VAR, &raw)?;
        }
        Ok(options)
    }

    /// These options with `history_keep` set (0 is refused when the store is opened).
    pub fn history_keep(mut self, keep: u32) -> Self {
        self.history_keep = keep;
        self
    }

    /// These options with `synchronous` set.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_chooses_full_and_a_bad_value_names_the_variable() {
        let unset = SqliteOptions::from_lookup(|_| None).unwrap();
        assert_eq!(unset.synchronous, Synchronous::Normal);
        let full = SqliteOptions::from_lookup(|k| (k == SYNC_VAR).then(|| "FULL".into())).unwrap();
        assert_eq!(full.synchronous, Synchronous::Full);
        let bad = SqliteOptions::from_lookup(|_| Some("sometimes".into())).unwrap_err();
        assert!(bad.to_string().contains(SYNC_VAR), "{bad}");
    }
}
