//! The list-then-watch loop behind every etcd prefix the controller
//! follows (the desired state and the status records, each into its
//! [`Cache`](super::cache::Cache); the other controllers' heartbeats, in
//! [`super::peers`]): list at a revision R, follow the prefix watch from
//! R + 1, and when the watch ends (compaction, a broken connection, etcd
//! restarting) relist with jittered exponential backoff. One loop, so every
//! follower recovers the same way.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use rtm_core::store::{Revision, Store, StoreError, WatchEvent};

use super::backoff::Backoff;

/// Bounds of the relist backoff.
const RELIST_MIN: Duration = Duration::from_millis(200);
const RELIST_MAX: Duration = Duration::from_secs(30);

/// A follower of one etcd prefix (most keep an in-memory copy of it).
pub(crate) trait Mirror {
    type Error: Display;

    /// Names the copy in logs and in the `watch` label of
    /// `rtmanager_etcd_watch_restarts_total`.
    fn what(&self) -> &'static str;

    fn store(&self) -> &Arc<dyn Store>;

    /// The watched prefix.
    fn prefix(&self) -> String;

    /// Lists the prefix, swaps the listing in, and returns its revision.
    async fn relist(&self) -> Result<Revision, Self::Error>;

    /// Applies one batch of changes seen by the watch (in revision order;
    /// a follower that acts on changes does so once per batch).
    async fn apply(&self, batch: Vec<WatchEvent>);

    /// The watch ended: until the next relist the copy may miss changes.
    fn broken(&self) {}
}

/// Keeps `mirror` in step with etcd until `shutdown`.
pub(crate) async fn run(mirror: &impl Mirror, metrics: &Metrics, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(RELIST_MIN, RELIST_MAX);
    loop {
        let revision = tokio::select! {
            _ = shutdown.cancelled() => return,
            listed = mirror.relist() => match listed {
                Ok(revision) => revision,
                Err(error) => {
                    let delay = backoff.next_delay();
                    warn!(watch = mirror.what(), %error, retry_in = ?delay, "listing failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            },
        };
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            reason = follow(mirror, revision, &mut backoff) => reason,
        };
        mirror.broken();
        metrics
            .watch_restarts
            .with_label_values(&[mirror.what(), reason])
            .inc();
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Follows the watch from `revision + 1` until it ends; returns why.
async fn follow(mirror: &impl Mirror, revision: Revision, backoff: &mut Backoff) -> &'static str {
    let what = mirror.what();
    let mut stream = match mirror.store().watch(&mirror.prefix(), revision + 1).await {
        Ok(stream) => stream,
        Err(error) => {
            warn!(watch = what, %error, "opening the watch failed");
            return "broken";
        }
    };
    while let Some(batch) = stream.next().await {
        let batch = match batch {
            Ok(batch) => batch,
            Err(StoreError::Compacted { .. }) => {
                info!(
                    watch = what,
                    revision, "the watch fell behind a compaction; relisting"
                );
                return "compacted";
            }
            Err(error) => {
                warn!(watch = what, %error, "the watch broke; relisting");
                return "broken";
            }
        };
        backoff.reset();
        mirror.apply(batch).await;
    }
    "broken"
}
