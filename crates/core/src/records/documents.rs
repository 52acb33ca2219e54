//! Typed access to `GameRuntime` documents on top of any [`Store`]: the one
//! place that turns documents into etcd values and back.
//!
//! Writes validate the whole document before any I/O, so an invalid name
//! (which would become a key) or spec never reaches etcd. The stored form
//! holds `apiVersion`, `kind`, `metadata` (without `generation` and
//! `resourceVersion`, which etcd tracks itself) and `spec`; status lives under
//! its own key so that a user's apply and the controller's status write
//! never conflict.
//!
//! Every create and update also keeps the stored document as a revision of the game, in the
//! same transaction (home: [`super::revisions`]); a delete removes them.

use std::sync::Arc;

use crate::error_code::ErrorCode;
use crate::model::parse::{ParseError, parse_document, to_yaml};
use crate::model::validate::{FieldError, validate};
use crate::model::{GameRuntime, GameRuntimeStatus};

use super::revisions;
use crate::store::{Compare, KeyValue, Keys, Revision, Store, StoreError, Txn};

/// Why a document operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DocumentError {
    /// The document fails validation; nothing was written.
    #[error("gameruntime {name:?} is invalid: {}", list(errors))]
    Invalid {
        /// The document's name, as given.
        name: String,
        /// Every field that is wrong, not only the first.
        errors: Vec<FieldError>,
    },
    /// A create found a document of that name.
    #[error("gameruntime/{name} already exists")]
    AlreadyExists {
        /// The document's name.
        name: String,
    },
    /// An update's `resourceVersion` is not the stored one.
    #[error(
        "gameruntime/{name} was changed by someone else (resourceVersion {expected} is stale); re-read and retry"
    )]
    Conflict {
        /// The document's name.
        name: String,
        /// The revision the writer had read.
        expected: Revision,
    },
    /// An update or delete found no document of that name.
    #[error("gameruntime/{name} not found")]
    NotFound {
        /// The document's name.
        name: String,
    },
    /// A stored document does not decode.
    #[error("the value stored at {key} is not a valid GameRuntime: {message}")]
    Corrupt {
        /// Its key.
        key: String,
        /// What the decoder said.
        message: String,
    },
    /// A stored status record does not decode (read beside its document).
    #[error(transparent)]
    CorruptStatus(#[from] super::status::Corrupt),
    /// etcd failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DocumentError {
    /// The stable error code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DocumentError::Invalid { .. } => ErrorCode::InvalidRequest,
            DocumentError::AlreadyExists { .. } | DocumentError::Conflict { .. } => {
                ErrorCode::Conflict
            }
            DocumentError::NotFound { .. } => ErrorCode::NotFound,
            DocumentError::Corrupt { .. } | DocumentError::CorruptStatus(_) => ErrorCode::Internal,
            DocumentError::Store(e) => e.code(),
        }
    }
}

/// A stored document that does not decode (written by hand, or by a newer
/// version): reported, never acted on.
#[derive(Debug, Clone)]
pub struct InvalidDocument {
    /// The key it is stored at.
    pub key: String,
    /// Why it does not decode ([`DocumentError::Corrupt`]).
    pub error: DocumentError,
}

/// Every document under the prefix at one revision.
#[derive(Debug, Clone, Default)]
pub struct DocumentList {
    /// The documents that decode, in key (that is, name) order.
    pub items: Vec<GameRuntime>,
    /// The ones that do not, reported apart.
    pub invalid: Vec<InvalidDocument>,
    /// The revision of the listing: a watch from `revision + 1` misses
    /// nothing.
    pub revision: Revision,
}

/// Reads and writes `GameRuntime` documents.
#[derive(Debug, Clone)]
pub struct Documents {
    store: Arc<dyn Store>,
    keys: Keys,
}

