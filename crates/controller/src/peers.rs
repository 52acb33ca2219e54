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
