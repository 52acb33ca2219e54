//! The desired-state store: a small key-value interface with revisions,
//! guarded transactions, prefix watches and leases — what rtmanager needs
//! from etcd, in the project's own types.
//!
//! [`etcd::EtcdStore`] is the production implementation and the only code
//! that imports `etcd_client`; [`memory::MemoryStore`] is its in-memory twin
//! for tests (feature `testing`). [`keys::Keys`] owns the key layout; the
//! records stored under it have their homes in [`crate::records`].

pub mod etcd;
pub mod keys;
#[cfg(any(test, feature = "testing"))]
pub mod memory;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error_code::ErrorCode;

pub use keys::Keys;

/// An etcd revision: the store-wide logical clock.
pub type Revision = i64;

/// An etcd lease id.
pub type LeaseId = i64;

/// One key with its value and the revisions etcd tracks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, prefix included.
    pub key: String,
    /// The stored bytes (YAML or JSON, as the record's home writes them).
    pub value: Vec<u8>,
    /// Revision of the write that created the key (it changes when the key
    /// is deleted and created again).
    pub create_revision: Revision,
    /// Revision of the last write to the key: the optimistic-concurrency
    /// token (`metadata.resourceVersion`).
    pub mod_revision: Revision,
    /// Number of writes since the key was created (`metadata.generation`).
    pub version: i64,
    /// The lease the key is attached to, 0 when none.
    pub lease: LeaseId,
}

/// The keys under a prefix, read at one consistent revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The keys, in key order.
    pub items: Vec<KeyValue>,
    /// The store revision the listing was read at: watch from `revision + 1`
    /// to miss nothing.
    pub revision: Revision,
}

/// A condition a transaction checks before it applies its mutations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist (a create-only write).
    Absent {
        /// The key checked.
        key: String,
    },
    /// The key exists and was last written at `revision`.
    ModRevision {
        /// The key checked.
        key: String,
        /// Its expected last write.
        revision: Revision,
    },
    /// The key exists and was created at `revision` (a lease fence: the key
    /// was not deleted and re-created since).
    CreateRevision {
        /// The key checked.
        key: String,
        /// Its expected creation.
        revision: Revision,
    },
    /// The key exists and holds exactly `value`.
    Value {
        /// The key checked.
        key: String,
        /// The bytes it must hold.
        value: Vec<u8>,
    },
    /// No key starts with `prefix` (an empty log, say).
    PrefixEmpty {
        /// The prefix checked.
        prefix: String,
    },
}

impl Compare {
    /// The key (or prefix) the comparison looks at.
    pub fn key(&self) -> &str {
        match self {
            Compare::Absent { key }
            | Compare::ModRevision { key, .. }
            | Compare::CreateRevision { key, .. }
            | Compare::Value { key, .. }
            | Compare::PrefixEmpty { prefix: key } => key,
        }
    }
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Writes `value` at `key`, attached to `lease` if given (the key then
    /// goes when the lease does).
    Put {
        /// The key written.
        key: String,
        /// The bytes written.
        value: Vec<u8>,
        /// The lease the key is attached to, if any.
        lease: Option<LeaseId>,
    },
    /// Deletes one key (nothing when it is absent).
    Delete {
        /// The key deleted.
        key: String,
    },
    /// Deletes every key that starts with `prefix`.
    DeletePrefix {
        /// The prefix whose keys go.
        prefix: String,
    },
    /// Deletes every key in `[from, to)`.
    DeleteRange {
        /// The first key deleted.
        from: String,
        /// The end of the range, not deleted itself.
        to: String,
    },
}

/// All-or-nothing: when every comparison holds, every mutation applies at
/// one revision; otherwise nothing does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// The comparisons that must all hold.
    pub when: Vec<Compare>,
    /// The writes applied when they do, in order.
    pub then: Vec<Mutation>,
}

impl Txn {
    /// A transaction with no comparison and no write yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a comparison that must hold.
    pub fn when(mut self, compare: Compare) -> Self {
        self.when.push(compare);
        self
    }

