//! The controller: watches desired state in etcd and converges every game's
//! container.
//!
//! Module map: the ports and their adapters — [`runtime`] (the
//! `ContainerRuntime` port over Docker, the only user of `bollard`); what
//! acts — [`lease`] (per-game leases on one etcd session, and the status
//! record as their holder knows it), [`lifecycle`] (start, stop, restart,
//! remove, unpause, reclaim); the pipeline — [`watcher`], [`status_cache`],
//! [`queue`], [`reconcile`] with its pure [`plan`], [`sweep`], [`events`];
//! and around it [`config`], [`hardening`], [`metrics`], [`http`].
//!
//! ```text
//! watcher (list at R, watch from R+1) ─┐
//! Docker events ───────────────────────┼─► queue ─► workers ─► reconcile
//! sweep (resync, GC) ──────────────────┘   (dedup,    (bounded,   observe → plan
//!                                           delays)    backoff)   → act → record
//! status watch ─► status cache (the first look of a reconcile)
//! ```
//!
//! [`run`] wires the stages and owns shutdown: the first cancellation of
//! `shutdown` stops taking work, lets in-flight reconciles finish (bounded
//! by the drain timeout) and revokes the etcd session, which frees every
//! game lease; the binary turns a second signal into an immediate exit.
//!
//! The etcd session outlives single operations, not the controller: when
//! etcd reports it lost (a long partition), the workers stop, and a new
//! session is opened; in between, nothing acts.

pub mod backoff;
pub mod config;
pub mod events;
pub mod failpoint;
pub mod hardening;
pub mod http;
pub mod lease;
pub mod lifecycle;
pub mod metrics;
mod mirror;
pub mod plan;
pub mod queue;
pub mod reconcile;
pub mod runtime;
pub mod status_cache;
pub mod sweep;
pub mod watcher;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::lease::Session;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::runtime::instrumented::Instrumented;
use crate::runtime::{ContainerRuntime, DockerRuntime};
use rtm_core::records::Documents;
use rtm_core::records::lease::Heartbeat;
use rtm_core::store::etcd::EtcdStore;
use rtm_core::store::{Keys, Store, StoreError};

use self::backoff::Backoff;
use self::config::ControllerConfig;
use self::queue::WorkQueue;
use self::reconcile::{Reconciler, Sharding};
use self::status_cache::{StatusCache, StatusMirror};
use self::watcher::DesiredCache;

