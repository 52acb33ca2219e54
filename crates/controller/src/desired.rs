//! The desired state: the last-seen document of every game (the cache
//! reconciles read), kept by a prefix watch that lists every document at a
//! revision R, then watches from R + 1 ([`super::mirror`]), and queues each
//! game whose document changed.
//!
//! When the watch ends (compaction, a broken connection, etcd restarting)
//! it relists with jittered exponential backoff and diffs the listing
//! against the cache to find deletions it missed. A failed list changes
//! nothing: the controller never acts destructively because etcd blinked.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use rtm_core::model::GameRuntime;
use rtm_core::records::Documents;
use rtm_core::records::documents::DocumentError;
use rtm_core::store::{Revision, Store, WatchEvent};

use super::cache::Cache;
use super::mirror::Mirror;
use super::queue::WorkQueue;

/// What the cache holds for one game.
#[derive(Debug, Clone, PartialEq)]
pub enum Desired {
    /// A document that decodes and validates.
    Valid(Box<GameRuntime>),
    /// A stored value that does not decode: reported, never acted on (in
    /// particular, never taken for a deletion).
    Invalid(String),
}

/// The latest known document of every game, whether the first list has
/// completed (no reconcile may act before it), and which games are known
/// to be gone (their removal is allowed).
#[derive(Debug, Default)]
pub struct DesiredCache {
    docs: Cache<Desired>,
    /// Woken by every change (the scheduler follows it).
    changed: tokio::sync::Notify,
    /// Games whose document etcd reported deleted, or whose orphaned
    /// container outlived the GC grace: the only games a reconcile may
    /// remove. A game merely absent from the cache is not enough (its
    /// container may belong to a document created a moment ago).
    gone: Mutex<HashSet<String>>,
}

impl DesiredCache {
    /// An empty cache, not yet listed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The document of `game`, shared with the cache: `None` when it has
    /// none (deleted, or never existed).
    pub fn get(&self, game: &str) -> Option<Arc<Desired>> {
        self.docs.get(game)
    }

    /// Whether `game` has a document (valid or not).
    pub fn contains(&self, game: &str) -> bool {
        self.docs.contains(game)
    }

    /// Every game with a document.
    pub fn games(&self) -> Vec<String> {
        self.docs.names()
    }

    /// How many games have a document.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Every valid document, shared with the cache.
    pub(crate) fn documents(&self) -> Vec<GameRuntime> {
        self.docs
            .read()
            .values()
            .filter_map(|doc| match &**doc {
                Desired::Valid(doc) => Some((**doc).clone()),
                Desired::Invalid(_) => None,
            })
            .collect()
    }

    /// How many documents `matches` accepts.
    pub(crate) fn count(&self, matches: impl Fn(&Desired) -> bool) -> usize {
        self.docs.read().values().filter(|doc| matches(doc)).count()
    }

    /// Whether no game has a document.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    fn tombstones(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A set of names: whatever a panicking holder left is still a set.
        self.gone
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Allows the removal of `game` (its document is gone).
    pub fn mark_gone(&self, game: &str) {
        self.tombstones().insert(game.to_owned());
    }

    /// Whether `game` may be removed.
    pub fn is_gone(&self, game: &str) -> bool {
        self.tombstones().contains(game)
    }

    /// `game` was removed (or came back): forget its tombstone.
    pub fn clear_gone(&self, game: &str) {
        self.tombstones().remove(game);
    }

    /// Whether the first list has completed (a broken watch later does
    /// not undo it: the cache then lags, which every reconcile allows for).
    pub fn is_ready(&self) -> bool {
        self.docs.is_listed()
    }

    /// A listing is in (the first marks the cache ready) and the watch
    /// follows it.
    pub(crate) fn set_ready(&self) {
        self.docs.set_following();
    }

    /// Waits until the first list has completed.
    pub async fn wait_ready(&self) {
        self.docs.wait_listed().await;
    }

