//! rtctl's client of etcd, one per command: typed reads and writes through [`Documents`] and
//! [`History`], every store failure turned into a [`CliError`] that names the endpoint and the
//! object, and (in [`watch`]) a watch over several prefixes that reconnects when etcd goes away
//! and resumes where it was (relisting only when that revision was compacted).

mod watch;

use std::sync::Arc;
use std::time::Duration;

use super::context::Resolved;
use super::error::{CliError, one_line};
use super::output::warn;
use rtm_core::model::validate::validate_name;
use rtm_core::model::{GameRuntime, GameRuntimeStatus};
use rtm_core::records::Documents;
use rtm_core::records::budgets::{BudgetError, Budgets};
use rtm_core::records::documents::DocumentError;
use rtm_core::records::history::{DEFAULT_RETENTION, History, HistoryEntry, HistoryError};
use rtm_core::records::previous::{PreviousContainer, PreviousContainers, PreviousError};
use rtm_core::records::revisions::{RevisionError, Revisions};
use rtm_core::records::sessions::{SessionError, Sessions};
use rtm_core::records::status;
use rtm_core::store::etcd::EtcdStore;
use rtm_core::store::{KeyValue, Keys, Listing, Revision, Store, StoreError};

pub(crate) use self::watch::{Known, MultiWatch, WatchItem};

/// The connection to etcd one rtctl command works through, and the mapping of what goes
/// wrong there into messages for people.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    store: Arc<dyn Store>,
    docs: Documents,
    history: History,
    sessions: Sessions,
    budgets: Budgets,
    revisions: Revisions,
    keys: Keys,
    endpoints: String,
    timeout: Duration,
}

/// Checks a name from the command line before it becomes part of a key.
pub(crate) fn check_name(name: &str) -> Result<(), CliError> {
    validate_name(name).map_err(|message| {
        CliError::invalid(format!(
            "{message}; pass the game's metadata.name (see `rtctl get`)"
        ))
    })
}

impl Client {
    /// Connects (lazily: an unreachable etcd shows at the first call).
    pub(crate) async fn connect(resolved: &Resolved) -> Result<Client, CliError> {
        let endpoints = resolved.endpoints_text();
        let store = EtcdStore::connect(&resolved.etcd).await.map_err(|e| {
            map_store_error(&endpoints, resolved.etcd.request_timeout, e, "connecting")
        })?;
        Ok(Client::new(
            Arc::new(store),
            resolved.keys.clone(),
            endpoints,
            resolved.etcd.request_timeout,
        ))
    }

    pub(crate) fn new(
        store: Arc<dyn Store>,
        keys: Keys,
        endpoints: String,
        timeout: Duration,
    ) -> Client {
        Client {
            docs: Documents::new(store.clone(), keys.clone()),
            history: History::new(store.clone(), keys.clone(), DEFAULT_RETENTION),
            sessions: Sessions::new(store.clone(), keys.clone()),
            budgets: Budgets::new(store.clone(), keys.clone()),
            revisions: Revisions::new(store.clone(), keys.clone()),
            store,
            keys,
            endpoints,
            timeout,
        }
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn documents(&self) -> &Documents {
        &self.docs
    }

    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub(crate) fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    pub(crate) fn revisions(&self) -> &Revisions {
        &self.revisions
    }

    /// A session failure while `doing` something, for people.
    pub(crate) fn session_error(&self, error: SessionError, doing: &str) -> CliError {
        let message = error.to_string();
        match error {
            SessionError::Invalid(message) => CliError::invalid(message),
            SessionError::NotFound { game } => self.not_found(&game),
            SessionError::NotReady { game, .. } => CliError::NotReady {
                message: format!("{message} (not_ready); see `rtctl describe {game}`"),
            },
            SessionError::AlreadyAllocated { game, .. } => CliError::Conflict {
                message: format!(
                    "{message} (conflict); release it first with `rtctl release {game}`"
                ),
            },
            SessionError::OtherSession { .. } | SessionError::Busy { .. } => CliError::Conflict {
                message: format!("{message} (conflict)"),
            },
            SessionError::Store(e) => self.store_error(e, doing),
        }
    }

    /// A budget failure while `doing` something, for people.
    pub(crate) fn budget_error(&self, error: BudgetError, doing: &str) -> CliError {
        let message = error.to_string();
        match error {
            BudgetError::Invalid { .. } => {
                CliError::invalid(format!("{message}; fix it and try again"))
            }
            BudgetError::AlreadyExists { .. } | BudgetError::Conflict { .. } => {
                CliError::Conflict {
                    message: format!("{message}; run the command again"),
                }
            }
            BudgetError::NotFound { name } => CliError::NotFoundKind {
                kind: "gamedisruptionbudget",
                name,
                prefix: self.keys.prefix().to_owned(),
                list: "rtctl get budgets",
            },
            BudgetError::Corrupt { .. } => CliError::Corrupt {
                message: format!(
                    "{}; `rtctl apply -f FILE` cannot replace it, remove it with `rtctl delete \
                     budget NAME`",
                    one_line(&message)
                ),
            },
            BudgetError::Store(e) => self.store_error(e, doing),
        }
    }

    /// A failure reading kept revisions while `doing` something, for people.
    pub(crate) fn revision_error(&self, error: RevisionError, doing: &str) -> CliError {
        match error {
            RevisionError::Corrupt { key, message } => CliError::Corrupt {
                message: format!(
                    "the revision stored at {key} is not a valid GameRuntime ({}); delete it \
                     with etcdctl, or undo by applying the file you want",
                    one_line(&message)
                ),
            },
            RevisionError::Store(e) => self.store_error(e, doing),
        }
    }
    /// A store failure while `doing` something, for people.
    pub(crate) fn store_error(&self, error: StoreError, doing: &str) -> CliError {
        map_store_error(&self.endpoints, self.timeout, error, doing)
    }

    /// A document failure while `doing` something, for people.
    pub(crate) fn doc_error(&self, error: DocumentError, doing: &str) -> CliError {
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
            DocumentError::CorruptStatus(status::Corrupt { key, message }) => {
                CliError::internal(format!(
                    "the value stored at {key} is not a valid status record ({}); the controller \
                     rebuilds it from the game's container",
                    one_line(&message)
                ))
            }
            DocumentError::Store(e) => self.store_error(e, doing),
        }
    }

