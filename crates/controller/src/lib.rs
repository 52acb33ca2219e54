//! The controller: watches desired state in etcd and converges every game's
//! container.
//!
//! Module map: the ports and their adapters — [`runtime`] (the
//! `ContainerRuntime` port over Docker, the only user of `bollard`); what
//! acts — [`lease`] (per-game leases on one etcd session, and the status
//! record as their holder knows it), [`lifecycle`] (start, stop, restart,
//! remove, unpause, reclaim); the pipeline — `mirror` (the list-then-watch
//! loop behind every followed prefix) filling `cache`s (the last-seen
//! records of one prefix, shared by `Arc`): [`desired`] and [`statuses`];
//! `peers` (the other controllers' heartbeats), [`events`], [`sweep`], `prepull`
//! (answers `rtctl prepull`: pulls images for the games of this node, touching no container),
//! [`queue`], `worker`, [`reconcile`] with its pure [`plan`]; [`health`]
//! (the prober: what each game's health check said, in memory); [`placement`] (this
//! node's record, the elected scheduler and its assignments, which games this node runs,
//! the self-fence); and around it [`backoff`], [`config`], [`hardening`], [`metrics`],
//! [`http`].
//!
//! ```text
//! desired watch (list at R, watch from R+1) ─┐
//! Docker events ─────────────────────────────┤
//! sweep (resync, GC) ────────────────────────┼─► queue ─► workers ─► reconcile
//! peer heartbeats (a controller went away) ──┤   (dedup,    (bounded,   observe → plan
//! prober (a health verdict changed) ─────────┘    delays)    backoff)   → act → record
//! status watch ─► status cache (the first look of a reconcile)
//! nodes, cordons, heartbeats ─► nodes view ─┐
//! assignments watch ─► assignment cache ────┴─► scheduler (if elected) ─► assignments
//! assignment changes ─► queue; a game runs here only while assigned here
//! reconcile ─► prober (the containers to probe) ─► its verdicts, read by plan
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

#![warn(missing_docs, unreachable_pub)]

mod backoff;
mod cache;
pub mod config;
mod desired;
mod disruption;
mod events;
mod failpoint;
#[cfg(test)]
mod fixture;
pub mod hardening;
mod health;
pub mod http;
pub mod image_options;
mod image_watch;
pub mod lease;
pub mod lifecycle;
pub mod metrics;
mod mirror;
mod peers;
pub mod placement;
mod plan;
mod prepull;
mod queue;
mod reconcile;
mod recorder;
pub mod registry_auth;
pub mod runtime;
mod statuses;
mod sweep;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::lease::Session;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::runtime::instrumented::Instrumented;
use crate::runtime::{ContainerRuntime, DockerRuntime};
use rtm_core::records::Documents;
use rtm_core::store::etcd::EtcdStore;
use rtm_core::store::{Keys, Store, StoreError};

use self::backoff::Backoff;
use self::config::ControllerConfig;
use self::desired::DesiredCache;
use self::disruption::{BudgetMirror, Disruptions, SessionMirror, SlotMirror};
use self::health::Health;
use self::peers::{Peers, announce};
use self::placement::assignments::AssignmentMirror;
use self::placement::fence::SelfFence;
use self::placement::registry::{self, Offer};
use self::placement::scheduler::Scheduler;
use self::placement::view::{Part, ViewMirror};
use self::placement::{AssignmentCache, NodesView, Ownership};
use self::queue::WorkQueue;
use self::reconcile::Reconciler;
use self::statuses::{StatusCache, StatusMirror};
use self::worker::{Backoffs, worker};