    /// Replaces the whole content with a fresh listing; returns the games
    /// that changed or disappeared.
    /// Wakes when a document changed.
    pub(crate) fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    fn replace(&self, listing: HashMap<String, Desired>) -> Vec<String> {
        self.changed.notify_one();
        let mut docs = self.docs.write();
        let mut changed: Vec<String> = docs
            .keys()
            .filter(|game| !listing.contains_key(*game))
            .cloned()
            .collect();
        {
            let mut gone = self.tombstones();
            gone.extend(changed.iter().cloned());
            gone.retain(|game| !listing.contains_key(game));
        }
        changed.extend(
            listing
                .iter()
                .filter(|(game, doc)| docs.get(*game).map(|known| &**known) != Some(*doc))
                .map(|(g, _)| g.clone()),
        );
        *docs = listing
            .into_iter()
            .map(|(game, doc)| (game, Arc::new(doc)))
            .collect();
        changed
    }

    /// Records a change of one game (a watch event).
    pub(crate) fn apply(&self, game: String, doc: Option<Desired>) {
        self.changed.notify_one();
        let mut docs = self.docs.write();
        match doc {
            Some(doc) => {
                self.clear_gone(&game);
                docs.insert(game, Arc::new(doc));
            }
            None => {
                self.mark_gone(&game);
                docs.remove(&game);
            }
        }
    }
}

/// Runs until `shutdown`: list, watch, relist (see [`super::mirror`]).
pub(crate) async fn run(
    documents: Documents,
    cache: Arc<DesiredCache>,
    queue: Arc<WorkQueue>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mirror = DesiredMirror {
        documents,
        cache,
        queue,
    };
    super::mirror::run(&mirror, &metrics, shutdown).await;
}

/// The desired state as the cache follows it: every change queues its game.
struct DesiredMirror {
    documents: Documents,
    cache: Arc<DesiredCache>,
    queue: Arc<WorkQueue>,
}

impl Mirror for DesiredMirror {
    type Error = DocumentError;

    fn what(&self) -> &'static str {
        "gameruntimes"
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.documents.store()
    }

    fn prefix(&self) -> String {
        self.documents.keys().gameruntimes()
    }

    async fn relist(&self) -> Result<Revision, DocumentError> {
        relist(&self.documents, &self.cache, &self.queue).await
    }

    async fn apply(&self, batch: Vec<WatchEvent>) {
        for event in batch {
            self.apply_one(event);
        }
    }

    fn broken(&self) {
        self.cache.docs.set_broken();
    }
}

impl DesiredMirror {
    /// Caches one change and queues its game.
    fn apply_one(&self, event: WatchEvent) {
        let keys = self.documents.keys();
        let Some(game) = keys.name_of(&keys.gameruntimes(), event.key()) else {
            return;
        };
        let game = game.to_owned();
        let doc = match &event {
            WatchEvent::Put(kv) => Some(match self.documents.decode(kv) {
                Ok(doc) => Desired::Valid(Box::new(doc)),
                Err(error) => {
                    warn!(%game, %error, "ignoring an invalid document");
                    Desired::Invalid(error.to_string())
                }
            }),
            WatchEvent::Delete { .. } => None,
        };
        self.cache.apply(game.clone(), doc);
        self.queue.add_changed(&game);
    }
}