    /// Writes `value` at `key`.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.then.push(Mutation::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        });
        self
    }

    /// Writes `value` at `key`, attached to `lease`.
    pub fn put_with_lease(
        mut self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Self {
        self.then.push(Mutation::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        });
        self
    }

    /// Deletes `key`.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.then.push(Mutation::Delete { key: key.into() });
        self
    }

    /// Deletes every key under `prefix`.
    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.then.push(Mutation::DeletePrefix {
            prefix: prefix.into(),
        });
        self
    }

    /// Deletes every key in `[from, to)`.
    pub fn delete_range(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.then.push(Mutation::DeleteRange {
            from: from.into(),
            to: to.into(),
        });
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every comparison held (and so every mutation applied).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was written; its new value and revisions.
    Put(KeyValue),
    /// The key was deleted.
    Delete {
        /// The key deleted.
        key: String,
        /// The revision of the deletion.
        mod_revision: Revision,
    },
}

impl WatchEvent {
    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn mod_revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// The changes of one or more revisions, in revision order.
pub type WatchBatch = Vec<WatchEvent>;

/// A prefix watch. It yields batches in revision order; an `Err` is the last
/// item (compaction, a broken connection): the caller relists and watches
/// again from the listing's revision + 1.
pub type WatchStream = BoxStream<'static, Result<WatchBatch, StoreError>>;

/// A granted etcd lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease's id, for keep-alives, revocation and [`Txn::put_with_lease`].
    pub id: LeaseId,
    /// The time to live etcd granted (it may differ from the one asked for).
    pub ttl: Duration,
}

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The connection failed or broke for another reason than those below.
    #[error(
        "etcd at {endpoints} is unreachable ({message}); check that etcd runs and that \
         RTM_ETCD_ENDPOINTS points at it"
    )]
    Unavailable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What the client said.
        message: String,
    },
    /// Nothing listens at the endpoint: etcd is down, or the address is wrong.
    #[error(
        "etcd at {endpoints} is not reachable (connection refused); check that etcd runs there \
         and that RTM_ETCD_ENDPOINTS points at it"
    )]
    Refused {
        /// The endpoints tried, comma-separated.
        endpoints: String,
    },
    /// An `http://` endpoint answered a TLS handshake: etcd serves TLS there.
    #[error(
        "etcd at {endpoint} requires TLS (the endpoint answered a TLS handshake); use \
         https://{address} and give the CA that signed etcd's certificate (RTM_ETCD_CA_FILE)"
    )]
    TlsRequired {
        /// The `http://` endpoint as configured.
        endpoint: String,
        /// Its host and port, for the `https://` form the message suggests.
        address: String,
    },
    /// etcd refused our client certificate, or wanted one and none was given
    /// (`--client-cert-auth`).
    #[error(
        "etcd at {endpoints} refused the client certificate (or none was given; {why}); give one \
         signed by the CA etcd trusts (RTM_ETCD_CERT_FILE and RTM_ETCD_KEY_FILE)"
    )]
    CertificateRefused {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The TLS alert or error, as the client reported it.
        why: String,
    },
    /// etcd's own authentication refused the user name or password.
    #[error(
        "etcd at {endpoints} refused the user name or password (authentication failed); check \
         RTM_ETCD_USER and RTM_ETCD_PASSWORD"
    )]
    AuthenticationFailed {
        /// The endpoints tried, comma-separated.
        endpoints: String,
    },
    /// No answer within the call's time bound: a write may or may not have
    /// been applied ([`StoreError::outcome_unknown`]).
    #[error(
        "etcd at {endpoints} did not answer {operation} within {}; the outcome is unknown",
        humantime::format_duration(*timeout)
    )]
    Timeout {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The call that timed out (`txn`, `list`, ...).
        operation: &'static str,
        /// The bound it exceeded.
        timeout: Duration,
    },
    /// A transaction's comparison failed: someone else wrote first.
    #[error("{key} was changed concurrently (stale resourceVersion or fence)")]
    Conflict {
        /// The key whose comparison failed.
        key: String,
    },
    /// A read or watch asked for history etcd no longer keeps.
    #[error("revision {requested} has been compacted (oldest kept: {compacted}); relist")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision etcd still has.
        compacted: Revision,
    },
    /// The lease expired or was revoked: whatever was attached to it is gone.
    #[error("etcd lease {lease:x} is gone (expired or revoked)")]
    LeaseNotFound {
        /// The lease asked for.
        lease: LeaseId,
    },
    /// etcd's authorization refused the operation (a role without the
    /// permission, say).
    #[error("etcd refused the credentials or the operation: {message}")]
    PermissionDenied {
        /// What etcd said.
        message: String,
    },
    /// The connection settings cannot work (an invalid endpoint URL, say).
    #[error("the etcd connection settings are invalid: {message}")]
    Config {
        /// What is wrong with them.
        message: String,
    },
    /// Any other refusal of the request by etcd or its client (too large,
    /// say): a bug or a limit, not a passing condition.
    #[error("etcd rejected {operation}: {message}")]
    Rejected {
        /// The call refused.
        operation: &'static str,
        /// What etcd said.
        message: String,
    },
}

