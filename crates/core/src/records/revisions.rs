//! The last few applied specs of each game (`revisions/<game>/<generation>`), kept for
//! `rtctl rollout undo`: the one place that decides what a revision holds and how many are
//! kept.
//!
//! Every write of a document through [`Documents`](super::Documents) (create, update) also
//! puts the stored document at `revisions/<game>/<generation>` and deletes the revisions
//! older than the newest [`KEEP`], in the same transaction as the write, so a kept revision
//! is always a document that was stored. Deleting a game deletes its revisions with it; a
//! create clears any left by an earlier game of the same name.

use std::sync::Arc;

use crate::model::GameRuntime;
use crate::model::parse::parse_document;
use crate::store::{KeyValue, Keys, Store, StoreError, Txn};

/// How many revisions of a game are kept: enough to step back over a few bad rollouts, few
/// enough that a game's revisions stay a small read (each is at most a document's size).
pub const KEEP: i64 = 10;

/// Adds to `txn` the mutations that record `stored` (the bytes the write puts at the
/// document's key) as generation `generation` of `game`, and drop the revisions older than
/// the newest [`KEEP`].
pub fn record(txn: Txn, keys: &Keys, game: &str, generation: i64, stored: &[u8]) -> Txn {
    let txn = txn.put(keys.revision(game, generation), stored.to_vec());
    let oldest_kept = generation - (KEEP - 1);
    if oldest_kept > 0 {
        txn.delete_range(keys.revisions(game), keys.revision(game, oldest_kept))
    } else {
        txn
    }
}

/// Adds to `txn` the removal of every revision of `game`.
pub fn forget(txn: Txn, keys: &Keys, game: &str) -> Txn {
    txn.delete_prefix(keys.revisions(game))
}

/// Adds to `txn` what a create of `game` does to its revisions: drop any left by an earlier
/// game of the name and record `stored` as generation 1. (etcd refuses a transaction that
/// deletes a range and puts a key inside it, so the ranges go around generation 1's key,
/// which the put overwrites.)
pub fn start(txn: Txn, keys: &Keys, game: &str, stored: &[u8]) -> Txn {
    let first = keys.revision(game, 1);
    let prefix = keys.revisions(game);
    // The end of the prefix's range: its trailing '/' plus one is '0'.
    let end = format!("{}0", prefix.trim_end_matches('/'));
    txn.delete_range(prefix, first.clone())
        .delete_range(format!("{first}\0"), end)
        .put(first, stored.to_vec())
}

/// A kept revision: the generation it was and the document as stored then.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// The document's generation when it was written.
    pub generation: i64,
    /// The document as stored (without status; `metadata.generation` set to
    /// [`Revision::generation`]).
    pub doc: GameRuntime,
}

/// Why reading revisions failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RevisionError {
    /// A kept revision does not decode (written by hand, or by another version).
    #[error("the revision stored at {key} is not a valid GameRuntime: {message}")]
    Corrupt {
        /// Its key.
        key: String,
        /// What the decoder said.
        message: String,
    },
    /// etcd failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the kept revisions.
#[derive(Debug, Clone)]
pub struct Revisions {
    store: Arc<dyn Store>,
    keys: Keys,
}

impl Revisions {
    /// The revisions under `keys` in `store`.
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys }
    }

    /// Every kept revision of `game`, oldest first. A key that is not a revision of it is
    /// skipped; one that does not decode fails the call (undo must not skip over it unseen).
    pub async fn list(&self, game: &str) -> Result<Vec<Revision>, RevisionError> {
        let prefix = self.keys.revisions(game);
        let listing = self.store.list(&prefix, None).await?;
        let mut revisions = Vec::with_capacity(listing.items.len());
        for kv in &listing.items {
            if let Some(revision) = decode(&prefix, kv)? {
                revisions.push(revision);
            }
        }
        revisions.sort_by_key(|r| r.generation);
        Ok(revisions)
    }

    /// The kept revision `generation` of `game`; `None` when it is not kept (older than the
    /// newest [`KEEP`], or never written).
    pub async fn get(
        &self,
        game: &str,
        generation: i64,
    ) -> Result<Option<Revision>, RevisionError> {
        let prefix = self.keys.revisions(game);
        match self
            .store
            .get(&self.keys.revision(game, generation))
            .await?
        {
            Some(kv) => decode(&prefix, &kv),
            None => Ok(None),
        }
    }
}