/// Lists every document, swaps it into the cache and queues what changed.
async fn relist(
    documents: &Documents,
    cache: &DesiredCache,
    queue: &WorkQueue,
) -> Result<Revision, DocumentError> {
    let list = documents.list().await?;
    let keys = documents.keys();
    let mut listing: HashMap<String, Desired> = list
        .items
        .into_iter()
        .map(|doc| (doc.metadata.name.clone(), Desired::Valid(Box::new(doc))))
        .collect();
    for invalid in list.invalid {
        warn!(key = %invalid.key, error = %invalid.error, "ignoring an invalid document");
        if let Some(game) = keys.name_of(&keys.gameruntimes(), &invalid.key) {
            listing.insert(game.to_owned(), Desired::Invalid(invalid.error.to_string()));
        }
    }
    let games = listing.len();
    // The first listing queues every game: in bulk, so that a change made
    // while they converge is not queued behind all of them. A relist after
    // a broken watch queues only what changed meanwhile, as changes.
    let first = !cache.is_ready();
    let changed = cache.replace(listing);
    if first {
        queue.add_bulk_all(changed);
        info!(games, revision = list.revision, "desired state listed");
    } else {
        for game in changed {
            queue.add_changed(&game);
        }
    }
    cache.set_ready();
    Ok(list.revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::parse::parse_documents;
    use std::time::Duration;

    use rtm_core::store::memory::MemoryStore;
    use rtm_core::store::{Keys, Store, StoreError};

    fn game(name: &str, image: &str) -> GameRuntime {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\nspec:\n  image: {image}\n"
        );
        parse_documents(&yaml).unwrap().remove(0)
    }

    async fn drain(queue: &WorkQueue) -> Vec<String> {
        let mut games = Vec::new();
        while !queue.is_empty() {
            let game = queue.next().await.unwrap();
            queue.done(&game);
            games.push(game);
        }
        games.sort();
        games
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !check() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    #[tokio::test]
    async fn lists_then_follows_puts_and_deletes_and_relists_after_compaction() {
        let store = Arc::new(MemoryStore::new());
        let documents = Documents::new(store.clone(), Keys::default());
        documents.create(&game("g1", "a:1")).await.unwrap();
        documents.create(&game("g2", "a:1")).await.unwrap();
        let cache = Arc::new(DesiredCache::new());
        let queue = Arc::new(WorkQueue::new());
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            documents.clone(),
            cache.clone(),
            queue.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        tokio::time::timeout(Duration::from_secs(5), cache.wait_ready())
            .await
            .unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(drain(&queue).await, ["g1", "g2"]);

        documents.delete("g1", None).await.unwrap();
        eventually("the delete to reach the cache", || !cache.contains("g1")).await;
        assert_eq!(drain(&queue).await, ["g1"]);

        // The watch breaks (etcd compacted past it); a delete happens while
        // nobody watches; the relist finds it by diffing.
        store.fail_with(StoreError::Compacted {
            requested: 0,
            compacted: 0,
        });
        store.recover();
        documents.delete("g2", None).await.unwrap();
        documents.create(&game("g3", "a:1")).await.unwrap();
        eventually("the relist", || {
            !cache.contains("g2") && cache.contains("g3")
        })
        .await;
        assert!(
            metrics
                .render()
                .contains("rtmanager_etcd_watch_restarts_total")
        );
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_list_removes_nothing_and_an_invalid_document_is_kept_apart() {
        let store = Arc::new(MemoryStore::new());
        let documents = Documents::new(store.clone(), Keys::default());
        documents.create(&game("g1", "a:1")).await.unwrap();
        store
            .create("/rtmanager/gameruntimes/bad", b"spec: [".to_vec(), None)
            .await
            .unwrap();
        let cache = Arc::new(DesiredCache::new());
        let queue = Arc::new(WorkQueue::new());
        let shutdown = CancellationToken::new();
        let metrics = Metrics::new();
        let task = tokio::spawn(run(
            documents.clone(),
            cache.clone(),
            queue.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        cache.wait_ready().await;
        assert!(matches!(
            cache.get("bad").as_deref(),
            Some(Desired::Invalid(_))
        ));
        // etcd goes away for a minute (paused clock: the relists and their
        // backoff run through it); the cache keeps what it knew.
        store.fail_with(StoreError::Unavailable {
            endpoints: "m".into(),
            message: "down".into(),
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(metrics.render().contains(
            r#"rtmanager_etcd_watch_restarts_total{reason="broken",watch="gameruntimes"} 1"#
        ));
        assert!(
            cache.contains("g1"),
            "an unreachable etcd must not look like a deletion"
        );
        store.recover();
        shutdown.cancel();
        task.await.unwrap();
    }
}
