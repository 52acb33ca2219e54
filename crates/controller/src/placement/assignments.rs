//! Where each game runs (`assignments/<game>`), as the watch keeps it, and
//! [`Ownership`]: a node's controller reconciles exactly the games assigned to it.
//!
//! Every write of an assignment is a compare-and-swap on what was read (create-only when
//! there was none), so two writers — two schedulers, the scheduler and a node adopting a
//! container — can never both win. A change queues the game (the node it leaves and the
//! node it reaches both look at it) and wakes the scheduler.

use std::sync::Arc;

use tokio::sync::Notify;

use rtm_core::records::nodes::{self, Assignment, AssignmentReason};
use rtm_core::store::{Compare, KeyValue, Keys, Revision, Store, StoreError, Txn, WatchEvent};

use crate::cache::Cache;
use crate::mirror::Mirror;
use crate::queue::WorkQueue;

/// An assignment as last seen, with the revision it was written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeenAssignment {
    pub(crate) assignment: Assignment,
    pub(crate) revision: Revision,
}

/// Every game's assignment.
#[derive(Debug, Default)]
pub(crate) struct AssignmentCache {
    assignments: Cache<SeenAssignment>,
    /// Keys whose value does not decode (edited by hand), by game, at the revision seen:
    /// they count as no assignment, and are written over.
    garbled: std::sync::Mutex<std::collections::HashMap<String, Revision>>,
    /// Deleted assignments, by game, at the revision of the deletion: an older write
    /// arriving late (a watch event queued across a partition) does not bring one back.
    deleted: std::sync::Mutex<std::collections::HashMap<String, Revision>>,
    changed: Notify,
}

impl AssignmentCache {
    /// An empty cache, following nothing yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The assignment of `game` as last seen.
    pub(crate) fn get(&self, game: &str) -> Option<Arc<SeenAssignment>> {
        self.assignments.get(game)
    }

    /// The revision of `game`'s assignment key when its value does not decode.
    pub(crate) fn garbled(&self, game: &str) -> Option<Revision> {
        self.lock_garbled().get(game).copied()
    }

    /// Every garbled key, by game.
    pub(crate) fn all_garbled(&self) -> std::collections::HashMap<String, Revision> {
        self.lock_garbled().clone()
    }