impl StoreError {
    /// The stable error code this failure reports as.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Unavailable { .. }
            | StoreError::Refused { .. }
            | StoreError::Timeout { .. }
            | StoreError::Compacted { .. } => ErrorCode::ServiceUnavailable,
            StoreError::TlsRequired { .. } => ErrorCode::TlsRequired,
            StoreError::CertificateRefused { .. } | StoreError::AuthenticationFailed { .. } => {
                ErrorCode::PermissionDenied
            }
            StoreError::Conflict { .. } => ErrorCode::Conflict,
            StoreError::LeaseNotFound { .. } => ErrorCode::LeaseLost,
            StoreError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            StoreError::Config { .. } => ErrorCode::InvalidRequest,
            StoreError::Rejected { .. } => ErrorCode::Internal,
        }
    }

    /// True when the connection settings are wrong (TLS, the client certificate, the user
    /// name or password): waiting for etcd will not help, the settings must change.
    pub(crate) fn is_misconfiguration(&self) -> bool {
        matches!(
            self,
            StoreError::TlsRequired { .. }
                | StoreError::CertificateRefused { .. }
                | StoreError::AuthenticationFailed { .. }
                | StoreError::Config { .. }
        )
    }

    /// True when a write may have been applied although the call failed:
    /// read back before deciding (etcd answers late, or not at all, after a
    /// leader change).
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Timeout { .. }
        )
    }
}

/// What rtmanager needs from etcd. Every method is one round trip (or one
/// stream); retries and their backoff belong to the callers, who know
/// whether a retry is safe.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Reads one key at the current revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Reads every key under `prefix` at one revision (`at`, or the latest).
    async fn list(&self, prefix: &str, at: Option<Revision>) -> Result<Listing, StoreError>;

    /// Reads up to `limit` keys under `prefix`, last key first (the newest
    /// entries of a log whose keys sort by sequence).
    async fn newest(&self, prefix: &str, limit: usize) -> Result<Vec<KeyValue>, StoreError>;

    /// Applies a guarded transaction.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;

    /// Watches every key under `prefix`, starting at revision `from`
    /// (inclusive). Watching from a compacted revision yields
    /// [`StoreError::Compacted`].
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError>;

    /// Grants a lease that expires `ttl` after its last keepalive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseGrant, StoreError>;

    /// Renews a lease once and returns the TTL it now has; a lease that is
    /// gone gives [`StoreError::LeaseNotFound`].
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    /// Revokes a lease, deleting every key attached to it. Revoking a lease
    /// that is already gone succeeds.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// The store's current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;

    /// Discards the history before `revision` (maintenance; tests use it
    /// to provoke compaction errors).
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// Up to `limit` keys under `prefix`, in key order from `from`
    /// (inclusive; a key under `prefix`) on, without their values: one page
    /// of a scan that may skip ahead (the history sweep jumps over each
    /// game's entries).
    async fn keys_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// Creates `key` only if it does not exist; returns the new revision.
    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let txn = Txn {
            when: vec![Compare::Absent {
                key: key.to_owned(),
            }],
            then: vec![Mutation::Put {
                key: key.to_owned(),
                value,
                lease,
            }],
        };
        guarded(self.txn(txn).await?, key)
    }

    /// Overwrites `key` only if it was last written at `expected`.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when(Compare::ModRevision {
                key: key.to_owned(),
                revision: expected,
            })
            .put(key, value);
        guarded(self.txn(txn).await?, key)
    }

    /// Deletes `key` only if it was last written at `expected`.
    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when(Compare::ModRevision {
                key: key.to_owned(),
                revision: expected,
            })
            .delete(key);
        guarded(self.txn(txn).await?, key)
    }
}

/// Turns a failed comparison into the typed conflict.
fn guarded(outcome: TxnOutcome, key: &str) -> Result<Revision, StoreError> {
    if outcome.succeeded {
        Ok(outcome.revision)
    } else {
        Err(StoreError::Conflict {
            key: key.to_owned(),
        })
    }
}