impl Documents {
    /// The documents under `keys` in `store`.
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys }
    }

    /// The store the documents live in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The key layout of the installation.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The document (with `generation` and `resourceVersion`; without status).
    pub async fn get(&self, name: &str) -> Result<Option<GameRuntime>, DocumentError> {
        check_name(name)?;
        match self.store.get(&self.keys.gameruntime(name)).await? {
            Some(kv) => self.decode(&kv).map(Some),
            None => Ok(None),
        }
    }

    /// The status the controller last wrote beside the document, if any
    /// (decoded by the record's home, [`super::status`]).
    pub async fn get_status(&self, name: &str) -> Result<Option<GameRuntimeStatus>, DocumentError> {
        check_name(name)?;
        match self.store.get(&self.keys.status(name)).await? {
            Some(kv) => Ok(Some(super::status::decode(&kv)?)),
            None => Ok(None),
        }
    }

    /// Every document at one revision; undecodable ones are set apart.
    pub async fn list(&self) -> Result<DocumentList, DocumentError> {
        let listing = self.store.list(&self.keys.gameruntimes(), None).await?;
        let mut list = DocumentList {
            revision: listing.revision,
            ..DocumentList::default()
        };
        for kv in &listing.items {
            match self.decode(kv) {
                Ok(doc) => list.items.push(doc),
                Err(error) => list.invalid.push(InvalidDocument {
                    key: kv.key.clone(),
                    error,
                }),
            }
        }
        Ok(list)
    }

    /// Creates a new document; fails if one with that name exists. Its generation 1 is kept
    /// as its first revision (revisions left by an earlier game of the name go).
    pub async fn create(&self, doc: &GameRuntime) -> Result<GameRuntime, DocumentError> {
        let name = &doc.metadata.name;
        let value = encode(doc)?;
        let key = self.keys.gameruntime(name);
        let txn = revisions::start(Txn::new(), &self.keys, name, &value)
            .when(Compare::Absent { key: key.clone() })
            .put(key, value);
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Err(DocumentError::AlreadyExists { name: name.clone() });
        }
        Ok(self.written(doc, outcome.revision, Some(1)).await)
    }

    /// Replaces a document if it is still at `expected` (its
    /// `resourceVersion`), keeping the new generation as a revision.
    pub async fn update(
        &self,
        doc: &GameRuntime,
        expected: Revision,
    ) -> Result<GameRuntime, DocumentError> {
        let name = &doc.metadata.name;
        let value = encode(doc)?;
        let key = self.keys.gameruntime(name);
        // The generation this write makes: the version of the key at `expected`, plus one.
        // The write compares the mod revision, so the version read here is the one it
        // replaces (or the write fails).
        let current = match self.store.get(&key).await? {
            Some(kv) if kv.mod_revision == expected => kv,
            Some(_) => {
                return Err(DocumentError::Conflict {
                    name: name.clone(),
                    expected,
                });
            }
            None => return Err(DocumentError::NotFound { name: name.clone() }),
        };
        let generation = current.version + 1;
        let txn = revisions::record(Txn::new(), &self.keys, name, generation, &value)
            .when(Compare::ModRevision {
                key: key.clone(),
                revision: expected,
            })
            .put(key, value);
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Err(self.missing_or_conflict(name, expected).await);
        }
        Ok(self.written(doc, outcome.revision, Some(generation)).await)
    }

    /// Deletes a document (only if still at `expected`, when given), and its revisions.
    /// The controller then removes the container and cleans up the status.
    pub async fn delete(
        &self,
        name: &str,
        expected: Option<Revision>,
    ) -> Result<(), DocumentError> {
        check_name(name)?;
        let key = self.keys.gameruntime(name);
        let expected = match expected {
            Some(revision) => revision,
            None => match self.store.get(&key).await? {
                Some(kv) => kv.mod_revision,
                None => {
                    return Err(DocumentError::NotFound {
                        name: name.to_owned(),
                    });
                }
            },
        };
        let txn = revisions::forget(Txn::new(), &self.keys, name)
            .when(Compare::ModRevision {
                key: key.clone(),
                revision: expected,
            })
            .delete(key);
        if self.store.txn(txn).await?.succeeded {
            Ok(())
        } else {
            Err(self.missing_or_conflict(name, expected).await)
        }
    }

    /// Decodes a value read from under the documents prefix.
    pub fn decode(&self, kv: &KeyValue) -> Result<GameRuntime, DocumentError> {
        let corrupt = |message: String| DocumentError::Corrupt {
            key: kv.key.clone(),
            message,
        };
        let mut doc = parse_document(&kv.value).map_err(|e: ParseError| corrupt(e.to_string()))?;
        let key_name = self.keys.name_of(&self.keys.gameruntimes(), &kv.key);
        if key_name != Some(doc.metadata.name.as_str()) {
            return Err(corrupt(format!(
                "metadata.name {:?} does not match the key",
                doc.metadata.name
            )));
        }
        doc.metadata.generation = Some(kv.version);
        doc.metadata.resource_version = Some(kv.mod_revision.to_string());
        Ok(doc)
    }

    /// The document as written at `revision`. Read back for its
    /// generation (etcd's version of the key); if that read fails, or
    /// finds a later write, the write itself still succeeded: answer with
    /// what is known of it rather than an error.
    async fn written(
        &self,
        doc: &GameRuntime,
        revision: Revision,
        generation: Option<i64>,
    ) -> GameRuntime {
        let name = &doc.metadata.name;
        if let Ok(Some(stored)) = self.get(name).await
            && stored.metadata.resource_version == Some(revision.to_string())
        {
            return stored;
        }
        let mut written = doc.clone();
        written.status = None;
        written.metadata.resource_version = Some(revision.to_string());
        written.metadata.generation = generation;
        written
    }

    async fn missing_or_conflict(&self, name: &str, expected: Revision) -> DocumentError {
        match self.store.get(&self.keys.gameruntime(name)).await {
            Ok(None) => DocumentError::NotFound {
                name: name.to_owned(),
            },
            Ok(Some(_)) => DocumentError::Conflict {
                name: name.to_owned(),
                expected,
            },
            Err(e) => e.into(),
        }
    }
}

