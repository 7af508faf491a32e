//! What the runtime's integration tests share: waiting on a broadcast of events (node events,
//! renewals) with an overall timeout, so a broken property fails the test instead of hanging.

use std::time::Duration;

use tokio::sync::broadcast;

/// How long any test waits for an event before it fails.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Waits for the first message of `rx` that `pick` maps to `Some`, failing the test after
/// [`WAIT`]. A lagging receiver skips what it missed and goes on.
pub(crate) async fn wait_for<E: Clone, T>(
    rx: &mut broadcast::Receiver<E>,
    what: &str,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> T {
    let fut = async {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("event stream closed while waiting for {what}: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}
