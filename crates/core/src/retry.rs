//! The backoff schedule of retryable failures.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential backoff with a cap and jitter.
///
/// The delay before attempt `n + 1` after `n` failed attempts is
/// `min(max, initial * factor^(n-1))`, reduced by up to `jitter` of itself. The jitter's random
/// sample is an argument of [`delay`](Backoff::delay), never drawn here, so the caller picks
/// the randomness: [`Backoff::seeded_sample`] gives a reproducible one.
///
/// ```
/// use leasehold_core::Backoff;
/// use std::time::Duration;
/// let b = Backoff::default();
/// // Sample 0 takes no jitter off: the bare schedule.
/// assert_eq!(b.delay(1, 0.0), Duration::from_secs(1));
/// assert_eq!(b.delay(2, 0.0), Duration::from_secs(2));
/// assert_eq!(b.delay(3, 0.0), Duration::from_secs(4));
/// // Any sample stays within the default's 10 % jitter.
/// let d = b.delay(3, Backoff::seeded_sample(7, 42, 3));
/// assert!(d > Duration::from_millis(3600) && d <= Duration::from_secs(4));
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
    /// 1 s, 2 s, 4 s, … (seed 004's schedule) capped at 5 minutes, each delay shortened by up
    /// to 10 % jitter, so items that failed together do not all come back at the same instant.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(300),
            jitter: 0.1,
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

    /// A jitter sample in `[0, 1)` that depends only on its arguments: the same `seed`, `key`
    /// (e.g. an item id) and `attempt` always give the same sample, different ones scatter.
    /// For reproducible schedules (tests, seeded runs) instead of a random draw.
    pub fn seeded_sample(seed: u64, key: u64, attempt: u32) -> f64 {
        // splitmix64's finaliser over the three inputs: cheap, stateless and well mixed, so
        // neighbouring item ids do not get neighbouring samples.
        let mut z = seed
            ^ key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(attempt).wrapping_mul(0xD1B5_4A32_D192_ED03);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits as a fraction: exactly representable, and strictly below 1.
        (z >> 11) as f64 / (1u64 << 53) as f64
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
    fn default_is_one_two_four_seconds_with_ten_percent_jitter_and_a_cap() {
        let b = Backoff::default();
        assert_eq!(b.jitter, 0.1);
        let bare: Vec<_> = (1..=3).map(|n| b.delay(n, 0.0)).collect();
        assert_eq!(bare, [1, 2, 4].map(Duration::from_secs));
        assert_eq!(b.delay(30, 0.0), Duration::from_secs(300));
        // The largest sample takes (almost) the whole 10 % off, never more.
        let d = b.delay(1, 0.999_999);
        assert!(
            d >= Duration::from_millis(900) && d < Duration::from_millis(901),
            "{d:?}"
        );
        b.validate().unwrap();
    }

    #[test]
    fn seeded_samples_are_reproducible_in_range_and_scattered() {
        let a: Vec<f64> = (0..64).map(|k| Backoff::seeded_sample(1, k, 1)).collect();
        let again: Vec<f64> = (0..64).map(|k| Backoff::seeded_sample(1, k, 1)).collect();
        assert_eq!(a, again);
        assert!(a.iter().all(|s| (0.0..1.0).contains(s)), "{a:?}");
        let mut distinct = a.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        assert_eq!(distinct.len(), a.len(), "every key gets its own sample");
        assert_ne!(
            Backoff::seeded_sample(1, 5, 1),
            Backoff::seeded_sample(2, 5, 1)
        );
        assert_ne!(
            Backoff::seeded_sample(1, 5, 1),
            Backoff::seeded_sample(1, 5, 2)
        );
        // Spread over the whole range, not bunched at one end.
        assert!(a.iter().any(|s| *s < 0.25) && a.iter().any(|s| *s > 0.75));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(
            Backoff::default().delay(u32::MAX, 0.0),
            Duration::from_secs(300)
        );
    }
}
