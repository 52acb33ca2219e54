//! Every game's status record, kept by one prefix watch (list at R, watch
//! from R + 1, relist on compaction or a broken watch), so that the first
//! look of a reconcile (without the lease) costs no etcd read: a resync of
//! a converged fleet then reads nothing from etcd at all.
//!
//! The cache may lag behind etcd by a watch event. That is safe because the
//! first look only decides whether to take the lease, and the lease is
//! taken on the condition that the status is still at the revision the
//! first look saw ([`crate::lease::Session::acquire_if`]); a lagging entry
//! costs a plain acquire and a read, never a wrong write. Whatever this
//! controller writes itself is learned at once ([`StatusCache::learn`]).
//! While the watch is down the cache answers nothing, and callers read
//! etcd as before.

use std::collections::HashMap;
use std::sync::Arc;

use rtm_core::model::GameRuntimeStatus;
use rtm_core::records::Versioned;
use rtm_core::records::status::{self, StatusRecord};
use rtm_core::store::{Keys, Revision, Store, StoreError, WatchEvent};

use super::cache::{Cache, Records};
use super::mirror::Mirror;

/// Whether a status record belongs to `node` (or to no node yet): the
/// games whose leftovers this node clears.
pub(crate) fn of_node(status: &GameRuntimeStatus, node: &str) -> bool {
    status.node.as_deref().is_none_or(|n| n == node)
}

/// The status records as last seen.
#[derive(Debug, Default)]
pub(crate) struct StatusCache {
    /// By game (a record that does not decode is kept as an empty one, see
    /// [`status::from_kv`]). A game absent here has no record.
    statuses: Cache<StatusRecord>,
}

impl StatusCache {
    /// An empty cache, not yet following etcd.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The status record of `game` as last seen (absent: no record),
    /// shared with the cache; `None` when the cache cannot say (not
    /// following etcd): the caller reads etcd.
    pub(crate) fn get(&self, game: &str) -> Option<Arc<StatusRecord>> {
        if !self.statuses.is_following() {
            return None;
        }
        Some(
            self.statuses
                .get(game)
                .unwrap_or_else(|| Arc::new(Versioned::absent())),
        )
    }

    /// A record this controller just wrote, ahead of its watch event.
    pub(crate) fn learn(&self, game: &str, status: StatusRecord) {
        let mut statuses = self.statuses.write();
        if newer_than_known(&statuses, game, status.revision.unwrap_or(0)) {
            statuses.insert(game.to_owned(), Arc::new(status));
        }
    }

    /// The games of `node` (or of no node yet) that have a status record
    /// but are not `documented`; `None` when the cache cannot say (not
    /// following etcd). A record that does not decode belongs to no node.
    pub(crate) fn without_document(
        &self,
        documented: impl Fn(&str) -> bool,
        node: &str,
    ) -> Option<Vec<String>> {
        if !self.statuses.is_following() {
            return None;
        }
        Some(
            self.statuses
                .read()
                .iter()
                .filter(|(game, known)| !documented(game) && of_node(&known.value, node))
                .map(|(game, _)| game.clone())
                .collect(),
        )
    }
}

/// Whether a change at `revision` is newer than what the cache knows of
/// `game` (what this controller learned from its own write may be ahead of
/// the watch).
fn newer_than_known(statuses: &Records<StatusRecord>, game: &str, revision: Revision) -> bool {
    !matches!(statuses.get(game), Some(known) if known.revision.unwrap_or(0) >= revision)
}

/// What the cache follows: the status prefix of one installation.
#[derive(Debug)]
pub(crate) struct StatusMirror {
    /// Where the records are.
    pub store: Arc<dyn Store>,
    /// Whose records (the installation's prefix).
    pub keys: Keys,
    /// What it keeps them in.
    pub cache: Arc<StatusCache>,
    /// Where a record deleted or garbled by someone else sends its game:
    /// the reconcile rebuilds it from the container within moments, not at
    /// the next resync. `None` in tests of the cache alone.
    pub queue: Option<Arc<super::queue::WorkQueue>>,
}

impl Mirror for StatusMirror {
    type Error = StoreError;

    fn what(&self) -> &'static str {
        "status"
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn prefix(&self) -> String {
        self.keys.statuses()
    }

