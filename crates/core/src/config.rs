//! Configuration: defaults, then the environment (with the seeds' `TASK_*` aliases), then the
//! builder. [`Config::validate`] refuses bad values with an error that names the setting.

use std::time::Duration;

/// A refused configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value could not be parsed.
    #[error("{setting}: cannot parse {value:?}: {reason}")]
    Parse {
        /// The setting (and the variable it came from).
        setting: String,
        /// The raw value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A value parsed but is out of range, or inconsistent with another.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

/// The settings every node and command shares (docs/operations.md lists them with their
/// environment variables and defaults).
///
/// ```
/// use leasehold_core::Config;
/// use std::time::Duration;
/// let cfg = Config::from_lookup(|k| (k == "TASK_LEASE_S").then(|| "120".to_string())).unwrap();
/// assert_eq!(cfg.lease, Duration::from_secs(120));
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How long a lease lasts before it must be renewed (`LEASEHOLD_LEASE_S`, alias `TASK_LEASE_S`).
    pub lease: Duration,
    /// How often a holder renews (`LEASEHOLD_HEARTBEAT_S`).
    pub heartbeat: Duration,
    /// How often the reaper sweeps (`LEASEHOLD_SWEEP_S`).
    pub sweep: Duration,
    /// Time since the last heartbeat after which an in-progress item is requeued whatever its
    /// owner says (`LEASEHOLD_STALE_S`, alias `TASK_STALE_S`).
    pub stale: Duration,
    /// The default retry budget (`LEASEHOLD_MAX_ATTEMPTS`, alias `TASK_MAX_REQUEUE`).
    pub max_attempts: u32,
    /// Items per reaper batch (`LEASEHOLD_REAP_BATCH`, alias `TASK_REAP_BATCH`).
    pub reap_batch: u32,
    /// This node's id (`LEASEHOLD_WORKER_ID`, alias `TASK_WORKER_ID`); `None` derives one from
    /// host and pid.
    pub worker_id: Option<String>,
    /// The node's default execution timeout of one attempt (`LEASEHOLD_TIMEOUT_S`); `None`, the
    /// default, lets a handler run as long as its heartbeat keeps the lease. An item's own
    /// timeout, then its kind's, win over this one.
    pub timeout: Option<Duration>,
    /// Graceful releases of one item that give their attempt back (`LEASEHOLD_MAX_RELEASES`,
    /// default 3). A release past this many counts as an attempt, so an item that always
    /// outlasts the drain timeout is dead-lettered once its budget is spent instead of being
    /// released forever. 0 makes every release count.
    pub max_releases: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease: Duration::from_secs(300),
            heartbeat: Duration::from_secs(30),
            sweep: Duration::from_secs(60),
            stale: Duration::from_secs(900),
            max_attempts: 3,
            reap_batch: 200,
            worker_id: None,
            timeout: None,
            max_releases: 3,
        }
    }
}

/// (primary variable, aliases) per setting.
const LEASE_VARS: &[&str] = &["LEASEHOLD_LEASE_S", "TASK_LEASE_S"];
const HEARTBEAT_VARS: &[&str] = &["LEASEHOLD_HEARTBEAT_S", "TASK_HEARTBEAT_S"];
const SWEEP_VARS: &[&str] = &["LEASEHOLD_SWEEP_S", "TASK_SWEEP_S"];
const STALE_VARS: &[&str] = &["LEASEHOLD_STALE_S", "TASK_STALE_S"];
const MAX_ATTEMPTS_VARS: &[&str] = &["LEASEHOLD_MAX_ATTEMPTS", "TASK_MAX_REQUEUE"];
const REAP_BATCH_VARS: &[&str] = &["LEASEHOLD_REAP_BATCH", "TASK_REAP_BATCH"];
const WORKER_ID_VARS: &[&str] = &["LEASEHOLD_WORKER_ID", "TASK_WORKER_ID"];
/// No alias: the seeds had no execution timeout.
const TIMEOUT_VARS: &[&str] = &["LEASEHOLD_TIMEOUT_S"];
const MAX_RELEASES_VARS: &[&str] = &["LEASEHOLD_MAX_RELEASES"];

