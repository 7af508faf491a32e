//! [`DatabaseClock`]: wall time read off the database server's clock, so that every node of a
//! deployment computes lease times from one clock, whatever its own host's clock says.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use leasehold_core::{Clock, SharedClock, StoreResult, SystemClock, Timestamp};

use crate::PgStore;

/// Samples taken per synchronisation; the one with the shortest round trip is kept.
const SAMPLES: usize = 3;

/// A [`Clock`] anchored to the PostgreSQL server's clock: this host's clock plus the offset
/// to the server's, measured by [`DatabaseClock::sync`] (the midpoint of the quickest of a
/// few round trips, so its error is at most half that round trip). Leases, heartbeats and the
/// reaper's and monitor's judgements then all use the database's time: no skew between hosts
/// beyond the measurement error. A node started through the builder on a [`PgStore`] without
/// an explicit clock gets one of these ([`Store::clock_sync`](leasehold_core::Store::clock_sync))
/// and resyncs it periodically. `now()` stays cheap and never blocks; call
/// [`resync`](DatabaseClock::resync) now and then (e.g. every few minutes) to follow drift.
#[derive(Clone, Debug)]
pub struct DatabaseClock {
    store: PgStore,
    /// This host's clock, which the offset is added to.
    host: Arc<dyn Clock>,
    offset_ms: Arc<AtomicI64>,
}

impl DatabaseClock {
    /// Measures the offset between this host's clock and `store`'s server.
    pub async fn sync(store: &PgStore) -> StoreResult<DatabaseClock> {
        DatabaseClock::sync_from(store, Arc::new(SystemClock)).await
    }

    /// The same, with `host` standing for this host's clock: a test gives a skewed clock to
    /// play a host whose clock is wrong.
    pub async fn sync_from(store: &PgStore, host: Arc<dyn Clock>) -> StoreResult<DatabaseClock> {
        let clock = DatabaseClock {
            store: store.clone(),
            host,
            offset_ms: Arc::new(AtomicI64::new(0)),
        };
        clock.resync().await?;
        Ok(clock)
    }

    /// Measures the offset again; returns the round trip of the sample kept (the bound on the
    /// error is half of it).
    pub async fn resync(&self) -> StoreResult<std::time::Duration> {
        let mut best: Option<(std::time::Duration, i64)> = None;
        for _ in 0..SAMPLES {
            let before = self.host.now();
            let started = Instant::now();
            let server = self.store.database_time().await?;
            let rtt = started.elapsed();
            let offset = offset_of(before, rtt, server);
            if best.is_none_or(|(b, _)| rtt < b) {
                best = Some((rtt, offset));
            }
        }
        let (rtt, offset) = best.unwrap_or_default();
        self.offset_ms.store(offset, Ordering::Relaxed);
        Ok(rtt)
    }

    /// The server's clock minus this host's, in milliseconds, as last measured.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

impl Clock for DatabaseClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.host.now().0.saturating_add(self.offset_ms()))
    }
}

#[async_trait]
impl SharedClock for DatabaseClock {
    async fn resync(&self) -> StoreResult<std::time::Duration> {
        DatabaseClock::resync(self).await
    }

    fn offset_ms(&self) -> i64 {
        DatabaseClock::offset_ms(self)
    }

    fn as_clock(self: Arc<Self>) -> Arc<dyn Clock> {
        self
    }
}

/// The server's clock minus this host's, from one sample: the server read its clock about
/// halfway through the round trip that started at `before` and took `rtt`.
fn offset_of(before: Timestamp, rtt: std::time::Duration, server: Timestamp) -> i64 {
    let midpoint = before.0 + (rtt.as_millis() as i64) / 2;
    server.0 - midpoint
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_offset_is_measured_from_the_round_trip_midpoint() {
        let host = Timestamp(1_000_000);
        // A server 5 s ahead answered 10 ms into a 20 ms round trip.
        assert_eq!(
            offset_of(host, Duration::from_millis(20), Timestamp(1_005_010)),
            5_000
        );
        // A server 2 s behind.
        assert_eq!(
            offset_of(host, Duration::from_millis(4), Timestamp(998_002)),
            -2_000
        );
    }
}
