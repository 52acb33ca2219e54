//! One connection to etcd for one rtctl command: typed reads and writes through
//! [`Documents`] and [`History`], every store failure turned into a [`CliError`] that names
//! the endpoint and the object, and a watch over several prefixes that relists when it breaks.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::SelectAll;

use super::context::Resolved;
use super::error::{CliError, one_line};
use super::output::warn;
use crate::history::{DEFAULT_RETENTION, History, HistoryEntry, HistoryError};
use crate::model::validate::validate_name;
use crate::model::{GameRuntime, GameRuntimeStatus};
use crate::store::documents::{DocumentError, decode_status};
use crate::store::etcd::EtcdStore;
use crate::store::{
    Documents, KeyValue, Keys, Listing, Revision, Store, StoreError, WatchBatch, WatchStream,
};

/// How often a broken watch is relisted before giving up, and the first pause between
/// attempts (doubled each time): about 3.5 s of etcd being away is ridden out.
const RESYNC_ATTEMPTS: u32 = 3;
const RESYNC_BACKOFF: Duration = Duration::from_millis(500);

/// A connected rtctl.
#[derive(Debug, Clone)]
pub struct Session {
    store: Arc<dyn Store>,
    docs: Documents,
    history: History,
    keys: Keys,
    endpoints: String,
    timeout: Duration,
}

/// Checks a name from the command line before it becomes part of a key.
pub fn check_name(name: &str) -> Result<(), CliError> {
    validate_name(name).map_err(|message| {
        CliError::invalid(format!(
            "{message}; pass the game's metadata.name (see `rtctl get`)"
        ))
    })
}

impl Session {
    /// Connects (lazily: an unreachable etcd shows at the first call).
    pub async fn connect(resolved: &Resolved) -> Result<Session, CliError> {
        let endpoints = resolved.endpoints_text();
        let store = EtcdStore::connect(&resolved.etcd).await.map_err(|e| {
            map_store_error(&endpoints, resolved.etcd.request_timeout, e, "connecting")
        })?;
        Ok(Session::new(
            Arc::new(store),
            resolved.keys.clone(),
            endpoints,
            resolved.etcd.request_timeout,
        ))
    }