impl Config {
    /// Defaults overridden by the process environment. Not validated: call
    /// [`validate`](Config::validate) after applying builder overrides.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults overridden by whatever `lookup` returns for each variable name; the `LEASEHOLD_*`
    /// name wins over its `TASK_*` alias.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let find = |vars: &[&str]| {
            vars.iter()
                .find_map(|v| lookup(v).map(|val| (v.to_string(), val)))
        };
        let mut cfg = Config::default();
        if let Some((var, v)) = find(LEASE_VARS) {
            cfg.lease = parse_seconds(&var, &v)?;
        }
        if let Some((var, v)) = find(HEARTBEAT_VARS) {
            cfg.heartbeat = parse_seconds(&var, &v)?;
        }
        if let Some((var, v)) = find(SWEEP_VARS) {
            cfg.sweep = parse_seconds(&var, &v)?;
        }
        if let Some((var, v)) = find(STALE_VARS) {
            cfg.stale = parse_seconds(&var, &v)?;
        }
        if let Some((var, v)) = find(MAX_ATTEMPTS_VARS) {
            cfg.max_attempts = parse_count(&var, &v)?;
        }
        if let Some((var, v)) = find(REAP_BATCH_VARS) {
            cfg.reap_batch = parse_count(&var, &v)?;
        }
        if let Some((var, v)) = find(MAX_RELEASES_VARS) {
            cfg.max_releases = parse_whole(&var, &v)?;
        }
        if let Some((var, v)) = find(WORKER_ID_VARS) {
            let v = v.trim().to_string();
            if v.is_empty() {
                return Err(ConfigError::Parse {
                    setting: var,
                    value: v,
                    reason: "worker id must not be empty".into(),
                });
            }
            cfg.worker_id = Some(v);
        }
        if let Some((var, v)) = find(TIMEOUT_VARS) {
            cfg.timeout = Some(parse_seconds(&var, &v)?);
        }
        Ok(cfg)
    }

    /// Refuses zero durations (a zero timeout included), a heartbeat not shorter than the
    /// lease, a stale limit shorter than the lease, a zero retry budget or batch.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |setting: &'static str, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::Invalid {
                    setting,
                    reason: "must be a positive duration".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("lease (LEASEHOLD_LEASE_S)", self.lease)?;
        positive("heartbeat (LEASEHOLD_HEARTBEAT_S)", self.heartbeat)?;
        positive("sweep (LEASEHOLD_SWEEP_S)", self.sweep)?;
        positive("stale (LEASEHOLD_STALE_S)", self.stale)?;
        if self.heartbeat >= self.lease {
            return Err(ConfigError::Invalid {
                setting: "heartbeat (LEASEHOLD_HEARTBEAT_S)",
                reason: format!(
                    "heartbeat interval {:?} must be shorter than the lease {:?}, or leases lapse between renewals",
                    self.heartbeat, self.lease
                ),
            });
        }
        if self.stale < self.lease {
            return Err(ConfigError::Invalid {
                setting: "stale (LEASEHOLD_STALE_S)",
                reason: format!(
                    "hard stale limit {:?} must be at least the lease {:?}",
                    self.stale, self.lease
                ),
            });
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::Invalid {
                setting: "max_attempts (LEASEHOLD_MAX_ATTEMPTS)",
                reason: "must be at least 1".into(),
            });
        }
        if self.reap_batch == 0 {
            return Err(ConfigError::Invalid {
                setting: "reap_batch (LEASEHOLD_REAP_BATCH)",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(t) = self.timeout {
            // Stored and compared in whole milliseconds, like every other time in the store.
            if t < Duration::from_millis(1) {
                return Err(ConfigError::Invalid {
                    setting: "timeout (LEASEHOLD_TIMEOUT_S)",
                    reason: format!("execution timeout {t:?} must be at least 1 ms"),
                });
            }
        }
        if matches!(&self.worker_id, Some(id) if id.trim().is_empty()) {
            return Err(ConfigError::Invalid {
                setting: "worker_id (LEASEHOLD_WORKER_ID)",
                reason: "must not be empty".into(),
            });
        }
        Ok(())
    }
}

/// Parses seconds, possibly fractional (`0.5`), strictly positive and finite.
pub fn parse_seconds(setting: &str, raw: &str) -> Result<Duration, ConfigError> {
    let err = |reason: &str| ConfigError::Parse {
        setting: setting.to_string(),
        value: raw.to_string(),
        reason: reason.to_string(),
    };
    let secs: f64 = raw
        .trim()
        .parse()
        .map_err(|_| err("expected a number of seconds, e.g. 30 or 0.5"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(err("must be a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| err("out of range"))
}

/// Parses a whole number that may be zero.
fn parse_whole(setting: &str, raw: &str) -> Result<u32, ConfigError> {
    parse_u32(setting, raw, 0)
}

/// Parses a whole number of at least 1.
fn parse_count(setting: &str, raw: &str) -> Result<u32, ConfigError> {
    parse_u32(setting, raw, 1)
}

/// Parses a whole number of at least `min` (0 or 1), naming the setting when it cannot.
fn parse_u32(setting: &str, raw: &str, min: i64) -> Result<u32, ConfigError> {
    let err = |reason: &str| ConfigError::Parse {
        setting: setting.to_string(),
        value: raw.to_string(),
        reason: reason.to_string(),
    };
    let (expected, below) = if min == 0 {
        (
            "expected a whole number (0 or more)",
            "must not be negative",
        )
    } else {
        ("expected a whole number", "must be at least 1")
    };
    let n: i64 = raw.trim().parse().map_err(|_| err(expected))?;
    if n < min {
        return Err(err(below));
    }
    u32::try_from(n).map_err(|_| err("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_match_the_design_table() {
        let c = Config::default();
        assert_eq!(c.lease.as_secs(), 300);
        assert_eq!(c.heartbeat.as_secs(), 30);
        assert_eq!(c.sweep.as_secs(), 60);
        assert_eq!(c.stale.as_secs(), 900);
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.reap_batch, 200);
        assert_eq!(c.timeout, None, "no execution timeout unless one is set");
        assert_eq!(c.max_releases, 3);
        c.validate().unwrap();
    }

    #[test]
    fn timeout_is_read_in_seconds_and_a_bad_one_names_the_variable() {
        let c = Config::from_lookup(env(&[("LEASEHOLD_TIMEOUT_S", "2.5")])).unwrap();
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        c.validate().unwrap();
        for bad in ["0", "-1", "never"] {
            let e = Config::from_lookup(env(&[("LEASEHOLD_TIMEOUT_S", bad)])).unwrap_err();
            assert!(e.to_string().contains("LEASEHOLD_TIMEOUT_S"), "{bad}: {e}");
        }
        let e = Config {
            timeout: Some(Duration::from_micros(10)),
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("LEASEHOLD_TIMEOUT_S"), "{e}");
    }

    #[test]
    fn max_releases_reads_zero_and_refuses_a_negative_value_naming_the_variable() {
        let c = Config::from_lookup(env(&[("LEASEHOLD_MAX_RELEASES", "0")])).unwrap();
        assert_eq!(c.max_releases, 0);
        let e = Config::from_lookup(env(&[("LEASEHOLD_MAX_RELEASES", "-1")])).unwrap_err();
        assert!(e.to_string().contains("LEASEHOLD_MAX_RELEASES"), "{e}");
    }

    #[test]
    fn primary_names_win_over_task_aliases() {
        let c = Config::from_lookup(env(&[
            ("TASK_LEASE_S", "100"),
            ("LEASEHOLD_LEASE_S", "200"),
            ("TASK_MAX_REQUEUE", "7"),
            ("LEASEHOLD_HEARTBEAT_S", "0.5"),
        ]))
        .unwrap();
        assert_eq!(c.lease, Duration::from_secs(200));
        assert_eq!(c.max_attempts, 7);
        assert_eq!(c.heartbeat, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = Config::from_lookup(env(&[("TASK_STALE_S", "-3")])).unwrap_err();
        assert!(e.to_string().contains("TASK_STALE_S"), "{e}");
        let e = Config::from_lookup(env(&[("LEASEHOLD_MAX_ATTEMPTS", "0")])).unwrap_err();
        assert!(e.to_string().contains("LEASEHOLD_MAX_ATTEMPTS"), "{e}");
        let e = Config::from_lookup(env(&[("LEASEHOLD_SWEEP_S", "soon")])).unwrap_err();
        assert!(e.to_string().contains("LEASEHOLD_SWEEP_S"), "{e}");
    }

    #[test]
    fn heartbeat_must_be_shorter_than_lease() {
        let c = Config {
            heartbeat: Duration::from_secs(300),
            ..Config::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("heartbeat"), "{e}");
    }
}