/// The revision at `kv` (under `prefix`, a game's revisions), `None` for a key that is not
/// one.
fn decode(prefix: &str, kv: &KeyValue) -> Result<Option<Revision>, RevisionError> {
    let Some(generation) = kv
        .key
        .strip_prefix(prefix)
        .filter(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|g| g.parse::<i64>().ok())
    else {
        return Ok(None);
    };
    let mut doc = parse_document(&kv.value).map_err(|e| RevisionError::Corrupt {
        key: kv.key.clone(),
        message: e.to_string(),
    })?;
    doc.metadata.generation = Some(generation);
    doc.metadata.resource_version = None;
    Ok(Some(Revision { generation, doc }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Documents;
    use crate::store::memory::MemoryStore;

    fn game(name: &str, image: &str) -> GameRuntime {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
             spec:\n  image: {image}\n"
        );
        crate::model::parse::parse_documents(&yaml)
            .unwrap()
            .remove(0)
    }

    fn rv(doc: &GameRuntime) -> i64 {
        doc.metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn setup() -> (Arc<MemoryStore>, Documents, Revisions) {
        let store = Arc::new(MemoryStore::new());
        let docs = Documents::new(store.clone(), Keys::default());
        let revisions = Revisions::new(store.clone(), Keys::default());
        (store, docs, revisions)
    }

    #[tokio::test]
    async fn every_write_keeps_the_stored_document_as_its_generation() {
        let (_, docs, revisions) = setup();
        let created = docs.create(&game("g1", "engine:1")).await.unwrap();
        let mut next = created.clone();
        next.spec.image = "engine:2".into();
        let updated = docs.update(&next, rv(&created)).await.unwrap();
        assert_eq!(updated.metadata.generation, Some(2));
        let kept = revisions.list("g1").await.unwrap();
        let seen: Vec<(i64, &str)> = kept
            .iter()
            .map(|r| (r.generation, r.doc.spec.image.as_str()))
            .collect();
        assert_eq!(seen, [(1, "engine:1"), (2, "engine:2")]);
    }

    #[tokio::test]
    async fn only_the_newest_ten_revisions_are_kept() {
        let (_, docs, revisions) = setup();
        let mut doc = docs.create(&game("g1", "engine:0")).await.unwrap();
        for i in 1..15 {
            doc.spec.image = format!("engine:{i}");
            doc = docs.update(&doc, rv(&doc)).await.unwrap();
        }
        let generations: Vec<i64> = revisions
            .list("g1")
            .await
            .unwrap()
            .iter()
            .map(|r| r.generation)
            .collect();
        assert_eq!(generations, (6..=15).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failed_write_keeps_no_revision() {
        let (_, docs, revisions) = setup();
        let created = docs.create(&game("g1", "engine:1")).await.unwrap();
        let mut stale = created.clone();
        stale.spec.image = "engine:2".into();
        docs.update(&stale, rv(&created)).await.unwrap();
        stale.spec.image = "engine:3".into();
        assert!(docs.update(&stale, rv(&created)).await.is_err());
        assert_eq!(revisions.list("g1").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn deleting_a_game_deletes_its_revisions_and_not_its_neighbours() {
        let (store, docs, revisions) = setup();
        docs.create(&game("g1", "engine:1")).await.unwrap();
        docs.create(&game("g10", "engine:1")).await.unwrap();
        docs.delete("g1", None).await.unwrap();
        assert!(revisions.list("g1").await.unwrap().is_empty());
        assert_eq!(revisions.list("g10").await.unwrap().len(), 1);
        let left: Vec<String> = store
            .dump()
            .into_keys()
            .filter(|k| k.contains("/revisions/g1/"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_game_created_again_starts_its_revisions_afresh() {
        let (store, docs, revisions) = setup();
        // Left over by an earlier game of the name (e.g. written by an older rtctl).
        store
            .txn(Txn::new().put(Keys::default().revision("g1", 7), b"garbage".to_vec()))
            .await
            .unwrap();
        docs.create(&game("g1", "engine:1")).await.unwrap();
        let kept = revisions.list("g1").await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].generation, 1);
    }

    #[tokio::test]
    async fn an_unreadable_revision_is_reported() {
        let (store, docs, revisions) = setup();
        docs.create(&game("g1", "engine:1")).await.unwrap();
        store
            .txn(Txn::new().put(Keys::default().revision("g1", 5), b"spec: [".to_vec()))
            .await
            .unwrap();
        assert!(matches!(
            revisions.list("g1").await,
            Err(RevisionError::Corrupt { .. })
        ));
    }
}
