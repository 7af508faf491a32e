//! Which clock a node takes its lease times from, and the task that keeps a shared clock in
//! step.
//!
//! A node given a clock ([`LeaseholdBuilder::clock`](crate::LeaseholdBuilder::clock)) uses it.
//! Otherwise it asks its store ([`Store::clock_sync`]): a
//! database that several hosts share and that keeps its own clock (PostgreSQL) gives a clock
//! synchronised to it, so every host judges leases by the one clock whatever its own says; a
//! store on one host gives none and the node uses the system clock.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{Clock, SharedClock, Store, StoreResult, SystemClock};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::handle::TreeExit;

/// Where a node's lease times come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockSource {
    /// The clock given to the builder.
    Given,
    /// The database's own clock, through an offset measured at start and resynced
    /// periodically ([`RuntimeConfig::clock_resync`](crate::RuntimeConfig::clock_resync)).
    Database,
    /// This host's system clock (a store on one host).
    System,
}

/// A node's clock as chosen at start.
pub(crate) struct Chosen {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) source: ClockSource,
    /// The shared clock to resync, for [`ClockSource::Database`].
    pub(crate) shared: Option<Arc<dyn SharedClock>>,
}

/// The given clock, else the store's shared one, else the system clock. A store that has a
/// shared clock but cannot measure it now fails the start: falling back to this host's clock
/// would let its leases disagree with every other host's.
pub(crate) async fn choose(
    given: Option<Arc<dyn Clock>>,
    store: &dyn Store,
) -> StoreResult<Chosen> {
    if let Some(clock) = given {
        return Ok(Chosen {
            clock,
            source: ClockSource::Given,
            shared: None,
        });
    }
    Ok(match store.clock_sync().await? {
        Some(shared) => Chosen {
            clock: shared.clone().as_clock(),
            source: ClockSource::Database,
            shared: Some(shared),
        },
        None => Chosen {
            clock: Arc::new(SystemClock),
            source: ClockSource::System,
            shared: None,
        },
    })
}

/// Resyncs `clock` every `every` until the tree stops, so drift between this host's clock and
/// the database's never builds up over a long run. A failed resync keeps the last offset.
pub(crate) fn spawn_resync(
    node_id: String,
    clock: Arc<dyn SharedClock>,
    every: Duration,
    mut exit: watch::Receiver<Option<TreeExit>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            if exit.borrow_and_update().is_some() {
                return;
            }
            tokio::select! {
                _ = ticks.tick() => match clock.resync().await {
                    Ok(rtt) => tracing::debug!(node = %node_id, offset_ms = clock.offset_ms(), rtt_ms = rtt.as_millis() as u64, "database clock resynced"),
                    Err(e) => tracing::warn!(node = %node_id, error = %e, "cannot resync the database clock; keeping the last offset"),
                },
                changed = exit.changed() => if changed.is_err() {
                    return;
                },
            }
        }
    })
}