/// Bound on one Docker call (stops get their stopTimeout on top).
const DOCKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The settings do not hold together (an unknown prefix, a bad file).
    #[error("invalid configuration: {0}")]
    Config(#[from] rtm_core::config::ConfigError),
    /// The message names etcd and what went wrong (not reachable, TLS, credentials).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The Docker client could not be built (a bad `DOCKER_HOST`).
    #[error("cannot set up Docker: {0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The endpoint's address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for (`--metrics-addr`).
        addr: std::net::SocketAddr,
        /// Why binding it failed.
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
    // Bulk work (resyncs) leaves one worker free for changes.
    let queue = Arc::new(WorkQueue::new().with_bulk_slots(config.concurrency.saturating_sub(1)));
    let address = config.advertised_address();
    let cache = Arc::new(DesiredCache::new());
    let statuses = Arc::new(StatusCache::new());
    let disruptions = Arc::new(Disruptions::new(
        store.clone(),
        keys.clone(),
        cache.clone(),
        Some(statuses.clone()),
        Some(queue.clone()),
    ));
    let pulls = config.images.pulls();
    if let Some(file) = pulls.auth.path() {
        // Read once at start-up only to say early when it is unusable; pulls read it
        // again whenever it changes.
        match pulls
            .auth
            .for_image(&format!("{}/check", rtm_core::model::image::DOCKER_HUB))
        {
            Ok(_) => info!(file = %file.display(), "registry credentials from this file"),
            Err(error) => {
                warn!(%error, "the registry auth file is unusable; pulls fail until it is fixed")
            }
        }
    }
    let (current_session, sessions) = tokio::sync::watch::channel(None);
    let fence = config.placement.self_fence().map(|after| {
        Arc::new(SelfFence::new(
            after,
            runtime.clone(),
            store.clone(),
            keys.clone(),
            &config.node_name,
            metrics.clone(),
            sessions,
        ))
    });
    let controller = Controller {
        nodes: Arc::new(NodesView::new()),
        assignments: Arc::new(AssignmentCache::new()),
        fence,
        current_session,
        pulls,
        disruptions,
        health: Arc::new(Health::new(metrics.clone())),
        address,
        config,
        keys,
        store,
        runtime,
        metrics,
        cache,
        statuses,
        queue,
        session_ok: Arc::new(AtomicBool::new(false)),
    };
    // Background stages stop only after the workers drained.
    let stages = CancellationToken::new();
    let http = controller.serve_http(&stages).await?;
    info!(addr = %controller.config.metrics_addr, node = %controller.config.node_name, prefix = %controller.keys.prefix(), "rtmanager starting");
    let mut background = controller.spawn_stages(&stages);
    controller.keep_sessions(&shutdown).await;
    stages.cancel();
    controller.queue.close();
    while background.join_next().await.is_some() {}
    let _ = http.await;
    info!("rtmanager stopped");
    Ok(())
}

/// What [`run_with`] wires, and what outlives an etcd session: the
/// adapters, the copies the watches keep, and the work queue.
struct Controller {
    config: ControllerConfig,
    keys: Keys,
    store: Arc<dyn Store>,
    runtime: Arc<dyn ContainerRuntime>,
    metrics: Metrics,
    cache: Arc<DesiredCache>,
    statuses: Arc<StatusCache>,
    /// What the probes said of each game's container; outlives sessions
    /// (a new session must not forget that a game passed).
    health: Arc<Health>,
    disruptions: Arc<Disruptions>,
    queue: Arc<WorkQueue>,
    /// Whether an etcd session is held (`/healthz`, `/readyz`).
    session_ok: Arc<AtomicBool>,
    /// `status.address` of the games this node runs.
    address: String,
    /// How images are pulled (one auth file reader for every session).
    pulls: crate::lifecycle::ImagePulls,
    /// The nodes, their cordons and the live controllers.
    nodes: Arc<NodesView>,
    /// Where each game runs.
    assignments: Arc<AssignmentCache>,
    /// Stops every game here when etcd is gone for `--self-fence-after` (`None`: off).
    fence: Option<Arc<SelfFence>>,
    /// The session in use, for the fence's clock.
    current_session: tokio::sync::watch::Sender<Option<Arc<Session>>>,
}