/// Refuses a name that is not a valid game id before it becomes a key.
fn check_name(name: &str) -> Result<(), DocumentError> {
    crate::model::validate::validate_name(name).map_err(|message| DocumentError::Invalid {
        name: name.to_owned(),
        errors: vec![FieldError {
            path: "metadata.name".into(),
            message,
        }],
    })
}

/// The stored form: validated, without the fields etcd tracks itself.
fn encode(doc: &GameRuntime) -> Result<Vec<u8>, DocumentError> {
    validate(doc).map_err(|errors| DocumentError::Invalid {
        name: doc.metadata.name.clone(),
        errors,
    })?;
    let mut stored = doc.clone();
    stored.metadata.generation = None;
    stored.metadata.resource_version = None;
    stored.status = None;
    let bytes = to_yaml(&stored).into_bytes();
    // What parsing checks for a file, checked again for what is written:
    // annotations a tool adds (rtctl's op-source and source-ref) may push a
    // document at the limit over it, and then no reader could load it.
    let limit = crate::model::MAX_DOCUMENT_BYTES;
    if bytes.len() > limit {
        return Err(DocumentError::Invalid {
            name: doc.metadata.name.clone(),
            errors: vec![FieldError::new(
                "metadata",
                format!(
                    "stored it would be {} bytes (annotations included), more than the limit \
                     of {limit} bytes; make the document smaller",
                    bytes.len()
                ),
            )],
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn a_document_whose_stored_form_is_over_the_limit_is_never_written() {
        let (store, documents) = documents();
        let mut doc = game("big");
        doc.metadata.annotations.insert(
            "example.com/blob".into(),
            "x".repeat(crate::model::MAX_DOCUMENT_BYTES),
        );
        let error = documents.create(&doc).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidRequest, "{error}");
        assert!(error.to_string().contains("more than the limit"), "{error}");
        assert!(store.dump().is_empty(), "nothing written");
    }

    fn documents() -> (Arc<MemoryStore>, Documents) {
        let store = Arc::new(MemoryStore::new());
        (store.clone(), Documents::new(store, Keys::default()))
    }

    fn game(name: &str) -> GameRuntime {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
             spec:\n  image: rtmanager-test/engine:1\n"
        );
        crate::model::parse::parse_documents(&yaml)
            .unwrap()
            .remove(0)
    }

    #[tokio::test]
    async fn create_update_and_stale_update() {
        let (_, docs) = documents();
        let created = docs.create(&game("g1")).await.unwrap();
        assert_eq!(created.metadata.generation, Some(1));
        let rv: Revision = created
            .metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();

        let mut changed = created.clone();
        changed.spec.image = "rtmanager-test/engine:2".into();
        let updated = docs.update(&changed, rv).await.unwrap();
        assert_eq!(updated.metadata.generation, Some(2));
        assert_eq!(updated.spec.image, "rtmanager-test/engine:2");

        let stale = docs.update(&changed, rv).await.unwrap_err();
        assert!(matches!(stale, DocumentError::Conflict { .. }), "{stale}");
        assert!(matches!(
            docs.create(&game("g1")).await.unwrap_err(),
            DocumentError::AlreadyExists { .. }
        ));
    }

    #[tokio::test]
    async fn a_bad_name_never_reaches_the_store() {
        let (store, docs) = documents();
        let mut bad = game("g1");
        bad.metadata.name = "../etc".into();
        let error = docs.create(&bad).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidRequest);
        assert!(error.to_string().contains("metadata.name"), "{error}");
        assert!(
            store.dump().is_empty(),
            "nothing may be written: {:?}",
            store.dump()
        );
        assert!(matches!(
            docs.get("a/b").await,
            Err(DocumentError::Invalid { .. })
        ));
    }

    #[tokio::test]
    async fn undecodable_values_are_listed_apart() {
        let (store, docs) = documents();
        docs.create(&game("good")).await.unwrap();
        store
            .create("/rtmanager/gameruntimes/bad", b"spec: [".to_vec(), None)
            .await
            .unwrap();
        let list = docs.list().await.unwrap();
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.invalid.len(), 1);
        assert_eq!(list.invalid[0].key, "/rtmanager/gameruntimes/bad");
    }
}