    pub fn new(store: Arc<dyn Store>, keys: Keys, endpoints: String, timeout: Duration) -> Session {
        Session {
            docs: Documents::new(store.clone(), keys.clone()),
            history: History::new(store.clone(), keys.clone(), DEFAULT_RETENTION),
            store,
            keys,
            endpoints,
            timeout,
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn documents(&self) -> &Documents {
        &self.docs
    }

    /// A store failure while `doing` something, for people.
    pub fn store_error(&self, error: StoreError, doing: &str) -> CliError {
        map_store_error(&self.endpoints, self.timeout, error, doing)
    }

    /// A document failure while `doing` something, for people.
    pub fn doc_error(&self, error: DocumentError, doing: &str) -> CliError {
        match error {
            DocumentError::Invalid { name, errors } => CliError::invalid(format!(
                "gameruntime/{name} is invalid: {}; fix it and try again",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            DocumentError::AlreadyExists { name } => CliError::Conflict {
                message: format!(
                    "gameruntime/{name} was created by someone else meanwhile; run the command \
                     again"
                ),
            },
            DocumentError::Conflict { name, expected } => CliError::Conflict {
                message: format!(
                    "gameruntime/{name} was changed by someone else (resourceVersion {expected} \
                     is stale); re-read it with `rtctl get {name} -o yaml`, redo the change and \
                     try again"
                ),
            },
            DocumentError::NotFound { name } => self.not_found(&name),
            DocumentError::Corrupt { key, message } => CliError::internal(format!(
                "the value stored at {key} is not a valid GameRuntime ({}); re-apply the game \
                 or delete the key with etcdctl",
                one_line(&message)
            )),
            DocumentError::Store(e) => self.store_error(e, doing),
        }
    }

    pub fn history_error(&self, error: HistoryError, doing: &str) -> CliError {
        match error {
            HistoryError::Store(e) => self.store_error(e, doing),
            HistoryError::Corrupt { key, message } => CliError::internal(format!(
                "history entry {key} is unreadable ({}); report it, or delete the entry with \
                 etcdctl",
                one_line(&message)
            )),
            other => CliError::internal(format!("{doing}: {other}")),
        }
    }

    pub fn not_found(&self, name: &str) -> CliError {
        CliError::NotFound {
            name: name.to_owned(),
            prefix: self.keys.prefix().to_owned(),
        }
    }

    /// The document (without status), if it exists.
    pub async fn get(&self, name: &str) -> Result<Option<GameRuntime>, CliError> {
        check_name(name)?;
        self.docs
            .get(name)
            .await
            .map_err(|e| self.doc_error(e, &format!("reading gameruntime/{name}")))
    }

    /// The document (without status), or a not-found error.
    pub async fn require(&self, name: &str) -> Result<GameRuntime, CliError> {
        self.get(name).await?.ok_or_else(|| self.not_found(name))
    }

    /// The status the controller last wrote; an unreadable one is warned about and skipped.
    pub async fn status(&self, name: &str) -> Result<Option<GameRuntimeStatus>, CliError> {
        check_name(name)?;
        match self.docs.get_status(name).await {
            Ok(status) => Ok(status),
            Err(DocumentError::Corrupt { key, message }) => {
                warn(&format!(
                    "ignoring the unreadable status at {key}: {message}"
                ));
                Ok(None)
            }
            Err(e) => Err(self.doc_error(e, &format!("reading the status of gameruntime/{name}"))),
        }
    }

    /// The document with its status merged in.
    pub async fn get_with_status(&self, name: &str) -> Result<Option<GameRuntime>, CliError> {
        let Some(mut doc) = self.get(name).await? else {
            return Ok(None);
        };
        doc.status = self.status(name).await?;
        Ok(Some(doc))
    }

    pub async fn create(&self, doc: &GameRuntime) -> Result<GameRuntime, DocumentError> {
        self.docs.create(doc).await
    }

    pub async fn update(
        &self,
        doc: &GameRuntime,
        expected: Revision,
    ) -> Result<GameRuntime, DocumentError> {
        self.docs.update(doc, expected).await
    }

    pub async fn delete(&self, name: &str) -> Result<(), CliError> {
        check_name(name)?;
        self.docs
            .delete(name, None)
            .await
            .map_err(|e| self.doc_error(e, &format!("deleting gameruntime/{name}")))
    }

    /// The newest `limit` history entries of a game, newest first.
    pub async fn history(&self, name: &str, limit: usize) -> Result<Vec<HistoryEntry>, CliError> {
        check_name(name)?;
        self.history
            .recent(name, limit)
            .await
            .map_err(|e| self.history_error(e, &format!("reading the history of {name}")))
    }

    /// Reads every key under each prefix at one revision (the first listing's).
    pub async fn list_at_one_revision(
        &self,
        prefixes: &[String],
    ) -> Result<(Vec<Listing>, Revision), CliError> {
        let mut listings = Vec::with_capacity(prefixes.len());
        let mut revision = None;
        for prefix in prefixes {
            let listing = self
                .store
                .list(prefix, revision)
                .await
                .map_err(|e| self.store_error(e, &format!("listing {prefix}")))?;
            revision.get_or_insert(listing.revision);
            listings.push(listing);
        }
        Ok((listings, revision.unwrap_or_default()))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, CliError> {
        self.store
            .watch(prefix, from)
            .await
            .map_err(|e| self.store_error(e, &format!("watching {prefix}")))
    }

    /// Decodes a document read from under the documents prefix.
    pub fn decode(&self, kv: &KeyValue) -> Result<GameRuntime, CliError> {
        self.docs
            .decode(kv)
            .map_err(|e| self.doc_error(e, "decoding"))
    }

    /// Decodes a status; an unreadable one is warned about and skipped.
    pub fn decode_status(&self, kv: &KeyValue) -> Option<GameRuntimeStatus> {
        match decode_status(kv) {
            Ok(status) => Some(status),
            Err(e) => {
                warn(&format!("ignoring an unreadable status: {e}"));
                None
            }
        }
    }
}

fn map_store_error(endpoints: &str, timeout: Duration, error: StoreError, doing: &str) -> CliError {
    let doing = doing.to_owned();
    match error {
        StoreError::Unavailable { message, .. } => CliError::Unavailable {
            endpoints: endpoints.to_owned(),
            doing,
            detail: one_line(&message),
            outcome_unknown: false,
        },
        StoreError::Refused { .. } => CliError::Unavailable {
            endpoints: endpoints.to_owned(),
            doing,
            detail: "connection refused".into(),
            outcome_unknown: false,
        },
        StoreError::TlsRequired { endpoint, address } => CliError::usage(format!(
            "etcd at {endpoint} requires TLS (the endpoint answered a TLS handshake); use \
             https://{address} with --etcd-ca-file (RTM_ETCD_CA_FILE) naming the CA that signed \
             etcd's certificate"
        )),
        StoreError::CertificateRefused { endpoints, why } => CliError::Credentials {
            message: format!(
                "etcd at {endpoints} refused the client certificate (or none was given; {why}) \
                 while {doing}; pass --etcd-cert-file and --etcd-key-file (RTM_ETCD_CERT_FILE, \
                 RTM_ETCD_KEY_FILE) with a certificate signed by the CA etcd trusts"
            ),
        },
        StoreError::AuthenticationFailed { endpoints } => CliError::Credentials {
            message: format!(
                "etcd at {endpoints} refused the user name or password (authentication failed) \
                 while {doing}; check --etcd-user / RTM_ETCD_USER and --etcd-password / \
                 RTM_ETCD_PASSWORD"
            ),
        },
        StoreError::Timeout { .. } => CliError::Unavailable {
            endpoints: endpoints.to_owned(),
            detail: format!(
                "no answer within {} (--etcd-timeout)",
                humantime::format_duration(timeout)
            ),
            outcome_unknown: doing.starts_with("writing") || doing.starts_with("deleting"),
            doing,
        },
        StoreError::Compacted { .. } => CliError::Unavailable {
            endpoints: endpoints.to_owned(),
            doing,
            detail: "the revision was compacted meanwhile; run the command again".into(),
            outcome_unknown: false,
        },
        StoreError::PermissionDenied { message } => CliError::PermissionDenied {
            endpoints: endpoints.to_owned(),
            doing,
            detail: one_line(&message),
        },
        StoreError::Config { message } => CliError::usage(format!(
            "invalid etcd connection settings: {}; fix the flags, RTM_* variables or the context",
            one_line(&message)
        )),
        StoreError::Conflict { key } => CliError::Conflict {
            message: format!("{key} was changed concurrently while {doing}; try again"),
        },
        other @ (StoreError::LeaseNotFound { .. } | StoreError::Rejected { .. }) => {
            CliError::internal(format!(
                "etcd at {endpoints} failed {doing}: {}",
                one_line(&other.to_string())
            ))
        }
    }
}

/// What a [`MultiWatch`] yields.
#[derive(Debug)]
pub enum WatchItem {
    /// Changes after the last listing or batch.
    Batch(WatchBatch),
    /// The watch broke and was restarted after a fresh listing of every prefix (in the
    /// order given): the caller compares it with what it knew.
    Relisted(Vec<Listing>),
}

/// A watch over several prefixes from one listing revision, relisting when it breaks
/// (compaction, a lost connection) so nothing is missed.
pub struct MultiWatch<'s> {
    session: &'s Session,
    prefixes: Vec<String>,
    streams: SelectAll<WatchStream>,
}

impl std::fmt::Debug for MultiWatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiWatch")
            .field("prefixes", &self.prefixes)
            .finish_non_exhaustive()
    }
}

impl<'s> MultiWatch<'s> {
    /// Lists every prefix at one revision and watches them from the next one.
    pub async fn start(
        session: &'s Session,
        prefixes: Vec<String>,
    ) -> Result<(MultiWatch<'s>, Vec<Listing>, Revision), CliError> {
        let mut watch = MultiWatch {
            session,
            prefixes,
            streams: SelectAll::new(),
        };
        let (listings, revision) = watch.relist().await?;
        Ok((watch, listings, revision))
    }

    async fn relist(&mut self) -> Result<(Vec<Listing>, Revision), CliError> {
        let (listings, revision) = self.session.list_at_one_revision(&self.prefixes).await?;
        let mut streams = SelectAll::new();
        for prefix in &self.prefixes {
            streams.push(self.session.watch(prefix, revision + 1).await?);
        }
        self.streams = streams;
        Ok((listings, revision))
    }

    /// The next change, or a fresh listing after the watch broke. An error means etcd stayed
    /// away for several attempts.
    pub async fn next(&mut self) -> Result<WatchItem, CliError> {
        match self.streams.next().await {
            Some(Ok(batch)) => Ok(WatchItem::Batch(batch)),
            Some(Err(StoreError::Compacted { .. })) => {
                // Compaction: the data is there, only the old revisions are gone.
                let (listings, _) = self.relist().await?;
                Ok(WatchItem::Relisted(listings))
            }
            _ => {
                let mut pause = RESYNC_BACKOFF;
                let mut attempt = 1;
                loop {
                    tokio::time::sleep(pause).await;
                    match self.relist().await {
                        Ok((listings, _)) => return Ok(WatchItem::Relisted(listings)),
                        Err(e) if attempt >= RESYNC_ATTEMPTS => return Err(e),
                        Err(_) => {
                            attempt += 1;
                            pause *= 2;
                        }
                    }
                }
            }
        }
    }
}
