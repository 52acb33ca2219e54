//! The self-fence: the other half of "a game never runs on two hosts". A node cut off
//! from etcd cannot know whether the scheduler has given its games to other nodes; after
//! `--self-fence-after` without a keepalive acknowledged by etcd (counted on this
//! process's monotonic clock from the sending of the last one acknowledged, across
//! sessions), it stops every container of this installation on its engine, each with at
//! most [`SELF_FENCE_STOP_BOUND`] before Docker kills it, and says so in its log. The
//! scheduler moves a lost node's games only after that bound and the margins have surely
//! passed (the README's "Failure bounds").
//!
//! A node may have several controllers on its engine: when etcd still answers (within
//! [`SELF_FENCE_LOOK`]) and shows another live controller of this node, the node was
//! never lost and the fence stops nothing (a controller frozen while its partner ran).
//!
//! Once etcd answers again, [`SelfFence::record`] writes one history entry per fenced
//! container, under the game's lease (fenced like every write), and removes the stopped
//! container so the game starts afresh wherever it is assigned now.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use rtm_core::model::{OpSource, Timestamp};

use super::options::{SELF_FENCE_LOOK, SELF_FENCE_STOP_BOUND};
use crate::lease::{LeaseError, Session};
use crate::lifecycle::{Lifecycle, OpRequest, new_id};
use crate::metrics::Metrics;
use crate::runtime::ContainerRuntime;
use rtm_core::records::lease::Heartbeat;
use rtm_core::store::{Keys, Store};

/// A container the fence stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fenced {
    pub(crate) game: String,
    pub(crate) container_id: String,
    pub(crate) at: Timestamp,
    /// How long etcd had acknowledged nothing.
    pub(crate) silent_for: Duration,
}

/// The fence of one controller process.
#[derive(Debug)]
pub(crate) struct SelfFence {
    after: Duration,
    /// Where to look for another live controller of this node.
    store: Arc<dyn Store>,
    keys: Keys,
    node: String,
    runtime: Arc<dyn ContainerRuntime>,
    prefix: String,
    metrics: Metrics,
    /// The session in use, if any (the last contact is its last acknowledged keepalive).
    session: watch::Receiver<Option<Arc<Session>>>,
    /// The last contact of sessions that are gone.
    last_contact: Mutex<Instant>,
    /// Stopped, not yet recorded.
    fenced: Mutex<Vec<Fenced>>,
    /// One fence at a time (the watch task's, or [`SelfFence::settle`]'s).
    fencing: tokio::sync::Mutex<()>,
}

impl SelfFence {
    /// A fence after `after` without etcd, following the session `session` names.
    #[allow(clippy::too_many_arguments)] // what it reads, each once
    pub(crate) fn new(
        after: Duration,
        runtime: Arc<dyn ContainerRuntime>,
        store: Arc<dyn Store>,
        keys: Keys,
        node: &str,
        metrics: Metrics,
        session: watch::Receiver<Option<Arc<Session>>>,
    ) -> Self {
        SelfFence {
            after,
            prefix: keys.prefix().to_owned(),
            store,
            keys,
            node: node.to_owned(),
            runtime,
            metrics,
            session,
            last_contact: Mutex::new(Instant::now()),
            fenced: Mutex::new(Vec::new()),
            fencing: tokio::sync::Mutex::new(()),
        }
    }

    /// When etcd last acknowledged a keepalive of this process.
    fn last_contact(&self) -> Instant {
        let mut last = self
            .last_contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A lost session's last acknowledgement is still the last contact.
        if let Some(session) = self.session.borrow().as_ref() {
            *last = (*last).max(session.last_acknowledged());
        }
        *last
    }

    /// Watches the clock until `stop`; fences whenever the bound has passed.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let deadline = self.last_contact() + self.after;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let silent_for = Instant::now() - self.last_contact();
            if silent_for < self.after {
                continue;
            }
            self.fence(silent_for).await;
            // Checks again (a container started by hand meanwhile is stopped too).
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Before a new session is opened (its grant would count as contact): fences now if
    /// the bound has passed, and waits for a fence under way, so that what it stopped is
    /// known to [`SelfFence::record`] before any game is reconciled again.
    pub(crate) async fn settle(&self) {
        let silent_for = Instant::now() - self.last_contact();
        if silent_for >= self.after {
            self.fence(silent_for).await;
        } else {
            drop(self.fencing.lock().await);
        }
    }