impl Controller {
    /// Serves `/metrics`, `/healthz` and `/readyz` until `stop`.
    async fn serve_http(
        &self,
        stop: &CancellationToken,
    ) -> Result<JoinHandle<()>, ControllerError> {
        let health = crate::http::Health {
            metrics: self.metrics.clone(),
            cache: self.cache.clone(),
            runtime: self.runtime.clone(),
            session_ok: self.session_ok.clone(),
        };
        let addr = self.config.metrics_addr;
        crate::http::serve(addr, health, stop.clone())
            .await
            .map_err(|source| ControllerError::Listen { addr, source })
    }

    /// The stages that need no etcd session, until `stop`: the desired and
    /// status watches, the Docker events, the queue-depth gauge.
    fn spawn_stages(&self, stop: &CancellationToken) -> JoinSet<()> {
        let mut stages = JoinSet::new();
        stages.spawn(desired::run(
            Documents::new(self.store.clone(), self.keys.clone()),
            self.cache.clone(),
            self.queue.clone(),
            self.metrics.clone(),
            stop.clone(),
        ));
        let status_mirror = StatusMirror {
            store: self.store.clone(),
            keys: self.keys.clone(),
            cache: self.statuses.clone(),
            queue: Some(self.queue.clone()),
        };
        let (metrics, status_stop) = (self.metrics.clone(), stop.clone());
        stages.spawn(async move {
            mirror::run(&status_mirror, &metrics, status_stop).await;
        });
        for mirror in 0..3 {
            let (disruptions, metrics, stop) =
                (self.disruptions.clone(), self.metrics.clone(), stop.clone());
            stages.spawn(async move {
                match mirror {
                    0 => mirror::run(&SessionMirror(disruptions), &metrics, stop).await,
                    1 => mirror::run(&BudgetMirror(disruptions), &metrics, stop).await,
                    _ => mirror::run(&SlotMirror(disruptions), &metrics, stop).await,
                }
            });
        }
        for part in Part::ALL {
            let mirror_of = ViewMirror {
                view: self.nodes.clone(),
                store: self.store.clone(),
                keys: self.keys.clone(),
                part,
            };
            let (metrics, stop) = (self.metrics.clone(), stop.clone());
            stages.spawn(async move { mirror::run(&mirror_of, &metrics, stop).await });
        }
        let assignments = AssignmentMirror {
            cache: self.assignments.clone(),
            store: self.store.clone(),
            keys: self.keys.clone(),
            queue: Some(self.queue.clone()),
        };
        let (metrics, assignments_stop) = (self.metrics.clone(), stop.clone());
        stages.spawn(async move {
            mirror::run(&assignments, &metrics, assignments_stop).await;
        });
        if let Some(fence) = &self.fence {
            stages.spawn(fence.clone().run(stop.clone()));
        }
        stages.spawn(events::run(
            self.runtime.clone(),
            self.cache.clone(),
            self.queue.clone(),
            stop.clone(),
        ));
        stages.spawn(health::run(
            self.health.clone(),
            self.runtime.clone(),
            self.queue.clone(),
            self.config.probe_concurrency,
            stop.clone(),
        ));
        stages.spawn(report_queue_depth(
            self.queue.clone(),
            self.metrics.clone(),
            stop.clone(),
        ));
        stages
    }

