//! Value parsers shared by the subcommands. They run inside clap, so a refused value stops the
//! command before any database is opened: bad input never changes the store.

use std::str::FromStr;
use std::time::Duration;

use leasehold_core::config::parse_seconds;
use leasehold_core::{ConfigError, ItemStatus, Timestamp};

use crate::utc;

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

/// A `--before` time: a calendar time, or an age counted back from the store's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Before {
    /// This time.
    At(Timestamp),
    /// This long before now (`90s`, `30m`, `12h`, `7d`).
    Ago(Duration),
}

impl Before {
    /// The time it names, with `now` from the store's clock.
    pub(crate) fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            Before::At(t) => t,
            Before::Ago(d) => now.minus(d),
        }
    }
}

/// A `--before` value: an age with its unit (`90s`, `30m`, `12h`, `7d`: that long ago) or an
/// RFC 3339 UTC time (`2026-12-03T14:05:09Z`) or date (`2026-12-03`).
pub(crate) fn before(raw: &str) -> Result<Before, String> {
    let s = raw.trim();
    let unit = match s.chars().last() {
        Some('s') => Some(1),
        Some('m') => Some(60),
        Some('h') => Some(3_600),
        Some('d') => Some(86_400),
        _ => None,
    };
    if let (Some(unit), Some(n)) = (unit, s.get(..s.len().saturating_sub(1))) {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            let n: u64 = n.parse().map_err(|_| "age too large".to_string())?;
            if n == 0 {
                return Err("an age must be more than 0".into());
            }
            return n
                .checked_mul(unit)
                .map(|secs| Before::Ago(Duration::from_secs(secs)))
                .ok_or_else(|| "age too large".into());
        }
    }
    utc::parse(s)
        .map(Before::At)
        .map_err(|e| format!("{e}, or an age such as 90s, 30m, 12h or 7d"))
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
    fn before_takes_ages_and_times() {
        assert_eq!(before("30m"), Ok(Before::Ago(Duration::from_secs(1_800))));
        assert_eq!(before("7d"), Ok(Before::Ago(Duration::from_secs(604_800))));
        assert_eq!(
            before("2026-12-03"),
            Ok(Before::At(Timestamp(1_796_256_000_000)))
        );
        assert_eq!(
            Before::Ago(Duration::from_secs(2)).resolve(Timestamp(5_000)),
            Timestamp(3_000)
        );
        assert!(before("0h").unwrap_err().contains("more than 0"));
        for bad in ["", "-5m", "5w", "m", "soon"] {
            assert!(before(bad).unwrap_err().contains("age such as"), "{bad:?}");
        }
    }

    #[test]
    fn statuses_by_name() {
        assert_eq!(status("in_progress"), Ok(ItemStatus::InProgress));
        assert!(status("running").unwrap_err().contains("unknown status"));
    }
}
