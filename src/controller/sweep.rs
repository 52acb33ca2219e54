//! The periodic sweep: every resync period (jittered) it queues every game
//! again, so drift that no event reported is repaired, and it looks at the
//! Docker host and at the status records for what no document explains:
//!
//! - a container labelled with this installation's prefix whose game has
//!   no document is queued for removal once it stayed orphaned for the GC
//!   grace period (a document being created meanwhile saves it);
//! - a container claiming a game (labelled with its name, but not named
//!   `rtm-<game>`) is named back when the game has none (renamed by hand),
//!   or removed as a duplicate, under the game's lease and in its history;
//! - a status record of this node's game without a document (deleted while
//!   no controller ran) is queued so the reconcile clears it. The status
//!   cache answers that when it follows etcd; otherwise the records are
//!   listed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::lifecycle::{Lifecycle, OpRequest, new_id};
use crate::model::OpSource;
use crate::runtime::container_name;

use super::backoff::jitter;
use super::queue::WorkQueue;
use super::status_cache::StatusCache;
use super::watcher::DesiredCache;

/// Runs until `shutdown`: one sweep per (jittered) `period`.
pub async fn run(
    lifecycle: Lifecycle,
    cache: Arc<DesiredCache>,
    statuses: Arc<StatusCache>,
    queue: Arc<WorkQueue>,
    period: Duration,
    gc_grace: Duration,
    shutdown: CancellationToken,
) {
    let mut orphans: HashMap<String, Instant> = HashMap::new();
    cache.wait_ready().await;
    loop {
        sweep(
            &lifecycle,
            &cache,
            &statuses,
            &queue,
            gc_grace,
            &mut orphans,
        )
        .await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(jitter(period)) => {}
        }
    }
}

async fn sweep(
    lifecycle: &Lifecycle,
    cache: &DesiredCache,
    statuses: &StatusCache,
    queue: &WorkQueue,
    gc_grace: Duration,
    orphans: &mut HashMap<String, Instant>,
) {
    // In bulk: behind any change that comes in meanwhile (queue.rs).
    for game in cache.games() {
        queue.add_bulk(&game);
    }
    let runtime = lifecycle.runtime();
    match runtime.list_managed().await {
        Ok(containers) => {
            let now = Instant::now();
            let mut seen_orphans = Vec::new();
            let mut misnamed = Vec::new();
            for container in containers {
                if container.prefix() != Some(lifecycle.prefix()) {
                    continue; // another installation's, or hand-made: never ours to judge
                }
                let Some(game) = container.game().map(str::to_owned) else {
                    continue;
                };
                if container.name.trim_start_matches('/')
                    != container_name(lifecycle.prefix(), &game)
                {
                    if !misnamed.contains(&game) {
                        misnamed.push(game);
                    }
                    continue;
                }
                if cache.contains(&game) {
                    continue;
                }
                let first_seen = *orphans.entry(game.clone()).or_insert(now);
                if now.duration_since(first_seen) >= gc_grace {
                    info!(%game, container = %container.id, "garbage-collecting a container without a document");
                    cache.mark_gone(&game);
                    queue.add(&game);
                }
                seen_orphans.push(game);
            }
            orphans.retain(|game, _| seen_orphans.contains(game));
            for game in misnamed {
                reclaim(lifecycle, &game).await;
                queue.add(&game);
            }
        }
        Err(error) => warn!(%error, "listing managed containers failed; the sweep skips Docker"),
    }
    for game in statuses_without_document(lifecycle, cache, statuses).await {
        cache.mark_gone(&game);
        queue.add(&game);
    }
}

/// The games of this node (or of none) with a status record but no
/// document: from the status cache while it follows etcd, else from one
/// listing of every record.
async fn statuses_without_document(
    lifecycle: &Lifecycle,
    cache: &DesiredCache,
    statuses: &StatusCache,
) -> Vec<String> {
    let documented = |game: &str| cache.contains(game);
    if let Some(games) = statuses.without_document(documented, lifecycle.node()) {
        return games;
    }
    let keys = lifecycle.session().keys();
    let listing = match lifecycle
        .session()
        .store()
        .list(&keys.statuses(), None)
        .await
    {
        Ok(listing) => listing,
        Err(error) => {
            warn!(%error, "listing status records failed; the sweep skips them");
            return Vec::new();
        }
    };
    listing
        .items
        .iter()
        .filter_map(|kv| {
            let game = keys.name_of(&keys.statuses(), &kv.key)?;
            let status = crate::status::StoredStatus::from_kv(kv).status;
            (!documented(game) && of_node(&status, lifecycle.node())).then(|| game.to_owned())
        })
        .collect()
}

/// Whether a status record belongs to `node` (or to no node yet).
pub(crate) fn of_node(status: &crate::model::GameRuntimeStatus, node: &str) -> bool {
    status.node.as_deref().is_none_or(|n| n == node)
}

/// Containers claiming `game` under another name than `rtm-<game>`: one
/// renamed by hand is named back when the game has no container, every
/// other one is removed; under the game's lease, each recorded in its
/// history (lifecycle/reclaim.rs).
async fn reclaim(lifecycle: &Lifecycle, game: &str) {
    let lease = match lifecycle.acquire(game, &new_id()).await {
        Ok(lease) => lease,
        Err(error) => {
            warn!(%game, %error, "cannot take the lease to reclaim a renamed container; next sweep");
            return;
        }
    };
    let request = OpRequest::new(game, OpSource::Reconcile);
    for result in lifecycle.reclaim_under(&lease, &request).await {
        info!(%game, op_kind = %result.op_kind, outcome = %result.outcome, "reclaimed a container claiming the game under another name");
    }
    if let Err(error) = lease.release().await {
        warn!(%game, %error, "releasing the game lease failed");
    }
}
