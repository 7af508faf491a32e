//! Time, injected. The store never reads a clock of its own: every operation takes `now`.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in wall time: milliseconds since the Unix epoch (UTC).
///
/// Integer milliseconds keep comparisons exact in SQL and cheap to store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// This point moved forward by `d` (saturating).
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    /// This point moved back by `d` (saturating).
    pub fn minus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }

    /// How long after `earlier` this point is; zero when it is not after it.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A source of wall time. Implementations must be cheap and never block.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// A [`Clock`] that follows a clock several hosts share — a database server's — by adding the
/// measured offset between that clock and this host's to this host's time.
///
/// A store whose database keeps the one clock every node can read
/// ([`Store::clock_sync`](crate::Store::clock_sync): PostgreSQL) gives one; a node started
/// without an explicit clock then takes every lease time from it, so hosts whose own clocks
/// drift apart still agree on who holds what. `now()` stays cheap and never blocks; the
/// runtime calls [`resync`](SharedClock::resync) now and then to follow drift.
#[async_trait::async_trait]
pub trait SharedClock: Clock {
    /// Measures the offset again; returns the round trip of the sample kept (half of it bounds
    /// the error).
    async fn resync(&self) -> crate::StoreResult<Duration>;

    /// The shared clock minus this host's, in milliseconds, as last measured.
    fn offset_ms(&self) -> i64;

    /// This clock as a plain [`Clock`], for whoever needs only `now()`.
    fn as_clock(self: Arc<Self>) -> Arc<dyn Clock>;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(duration_millis(d))
    }
}

/// Wall time tied to tokio's [`Instant`](tokio::time::Instant): the wall time at creation plus
/// the tokio time elapsed since. Under `#[tokio::test(start_paused = true)]`, `tokio::time::advance`
/// moves this clock, so lease expiry can be tested without sleeping.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base_wall: Timestamp,
    base_instant: tokio::time::Instant,
}

impl TokioClock {
    /// A clock starting at the system's wall time now. Must be called inside a tokio runtime
    /// when time is paused, so that the base instant is the paused one.
    pub fn new() -> Self {
        Self::starting_at(SystemClock.now())
    }

    /// A clock that reads `start` now and moves with tokio time.
    pub fn starting_at(start: Timestamp) -> Self {
        TokioClock {
            base_wall: start,
            base_instant: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.base_wall.plus(self.base_instant.elapsed())
    }
}

/// A clock that moves only when told: for store-level tests that need exact times.
///
/// Clones share the same time.
///
/// ```
/// use leasehold_core::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
/// let clock = ManualClock::new(Timestamp(1_000));
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now(), Timestamp(3_000));
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            millis: Arc::new(AtomicI64::new(start.0)),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.millis.fetch_add(duration_millis(d), Ordering::SeqCst);
    }

    /// Sets the clock to `t` (which may be earlier: tests of clock skew).
    pub fn set(&self, t: Timestamp) {
        self.millis.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}
