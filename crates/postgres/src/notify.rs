//! LISTEN/NOTIFY: wake-ups for idle workers on every node.
//!
//! Enqueueing ready items, and requeueing items (the reaper, `recover_mine`, a dead node's
//! recovery, an operator's retry), sends `NOTIFY leasehold_<schema>, '<count>'` inside the
//! writing transaction, so the notification is delivered at commit, when the items can be
//! acquired; resuming a paused kind sends [`WAKE_ALL`]. A store that
//! [subscribes](crate::PgStore::subscribe) keeps one dedicated connection (outside the pool)
//! listening on that channel and broadcasts each notification's count. After a lost
//! connection it reconnects and sends one [`WAKE_ALL`], since notifications sent meanwhile
//! are gone.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use leasehold_core::store::Wakeups;
use leasehold_core::{StoreError, StoreResult};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::error::from_pg;

/// The count a subscriber gets when notifications may have been missed: wake every idle
/// worker (the core's [`WAKE_ALL`](leasehold_core::store::WAKE_ALL)).
pub const WAKE_ALL: u64 = leasehold_core::store::WAKE_ALL;

/// How long the listener waits before reconnecting after losing its connection.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// A subscription as the runtime reads it ([`Store::wakeups`](leasehold_core::Store::wakeups)):
/// a lag (the receiver fell more than the channel's capacity behind) becomes one [`WAKE_ALL`],
/// since the counts it skipped are gone; the end of the listener ends the stream.
#[derive(Debug)]
pub(crate) struct Subscription(pub(crate) broadcast::Receiver<u64>);

#[async_trait]
impl Wakeups for Subscription {
    async fn next(&mut self) -> Option<u64> {
        match self.0.recv().await {
            Ok(count) => Some(count),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(WAKE_ALL),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// The listening task; aborted when the last clone of the store goes.
#[derive(Debug)]
pub(crate) struct Listener {
    sender: broadcast::Sender<u64>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Connects, runs `LISTEN channel`, and returns once notifications are being received.
    pub(crate) async fn start(
        config: tokio_postgres::Config,
        channel: String,
    ) -> StoreResult<Listener> {
        let (sender, _) = broadcast::channel(256);
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(run(config, channel, sender.clone(), ready_tx));
        match ready_rx.await {
            Ok(Ok(())) => Ok(Listener { sender, task }),
            Ok(Err(e)) => {
                task.abort();
                Err(e)
            }
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// A new receiver of wake-ups.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<u64> {
        self.sender.subscribe()
    }
}

async fn run(
    config: tokio_postgres::Config,
    channel: String,
    sender: broadcast::Sender<u64>,
    ready: oneshot::Sender<StoreResult<()>>,
) {
    let mut ready = Some(ready);
    loop {
        match listen(&config, &channel, &sender, &mut ready).await {
            Ok(()) => tracing::warn!(%channel, "notification connection closed; reconnecting"),
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tracing::warn!(%channel, error = %e, "notification connection failed; retrying");
            }
        }
        // Whatever was notified while we were away is lost: wake everyone once.
        let _ = sender.send(WAKE_ALL);
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// One connection's life: LISTEN, then forward notifications until it ends.
async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
    sender: &broadcast::Sender<u64>,
    ready: &mut Option<oneshot::Sender<StoreResult<()>>>,
) -> StoreResult<()> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(from_pg)?;
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let forward = sender.clone();
    // The connection must be polled for the LISTEN below to complete, so it runs beside it.
    let pump = tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let count = n.payload().parse::<u64>().unwrap_or(WAKE_ALL);
                    let _ = forward.send(count);
                }
                Ok(_) => {}
                Err(e) => return Err(from_pg(e)),
            }
        }
        Ok(())
    });
    // The channel is `leasehold_` and a validated identifier: safe to splice.
    if let Err(e) = client.batch_execute(&format!("LISTEN {channel}")).await {
        pump.abort();
        return Err(from_pg(e));
    }
    if let Some(r) = ready.take() {
        let _ = r.send(Ok(()));
    }
    let ended = pump.await;
    drop(client);
    match ended {
        Ok(r) => r,
        Err(e) => Err(StoreError::backend(e)),
    }
}