/// Bound on one Docker call (stops get their stopTimeout on top).
const DOCKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("invalid configuration: {0}")]
    Config(#[from] rtm_core::config::ConfigError),
    /// The message names etcd and what went wrong (not reachable, TLS, credentials).
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot set up Docker: {0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the controller until `shutdown` is cancelled and drained.
pub async fn run(
    config: ControllerConfig,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    let keys = config.etcd.keys()?;
    let adapters = async {
        let etcd = EtcdStore::connect(&config.etcd.etcd_config()?).await?;
        // Wrong TLS or credentials exit here; an etcd that is down is waited for.
        etcd.check_settings().await?;
        let store: Arc<dyn Store> = Arc::new(etcd);
        let docker: Arc<dyn ContainerRuntime> =
            Arc::new(DockerRuntime::connect(config.docker_host.as_deref(), DOCKER_TIMEOUT).await?);
        Ok::<_, ControllerError>((store, docker))
    };
    // A signal while etcd (or Docker) is still being reached stops at once: nothing runs yet.
    let (store, docker) = tokio::select! {
        _ = shutdown.cancelled() => {
            info!("stopped during start-up");
            return Ok(());
        }
        adapters = adapters => adapters?,
    };
    let metrics = Metrics::new();
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(Instrumented::new(docker, metrics.clone()));
    run_with(config, keys, store, runtime, metrics, shutdown).await
}

/// [`run`] with the adapters given (the benchmark passes a simulated
/// Docker).
pub async fn run_with(
    config: ControllerConfig,
    keys: Keys,
    store: Arc<dyn Store>,
    runtime: Arc<dyn ContainerRuntime>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    let cache = Arc::new(DesiredCache::new());
    // Bulk work (resyncs) leaves one worker free for changes.
    let queue = Arc::new(WorkQueue::new().with_bulk_slots(config.concurrency.saturating_sub(1)));
    let documents = Documents::new(store.clone(), keys.clone());
    let session_ok = Arc::new(AtomicBool::new(false));
    // Background stages stop only after the workers drained.
    let stages = CancellationToken::new();

    let health = crate::http::Health {
        metrics: metrics.clone(),
        cache: cache.clone(),
        runtime: runtime.clone(),
        session_ok: session_ok.clone(),
    };
    let http = crate::http::serve(config.metrics_addr, health, stages.clone())
        .await
        .map_err(|source| ControllerError::Listen {
            addr: config.metrics_addr,
            source,
        })?;
    info!(addr = %config.metrics_addr, node = %config.node_name, prefix = %keys.prefix(), "rtmanager starting");

    let mut background = JoinSet::new();
    background.spawn(watcher::run(
        documents,
        cache.clone(),
        queue.clone(),
        metrics.clone(),
        stages.clone(),
    ));
    let statuses = Arc::new(StatusCache::new());
    let status_mirror = StatusMirror {
        store: store.clone(),
        keys: keys.clone(),
        cache: statuses.clone(),
        queue: Some(queue.clone()),
    };
    let (status_metrics, status_stop) = (metrics.clone(), stages.clone());
    background.spawn(async move {
        mirror::run(&status_mirror, &status_metrics, status_stop).await;
    });
    let shared = Shared {
        cache: cache.clone(),
        statuses,
        queue: queue.clone(),
    };
    background.spawn(events::run(
        runtime.clone(),
        cache.clone(),
        queue.clone(),
        stages.clone(),
    ));
    background.spawn(report_queue_depth(
        queue.clone(),
        metrics.clone(),
        stages.clone(),
    ));

    let mut session_backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    while !shutdown.is_cancelled() {
        let holder = format!("{}-{:08x}", config.node_name, rand::random::<u32>());
        let session = tokio::select! {
            _ = shutdown.cancelled() => break,
            opened = Session::open(store.clone(), keys.clone(), &holder, config.lease_ttl, metrics.clone()) => opened,
        };
        let session = match session {
            Ok(session) => session,
            Err(error) => {
                let delay = session_backoff.next_delay();
                warn!(%error, retry_in = ?delay, "opening the etcd session failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        session_backoff.reset();
        session_ok.store(true, Ordering::SeqCst);
        // /readyz turns false the moment the session counts lost, not
        // once its operations have drained.
        let unready = {
            let session_ok = session_ok.clone();
            let lost = session.lost().clone();
            tokio::spawn(async move {
                lost.cancelled().await;
                session_ok.store(false, Ordering::SeqCst);
            })
        };
        announce(&session, &config.node_name).await;
        run_session(&config, &session, &runtime, &shared, &metrics, &shutdown).await;
        unready.abort();
        session_ok.store(false, Ordering::SeqCst);
        if let Err(error) = session.close().await {
            warn!(%error, "revoking the etcd session failed; its leases expire after one TTL");
        }
        if !shutdown.is_cancelled() {
            warn!("the etcd session was lost; opening a new one");
            for game in cache.games() {
                queue.add_bulk(&game);
            }
        }
    }
    stages.cancel();
    queue.close();
    while background.join_next().await.is_some() {}
    let _ = http.await;
    info!("rtmanager stopped");
    Ok(())
}

/// What outlives an etcd session: the copies the watches keep, and the
/// work queue.
struct Shared {
    cache: Arc<DesiredCache>,
    statuses: Arc<StatusCache>,
    queue: Arc<WorkQueue>,
}

/// Runs workers and the sweep under one session until it is lost or
/// shutdown is asked; then drains the workers.
async fn run_session(
    config: &ControllerConfig,
    session: &Arc<Session>,
    runtime: &Arc<dyn ContainerRuntime>,
    shared: &Shared,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) {
    let Shared {
        cache,
        statuses,
        queue,
    } = shared;
    let lifecycle = Lifecycle::new(
        runtime.clone(),
        session.clone(),
        config.history_retention,
        metrics.clone(),
    )
    .with_node(&config.node_name)
    .with_host_port_policy(config.host_port_policy())
    .with_policy(config.hardening.policy(session.keys().prefix()));
    let sharding = Sharding {
        node: config.node_name.clone(),
        take_unassigned: config.take_unassigned,
    };
    let reconciler = Arc::new(
        Reconciler::new(
            lifecycle.clone(),
            cache.clone(),
            sharding,
            plan::Settings::default(),
            metrics.clone(),
        )
        .with_status_cache(statuses.clone()),
    );
    // Workers stop taking work when this is cancelled: on shutdown or when
    // the session is lost.
    let stop_work = CancellationToken::new();
    let backoffs = Arc::new(Backoffs::default());
    let mut workers = JoinSet::new();
    for _ in 0..config.concurrency {
        workers.spawn(worker(
            reconciler.clone(),
            backoffs.clone(),
            cache.clone(),
            queue.clone(),
            metrics.clone(),
            config.reconcile_timeout,
            stop_work.clone(),
        ));
    }
    let peers = tokio::spawn(watch_peers(
        session.clone(),
        config.node_name.clone(),
        reconciler.clone(),
        cache.clone(),
        queue.clone(),
        stop_work.clone(),
    ));
    let sweeper = tokio::spawn(sweep::run(
        lifecycle,
        cache.clone(),
        statuses.clone(),
        queue.clone(),
        config.resync,
        config.gc_grace,
        config.history_grace,
        metrics.clone(),
        stop_work.clone(),
    ));
    tokio::select! {
        _ = shutdown.cancelled() => info!("shutting down: finishing in-flight operations"),
        _ = session.lost().cancelled() => error!("the etcd session is lost; pausing work"),
    }
    stop_work.cancel();
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(timeout = ?config.drain_timeout, "in-flight operations did not finish in time; abandoning them (recovery resolves their history)");
        workers.abort_all();
    }
    sweeper.abort();
    peers.abort();
}

/// Watches the other controllers' heartbeat keys: when one disappears (its
/// session expired: it died or froze), its games may hold unfinished
/// history entries and stopped containers, so every game is looked at
/// again, its history included.
async fn watch_peers(
    session: Arc<Session>,
    node: String,
    reconciler: Arc<Reconciler>,
    cache: Arc<DesiredCache>,
    queue: Arc<WorkQueue>,
    stop: CancellationToken,
) {
    use futures::StreamExt;
    let prefix = session.keys().controllers();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let listing = tokio::select! {
            _ = stop.cancelled() => return,
            listing = session.store().list(&prefix, None) => listing,
        };
        let own = session.keys().controller(session.holder());
        if let Ok(listing) = &listing
            && !listing
                .items
                .iter()
                .any(|kv| kv.key == own && kv.lease == session.lease_id())
        {
            warn!(key = %own, "this controller's heartbeat is missing; announcing it again");
            announce(&session, &node).await;
        }
        let mut events = match listing {
            Ok(listing) => match session.store().watch(&prefix, listing.revision + 1).await {
                Ok(events) => events,
                Err(error) => {
                    warn!(%error, "watching the controller heartbeats failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
            Err(error) => {
                warn!(%error, "listing the controller heartbeats failed");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => return,
                batch = events.next() => batch,
            };
            let Some(Ok(batch)) = batch else { break };
            backoff.reset();
            let forged = batch.iter().any(|e| match e {
                rtm_core::store::WatchEvent::Delete { key, .. } => *key == own,
                rtm_core::store::WatchEvent::Put(kv) => {
                    kv.key == own && kv.lease != session.lease_id()
                }
            });
            if forged {
                // Deleted or overwritten by hand: without it, the other
                // controllers would take this one's game leases for forged.
                warn!(key = %own, "this controller's heartbeat was deleted or overwritten; announcing it again");
                announce(&session, &node).await;
            }
            let departed: Vec<&str> = batch
                .iter()
                .filter(|e| matches!(e, rtm_core::store::WatchEvent::Delete { .. }))
                .map(|e| e.key())
                .filter(|key| *key != own)
                .collect();
            if departed.is_empty() {
                continue;
            }
            info!(
                ?departed,
                "a controller went away; looking at every game again"
            );
            reconciler.forget_recovery();
            for game in cache.games() {
                queue.add_bulk(&game);
            }
        }
        // Departures may have been missed while the watch was down.
        reconciler.forget_recovery();
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One worker: takes a game, reconciles it in its own task (a panic stays
/// there), and schedules it again per the outcome.
async fn worker(
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
struct Backoffs(std::sync::Mutex<std::collections::HashMap<String, Backoff>>);

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

/// Writes this controller's heartbeat key, attached to its session lease.
/// Adds the node to the heartbeat the session wrote when it opened.
async fn announce(session: &Session, node: &str) {
    let heartbeat = Heartbeat::new(session.holder(), Some(node));
    if let Err(error) = session.announce(&heartbeat).await {
        warn!(%error, "writing the controller heartbeat failed");
    }
}

/// Keeps the queue-depth gauge current.
async fn report_queue_depth(queue: Arc<WorkQueue>, metrics: Metrics, stop: CancellationToken) {
    loop {
        metrics
            .queue_depth
            .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
