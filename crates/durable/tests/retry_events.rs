//! The retry loop's tracing events, one per attempt and one per outcome.
//!
//! Alone in its own test binary: tracing caches each callsite's interest process-wide, and a
//! test on another thread reaching the same `debug!` while this test's scoped subscriber is
//! being installed can cache "never" for it, so events go missing (seen in CI).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_core::Backoff;
use leasehold_durable::{retry, DurableError, RetryPolicy};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::new(
        Backoff {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(30),
            jitter: 0.0,
        },
        max_attempts,
    )
}

/// A subscriber that records the level and message of every event the retry module emits.
#[derive(Clone, Default)]
struct RetryEvents(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl tracing::Subscriber for RetryEvents {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl Visit for Message {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        if event.metadata().target() != "leasehold_durable::retry" {
            return;
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        let mut events = self.0.lock().unwrap_or_else(|p| p.into_inner());
        events.push((*event.metadata().level(), m.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test(start_paused = true)]
async fn every_attempt_emits_a_tracing_event() {
    let events = RetryEvents::default();
    let _guard = tracing::subscriber::set_default(events.clone());
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let out: Result<u32, DurableError> = retry(&policy(3), || {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n < 3 {
                Err(DurableError::transient("timeout"))
            } else {
                Ok(n)
            }
        }
    })
    .await;
    assert_eq!(out.expect("third attempt succeeds"), 3);
    let _: Result<(), DurableError> = retry(&policy(3), || async {
        Err(DurableError::permanent("invalid domain"))
    })
    .await;
    let got = events.0.lock().expect("events").clone();
    use tracing::Level;
    let want = [
        (Level::DEBUG, "attempt"),
        (Level::WARN, "attempt failed; retrying"),
        (Level::DEBUG, "attempt"),
        (Level::WARN, "attempt failed; retrying"),
        (Level::DEBUG, "attempt"),
        (Level::INFO, "call succeeded after retrying"),
        (Level::DEBUG, "attempt"),
        (Level::WARN, "attempt failed permanently; not retrying"),
    ];
    let got: Vec<(Level, &str)> = got.iter().map(|(l, m)| (*l, m.as_str())).collect();
    assert_eq!(got, want);
}
