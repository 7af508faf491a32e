//! Value parsers shared by the subcommands. They run inside clap, so a refused value stops the
//! command before any database is opened: bad input never changes the store.

use std::str::FromStr;
use std::time::Duration;

use leasehold_core::config::parse_seconds;
use leasehold_core::{ConfigError, ItemStatus};

/// A whole number at least 1 (`--max-attempts`, `--limit`, `--batch`).
pub(crate) fn positive_count(raw: &str) -> Result<u32, String> {
    let n: i64 = raw
        .trim()
        .parse()
        .map_err(|_| "expected a whole number at least 1".to_string())?;
    if n <= 0 {
        return Err(format!("must be at least 1, got {n}"));
    }
    u32::try_from(n).map_err(|_| format!("too large (at most {})", u32::MAX))
}

/// A positive number of seconds, possibly fractional (`0.5`), as in the configuration.
pub(crate) fn seconds(raw: &str) -> Result<Duration, String> {
    parse_seconds("", raw).map_err(|e| match e {
        // clap already names the flag and the value; keep only the reason.
        ConfigError::Parse { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// An item status by its stored name (`in_progress`).
pub(crate) fn status(raw: &str) -> Result<ItemStatus, String> {
    ItemStatus::from_str(raw.trim())
}

/// An item id (a positive integer).
pub(crate) fn item_id(raw: &str) -> Result<leasehold_core::ItemId, String> {
    leasehold_core::ItemId::from_str(raw)
}

/// A name that is not empty or blank (`--kind`, `--group`, `--owner`).
pub(crate) fn non_empty(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(raw.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_refuse_zero_negative_and_junk() {
        assert_eq!(positive_count("7"), Ok(7));
        assert!(positive_count("0").unwrap_err().contains("at least 1"));
        assert!(positive_count("-3").unwrap_err().contains("at least 1"));
        assert!(positive_count("x").is_err());
        assert!(positive_count("99999999999")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn seconds_take_fractions_and_refuse_zero() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(seconds("0").unwrap_err().contains("positive"));
        assert!(seconds("-1").unwrap_err().contains("positive"));
        assert!(seconds("soon").is_err());
    }

    #[test]
    fn statuses_by_name() {
        assert_eq!(status("in_progress"), Ok(ItemStatus::InProgress));
        assert!(status("running").unwrap_err().contains("unknown status"));
    }
}
