//! Docker's event stream as a trigger: an event about a container of ours
//! queues its game. The stream is lossy (dockerd drops slow readers and
//! ends it when it stops), so when it ends it is opened again with backoff
//! and every game is queued, and the periodic sweep catches the rest.

use futures::StreamExt;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::runtime::ContainerRuntime;

use super::backoff::Backoff;
use super::desired::DesiredCache;
use super::queue::WorkQueue;

/// Runs until `shutdown`.
pub(crate) async fn run(
    runtime: Arc<dyn ContainerRuntime>,
    cache: Arc<DesiredCache>,
    queue: Arc<WorkQueue>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::reconnect();
    // Never listed while etcd is down: a shutdown must not wait for it.
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = cache.wait_ready() => {}
    }
    loop {
        let mut events = runtime.events();
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                Some(Ok(event)) => {
                    backoff.reset();
                    if let Some(game) = &event.game {
                        debug!(%game, action = %event.action, "Docker event");
                        queue.add(game);
                    }
                }
                Some(Err(error)) => {
                    warn!(%error, "the Docker event stream failed; reopening");
                    break;
                }
                None => {
                    debug!("the Docker event stream ended; reopening");
                    break;
                }
            }
        }
        // Events may have been lost: look at every game again (in bulk,
        // behind changes).
        queue.add_bulk_all(cache.games());
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