    /// One etcd session after another, until `shutdown`: a lost session
    /// stops the work under it, and every game is looked at again under
    /// the next.
    async fn keep_sessions(&self, shutdown: &CancellationToken) {
        let mut backoff = Backoff::reconnect();
        while !shutdown.is_cancelled() {
            if let Some(fence) = &self.fence {
                fence.settle().await;
            }
            let Some(session) = self.open_session(&mut backoff, shutdown).await else {
                continue;
            };
            self.current_session.send_replace(Some(session.clone()));
            let unready = self.unready_once_lost(&session);
            announce(&session, &self.config.node_name).await;
            let offer = self.offer().await;
            let registered = tokio::select! {
                _ = shutdown.cancelled() => false,
                registered = registry::register_until_done(&session, &offer, session.ttl() / 3) => registered,
            };
            // What is assigned here is read afresh before anything runs: events queued
            // across a partition may arrive late.
            let refreshed = registered
                && match self.assignments.refresh(&self.store, &self.keys).await {
                    Ok(()) => true,
                    Err(error) => {
                        warn!(%error, "reading the assignments failed; opening a new session");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        false
                    }
                };
            if refreshed {
                self.session_ok.store(true, Ordering::SeqCst);
                if let Some(fence) = &self.fence {
                    fence.record(&self.lifecycle(&session)).await;
                }
                self.run_session(&session, &offer, shutdown).await;
            }
            unready.abort();
            self.session_ok.store(false, Ordering::SeqCst);
            if let Err(error) = session.close().await {
                warn!(%error, "revoking the etcd session failed; its leases expire after one TTL");
            }
            if !shutdown.is_cancelled() {
                warn!("the etcd session was lost; opening a new one");
                self.queue.add_bulk_all(self.cache.games());
            }
        }
    }

