//! The reconcile driver for one game: observe → plan → act → record.
//!
//! A converged game costs two reads (its status record and one Docker
//! inspect) and no write, and takes no lease. Only when the plan asks for
//! an action, or the status must change, does the driver take the game's
//! lease, then observe and plan again under it (the first look may be
//! stale), act through the lifecycle services, and write the status.
//! The lease is taken on the condition that the document and the status
//! record are still as the first look saw them; when that holds, both are
//! known exact under the lease and are not read again. Otherwise they are
//! re-read from etcd, so a removal is only ever done for a deletion etcd
//! itself confirms.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::disruption::Disruptions;
use crate::health::Health;
use crate::image_watch::ImageWatch;
use crate::lease::{GameLease, LeaseError, Session};
use crate::lifecycle::{Lifecycle, OpCause, OpRequest, OpResult, new_id};
use crate::metrics::{GamesBy, Metrics, UPDATE_PENDING_REASONS};
use crate::runtime::{ContainerInfo, ContainerRuntime, container_name};
use rtm_core::error_code::ErrorCode;
use rtm_core::failure::Failure;
use rtm_core::model::{
    ANNOTATION_OP_SOURCE, ANNOTATION_SOURCE_REF, GameRuntime, GameRuntimeStatus, OpSource, Outcome,
    Timestamp,
};
use rtm_core::records::Documents;
use rtm_core::records::history::HistoryEntry;
use rtm_core::records::status::{StatusRecord, StatusStore};
use rtm_core::store::{Compare, Keys};

use super::desired::{Desired, DesiredCache};
use super::placement::{NodesView, Ownership};
use super::plan::disruption::{forced, session_changes, update_pending, voluntary, went_ahead};
use super::plan::events::{Noticed, noticed};
use super::plan::{
    Action, Cause, Hold, Observed, Settings, derive_status, plan, repaired, spec_changed,
};
use super::statuses::StatusCache;
use rtm_core::records::events::EventReason;

/// Look again this soon after acting, to confirm convergence.
const AFTER_ACTION: Duration = Duration::from_secs(1);

/// Look again this soon when another operation holds the game's lease.
const LEASE_BUSY_RETRY: Duration = Duration::from_secs(2);

/// Look again this soon while a disruption budget holds a recreate back (a freed slot
/// queues the game at once; this is the fallback).
const BUDGET_RETRY: Duration = Duration::from_secs(10);

/// History entries inspected for operations a crash left unfinished.
const RECOVERY_WINDOW: usize = 20;

/// A failed operation, as the reconcile that ran it fails: its code, and
/// the operation named in the message.
impl From<OpResult> for Failure {
    fn from(result: OpResult) -> Self {
        Failure::new(
            result.error_code.unwrap_or(ErrorCode::Internal),
            format!(
                "{}: {}",
                result.op_kind,
                result.error_message.unwrap_or_default()
            ),
        )
    }
}

/// Reconciles one game at a time (the queue guarantees no game runs twice
/// at once; different games run in parallel).
#[derive(Debug)]
pub(crate) struct Reconciler {
    lifecycle: Lifecycle,
    runtime: Arc<dyn ContainerRuntime>,
    /// The etcd session game leases are taken on.
    session: Arc<Session>,
    /// The installation's key layout (its prefix also labels its containers).
    keys: Keys,
    documents: Documents,
    status: StatusStore,
    cache: Arc<DesiredCache>,
    /// The status records as the status watch keeps them, for first looks.
    statuses: Arc<StatusCache>,
    /// What the probes of each game's container said (the prober follows
    /// the containers each reconcile observes).
    health: Arc<Health>,
    /// The games' sessions, the disruption budgets and their slots.
    disruptions: Arc<Disruptions>,
    ownership: Ownership,
    /// The nodes (whose liveness says whether another node still holds a game).
    nodes: Arc<NodesView>,
    settings: Settings,
    metrics: Metrics,
    /// Games whose history was checked for unfinished operations since this
    /// process started.
    recovered: Mutex<HashSet<String>>,
    /// Each game's phase, for the `rtmanager_games` gauge.
    phases: GamesBy,
    /// Each game's UpdatePending reason, for the `rtmanager_updates_pending` gauge.
    pending: GamesBy,
    /// Games whose lease another controller held when last asked: the holder, and since
    /// when (wall clock, and for the wait) — a `LeaseBlocked` event once it lasts.
    blocked: Mutex<std::collections::HashMap<String, (String, SystemTime, std::time::Instant)>>,
    /// What the tags of `imagePullPolicy: Always` games name in their registries.
    images: Arc<ImageWatch>,
}

/// How long another controller may hold a game's lease before the wait is worth an event.
const LEASE_BLOCKED_AFTER: Duration = Duration::from_secs(30);