    /// Stops every running container of this installation.
    async fn fence(&self, silent_for: Duration) {
        let _one = self.fencing.lock().await;
        let containers = match self.runtime.list_managed().await {
            Ok(containers) => containers,
            Err(error) => {
                error!(%error, "self-fence: listing the containers failed; trying again");
                return;
            }
        };
        let running: Vec<_> = containers
            .into_iter()
            .filter(|c| c.belongs_to(&self.prefix) && c.is_alive())
            .collect();
        if running.is_empty() {
            return;
        }
        if let Some(partner) = self.partner().await {
            info!(%partner, silent_for = ?silent_for, "self-fence: etcd acknowledged no keepalive of this controller for longer than --self-fence-after, but the controller {partner} of this node is live: the node was never lost, nothing is stopped");
            return;
        }
        error!(
            containers = running.len(),
            silent_for = ?silent_for,
            bound = ?self.after,
            "self-fence: etcd acknowledged no keepalive for longer than --self-fence-after; stopping every game here, as another node may start them"
        );
        let stops = running.iter().map(|container| async move {
            let outcome = self
                .runtime
                .stop(&container.id, SELF_FENCE_STOP_BOUND - SELF_FENCE_LOOK)
                .await;
            (container, outcome)
        });
        for (container, outcome) in join_all(stops).await {
            let game = container.game().unwrap_or_default().to_owned();
            match outcome {
                Ok(()) => {
                    self.metrics.self_fenced.inc();
                    self.lock_fenced().push(Fenced {
                        game,
                        container_id: container.id.clone(),
                        at: Timestamp::now(),
                        silent_for,
                    });
                }
                Err(error) => {
                    error!(%game, %error, "self-fence: stopping the container failed; killing it");
                    let _ = self.runtime.kill(&container.id).await;
                }
            }
        }
    }

    /// Another live controller of this node, if etcd says so within [`SELF_FENCE_LOOK`].
    async fn partner(&self) -> Option<String> {
        let mine = self
            .session
            .borrow()
            .as_ref()
            .map(|s| s.holder().to_owned());
        let listing = tokio::time::timeout(
            SELF_FENCE_LOOK,
            self.store.list(&self.keys.controllers(), None),
        )
        .await
        .ok()?
        .ok()?;
        listing.items.iter().find_map(|kv| {
            let heartbeat: Heartbeat = serde_json::from_slice(&kv.value).ok()?;
            (kv.lease != 0
                && heartbeat.node.as_deref() == Some(self.node.as_str())
                && Some(&heartbeat.holder) != mine.as_ref())
            .then_some(heartbeat.holder)
        })
    }