    /// Opens a session under a fresh holder name; `None` after a failure
    /// (once its backoff has passed) or on `shutdown`.
    async fn open_session(
        &self,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Option<Arc<Session>> {
        let name = self
            .config
            .controller_name
            .as_deref()
            .unwrap_or(&self.config.node_name);
        let holder = format!("{name}-{:08x}", rand::random::<u32>());
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return None,
            opened = Session::open(self.store.clone(), self.keys.clone(), &holder, self.config.lease_ttl, self.metrics.clone()) => opened,
        };
        match opened {
            Ok(session) => {
                backoff.reset();
                Some(session)
            }
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(%error, retry_in = ?delay, "opening the etcd session failed");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
                None
            }
        }
    }

    /// Turns `/readyz` false the moment `session` counts lost, not once
    /// its operations have drained.
    fn unready_once_lost(&self, session: &Session) -> JoinHandle<()> {
        let session_ok = self.session_ok.clone();
        let lost = session.lost().clone();
        tokio::spawn(async move {
            lost.cancelled().await;
            session_ok.store(false, Ordering::SeqCst);
        })
    }

    /// What this node offers, from its options, and its engine's id.
    async fn offer(&self) -> Offer {
        let placement = &self.config.placement;
        let engine = match self.runtime.engine_id().await {
            Ok(engine) => engine,
            Err(error) => {
                warn!(%error, "asking Docker for its engine id failed; registering without it");
                None
            }
        };
        Offer {
            engine,
            name: self.config.node_name.clone(),
            labels: placement.labels(),
            capacity: placement.capacity(),
            address: self.address.clone(),
            port_range: placement.port_range(),
            self_fence_after: placement.self_fence(),
        }
    }

    /// Runs workers, the peer watch, the scheduler candidate and the sweep under one
    /// session until it is lost or shutdown is asked; then drains the workers.
    async fn run_session(
        &self,
        session: &Arc<Session>,
        offer: &Offer,
        shutdown: &CancellationToken,
    ) {
        let lifecycle = self.lifecycle(session);
        let ownership = Ownership::assigned(&self.config.node_name, self.assignments.clone());
        let reconciler = Arc::new(
            Reconciler::new(
                lifecycle.clone(),
                self.cache.clone(),
                ownership.clone(),
                plan::Settings {
                    address: Some(self.address.clone()),
                    ..plan::Settings::default()
                },
                self.metrics.clone(),
            )
            .with_status_cache(self.statuses.clone())
            .with_health(self.health.clone())
            .with_disruptions(self.disruptions.clone())
            .with_nodes(self.nodes.clone())
            .with_image_check_interval(self.config.images.image_check_interval),
        );
        // Workers stop taking work when this is cancelled: on shutdown or
        // when the session is lost.
        let stop_work = CancellationToken::new();
        let mut workers = self.spawn_workers(&reconciler, &stop_work);
        let peers = Peers {
            session: session.clone(),
            node: self.config.node_name.clone(),
            reconciler,
            cache: self.cache.clone(),
            queue: self.queue.clone(),
        };
        let (metrics, peers_stop) = (self.metrics.clone(), stop_work.clone());
        let peers = tokio::spawn(async move { mirror::run(&peers, &metrics, peers_stop).await });
        let prepulls = tokio::spawn(prepull::run(
            lifecycle.clone(),
            self.cache.clone(),
            ownership,
            self.metrics.clone(),
            stop_work.clone(),
        ));
        let sweeper = tokio::spawn(sweep::run(
            lifecycle,
            self.cache.clone(),
            self.statuses.clone(),
            self.queue.clone(),
            self.config.resync,
            self.config.gc_grace,
            self.config.history_grace,
            self.metrics.clone(),
            stop_work.clone(),
        ));
        let scheduler = tokio::spawn(
            Scheduler {
                session: session.clone(),
                view: self.nodes.clone(),
                assignments: self.assignments.clone(),
                desired: self.cache.clone(),
                statuses: self.statuses.clone(),
                strategy: self.config.placement.strategy(),
                grace: self.config.placement.node_failure_grace,
                metrics: self.metrics.clone(),
            }
            .run(stop_work.clone()),
        );
        let guard = tokio::spawn(registry::guard(
            session.clone(),
            offer.clone(),
            self.nodes.clone(),
            stop_work.clone(),
        ));
        tokio::select! {
            _ = shutdown.cancelled() => info!("shutting down: finishing in-flight operations"),
            _ = session.lost().cancelled() => error!("the etcd session is lost; pausing work"),
        }
        stop_work.cancel();
        self.drain(&mut workers).await;
        guard.abort();
        // The scheduler steps down (deletes its key) when told to stop.
        let _ = tokio::time::timeout(Duration::from_secs(2), scheduler).await;
        sweeper.abort();
        peers.abort();
        prepulls.abort();
    }

    /// What acts under `session`, configured for this node.
    fn lifecycle(&self, session: &Arc<Session>) -> Lifecycle {
        let config = &self.config;
        Lifecycle::new(
            self.runtime.clone(),
            session.clone(),
            config.history_retention,
            self.metrics.clone(),
        )
        .with_node(&config.node_name)
        .with_port_range(config.placement.port_range())
        .with_event_ttl(config.event_ttl)
        .with_host_port_policy(config.host_port_policy())
        .with_policy(config.hardening.policy(session.keys().prefix()))
        .with_image_pulls(self.pulls.clone())
    }

    /// `concurrency` workers, until `stop`; the retry backoff of each game
    /// is shared by all of them (any worker may take a game next).
    fn spawn_workers(&self, reconciler: &Arc<Reconciler>, stop: &CancellationToken) -> JoinSet<()> {
        let backoffs = Arc::new(Backoffs::default());
        let mut workers = JoinSet::new();
        for _ in 0..self.config.concurrency {
            workers.spawn(worker(
                reconciler.clone(),
                backoffs.clone(),
                self.cache.clone(),
                self.queue.clone(),
                self.metrics.clone(),
                self.config.reconcile_timeout,
                stop.clone(),
            ));
        }
        workers
    }

    /// Waits for the in-flight reconciles, at most the drain timeout; then
    /// abandons them (recovery resolves their history).
    async fn drain(&self, workers: &mut JoinSet<()>) {
        let timeout = self.config.drain_timeout;
        let drained = tokio::time::timeout(timeout, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                ?timeout,
                "in-flight operations did not finish in time; abandoning them (recovery resolves their history)"
            );
            workers.abort_all();
        }
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