    async fn relist(&self) -> Result<Revision, StoreError> {
        let prefix = self.keys.statuses();
        let listing = self.store.list(&prefix, None).await?;
        let listed: HashMap<String, StatusRecord> = listing
            .items
            .iter()
            .filter_map(|kv| {
                let game = self.keys.name_of(&prefix, &kv.key)?;
                Some((game.to_owned(), status::from_kv(kv).0))
            })
            .collect();
        let mut statuses = self.cache.statuses.write();
        // Learned after the listing's revision: newer than what it shows.
        let learned_since = |known: &StatusRecord| known.revision.unwrap_or(0) > listing.revision;
        statuses.retain(|game, known| listed.contains_key(game) || learned_since(known));
        for (game, status) in listed {
            match statuses.get(&game) {
                Some(known) if learned_since(known) => {}
                _ => {
                    statuses.insert(game, Arc::new(status));
                }
            }
        }
        drop(statuses);
        self.cache.statuses.set_following();
        Ok(listing.revision)
    }

    async fn apply(&self, batch: Vec<WatchEvent>) {
        for event in batch {
            self.apply_one(event);
        }
    }

    fn broken(&self) {
        self.cache.statuses.set_broken();
    }
}

impl StatusMirror {
    /// Caches one change (unless the cache already knows a newer one) and
    /// queues the game of a record deleted or garbled.
    fn apply_one(&self, event: WatchEvent) {
        let prefix = self.keys.statuses();
        let Some(game) = self.keys.name_of(&prefix, event.key()) else {
            return;
        };
        let mut statuses = self.cache.statuses.write();
        if !newer_than_known(&statuses, game, event.mod_revision()) {
            return;
        }
        let rebuild = match &event {
            WatchEvent::Put(kv) => {
                let (stored, valid) = status::from_kv(kv);
                statuses.insert(game.to_owned(), Arc::new(stored));
                !valid
            }
            WatchEvent::Delete { .. } => {
                statuses.remove(game);
                true
            }
        };
        drop(statuses);
        if rebuild && let Some(queue) = &self.queue {
            queue.add(game);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::metrics::Metrics;
    use rtm_core::model::{GameRuntimeStatus, Phase};
    use rtm_core::records::status::encode;
    use rtm_core::store::KeyValue;
    use rtm_core::store::memory::MemoryStore;

    fn status(phase: Phase) -> GameRuntimeStatus {
        let mut status = GameRuntimeStatus::default();
        status.set_phase(phase, std::time::SystemTime::now());
        status
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !check() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    fn phase_of(cache: &StatusCache, game: &str) -> Option<Phase> {
        cache.get(game).map(|s| s.value.phase)
    }

    /// An empty store, and a cache with the mirror that fills it.
    fn mirrored() -> (Arc<MemoryStore>, Keys, Arc<StatusCache>, StatusMirror) {
        let store = Arc::new(MemoryStore::new());
        let keys = Keys::default();
        let cache = Arc::new(StatusCache::new());
        let mirror = StatusMirror {
            store: store.clone(),
            keys: keys.clone(),
            cache: cache.clone(),
            queue: None,
        };
        (store, keys, cache, mirror)
    }

    #[tokio::test]
    async fn follows_puts_and_deletes_and_answers_nothing_before_the_listing() {
        let (store, keys, cache, mirror) = mirrored();
        store
            .create(&keys.status("g1"), encode(&status(Phase::Running)), None)
            .await
            .unwrap();
        store
            .create(&keys.status("bad"), b"{not json".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(cache.get("g1"), None, "not following yet: read etcd");

        let stop = CancellationToken::new();
        let metrics = Metrics::new();
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move { crate::mirror::run(&mirror, &metrics, stop).await })
        };
        until("the listing", || {
            phase_of(&cache, "g1") == Some(Phase::Running)
        })
        .await;
        let bad = cache.get("bad").expect("known");
        assert_eq!(
            bad.value,
            GameRuntimeStatus::default(),
            "undecodable: an empty record the reconcile rebuilds"
        );
        assert!(bad.exists(), "at its revision, so the rewrite compares it");
        assert_eq!(
            cache.get("g2").as_deref(),
            Some(&Versioned::absent()),
            "no record: absent"
        );

        let key = keys.status("g1");
        let current = store.get(&key).await.unwrap().unwrap();
        store
            .update(&key, encode(&status(Phase::Stopped)), current.mod_revision)
            .await
            .unwrap();
        until("the put", || phase_of(&cache, "g1") == Some(Phase::Stopped)).await;
        let current = store.get(&key).await.unwrap().unwrap();
        store.delete(&key, current.mod_revision).await.unwrap();
        until("the delete", || {
            cache.get("g1").as_deref() == Some(&Versioned::absent())
        })
        .await;

        // A broken watch: the cache answers nothing until it relisted.
        store.fail_with(rtm_core::store::StoreError::Unavailable {
            endpoints: "m".into(),
            message: "down".into(),
        });
        until("the break", || cache.get("g2").is_none()).await;
        store.recover();
        until("the relist", || cache.get("g2").is_some()).await;
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_record_deleted_or_garbled_by_hand_sends_its_game_to_be_rebuilt() {
        let (store, keys, _cache, mut mirror) = mirrored();
        let queue = Arc::new(crate::queue::WorkQueue::new());
        mirror.queue = Some(queue.clone());
        mirror.relist().await.unwrap();
        let put = |key: String, value: Vec<u8>, mod_revision| {
            WatchEvent::Put(KeyValue {
                key,
                value,
                create_revision: mod_revision,
                mod_revision,
                version: 1,
                lease: 0,
            })
        };
        mirror
            .apply(vec![put(
                keys.status("fine"),
                encode(&status(Phase::Running)),
                10,
            )])
            .await;
        assert!(queue.is_empty(), "a record that decodes is only cached");
        mirror
            .apply(vec![
                put(keys.status("garbled"), b"{not json".to_vec(), 11),
                WatchEvent::Delete {
                    key: keys.status("fine"),
                    mod_revision: 12,
                },
            ])
            .await;
        let mut queued = vec![queue.next().await.unwrap(), queue.next().await.unwrap()];
        queued.sort();
        assert_eq!(queued, ["fine", "garbled"]);
        drop(store);
    }

    #[tokio::test]
    async fn statuses_without_a_document_are_those_of_this_node_or_none() {
        let (store, keys, cache, mirror) = mirrored();
        let documented = |game: &str| game == "kept";
        assert_eq!(cache.without_document(documented, "node-a"), None);
        for (game, node) in [
            ("kept", Some("node-a")),
            ("ours", Some("node-a")),
            ("unassigned", None),
            ("theirs", Some("node-b")),
        ] {
            let mut record = status(Phase::Running);
            record.node = node.map(str::to_owned);
            store
                .create(&keys.status(game), encode(&record), None)
                .await
                .unwrap();
        }
        store
            .create(&keys.status("bad"), b"{not json".to_vec(), None)
            .await
            .unwrap();
        mirror.relist().await.unwrap();
        let mut games = cache.without_document(documented, "node-a").unwrap();
        games.sort();
        assert_eq!(
            games,
            ["bad", "ours", "unassigned"],
            "an undecodable record belongs to no node"
        );
    }

    #[tokio::test]
    async fn what_the_controller_wrote_is_known_before_its_event_and_not_undone_by_it() {
        let (store, keys, cache, mirror) = mirrored();
        mirror.relist().await.unwrap();
        let first = store
            .create(&keys.status("g1"), encode(&status(Phase::Starting)), None)
            .await
            .unwrap();
        let second = store
            .update(&keys.status("g1"), encode(&status(Phase::Running)), first)
            .await
            .unwrap();
        cache.learn("g1", Versioned::new(status(Phase::Running), second));
        // The watch delivers the older put afterwards: it changes nothing.
        let older = store.get(&keys.status("g1")).await.unwrap().unwrap();
        mirror
            .apply(vec![WatchEvent::Put(KeyValue {
                mod_revision: first,
                value: encode(&status(Phase::Starting)),
                ..older
            })])
            .await;
        assert_eq!(phase_of(&cache, "g1"), Some(Phase::Running));
        assert_eq!(cache.get("g1").unwrap().revision, Some(second));
    }
}