impl Reconciler {
    /// A reconciler acting through `lifecycle` (and its session), reading
    /// documents from `cache`, reconciling the games `ownership` gives it.
    pub(crate) fn new(
        lifecycle: Lifecycle,
        cache: Arc<DesiredCache>,
        ownership: Ownership,
        settings: Settings,
        metrics: Metrics,
    ) -> Self {
        let session = lifecycle.session().clone();
        let (store, keys) = (session.store().clone(), session.keys().clone());
        let disruptions = Arc::new(Disruptions::none(
            store.clone(),
            keys.clone(),
            cache.clone(),
        ));
        let images = Arc::new(ImageWatch::new(
            lifecycle.runtime().clone(),
            lifecycle.image_pulls().clone(),
            crate::image_watch::DEFAULT_CHECK_INTERVAL,
        ));
        Self {
            images,
            disruptions,
            session,
            runtime: lifecycle.runtime().clone(),
            documents: Documents::new(store.clone(), keys.clone()),
            status: StatusStore::new(store, keys.clone()),
            keys,
            lifecycle,
            cache,
            statuses: Arc::new(StatusCache::new()),
            health: Arc::new(Health::new(metrics.clone())),
            ownership,
            nodes: Arc::new(NodesView::new()),
            settings,
            phases: GamesBy::new(metrics.games.clone()),
            pending: GamesBy::new(metrics.updates_pending.clone()),
            metrics,
            recovered: Mutex::new(HashSet::new()),
            blocked: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Looks at the tags of `imagePullPolicy: Always` games at most every `interval`.
    pub(crate) fn with_image_check_interval(mut self, interval: Duration) -> Self {
        self.images = Arc::new(ImageWatch::new(
            self.lifecycle.runtime().clone(),
            self.lifecycle.image_pulls().clone(),
            interval,
        ));
        self
    }

    /// First looks read `statuses` (kept by the status watch) instead of
    /// etcd while it follows etcd; without it they always read etcd.
    pub(crate) fn with_status_cache(mut self, statuses: Arc<StatusCache>) -> Self {
        self.statuses = statuses;
        self
    }

    /// Follows the games' containers in `health` (which the prober runs)
    /// and judges them by its probes; without it no probe result is ever
    /// known.
    pub(crate) fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = health;
        self
    }

    /// Reconciles the games `ownership` gives it instead (unit tests).
    #[cfg(test)]
    pub(crate) fn with_ownership(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Judges whether another node still holds a game by `nodes` (which its mirrors
    /// keep); without it no other node is ever live.
    pub(crate) fn with_nodes(mut self, nodes: Arc<NodesView>) -> Self {
        self.nodes = nodes;
        self
    }

    /// Follows the games' sessions and the disruption budgets in
    /// `disruptions` (which its mirrors keep); without it no game is ever
    /// in session and no budget covers any.
    pub(crate) fn with_disruptions(mut self, disruptions: Arc<Disruptions>) -> Self {
        self.disruptions = disruptions;
        self
    }

    /// The lifecycle services it acts through (tests reach the history
    /// and leases through it).
    #[cfg(test)]
    pub(crate) fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Reconciles `game`; `Ok(Some(d))` asks to look again after `d`.
    pub(crate) async fn reconcile(&self, game: &str) -> Result<Option<Duration>, Failure> {
        let looked = self.cache.get(game);
        let desired = match looked.as_deref() {
            // Reported by the watcher; nothing is done until it is fixed.
            Some(Desired::Invalid(_)) => return Ok(None),
            Some(Desired::Valid(doc)) => Some(&**doc),
            None => None,
        };
        if self.ownership.is_unsure() {
            // Which node runs it is unknown for a moment: act on nothing, forget nothing.
            return Ok(Some(LEASE_BUSY_RETRY));
        }
        if let Some(doc) = desired.as_ref().filter(|_| !self.ownership.owns(game)) {
            self.forget(game);
            return self.not_ours(game, doc).await;
        }
        if desired.is_none() && !self.cache.is_gone(game) {
            // Not known to be deleted (an orphan still in its GC grace, or
            // a document this controller has not seen yet): leave it.
            return Ok(None);
        }
        let observed = self.first_look(game).await?;
        if desired.is_some()
            && let Some(holder) = self.held_elsewhere(game, &observed)
        {
            info!(%game, %holder, "assigned here, but node {holder} still runs it and has not released it: waiting");
            return Ok(Some(LEASE_BUSY_RETRY));
        }
        let observed = self.probed(game, desired, observed);
        let observed = self.tag_checked(game, desired, observed).await;
        let now = SystemTime::now();
        let observed = self.budgeted(desired, observed, now);
        let action = plan(desired, &observed, now, &self.settings);
        self.note_wait(game, &action, &observed);
        let status = derive_status(desired, &observed, now, &self.settings);
        for event in noticed(desired, &observed, &action, &status, now) {
            self.lifecycle.recorder().notice(game, event);
        }
        let settled = !action.acts()
            && (desired.is_none() || (observed.status.exists() && status == observed.status.value))
            && !self.needs_adoption(&observed)
            && self.recovery_checked(game).await?;
        if settled {
            if desired.is_none() {
                // Nothing left of a deleted game: drop its tombstone and its assignment.
                self.cache.clear_gone(game);
                self.drop_assignment(game, None).await;
            }
            self.track(game, desired.map(|_| &status));
            self.free_slots(game, desired, &status).await;
            return Ok(requeue_for(action, desired, now));
        }
        let first = observed.status;
        let seen = Seen {
            desired: desired.cloned(),
            container: observed.container,
            session: observed.session,
        };
        let (lease, known) = match self.take_lease(game, seen, first).await {
            Ok(taken) => {
                self.lock_blocked().remove(game);
                taken
            }
            Err(LeaseError::Busy { holder, .. }) => {
                self.blocked(game, &holder);
                return Ok(Some(LEASE_BUSY_RETRY));
            }
            Err(error) => return Err(error.into()),
        };
        match self.act_under(&lease, game, known).await {
            // The status write and the release share one transaction.
            Ok(Acted {
                status: Some(next),
                result,
            }) => {
                let written = lease.release_with_status(&self.status, &next).await?;
                self.statuses.learn(game, written);
                self.metrics.status_writes.inc();
                self.track(game, Some(&next));
                self.free_slots(game, self.cache_doc(game).as_deref(), &next)
                    .await;
                result
            }
            acted => {
                if let Err(error) = lease.release().await {
                    warn!(%game, %error, "releasing the game lease failed");
                }
                acted.and_then(|acted| acted.result)
            }
        }
    }

    /// Takes the game's lease on the condition that its document (as
    /// `seen`, from the cache) and its status record (as `first`) are
    /// unchanged in etcd; then both are exact under the lease, and come
    /// with it (`seen` returned, the status kept by the lease).
    /// Otherwise takes it plainly, and the caller looks again.
    async fn take_lease(
        &self,
        game: &str,
        seen: Seen,
        first: StatusRecord,
    ) -> Result<(GameLease, Option<Seen>), LeaseError> {
        let keys = &self.keys;
        let document = keys.gameruntime(game);
        let revision = seen.desired.as_ref().map(|doc| {
            doc.metadata
                .resource_version
                .as_deref()
                .and_then(|rv| rv.parse().ok())
        });
        let unchanged_document = match revision {
            None => Some(Compare::Absent { key: document }),
            Some(Some(revision)) => Some(Compare::ModRevision {
                key: document,
                revision,
            }),
            // A cached document without its revision: read it again.
            Some(None) => None,
        };
        let status = keys.status(game);
        let unchanged_status = match first.revision {
            None => Compare::Absent { key: status },
            Some(revision) => Compare::ModRevision {
                key: status,
                revision,
            },
        };
        let session = keys.session(game);
        let unchanged_session = match seen.session.revision {
            None => Compare::Absent { key: session },
            Some(revision) => Compare::ModRevision {
                key: session,
                revision,
            },
        };
        if let Some(unchanged_document) = unchanged_document {
            // The session too: an allocation made after the lease was taken fails
            // (it compares the lease key absent), and one made before it is seen.
            let unchanged = vec![unchanged_document, unchanged_status, unchanged_session];
            let lease = self.session.acquire_if(game, &new_id(), unchanged).await?;
            if let Some(lease) = lease {
                lease.knows_status(first);
                return Ok((lease, Some(seen)));
            }
        }
        Ok((self.session.acquire(game, &new_id()).await?, None))
    }

    /// Observes, plans and acts again, holding the game's lease; leaves
    /// the status write to the caller, who makes it with the release.
    /// `seen` is the first look when the lease came with it.
    async fn act_under(
        &self,
        lease: &GameLease,
        game: &str,
        seen: Option<Seen>,
    ) -> Result<Acted, Failure> {
        let Some((desired, observed)) = self.look_under(lease, game, seen).await? else {
            return Ok(Acted::done(Ok(None)));
        };
        let (observed, action) = self
            .plan_under(lease, game, desired.as_ref(), observed)
            .await?;
        let (observed, action) = self
            .budget_under(lease, desired.as_ref(), observed, action)
            .await?;
        self.note_wait(game, &action, &observed);
        // Before acting: the history then tells a release before the recreate it let go.
        let session = self.record_session(lease, game, &observed).await;
        let request = self.request(game, desired.as_ref(), &observed, action);
        let result = match action {
            Action::None => match &observed.container {
                Some(container) if self.needs_adoption(&observed) => Some(
                    self.lifecycle
                        .record_adoption(lease, &request, &container.id, &container.image)
                        .await,
                ),
                _ => None,
            },
            Action::WaitBackoff { .. } | Action::Defer { .. } => None,
            Action::Start { .. } | Action::Restart { .. } => {
                Some(self.lifecycle.start_under(lease, &request, &new_id()).await)
            }
            Action::Stop { .. } => {
                Some(self.lifecycle.stop_under(lease, &request, &new_id()).await)
            }
            Action::Unpause => Some(
                self.lifecycle
                    .unpause_under(lease, &request, &new_id())
                    .await,
            ),
            Action::Recreate { .. } => Some(self.lifecycle.restart_under(lease, &request).await),
            Action::Remove => {
                let result = self.lifecycle.remove_under(lease, &request).await;
                self.forget(game);
                if !result.is_success() {
                    return Err(result.into());
                }
                if observed.session.exists() {
                    self.lifecycle
                        .end_session_of_removed(lease, game, &observed.session)
                        .await?;
                }
                self.drop_assignment(game, Some(lease)).await;
                self.cache.clear_gone(game);
                return Ok(Acted::done(Ok(None)));
            }
        };
        self.record_under(lease, desired.as_ref(), action, observed, result, session)
            .await
    }

    /// The game's document and what it is, under the lease; `None` when
    /// there is nothing to do under it (another node's game, or a deletion
    /// the cache has not confirmed). Recovers interrupted operations first.
    async fn look_under(
        &self,
        lease: &GameLease,
        game: &str,
        seen: Option<Seen>,
    ) -> Result<Option<(Option<GameRuntime>, Observed)>, Failure> {
        let interrupted = self.recover(lease, game).await?;
        let (desired, seen_container, session) = match seen {
            Some(seen) => (seen.desired, Some(seen.container), Some(seen.session)),
            // The cache may lag; etcd is the truth (and confirms a deletion).
            None => (self.documents.get(game).await?, None, None),
        };
        if desired.is_some() && !self.ownership.owns(game) {
            return Ok(None);
        }
        if desired.is_none() && !self.cache.is_gone(game) {
            return Ok(None);
        }
        let observed = match seen_container {
            // No other controller acted since the first look (etcd says
            // so), and no operation was interrupted: the container seen a
            // moment ago stands. Only hands in Docker could have changed it
            // since, and every operation inspects before it acts.
            Some(container) if !interrupted => Observed {
                container,
                ..self.observe_status_under(lease).await?
            },
            _ => self.observe_under(lease).await?,
        };
        let session = match session {
            Some(session) => session,
            // Read after the lease was taken: an allocation that won the race is seen.
            None => self.disruptions.read_session(game).await?,
        };
        let observed = self.probed(
            game,
            desired.as_ref(),
            Observed {
                session,
                ..observed
            },
        );
        let observed = self.tag_checked(game, desired.as_ref(), observed).await;
        Ok(Some((desired, observed)))
    }

    /// The action for what was observed. Before a start with nothing named
    /// rtm-<game>, a container of the game renamed by hand is named back
    /// (or removed), and the game observed and planned again.
    async fn plan_under(
        &self,
        lease: &GameLease,
        game: &str,
        desired: Option<&GameRuntime>,
        observed: Observed,
    ) -> Result<(Observed, Action), Failure> {
        let now = SystemTime::now();
        let observed = self.budgeted(desired, observed, now);
        let action = plan(desired, &observed, now, &self.settings);
        if observed.container.is_some() || !matches!(action, Action::Start { .. }) {
            return Ok((observed, action));
        }
        let request = OpRequest::new(game, OpSource::Reconcile);
        let reclaimed = self.lifecycle.reclaim_under(lease, &request).await;
        if reclaimed.is_empty() {
            return Ok((observed, action));
        }
        let observed = Observed {
            session: observed.session,
            ..self.observe_under(lease).await?
        };
        let observed = self.probed(game, desired, observed);
        let now = SystemTime::now();
        let observed = self.budgeted(desired, observed, now);
        let action = plan(desired, &observed, now, &self.settings);
        Ok((observed, action))
    }

    /// The status the game shows after `action` (which ended in `result`,
    /// `None` when nothing ran), and when to look again.
    async fn record_under(
        &self,
        lease: &GameLease,
        desired: Option<&GameRuntime>,
        action: Action,
        observed: Observed,
        result: Option<OpResult>,
        session: Option<rtm_core::model::Session>,
    ) -> Result<Acted, Failure> {
        let game = lease.game();
        let exited = observed.container.clone().filter(|c| c.state.has_exited());
        let after = match &result {
            // What the operation wrote and last inspected a moment ago:
            // reading both back would cost an etcd read and a Docker call.
            Some(OpResult {
                status: Some(status),
                container: Some(container),
                ..
            }) => Observed {
                status: status.clone(),
                container: Some(container.clone()),
                session: observed.session.clone(),
                ..Observed::default()
            },
            Some(_) => Observed {
                session: observed.session.clone(),
                ..self.observe_under(lease).await?
            },
            None => observed,
        };
        let mut after = self.probed(game, desired, after);
        let before = after.status.clone();
        if result.as_ref().is_some_and(OpResult::is_success) {
            count_effects(desired, action, exited.as_ref(), &mut after);
        }
        if after.container.is_some() && after.status.value.node.is_none() {
            // A record rebuilt from the container (adopted after a loss)
            // names the node that runs it.
            after.status.value.node = Some(self.lifecycle.node().to_owned());
        }
        let mut next = derive_status(desired, &after, SystemTime::now(), &self.settings);
        // The status says what the history holds of the session.
        next.session = session;
        let result = match result {
            Some(result) if !result.is_success() => Err(result.into()),
            Some(_) => Ok(Some(AFTER_ACTION)),
            None => Ok(requeue_for(action, desired, SystemTime::now())),
        };
        if next != before.value || !before.exists() {
            return Ok(Acted {
                status: Some(next),
                result,
            });
        }
        self.track(game, Some(&next));
        Ok(Acted::done(result))
    }

    /// The first look, without the lease: the game's status record (from
    /// the status cache, else etcd; with its revision) and its container.
    async fn first_look(&self, game: &str) -> Result<Observed, Failure> {
        let status = match self.statuses.get(game) {
            Some(known) => StatusRecord::clone(&known),
            None => self.status.read(game).await?,
        };
        let container = self.container(game).await?;
        let session = match self.disruptions.session(game) {
            Some(session) => session,
            None => self.disruptions.read_session(game).await?,
        };
        Ok(Observed {
            status,
            container,
            session,
            ..Observed::default()
        })
    }

    /// The look under the game's lease: the status as the lease knows it
    /// (read once), and the container as it is now.
    async fn observe_under(&self, lease: &GameLease) -> Result<Observed, Failure> {
        let container = self.container(lease.game()).await?;
        Ok(Observed {
            container,
            ..self.observe_status_under(lease).await?
        })
    }

    /// The status part of [`Reconciler::observe_under`].
    async fn observe_status_under(&self, lease: &GameLease) -> Result<Observed, Failure> {
        let status = lease.status(&self.status).await?;
        Ok(Observed {
            status,
            ..Observed::default()
        })
    }

    /// The game's container, only if it is ours: a foreign container with
    /// the game's name is left to the lifecycle, which refuses to touch it.
    async fn container(&self, game: &str) -> Result<Option<ContainerInfo>, Failure> {
        Ok(self
            .runtime
            .inspect_container(&container_name(self.keys.prefix(), game))
            .await?
            .filter(|c| c.is_of_game(self.keys.prefix(), game)))
    }

    /// `observed` with what the probes said of its container; the prober
    /// follows that container from now on (or stops probing the game).
    fn probed(&self, game: &str, desired: Option<&GameRuntime>, observed: Observed) -> Observed {
        let check = desired.and_then(|doc| doc.spec.health_check.as_ref());
        let container = observed.container.as_ref();
        self.health.observe(game, check, container);
        let health = container.and_then(|c| self.health.view(game, &c.id));
        Observed { health, ..observed }
    }

    /// `observed` with the digest the tag of an `imagePullPolicy: Always` game names in
    /// its registry, when its running container says which one it was created for
    /// (at most one look per game per `--image-check-interval`).
    async fn tag_checked(
        &self,
        game: &str,
        desired: Option<&GameRuntime>,
        observed: Observed,
    ) -> Observed {
        let follows = desired.filter(|doc| {
            doc.spec.image_pull_policy == rtm_core::model::ImagePullPolicy::Always
                && observed.container.as_ref().is_some_and(|c| {
                    c.is_running()
                        && c.labels
                            .get(crate::runtime::LABEL_IMAGE_ID)
                            .and_then(|id| crate::lifecycle::image::digest_of(&doc.spec.image, id))
                            .is_some()
                })
        });
        let registry_digest = match follows {
            Some(doc) => self.images.digest(game, &doc.spec.image).await,
            None => None,
        };
        Observed {
            registry_digest,
            ..observed
        }
    }

    /// A running container the status does not know yet (a lost status,
    /// or a controller upgrade): adopt it rather than recreate it.
    fn needs_adoption(&self, observed: &Observed) -> bool {
        observed.container.as_ref().is_some_and(|c| {
            c.is_running() && observed.status.value.container_id.as_deref() != Some(c.id.as_str())
        })
    }

    /// Who asked: a change of the document carries its annotations; drift
    /// the controller repairs on its own is `reconcile`. The operation acts
    /// on the document the plan was made with.
    fn request(
        &self,
        game: &str,
        doc: Option<&GameRuntime>,
        observed: &Observed,
        action: Action,
    ) -> OpRequest {
        let requested = match action {
            Action::Recreate {
                cause: Cause::RestartRequested,
            } => true,
            Action::Start {
                cause: Cause::SpecChanged,
            }
            | Action::Stop { .. }
            | Action::Recreate {
                cause: Cause::SpecChanged,
            } => doc.is_some_and(|d| spec_changed(d, &observed.status.value)),
            _ => false,
        };
        let scheduled = match (doc, action) {
            (
                Some(doc),
                Action::Recreate {
                    cause: Cause::Scheduled,
                },
            ) => crate::plan::schedule::due(doc, observed, SystemTime::now()),
            _ => None,
        };
        let request = match (doc.filter(|_| requested), scheduled) {
            (_, Some(window)) => OpRequest::new(game, OpSource::Schedule)
                .with_source_ref(format!("window {}", Timestamp::from(window))),
            (Some(doc), None) => claimed_request(game, doc),
            (None, None) => OpRequest::new(game, OpSource::Reconcile),
        };
        let request = match (doc, action) {
            (Some(doc), Action::Recreate { cause }) => match repaired(doc, observed, cause) {
                Some((code, detail)) => request.with_cause(OpCause { code, detail }),
                None => request,
            },
            _ => request,
        };
        let moved = match (doc, action, &observed.registry_digest) {
            (
                Some(doc),
                Action::Recreate {
                    cause: Cause::ImageMoved,
                },
                Some(digest),
            ) => Some(format!(
                "{} now names {digest} in its registry",
                doc.spec.image
            )),
            _ => None,
        };
        let went = doc.and_then(|doc| went_ahead(doc, observed, &action, SystemTime::now()));
        let request = match (moved, went) {
            (Some(moved), Some(went)) => request.with_note(format!("{moved}; {went}")),
            (Some(note), None) | (None, Some(note)) => request.with_note(note),
            (None, None) => request,
        };
        match doc {
            Some(doc) => request.with_document(doc.clone()),
            None => request,
        }
    }

    /// `observed` with the disruption budget that holds a voluntary recreate back, as the
    /// caches show it (none when the plan is no such recreate).
    fn budgeted(&self, doc: Option<&GameRuntime>, observed: Observed, now: SystemTime) -> Observed {
        let mut observed = Observed {
            budget_wait: None,
            ..observed
        };
        let Some(doc) = doc else { return observed };
        let action = plan(Some(doc), &observed, now, &self.settings);
        if matches!(action, Action::Recreate { .. })
            && voluntary(&action, &observed).is_some_and(|cause| !forced(doc, cause))
        {
            observed.budget_wait = self.disruptions.wait_for(doc);
        }
        observed
    }

    /// Under the lease, a voluntary recreate takes a slot of every budget covering the
    /// game first; when one has none left, the recreate waits instead.
    async fn budget_under(
        &self,
        lease: &GameLease,
        doc: Option<&GameRuntime>,
        mut observed: Observed,
        action: Action,
    ) -> Result<(Observed, Action), Failure> {
        let Some(doc) = doc else {
            return Ok((observed, action));
        };
        let Some(cause) = voluntary(&action, &observed) else {
            return Ok((observed, action));
        };
        if !matches!(action, Action::Recreate { .. }) || forced(doc, cause) {
            return Ok((observed, action));
        }
        let reason = super::plan::disruption::what(doc, cause);
        match self.disruptions.take_slots(lease, doc, &reason).await? {
            None => Ok((observed, action)),
            Some(wait) => {
                observed.budget_wait = Some(wait);
                let action = plan(Some(doc), &observed, SystemTime::now(), &self.settings);
                Ok((observed, action))
            }
        }
    }

    /// Records in the history how the game's session changed since the status last said,
    /// and returns the session the history now holds (the one before, when recording
    /// failed: it is tried again at the next look).
    async fn record_session(
        &self,
        lease: &GameLease,
        game: &str,
        observed: &Observed,
    ) -> Option<rtm_core::model::Session> {
        let before = observed.status.value.session.clone();
        let next = super::plan::disruption::session_seen(
            before.as_ref(),
            &observed.session,
            SystemTime::now(),
        );
        let changes = session_changes(before.as_ref(), next.as_ref());
        if changes.is_empty() {
            return before;
        }
        match self.lifecycle.record_sessions(lease, game, &changes).await {
            Ok(()) => next,
            Err(error) => {
                warn!(%game, %error, "recording a session change in the history failed");
                before
            }
        }
    }

    /// Keeps the game on the waiting list of the budget that holds it back (or on none).
    fn note_wait(&self, game: &str, action: &Action, observed: &Observed) {
        let budget = match action {
            Action::Defer {
                hold: Hold::Budget, ..
            } => observed.budget_wait.as_ref().map(|w| w.budget.as_str()),
            _ => None,
        };
        self.disruptions.waits(game, budget);
    }

    /// Frees the budget slots the game holds once it no longer needs them (a failure
    /// only delays that: the next look tries again).
    async fn free_slots(&self, game: &str, doc: Option<&GameRuntime>, status: &GameRuntimeStatus) {
        if let Err(error) = self.disruptions.release_if_done(game, doc, status).await {
            warn!(%game, %error, "freeing a disruption budget slot failed; trying again at the next look");
        }
    }

    /// The game's document as the cache holds it.
    fn cache_doc(&self, game: &str) -> Option<Box<GameRuntime>> {
        match self.cache.get(game).as_deref() {
            Some(Desired::Valid(doc)) => Some(doc.clone()),
            _ => None,
        }
    }

    /// Whether this game's history was checked for operations left
    /// unfinished by a crash; checks it (reading only) the first time.
    async fn recovery_checked(&self, game: &str) -> Result<bool, Failure> {
        if self.lock_recovered().contains(game) {
            return Ok(true);
        }
        let entries = self
            .lifecycle
            .history()
            .recent_readable(game, RECOVERY_WINDOW)
            .await?;
        let clean = !entries
            .iter()
            .any(|a| a.entry.outcome == Outcome::InProgress);
        if clean {
            self.lock_recovered().insert(game.to_owned());
        }
        Ok(clean)
    }

    /// Resolves the game's `in_progress` entries: holding its lease, no
    /// other operation can be running, so they were interrupted. Returns
    /// whether there were any.
    async fn recover(&self, lease: &GameLease, game: &str) -> Result<bool, Failure> {
        // Always read here (acting is rare): a peer may have died in the
        // middle of this game's operation since the last look.
        let entries = self
            .lifecycle
            .history()
            .recent_readable(game, RECOVERY_WINDOW)
            .await?;
        let mut interrupted = false;
        for mut stale in entries
            .into_iter()
            .filter(|a| a.entry.outcome == Outcome::InProgress)
        {
            interrupted = true;
            resolve_aborted(&mut stale.entry, lease.session().holder());
            match self
                .lifecycle
                .history()
                .finish(&stale, Some(lease.fence()))
                .await
            {
                Ok(_) => {
                    info!(%game, op_id = %stale.entry.op_id, op_kind = %stale.entry.op_kind, "resolved an interrupted operation as aborted");
                    self.metrics.record_operation(
                        stale.entry.op_kind.as_str(),
                        Outcome::Failure.as_str(),
                        ErrorCode::Aborted.as_str(),
                    );
                }
                // Its own controller finished it meanwhile: nothing to do.
                Err(rtm_core::records::history::HistoryError::AlreadyResolved { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.lock_recovered().insert(game.to_owned());
        Ok(interrupted)
    }

    /// Forgets which games were checked for interrupted operations: a
    /// peer controller died, and any game may now hold its unfinished
    /// entries.
    pub(crate) fn forget_recovery(&self) {
        self.lock_recovered().clear();
    }

    fn lock_recovered(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.recovered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps the `rtmanager_games{phase}` and `rtmanager_updates_pending{reason}` gauges
    /// in step with the status the game was left with (none: no longer reconciled here).
    fn track(&self, game: &str, status: Option<&GameRuntimeStatus>) {
        self.phases.set(game, status.map(|s| s.phase.as_str()));
        let pending = status
            .and_then(update_pending)
            .and_then(|c| UPDATE_PENDING_REASONS.into_iter().find(|r| *r == c.reason));
        self.pending.set(game, pending);
    }

    fn forget(&self, game: &str) {
        self.health.untrack(game);
        self.track(game, None);
        self.lifecycle.recorder().forget(game);
        self.lock_blocked().remove(game);
    }

    fn lock_blocked(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, (String, SystemTime, std::time::Instant)>,
    > {
        self.blocked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `holder` has the game's lease: once it has held it for [`LEASE_BLOCKED_AFTER`]
    /// (as far as this controller has seen), one `LeaseBlocked` event per such wait.
    fn blocked(&self, game: &str, holder: &str) {
        let (since, waited) = {
            let mut blocked = self.lock_blocked();
            let entry = blocked.entry(game.to_owned()).or_insert_with(|| {
                (
                    holder.to_owned(),
                    SystemTime::now(),
                    std::time::Instant::now(),
                )
            });
            if entry.0 != holder {
                *entry = (
                    holder.to_owned(),
                    SystemTime::now(),
                    std::time::Instant::now(),
                );
            }
            (entry.1, entry.2.elapsed())
        };
        if waited < LEASE_BLOCKED_AFTER {
            return;
        }
        let since = Timestamp::from(since);
        self.lifecycle.recorder().notice(
            game,
            Noticed {
                reason: EventReason::LeaseBlocked,
                occurrence: format!("{holder} since {since}"),
                message: format!(
                    "controller {holder} has held the game's lease since {since} at least; this \
                     controller ({}) waits for it (`rtctl describe` names its operation)",
                    self.session.holder()
                ),
            },
        );
    }
}

/// What a first look saw: the document (from the cache), the container and the session.
#[derive(Debug)]
struct Seen {
    desired: Option<GameRuntime>,
    container: Option<ContainerInfo>,
    session: rtm_core::records::sessions::SessionRecord,
}

/// What acting under a game's lease leaves for its release.
#[derive(Debug)]
struct Acted {
    /// The status to write, in the release's transaction.
    status: Option<GameRuntimeStatus>,
    /// What the reconcile returns once the lease is released.
    result: Result<Option<Duration>, Failure>,
}

impl Acted {
    /// Nothing left to write.
    fn done(result: Result<Option<Duration>, Failure>) -> Self {
        Acted {
            status: None,
            result,
        }
    }
}

/// What a successful action means for the fields only actions change.
fn count_effects(
    doc: Option<&GameRuntime>,
    action: Action,
    exited: Option<&crate::runtime::ContainerInfo>,
    after: &mut Observed,
) {
    let Some(doc) = doc else { return };
    if let Some(exited) = exited {
        // The replaced container's exit stays visible.
        after.status.value.last_exit_code = exited.exit_code;
        after.status.value.oom_killed = exited.oom_killed;
    }
    if matches!(
        action,
        Action::Restart { .. }
            | Action::Start {
                cause: Cause::Vanished
            }
            | Action::Recreate {
                cause: Cause::Unhealthy | Cause::StartupTimeout
            }
    ) {
        after.status.value.restart_count = after.status.value.restart_count.saturating_add(1);
    }
    let token = &doc.spec.restart_token;
    let new_container = matches!(
        action,
        Action::Recreate { .. } | Action::Start { .. } | Action::Restart { .. }
    );
    if new_container && !token.is_empty() {
        // A new container answers any restart asked for so far.
        after.status.value.observed_restart_token = Some(token.clone());
    }
}

fn resolve_aborted(entry: &mut HistoryEntry, holder: &str) {
    entry.outcome = Outcome::Failure;
    entry.error_code = Some(ErrorCode::Aborted);
    entry.error_message = Some(format!(
        "interrupted before it finished (controller crash or shutdown); resolved by {holder}"
    ));
    entry.finished_at = Some(Timestamp::now());
}

/// When to look at the game again, unasked: the earlier of what the action waits for and
/// the next window of its restart schedule (a resync alone would answer it late).
fn requeue_for(action: Action, doc: Option<&GameRuntime>, now: SystemTime) -> Option<Duration> {
    let waited = match action {
        Action::WaitBackoff { remaining } => Some(remaining),
        Action::Defer {
            hold: Hold::Budget, ..
        } => Some(BUDGET_RETRY),
        Action::Defer { remaining, .. } => remaining,
        _ => None,
    };
    match (waited, crate::plan::schedule::wake(doc, now)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The request for a change a document's writer asked for: who asked is
/// whatever its annotations say, recorded as the writer's claim
/// ([`rtm_core::records::history::HistoryEntry::source_claimed`]), since anyone who may
/// write the document may write them. `reconcile` (the controller's own
/// source) and unknown values are recorded as a claimed `api`; a document
/// with neither annotation is an unclaimed `api` (someone wrote it).
fn claimed_request(game: &str, doc: &GameRuntime) -> OpRequest {
    let annotations = &doc.metadata.annotations;
    let claimed_source = annotations.get(ANNOTATION_OP_SOURCE);
    let source_ref = annotations.get(ANNOTATION_SOURCE_REF);
    let op_source = claimed_source
        .and_then(|s| OpSource::parse(s))
        .filter(|source| *source != OpSource::Reconcile)
        .unwrap_or(OpSource::Api);
    let request =
        OpRequest::new(game, op_source).with_source_ref(source_ref.cloned().unwrap_or_default());
    if claimed_source.is_some() || source_ref.is_some() {
        request.claimed()
    } else {
        request
    }
}

mod moves;
#[cfg(test)]
mod tests;
