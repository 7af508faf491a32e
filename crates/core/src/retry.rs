//! The backoff schedule of retryable failures.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential backoff with a cap and optional jitter.
///
/// The delay before attempt `n + 1` after `n` failed attempts is
/// `min(max, initial * factor^(n-1))`, reduced by up to `jitter` of itself.
///
/// ```
/// use leasehold_core::Backoff;
/// use std::time::Duration;
/// let b = Backoff::default();
/// assert_eq!(b.delay(1, 0.0), Duration::from_secs(1));
/// assert_eq!(b.delay(2, 0.0), Duration::from_secs(2));
/// assert_eq!(b.delay(3, 0.0), Duration::from_secs(4));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// The delay after the first failed attempt.
    pub initial: Duration,
    /// The growth per attempt (at least 1).
    pub factor: f64,
    /// The cap.
    pub max: Duration,
    /// The fraction (0..=1) of the delay that random jitter may take off.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 1 s, 2 s, 4 s, … capped at 5 minutes, no jitter.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(300),
            jitter: 0.0,
        }
    }
}

impl Backoff {
    /// The delay after `attempt` failed attempts (1-based); `sample` in `[0, 1)` drives the
    /// jitter, so callers choose the randomness (and tests fix it).
    pub fn delay(&self, attempt: u32, sample: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(63) as i32;
        let raw = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp);
        let capped = raw.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * sample.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * (1.0 - jitter)).max(0.0))
    }

    /// Refuses a zero initial delay, a factor below 1, a cap below the initial delay or a
    /// jitter outside `0..=1`.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial.is_zero() {
            return Err("backoff initial delay must be positive".into());
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            return Err(format!("backoff factor must be >= 1, got {}", self.factor));
        }
        if self.max < self.initial {
            return Err("backoff cap must be at least the initial delay".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "backoff jitter must be in 0..=1, got {}",
                self.jitter
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_doubles_then_caps() {
        let b = Backoff {
            max: Duration::from_secs(5),
            ..Backoff::default()
        };
        let got: Vec<_> = (1..=5).map(|n| b.delay(n, 0.0).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let b = Backoff {
            jitter: 0.5,
            ..Backoff::default()
        };
        let d = b.delay(3, 0.999);
        assert!(
            d <= Duration::from_secs(4) && d >= Duration::from_secs(2),
            "{d:?}"
        );
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(
            Backoff::default().delay(u32::MAX, 0.0),
            Duration::from_secs(300)
        );
    }
}
