//! The other controllers, as their heartbeat keys show them: when one
//! disappears (its session expired: it died or froze), its games may hold
//! unfinished history entries and stopped containers, so every game is
//! looked at again, its history included. The same watch guards this
//! controller's own heartbeat: missing, deleted or overwritten by hand, it
//! is announced again (without it, the other controllers would take this
//! one's game leases for forged).

use std::sync::Arc;

use tracing::{info, warn};

use crate::lease::Session;
use crate::reconcile::Reconciler;
use rtm_core::records::lease::Heartbeat;
use rtm_core::store::{Revision, Store, StoreError, WatchEvent};

use super::desired::DesiredCache;
use super::mirror::Mirror;
use super::queue::WorkQueue;

/// The heartbeat prefix as one session follows it (a [`Mirror`] that keeps
/// no copy: it acts on departures).
pub(crate) struct Peers {
    pub session: Arc<Session>,
    /// This controller's node, written into its heartbeat.
    pub node: String,
    pub reconciler: Arc<Reconciler>,
    pub cache: Arc<DesiredCache>,
    pub queue: Arc<WorkQueue>,
}

impl Peers {
    /// This controller's own heartbeat key.
    fn own(&self) -> String {
        self.session.keys().controller(self.session.holder())
    }
}

impl Mirror for Peers {
    type Error = StoreError;

    fn what(&self) -> &'static str {
        "controllers"
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.session.store()
    }

    fn prefix(&self) -> String {
        self.session.keys().controllers()
    }

    async fn relist(&self) -> Result<Revision, StoreError> {
        let listing = self.session.store().list(&self.prefix(), None).await?;
        let own = self.own();
        let lease = self.session.lease_id();
        if !listing
            .items
            .iter()
            .any(|kv| kv.key == own && kv.lease == lease)
        {
            warn!(key = %own, "this controller's heartbeat is missing; announcing it again");
            announce(&self.session, &self.node).await;
        }
        Ok(listing.revision)
    }

    async fn apply(&self, batch: Vec<WatchEvent>) {
        let own = self.own();
        let forged = batch.iter().any(|event| match event {
            WatchEvent::Delete { key, .. } => *key == own,
            WatchEvent::Put(kv) => kv.key == own && kv.lease != self.session.lease_id(),
        });
        if forged {
            warn!(key = %own, "this controller's heartbeat was deleted or overwritten; announcing it again");
            announce(&self.session, &self.node).await;
        }
        let departed: Vec<&str> = batch
            .iter()
            .filter(|event| matches!(event, WatchEvent::Delete { .. }))
            .map(WatchEvent::key)
            .filter(|key| *key != own)
            .collect();
        if departed.is_empty() {
            return;
        }
        info!(
            ?departed,
            "a controller went away; looking at every game again"
        );
        self.reconciler.forget_recovery();
        self.queue.add_bulk_all(self.cache.games());
    }

    fn broken(&self) {
        // Departures may have been missed while the watch was down.
        self.reconciler.forget_recovery();
    }
}

/// Writes this controller's heartbeat key, attached to its session lease.
/// Adds the node to the heartbeat the session wrote when it opened.
pub(crate) async fn announce(session: &Session, node: &str) {
    let heartbeat = Heartbeat::new(session.holder(), Some(node));
    if let Err(error) = session.announce(&heartbeat).await {
        warn!(%error, "writing the controller heartbeat failed");
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::fixture;
    use crate::lifecycle::Lifecycle;
    use crate::metrics::Metrics;

    use crate::runtime::FakeRuntime;
    use rtm_core::store::Keys;
    use rtm_core::store::memory::MemoryStore;

    /// The peer watch of one session of node-a, its cache listed and empty.
    async fn peers(store: Arc<MemoryStore>) -> Peers {
        let metrics = Metrics::new();
        let session = fixture::session(store, "node-a-1").await;
        let runtime = Arc::new(FakeRuntime::new());
        let lifecycle = Lifecycle::new(runtime, session.clone(), 100, metrics.clone());
        let (cache, reconciler) = fixture::reconciler(lifecycle, metrics);
        Peers {
            session,
            node: fixture::NODE.into(),
            reconciler: Arc::new(reconciler),
            cache,
            queue: Arc::new(WorkQueue::new()),
        }
    }

    #[tokio::test]
    async fn a_controller_going_away_queues_every_game_and_a_forged_own_heartbeat_is_written_again()
    {
        let store = Arc::new(MemoryStore::new());
        let peers = peers(store.clone()).await;
        let documents = ["g1", "g2"];
        for game in documents {
            let doc = rtm_core::model::parse::parse_documents(&format!(
                "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {game}\nspec:\n  image: x:1\n"
            ))
            .unwrap()
            .remove(0);
            peers.cache.apply(
                game.to_owned(),
                Some(crate::desired::Desired::Valid(Box::new(doc))),
            );
        }
        peers.relist().await.unwrap();
        let keys = Keys::default();
        peers
            .apply(vec![WatchEvent::Put(rtm_core::store::KeyValue {
                key: keys.controller("node-b-1"),
                value: b"{}".to_vec(),
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                lease: 7,
            })])
            .await;
        assert!(
            peers.queue.is_empty(),
            "a controller arriving changes nothing"
        );

        peers
            .apply(vec![WatchEvent::Delete {
                key: keys.controller("node-b-1"),
                mod_revision: 2,
            }])
            .await;
        let mut queued = Vec::new();
        while !peers.queue.is_empty() {
            queued.push(peers.queue.next().await.unwrap());
        }
        queued.sort();
        assert_eq!(queued, documents, "every game, looked at again");

        let own = keys.controller(peers.session.holder());
        store
            .delete(&own, store.get(&own).await.unwrap().unwrap().mod_revision)
            .await
            .unwrap();
        peers
            .apply(vec![WatchEvent::Delete {
                key: own.clone(),
                mod_revision: 3,
            }])
            .await;
        let written = store.get(&own).await.unwrap().expect("announced again");
        assert_eq!(written.lease, peers.session.lease_id());
        assert!(peers.queue.is_empty(), "its own heartbeat is no departure");
    }
}
