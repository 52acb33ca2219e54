//! One connection to etcd for one rtctl command: typed reads and writes through
//! [`Documents`] and [`History`], every store failure turned into a [`CliError`] that names
//! the endpoint and the object, and a watch over several prefixes that reconnects when etcd
//! goes away and resumes where it was (relisting only when that revision was compacted).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::SelectAll;

use super::context::Resolved;
use super::error::{CliError, one_line};
use super::output::{note, warn};
use rtm_core::model::validate::validate_name;
use rtm_core::model::{GameRuntime, GameRuntimeStatus};
use rtm_core::records::Documents;
use rtm_core::records::documents::DocumentError;
use rtm_core::records::history::{DEFAULT_RETENTION, History, HistoryEntry, HistoryError};
use rtm_core::records::status;
use rtm_core::store::etcd::EtcdStore;
use rtm_core::store::{
    KeyValue, Keys, Listing, Revision, Store, StoreError, WatchBatch, WatchEvent,
};

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
            DocumentError::Corrupt { key, message } => self.corrupt(&key, &message),
            DocumentError::CorruptStatus { key, message } => CliError::internal(format!(
                "the value stored at {key} is not a valid status record ({}); the controller \
                 rebuilds it from the game's container",
                one_line(&message)
            )),
            DocumentError::Store(e) => self.store_error(e, doing),
        }
    }

    /// The failure for an unreadable document at `key`: what it is and the two ways out.
    pub fn corrupt(&self, key: &str, reason: &str) -> CliError {
        let name = self
            .keys
            .name_of(&self.keys.gameruntimes(), key)
            .unwrap_or("NAME");
        CliError::Corrupt {
            message: format!(
                "gameruntime/{name} is invalid: the value stored at {key} is not a valid \
                 GameRuntime ({}); `rtctl apply --force -f FILE` replaces it, `rtctl delete \
                 {name}` removes it",
                one_line(reason)
            ),
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
        self.list_at(prefixes, None)
            .await
            .map_err(|e| self.store_error(e, &format!("listing {}", prefixes.join(", "))))
    }

    /// Reads every key under each prefix at revision `at` (or the current one).
    async fn list_at(
        &self,
        prefixes: &[String],
        at: Option<Revision>,
    ) -> Result<(Vec<Listing>, Revision), StoreError> {
        let mut listings = Vec::with_capacity(prefixes.len());
        let mut revision = at;
        for prefix in prefixes {
            let listing = self.store.list(prefix, revision).await?;
            revision.get_or_insert(listing.revision);
            listings.push(listing);
        }
        Ok((listings, revision.unwrap_or_default()))
    }

    /// One key as stored, undecoded (`None`: absent).
    pub async fn raw(&self, key: &str) -> Result<Option<KeyValue>, CliError> {
        self.store
            .get(key)
            .await
            .map_err(|e| self.store_error(e, &format!("reading {key}")))
    }

    /// Decodes a document read from under the documents prefix.
    pub fn decode(&self, kv: &KeyValue) -> Result<GameRuntime, CliError> {
        self.docs
            .decode(kv)
            .map_err(|e| self.doc_error(e, "decoding"))
    }

    /// Decodes a status; an unreadable one is warned about and skipped.
    pub fn decode_status(&self, kv: &KeyValue) -> Option<GameRuntimeStatus> {
        match status::decode(kv) {
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
                 while {doing}; check --etcd-user / RTM_ETCD_USER and the password \
                 (--etcd-password-file, RTM_ETCD_PASSWORD or the context's password)"
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
    /// The revisions the watch would resume from were compacted away, so it listed every
    /// prefix afresh (in the order given) and watches on from there: the caller compares the
    /// listing with what it knew.
    Relisted(Vec<Listing>),
}

/// A watch over several prefixes from one listing revision that rides out etcd going away:
/// when a stream breaks (a lost connection, etcd restarted) it says so on stderr and
/// reconnects with backoff, resuming each prefix just after the last revision it delivered,
/// so no change is lost and none is told twice; only when those revisions were compacted
/// meanwhile does it relist. It never gives up by itself: the caller's deadline or Ctrl-C
/// ends it.
pub struct MultiWatch<'s> {
    session: &'s Session,
    prefixes: Vec<String>,
    /// Per prefix, the revision delivered last (at first: the listing's).
    seen: Vec<Revision>,
    streams: SelectAll<TaggedStream>,
    /// Set while the streams are broken and not yet reopened (`true`: relist, the revisions
    /// to resume from are compacted). Kept here, not in a local, so that a caller that drops
    /// a pending [`MultiWatch::next`] (a `select!` with a timer) resumes the reconnecting.
    broken: Option<bool>,
    /// The pause before the next reconnect attempt.
    pause: Duration,
}

/// One prefix's stream, tagged with the prefix's index and ended by a `None` item, so the
/// end of a stream (which [`SelectAll`] would swallow) is seen as a break.
type TaggedStream =
    futures::stream::BoxStream<'static, (usize, Option<Result<WatchBatch, StoreError>>)>;

/// First pause before reconnecting a broken watch, doubled per failed attempt up to
/// [`RECONNECT_MAX`], each with up to as much jitter: a restarting etcd (a second or two)
/// is back at the second or third attempt, and a long outage costs one attempt every ~10 s.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(8);

impl std::fmt::Debug for MultiWatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiWatch")
            .field("prefixes", &self.prefixes)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl<'s> MultiWatch<'s> {
    /// Lists every prefix at one revision and watches them from the next one.
    pub async fn start(
        session: &'s Session,
        prefixes: Vec<String>,
    ) -> Result<(MultiWatch<'s>, Vec<Listing>, Revision), CliError> {
        MultiWatch::start_at(session, prefixes, None).await
    }

    /// Like [`MultiWatch::start`], but lists at revision `at` (when given and not compacted
    /// yet), so the watch then delivers every change made after `at`: a waiter that wrote at
    /// `at` sees every later revision of the keys it follows.
    pub async fn start_at(
        session: &'s Session,
        prefixes: Vec<String>,
        at: Option<Revision>,
    ) -> Result<(MultiWatch<'s>, Vec<Listing>, Revision), CliError> {
        let mut watch = MultiWatch {
            session,
            seen: vec![0; prefixes.len()],
            prefixes,
            streams: SelectAll::new(),
            broken: None,
            pause: RECONNECT_FIRST,
        };
        let listed = match session.list_at(&watch.prefixes, at).await {
            // Too old to list at: what happened since is lost; start from now.
            Err(StoreError::Compacted { .. }) if at.is_some() => {
                session.list_at(&watch.prefixes, None).await
            }
            other => other,
        };
        let (listings, revision) = listed.map_err(|e| {
            session.store_error(e, &format!("listing {}", watch.prefixes.join(", ")))
        })?;
        watch.seen = vec![revision; watch.prefixes.len()];
        if let Err(e) = watch.connect().await {
            return Err(session.store_error(e, &format!("watching {}", watch.prefixes.join(", "))));
        }
        Ok((watch, listings, revision))
    }

    /// (Re)opens every prefix's stream just after what it delivered last.
    async fn connect(&mut self) -> Result<(), StoreError> {
        let mut streams = SelectAll::new();
        for (i, prefix) in self.prefixes.iter().enumerate() {
            let stream = self.session.store.watch(prefix, self.seen[i] + 1).await?;
            let tagged: TaggedStream = stream
                .map(move |item| (i, Some(item)))
                .chain(futures::stream::once(async move { (i, None) }))
                .boxed();
            streams.push(tagged);
        }
        self.streams = streams;
        Ok(())
    }

    /// Lists every prefix afresh and watches on from there.
    async fn relist(&mut self) -> Result<Vec<Listing>, StoreError> {
        let (listings, revision) = self.session.list_at(&self.prefixes, None).await?;
        self.seen = vec![revision; self.prefixes.len()];
        self.connect().await?;
        Ok(listings)
    }

    /// The next change, or a fresh listing after the old revisions were compacted. Waits
    /// through etcd outages (with a notice on stderr when one starts and when it ends).
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<WatchItem, CliError> {
        if self.broken.is_none() {
            let (why, compacted) = match self.streams.next().await {
                Some((i, Some(Ok(batch)))) => {
                    if let Some(last) = batch.iter().map(WatchEvent::mod_revision).max() {
                        self.seen[i] = self.seen[i].max(last);
                    }
                    return Ok(WatchItem::Batch(batch));
                }
                Some((_, Some(Err(StoreError::Compacted { .. })))) => (
                    "the revisions to resume from were compacted".to_owned(),
                    true,
                ),
                Some((_, Some(Err(e)))) => (one_line(&e.to_string()), false),
                Some((_, None)) | None => ("the stream ended".to_owned(), false),
            };
            warn(&format!("watch interrupted: {why}; reconnecting"));
            self.broken = Some(compacted);
            self.pause = RECONNECT_FIRST;
        }
        loop {
            let attempt = if self.broken == Some(true) {
                self.relist().await.map(Some)
            } else {
                self.connect().await.map(|()| None)
            };
            match attempt {
                Ok(listings) => {
                    self.broken = None;
                    note(&format!(
                        "watch resumed{}",
                        if listings.is_some() {
                            " after relisting (older revisions were compacted)"
                        } else {
                            ""
                        }
                    ));
                    return Ok(match listings {
                        Some(listings) => WatchItem::Relisted(listings),
                        // The new streams deliver what happened meanwhile.
                        None => WatchItem::Batch(Vec::new()),
                    });
                }
                Err(StoreError::Compacted { .. }) => self.broken = Some(true),
                Err(StoreError::PermissionDenied { message }) => {
                    return Err(self
                        .session
                        .store_error(StoreError::PermissionDenied { message }, "watching"));
                }
                Err(_) => {}
            }
            let jitter = self.pause.mul_f64(rand::random::<f64>());
            tokio::time::sleep(self.pause + jitter).await;
            self.pause = (self.pause * 2).min(RECONNECT_MAX);
        }
    }
}
