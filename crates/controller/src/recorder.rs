//! The recorder of events ([`rtm_core::records::events`]): what the controller noticed
//! ([`crate::plan::events`], the adoption and sweep paths) written once per occurrence.
//!
//! An occurrence already counted — remembered here, or found in the stored event, so
//! neither a resync nor a restart of the controller counts it twice — costs nothing; a new
//! one costs a read and a write, in the background (an event never delays an operation, and
//! a failed write is only logged: events are best effort). Every event key is attached to
//! an etcd lease granted with the event TTL and used for a sixth of it, so an event lives
//! between 5/6 of the TTL and the TTL after it was last repeated, at one lease grant per
//! sixth of the TTL for the whole controller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use rtm_core::records::events::{Event, EventReason, decode, encode};
use rtm_core::store::{Compare, Keys, LeaseId, Store, StoreError, Txn};

use crate::metrics::Metrics;
use crate::plan::events::Noticed;

/// Attempts at one event write when another writer (a second controller) changed the
/// event between the read and the write.
const ATTEMPTS: usize = 3;

/// Writes the events of one controller.
#[derive(Debug)]
pub(crate) struct Recorder {
    store: Arc<dyn Store>,
    keys: Keys,
    /// The controller, as the events name their source.
    source: String,
    /// How long an event lives after it was last repeated; zero records none.
    ttl: Duration,
    metrics: Metrics,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// (game, reason) → the occurrence last counted (or being counted).
    counted: HashMap<(String, EventReason), String>,
    /// The lease event keys are attached to now, and when it was granted.
    lease: Option<(LeaseId, Instant)>,
}

impl Recorder {
    /// A recorder writing under `keys` as `source`; `ttl` zero records nothing.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        keys: Keys,
        source: &str,
        ttl: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            keys,
            source: source.to_owned(),
            ttl,
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `noticed` for `game`, in the background, unless that occurrence was counted.
    pub(crate) fn notice(self: &Arc<Self>, game: &str, noticed: Noticed) {
        if self.ttl.is_zero() {
            return;
        }
        let key = (game.to_owned(), noticed.reason);
        {
            let mut state = self.state();
            if state.counted.get(&key) == Some(&noticed.occurrence) {
                return;
            }
            state
                .counted
                .insert(key.clone(), noticed.occurrence.clone());
        }
        let recorder = self.clone();
        tokio::spawn(async move {
            if let Err(error) = recorder.record(&key.0, &noticed).await {
                warn!(game = %key.0, reason = %noticed.reason, %error, "recording an event failed");
                // Not counted after all: a later look tries again.
                let mut state = recorder.state();
                if state.counted.get(&key) == Some(&noticed.occurrence) {
                    state.counted.remove(&key);
                }
            }
        });
    }

    /// Forgets what was counted for `game` (it is gone; its events expire by themselves).
    pub(crate) fn forget(&self, game: &str) {
        self.state().counted.retain(|(g, _), _| g != game);
    }

    /// Writes the occurrence: a first event, or the stored one once more. Returns whether
    /// it wrote (`false`: the stored event already counts this occurrence).
    pub(crate) async fn record(&self, game: &str, noticed: &Noticed) -> Result<bool, StoreError> {
        let key = self.keys.event(game, noticed.reason);
        for _ in 0..ATTEMPTS {
            let current = self.store.get(&key).await?;
            let (next, unchanged) = match &current {
                None => (
                    Event::first(game, noticed.reason, &noticed.message, &self.source),
                    Compare::Absent { key: key.clone() },
                ),
                Some(kv) => {
                    let unchanged = Compare::ModRevision {
                        key: key.clone(),
                        revision: kv.mod_revision,
                    };
                    match decode(&self.keys, kv) {
                        Ok(event) if event.occurrence == noticed.occurrence => return Ok(false),
                        Ok(event) => (event.again(&noticed.message, &self.source), unchanged),
                        // Not an event (forged, broken): replaced by a true one.
                        Err(corrupt) => {
                            debug!(%corrupt, "replacing an unreadable event");
                            let first =
                                Event::first(game, noticed.reason, &noticed.message, &self.source);
                            (first, unchanged)
                        }
                    }
                }
            };
            let next = next.of(&noticed.occurrence);
            let lease = self.lease().await?;
            let txn = Txn::new()
                .when(unchanged)
                .put_with_lease(key.clone(), encode(&next), lease);
            match self.store.txn(txn).await {
                Ok(outcome) if outcome.succeeded => {
                    self.metrics
                        .events
                        .with_label_values(&[noticed.reason.as_str()])
                        .inc();
                    return Ok(true);
                }
                // Another writer changed it meanwhile: read it again.
                Ok(_) => {}
                Err(StoreError::LeaseNotFound { .. }) => self.state().lease = None,
                Err(error) => return Err(error),
            }
        }
        Ok(false)
    }