    /// The failure for an unreadable document at `key`: what it is and the two ways out.
    pub(crate) fn corrupt(&self, key: &str, reason: &str) -> CliError {
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

    pub(crate) fn history_error(&self, error: HistoryError, doing: &str) -> CliError {
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

    pub(crate) fn not_found(&self, name: &str) -> CliError {
        CliError::NotFound {
            name: name.to_owned(),
            prefix: self.keys.prefix().to_owned(),
        }
    }

    /// The document (without status), if it exists.
    pub(crate) async fn get(&self, name: &str) -> Result<Option<GameRuntime>, CliError> {
        check_name(name)?;
        self.docs
            .get(name)
            .await
            .map_err(|e| self.doc_error(e, &format!("reading gameruntime/{name}")))
    }

    /// The document (without status), or a not-found error.
    pub(crate) async fn require(&self, name: &str) -> Result<GameRuntime, CliError> {
        self.get(name).await?.ok_or_else(|| self.not_found(name))
    }

    /// The status the controller last wrote; an unreadable one is warned about and skipped.
    pub(crate) async fn status(&self, name: &str) -> Result<Option<GameRuntimeStatus>, CliError> {
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

    pub(crate) async fn create(&self, doc: &GameRuntime) -> Result<GameRuntime, DocumentError> {
        self.docs.create(doc).await
    }

    pub(crate) async fn update(
        &self,
        doc: &GameRuntime,
        expected: Revision,
    ) -> Result<GameRuntime, DocumentError> {
        self.docs.update(doc, expected).await
    }

    pub(crate) async fn delete(&self, name: &str) -> Result<(), CliError> {
        check_name(name)?;
        self.docs
            .delete(name, None)
            .await
            .map_err(|e| self.doc_error(e, &format!("deleting gameruntime/{name}")))
    }

    /// The newest `limit` history entries of a game, newest first.
    pub(crate) async fn history(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, CliError> {
        check_name(name)?;
        self.history
            .recent(name, limit)
            .await
            .map_err(|e| self.history_error(e, &format!("reading the history of {name}")))
    }

    /// Reads every key under each prefix at one revision (the first listing's).
    pub(crate) async fn list_at_one_revision(
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

    /// The kept output and end of the game's previous container, if one is kept.
    pub(crate) async fn previous(&self, name: &str) -> Result<Option<PreviousContainer>, CliError> {
        check_name(name)?;
        let doing = format!("reading the previous container of gameruntime/{name}");
        PreviousContainers::new(self.store.clone(), self.keys.clone())
            .read(name)
            .await
            .map_err(|error| match error {
                PreviousError::Corrupt { key, message } => CliError::Corrupt {
                    message: format!(
                        "the value stored at {key} is not a kept previous container ({}); \
                         only the controller writes it: delete it with etcdctl",
                        one_line(&message)
                    ),
                },
                PreviousError::Store(e) => self.store_error(e, &doing),
                other => CliError::internal(format!("{doing}: {other}")),
            })
    }

    /// [`Client::raw`] of an owned key (for reads run side by side).
    pub(crate) async fn raw_owned(&self, key: String) -> Result<Option<KeyValue>, CliError> {
        self.raw(&key).await
    }

    /// One key as stored, undecoded (`None`: absent).
    pub(crate) async fn raw(&self, key: &str) -> Result<Option<KeyValue>, CliError> {
        self.store
            .get(key)
            .await
            .map_err(|e| self.store_error(e, &format!("reading {key}")))
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
/// Decodes a status key; an unreadable one is warned about and skipped.
pub(crate) fn decode_status(kv: &KeyValue) -> Option<GameRuntimeStatus> {
    match status::decode(kv) {
        Ok(status) => Some(status),
        Err(e) => {
            warn(&format!("ignoring an unreadable status: {e}"));
            None
        }
    }
}
