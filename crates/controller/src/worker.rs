//! The workers: each takes a game from the queue, reconciles it in its own
//! task (bounded by the reconcile timeout; a panic stays in that task) and
//! schedules it again per the outcome, backing off per game after a
//! failure.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::metrics::Metrics;

use super::backoff::Backoff;
use super::desired::DesiredCache;
use super::queue::WorkQueue;
use super::reconcile::Reconciler;

/// One worker: takes a game, reconciles it in its own task (a panic stays
/// there), and schedules it again per the outcome.
pub(crate) async fn worker(
    reconciler: Arc<Reconciler>,
    backoffs: Arc<Backoffs>,
    cache: Arc<DesiredCache>,
    queue: Arc<WorkQueue>,
    metrics: Metrics,
    timeout: Duration,
    stop: CancellationToken,
) {
    cache.wait_ready().await;
    loop {
        let game = tokio::select! {
            _ = stop.cancelled() => return,
            next = queue.next_due() => match next {
                Some((game, waited)) => {
                    metrics.queue_wait.observe(waited.as_secs_f64());
                    game
                }
                None => return,
            },
        };
        metrics.active_workers.inc();
        let started = std::time::Instant::now();
        let task = {
            let (reconciler, game) = (reconciler.clone(), game.clone());
            tokio::spawn(
                async move { tokio::time::timeout(timeout, reconciler.reconcile(&game)).await },
            )
        };
        let (label, retry) = match task.await {
            Ok(Ok(Ok(requeue))) => {
                backoffs.reset(&game);
                queue.release(&game);
                if let Some(delay) = requeue {
                    queue.add_after(&game, delay);
                }
                ("ok", false)
            }
            Ok(Ok(Err(error))) => {
                warn!(%game, code = %error.code, message = %error.message, "reconcile failed");
                ("failed", true)
            }
            Ok(Err(_)) => {
                error!(%game, ?timeout, "reconcile timed out");
                ("timed_out", true)
            }
            Err(join) => {
                error!(%game, panic = join.is_panic(), "reconcile panicked; the controller goes on");
                ("panicked", true)
            }
        };
        if retry {
            queue.hold(&game, backoffs.next_delay(&game));
            metrics.retries.inc();
        }
        metrics.reconciles.with_label_values(&[label]).inc();
        metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.active_workers.dec();
        queue.done(&game);
    }
}

/// Per-game retry backoff, shared by the workers (any worker may take a
/// game next): 1 s doubling to 5 min, reset by a success.
#[derive(Debug, Default)]
pub(crate) struct Backoffs(std::sync::Mutex<std::collections::HashMap<String, Backoff>>);

impl Backoffs {
    fn next_delay(&self, game: &str) -> Duration {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(game.to_owned())
            .or_insert_with(|| Backoff::new(Duration::from_secs(1), Duration::from_secs(300)))
            .next_delay()
    }

    fn reset(&self, game: &str) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(game);
    }
}