    /// The lease to attach event keys to: the current one while younger than a sixth of
    /// the TTL, else a new one.
    async fn lease(&self) -> Result<LeaseId, StoreError> {
        let reuse_for = self.ttl / 6;
        if let Some((id, granted)) = self.state().lease
            && granted.elapsed() < reuse_for
        {
            return Ok(id);
        }
        let grant = self.store.grant_lease(self.ttl).await?;
        self.state().lease = Some((grant.id, Instant::now()));
        Ok(grant.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::records::events::Events;
    use rtm_core::store::memory::MemoryStore;

    fn recorder(store: &Arc<MemoryStore>, source: &str) -> Recorder {
        Recorder::new(
            store.clone(),
            Keys::default(),
            source,
            Duration::from_secs(3600),
            Metrics::new(),
        )
    }

    fn backoff(occurrence: &str) -> Noticed {
        Noticed {
            reason: EventReason::BackOff,
            occurrence: occurrence.to_owned(),
            message: format!("the container exited ({occurrence})"),
        }
    }

    async fn events(store: &Arc<MemoryStore>) -> Vec<Event> {
        Events::new(store.clone(), Keys::default())
            .list(Some("g1"))
            .await
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    #[tokio::test]
    async fn each_occurrence_counts_once_and_repeats_fold_into_one_event() {
        let store = Arc::new(MemoryStore::new());
        let one = recorder(&store, "c1");
        assert!(one.record("g1", &backoff("crash-1")).await.unwrap());
        assert!(
            !one.record("g1", &backoff("crash-1")).await.unwrap(),
            "seen again"
        );
        assert!(one.record("g1", &backoff("crash-2")).await.unwrap());
        // A second controller (or this one restarted) counts nothing twice either.
        let other = recorder(&store, "c2");
        assert!(!other.record("g1", &backoff("crash-2")).await.unwrap());
        assert!(other.record("g1", &backoff("crash-3")).await.unwrap());

        let stored = events(&store).await;
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(stored[0].count, 3);
        assert_eq!(stored[0].message, "the container exited (crash-3)");
        assert_eq!(stored[0].source, "c2");
        let kv = store
            .get(&Keys::default().event("g1", EventReason::BackOff))
            .await
            .unwrap();
        assert_ne!(kv.unwrap().lease, 0, "attached to a lease: it expires");
    }

    #[tokio::test]
    async fn a_forged_event_is_replaced_by_a_true_one() {
        let store = Arc::new(MemoryStore::new());
        let key = Keys::default().event("g1", EventReason::BackOff);
        store
            .txn(Txn::new().put(key, b"{\"count\": 999999}".to_vec()))
            .await
            .unwrap();
        assert!(
            recorder(&store, "c1")
                .record("g1", &backoff("crash-1"))
                .await
                .unwrap()
        );
        assert_eq!(events(&store).await[0].count, 1);
    }

    #[tokio::test]
    async fn no_write_for_an_occurrence_already_noticed_and_none_with_a_zero_ttl() {
        let store = Arc::new(MemoryStore::new());
        let one = Arc::new(recorder(&store, "c1"));
        one.notice("g1", backoff("crash-1"));
        one.notice("g1", backoff("crash-1"));
        let metrics = one.metrics.clone();
        tokio::time::timeout(Duration::from_secs(5), async {
            while metrics.events.with_label_values(&["BackOff"]).get() < 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert_eq!(events(&store).await[0].count, 1);

        let off = Arc::new(Recorder::new(
            store.clone(),
            Keys::default(),
            "c1",
            Duration::ZERO,
            Metrics::new(),
        ));
        off.notice("g2", backoff("crash-1"));
        tokio::task::yield_now().await;
        assert!(store.dump().keys().all(|k| !k.contains("/events/g2/")));
    }
}