    fn lock_garbled(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Revision>> {
        self.garbled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every assignment.
    pub(crate) fn all(&self) -> Vec<(String, Arc<SeenAssignment>)> {
        self.assignments
            .read()
            .iter()
            .map(|(game, seen)| (game.clone(), seen.clone()))
            .collect()
    }

    /// Whether the cache follows etcd.
    pub(crate) fn is_following(&self) -> bool {
        self.assignments.is_following()
    }

    /// Wakes when an assignment changed.
    pub(crate) fn changed(&self) -> &Notify {
        &self.changed
    }

    fn lock_deleted(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Revision>> {
        self.deleted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes `kv` unless what is known is newer.
    fn put_if_newer(&self, game: &str, seen: SeenAssignment) -> bool {
        if self
            .lock_deleted()
            .get(game)
            .is_some_and(|deleted| *deleted > seen.revision)
        {
            return false;
        }
        let mut assignments = self.assignments.write();
        if assignments
            .get(game)
            .is_some_and(|known| known.revision > seen.revision)
        {
            return false;
        }
        self.lock_garbled().remove(game);
        assignments.insert(game.to_owned(), Arc::new(seen));
        true
    }

    /// Forgets `game`'s assignment deleted at `revision`, unless what is known is newer.
    fn delete_if_newer(&self, game: &str, revision: Revision) {
        let mut assignments = self.assignments.write();
        if assignments
            .get(game)
            .is_some_and(|known| known.revision > revision)
        {
            return;
        }
        assignments.remove(game);
        self.lock_garbled().remove(game);
        self.lock_deleted().insert(game.to_owned(), revision);
    }

    /// Brings the copy up to a fresh listing of `assignments/` (at a session's start,
    /// before any game is reconciled: a watch event still queued from before a partition
    /// may be late).
    pub(crate) async fn refresh(
        &self,
        store: &Arc<dyn Store>,
        keys: &Keys,
    ) -> Result<(), StoreError> {
        let prefix = keys.assignments();
        let listing = store.list(&prefix, None).await?;
        let mut listed = std::collections::HashSet::new();
        for kv in &listing.items {
            let Some(game) = keys.name_of(&prefix, &kv.key) else {
                continue;
            };
            listed.insert(game.to_owned());
            match decode(&prefix, keys, kv) {
                Some((game, seen)) => {
                    self.put_if_newer(&game, seen);
                }
                None => {
                    self.assignments.write().remove(game);
                    self.lock_garbled().insert(game.to_owned(), kv.mod_revision);
                }
            }
        }
        let gone: Vec<String> = self
            .assignments
            .read()
            .keys()
            .filter(|game| !listed.contains(*game))
            .cloned()
            .collect();
        for game in gone {
            self.delete_if_newer(&game, listing.revision);
        }
        self.changed.notify_one();
        Ok(())
    }

    /// A write this controller just made, ahead of its watch event.
    pub(crate) fn learn(&self, game: &str, seen: Option<SeenAssignment>) {
        self.lock_garbled().remove(game);
        let mut assignments = self.assignments.write();
        match seen {
            Some(seen) => {
                if assignments
                    .get(game)
                    .is_none_or(|known| known.revision < seen.revision)
                {
                    assignments.insert(game.to_owned(), Arc::new(seen));
                }
            }
            None => {
                assignments.remove(game);
            }
        }
    }
}

#[cfg(test)]
impl AssignmentCache {
    /// Assignments as a scheduler would make them for `docs`: to their `spec.node`, else
    /// to `node` (unit tests), following.
    pub(crate) fn scheduled(docs: &[rtm_core::model::GameRuntime], node: &str) -> Arc<Self> {
        let cache = Arc::new(AssignmentCache::new());
        for (revision, doc) in docs.iter().enumerate() {
            let to = doc.spec.node.as_deref().unwrap_or(node);
            cache.learn(
                &doc.metadata.name,
                Some(SeenAssignment {
                    assignment: Assignment::to(to, AssignmentReason::Scheduled, "test"),
                    revision: revision as Revision + 1,
                }),
            );
        }
        cache.assignments.set_following();
        cache
    }

    /// Counts the cache as following etcd (unit tests).
    pub(crate) fn set_following(&self) {
        self.assignments.set_following();
    }

    /// Counts the cache as not following etcd, as a broken watch does (unit tests).
    pub(crate) fn set_broken(&self) {
        self.assignments.set_broken();
    }
}

/// Which games this controller reconciles: those assigned to its node.
#[derive(Debug, Clone)]
pub(crate) struct Ownership {
    /// This controller's node (`--node-name`).
    pub(crate) node: String,
    assignments: Option<Arc<AssignmentCache>>,
}

impl Ownership {
    /// The games `assignments` give `node`.
    pub(crate) fn assigned(node: &str, assignments: Arc<AssignmentCache>) -> Self {
        Ownership {
            node: node.to_owned(),
            assignments: Some(assignments),
        }
    }

    /// Every game (unit tests of one node, without a scheduler).
    #[cfg(test)]
    pub(crate) fn everything(node: &str) -> Self {
        Ownership {
            node: node.to_owned(),
            assignments: None,
        }
    }

    /// Whether this node runs `game`.
    pub(crate) fn owns(&self, game: &str) -> bool {
        match &self.assignments {
            None => true,
            // Not following etcd (a watch broken, a partition just healed): the copy may
            // say this node while the game moved; nothing is run on it until it follows.
            Some(cache) => {
                cache.is_following()
                    && cache
                        .get(game)
                        .is_some_and(|seen| seen.assignment.is_on(&self.node))
            }
        }
    }

    /// Whether it cannot say now which games are this node's: its copy of the
    /// assignments does not follow etcd (a watch restarting). A reconcile then waits,
    /// forgetting nothing of the game.
    pub(crate) fn is_unsure(&self) -> bool {
        self.assignments
            .as_ref()
            .is_some_and(|cache| !cache.is_following())
    }

    /// The game's assignment as last seen (`None` also in the every-game mode).
    pub(crate) fn assignment(&self, game: &str) -> Option<Arc<SeenAssignment>> {
        self.assignments.as_ref()?.get(game)
    }

    /// The cache, when assignments decide.
    pub(crate) fn cache(&self) -> Option<&Arc<AssignmentCache>> {
        self.assignments.as_ref()
    }
}

/// Writes `assignment` for `game` over `seen` (create-only when `None`), with `extra`
/// comparisons (a fence); `Ok(None)` when another write came first.
pub(crate) async fn swap(
    store: &Arc<dyn Store>,
    keys: &Keys,
    game: &str,
    seen: Option<Revision>,
    assignment: &Assignment,
    extra: Vec<Compare>,
) -> Result<Option<Revision>, StoreError> {
    let key = keys.assignment(game);
    let mut txn = Txn::new().when(match seen {
        Some(revision) => Compare::ModRevision {
            key: key.clone(),
            revision,
        },
        None => Compare::Absent { key: key.clone() },
    });
    for compare in extra {
        txn = txn.when(compare);
    }
    let txn = txn.put(key, nodes::encode(assignment));
    let outcome = store.txn(txn).await?;
    Ok(outcome.succeeded.then_some(outcome.revision))
}

/// Claims `game` for `node` because its container runs there and no assignment exists
/// (an upgrade from before assignments, or a key lost): create-only, or over a value
/// that does not decode.
pub(crate) async fn adopt(
    store: &Arc<dyn Store>,
    keys: &Keys,
    cache: &AssignmentCache,
    game: &str,
    node: &str,
    holder: &str,
) -> Result<bool, StoreError> {
    let assignment = Assignment::to(node, AssignmentReason::Adopted, holder);
    let over = cache.garbled(game);
    match swap(store, keys, game, over, &assignment, Vec::new()).await? {
        Some(revision) => {
            cache.learn(
                game,
                Some(SeenAssignment {
                    assignment,
                    revision,
                }),
            );
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Follows `assignments/` into the cache, queueing each game whose assignment changed.
pub(crate) struct AssignmentMirror {
    pub(crate) cache: Arc<AssignmentCache>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: Keys,
    pub(crate) queue: Option<Arc<WorkQueue>>,
}

fn decode(prefix: &str, keys: &Keys, kv: &KeyValue) -> Option<(String, SeenAssignment)> {
    let game = keys.name_of(prefix, &kv.key)?;
    let assignment: Assignment = nodes::decode(&kv.value)?;
    Some((
        game.to_owned(),
        SeenAssignment {
            assignment,
            revision: kv.mod_revision,
        },
    ))
}

impl Mirror for AssignmentMirror {
    type Error = StoreError;

    fn what(&self) -> &'static str {
        "assignments"
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn prefix(&self) -> String {
        self.keys.assignments()
    }

    async fn relist(&self) -> Result<Revision, StoreError> {
        let prefix = self.prefix();
        let listing = self.store.list(&prefix, None).await?;
        let records: crate::cache::Records<SeenAssignment> = listing
            .items
            .iter()
            .filter_map(|kv| decode(&prefix, &self.keys, kv))
            .map(|(game, seen)| (game, Arc::new(seen)))
            .collect();
        *self.cache.lock_garbled() = listing
            .items
            .iter()
            .filter(|kv| decode(&prefix, &self.keys, kv).is_none())
            .filter_map(|kv| {
                let game = self.keys.name_of(&prefix, &kv.key)?;
                Some((game.to_owned(), kv.mod_revision))
            })
            .collect();
        let changed: Vec<String> = {
            let mut current = self.cache.assignments.write();
            let mut changed: Vec<String> = records
                .iter()
                .filter(|(game, seen)| current.get(*game) != Some(*seen))
                .map(|(game, _)| game.clone())
                .collect();
            changed.extend(
                current
                    .keys()
                    .filter(|game| !records.contains_key(*game))
                    .cloned(),
            );
            *current = records;
            changed
        };
        self.cache.assignments.set_following();
        if let Some(queue) = &self.queue {
            queue.add_bulk_all(changed);
        }
        self.cache.changed.notify_one();
        Ok(listing.revision)
    }

    async fn apply(&self, batch: Vec<WatchEvent>) {
        let prefix = self.prefix();
        let mut touched = Vec::new();
        for event in batch {
            match event {
                WatchEvent::Put(kv) => match decode(&prefix, &self.keys, &kv) {
                    Some((game, seen)) => {
                        if self.cache.put_if_newer(&game, seen) {
                            touched.push(game);
                        }
                    }
                    None => {
                        if let Some(game) = self.keys.name_of(&prefix, &kv.key) {
                            self.cache.assignments.write().remove(game);
                            self.cache
                                .lock_garbled()
                                .insert(game.to_owned(), kv.mod_revision);
                            touched.push(game.to_owned());
                        }
                    }
                },
                WatchEvent::Delete { key, mod_revision } => {
                    if let Some(game) = self.keys.name_of(&prefix, &key) {
                        self.cache.delete_if_newer(game, mod_revision);
                        touched.push(game.to_owned());
                    }
                }
            }
        }
        if let Some(queue) = &self.queue {
            for game in touched {
                queue.add(&game);
            }
        }
        self.cache.changed.notify_one();
    }

    fn broken(&self) {
        self.cache.assignments.set_broken();
    }
}