    fn lock_fenced(&self) -> std::sync::MutexGuard<'_, Vec<Fenced>> {
        self.fenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Under a new session: one history entry per fenced container, and the stopped
    /// container removed (only the one the fence stopped: a newer one is left alone).
    pub(crate) async fn record(&self, lifecycle: &Lifecycle) {
        let fenced = std::mem::take(&mut *self.lock_fenced());
        for item in fenced {
            match lifecycle
                .runtime()
                .inspect_container(&item.container_id)
                .await
            {
                Ok(Some(container)) if !container.is_alive() => {}
                // Gone, or running again (started by hand): nothing of the fence is left.
                Ok(_) => continue,
                Err(error) => {
                    warn!(game = %item.game, %error, "recording the self-fence: inspecting the container failed; keeping it for the next session");
                    self.lock_fenced().push(item);
                    continue;
                }
            }
            let lease = match lifecycle.acquire(&item.game, &new_id()).await {
                Ok(lease) => lease,
                Err(LeaseError::Busy { .. }) => {
                    self.lock_fenced().push(item);
                    continue;
                }
                Err(error) => {
                    warn!(game = %item.game, %error, "recording the self-fence failed; keeping it for the next session");
                    self.lock_fenced().push(item);
                    continue;
                }
            };
            let note = format!(
                "self-fence at {}: etcd acknowledged no keepalive for {} (--self-fence-after {}), so this node stopped the container; removed so the game starts afresh where it is assigned",
                item.at,
                humantime::format_duration(Duration::from_secs(item.silent_for.as_secs())),
                humantime::format_duration(self.after),
            );
            let request = OpRequest::new(&item.game, OpSource::Reconcile);
            let result = lifecycle.evict_under(&lease, &request, &note).await;
            if let Err(error) = lease.release().await {
                warn!(game = %item.game, %error, "releasing the game lease failed");
            }
            if result.is_success() {
                info!(game = %item.game, "self-fence recorded in the history");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, NODE, World};
    use crate::runtime::container_name;
    use rtm_core::model::parse::parse_documents;
    use rtm_core::model::{OpKind, Outcome};
    use rtm_core::store::Txn;

    fn game(name: &str) -> rtm_core::model::GameRuntime {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
             spec:\n  image: {}\n  stopTimeout: 1s\n",
            fixture::IMAGE
        );
        parse_documents(&yaml).unwrap().remove(0)
    }

    async fn running(w: &World, name: &str) -> String {
        w.documents.create(&game(name)).await.unwrap();
        let doc = w.documents.get(name).await.unwrap().unwrap();
        w.cache.apply(
            name.to_owned(),
            Some(crate::desired::Desired::Valid(Box::new(doc))),
        );
        w.converge(name).await;
        let container = w
            .runtime
            .container(&container_name("/rtmanager", name))
            .unwrap();
        assert!(container.is_running());
        container.id
    }

    fn fence(w: &World, after: Duration) -> Arc<SelfFence> {
        // No session: the last contact is the fence's creation.
        let (_keep, sessions) = watch::channel(None);
        std::mem::forget(_keep);
        Arc::new(SelfFence::new(
            after,
            w.runtime.clone(),
            w.store.clone(),
            Keys::default(),
            NODE,
            Metrics::new(),
            sessions,
        ))
    }

    #[tokio::test]
    async fn past_the_bound_every_game_here_is_stopped_then_recorded_and_removed() {
        let w = fixture::world(100).await;
        let id = running(&w, "g1").await;
        let fence = fence(&w, Duration::from_millis(50));
        let stop = CancellationToken::new();
        let task = tokio::spawn(fence.clone().run(stop.clone()));
        tokio::time::timeout(Duration::from_secs(5), async {
            while w.runtime.container(&id).is_some_and(|c| c.is_alive()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the fence stops the container");
        stop.cancel();
        task.await.unwrap();
        fence.record(w.reconciler.lifecycle()).await;
        assert!(w.runtime.container(&id).is_none(), "removed once recorded");
        let entry = &w
            .reconciler
            .lifecycle()
            .history()
            .recent("g1", 1)
            .await
            .unwrap()[0];
        assert_eq!(
            (entry.op_kind, entry.outcome),
            (OpKind::Remove, Outcome::Success)
        );
        assert!(
            entry.note.as_deref().unwrap().contains("self-fence"),
            "{entry:?}"
        );
    }

    #[tokio::test]
    async fn with_another_live_controller_of_the_node_nothing_is_stopped() {
        let w = fixture::world(100).await;
        let id = running(&w, "g1").await;
        let partner = Heartbeat::new("partner-1", Some(NODE));
        let lease = w.store.grant_lease(Duration::from_secs(30)).await.unwrap();
        w.store
            .txn(Txn::new().put_with_lease(
                Keys::default().controller("partner-1"),
                serde_json::to_vec(&partner).unwrap(),
                lease.id,
            ))
            .await
            .unwrap();
        let fence = fence(&w, Duration::from_millis(10));
        // Past the bound (the fence counts from its creation: there is no session).
        tokio::time::sleep(Duration::from_millis(20)).await;
        fence.settle().await;
        assert!(w.runtime.container(&id).unwrap().is_running());
        assert!(fence.lock_fenced().is_empty());
        // Another node's controller is no partner.
        w.store.revoke_lease(lease.id).await.unwrap();
        fence.settle().await;
        assert!(!w.runtime.container(&id).unwrap().is_alive());
        assert_eq!(fence.lock_fenced().len(), 1);
    }
}
