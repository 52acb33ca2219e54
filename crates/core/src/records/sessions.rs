//! A game's session record (`sessions/<game>`): reading it, and allocating and releasing
//! a game atomically — the library call a matchmaker written in Rust uses (one in another
//! language makes the same etcd transaction; the README shows it with `etcdctl txn`).
//!
//! Allocation is one transaction that holds only if, at one revision:
//!
//! - the status record is the one read, and it says Ready (so the game serves),
//! - the session record is the one read, and it is absent or Idle (so no other match
//!   took it),
//! - the game's lease key is absent (so no operation is under way: an operation the
//!   controller began before the allocation reads the session under its lease and,
//!   for a voluntary disruption, waits).
//!
//! Release writes an Idle record (kept, so the history can say who ended the session and
//! when); deleting the key also releases. A record that does not decode (edited by hand)
//! reads as Allocated: a forged or garbled session may delay a voluntary disruption,
//! never cause one.

use std::sync::Arc;
use std::time::Duration;

use super::Versioned;
use crate::error_code::ErrorCode;
use crate::model::validate::validate_name;
use crate::model::{ConditionStatus, GameRuntimeStatus, READY, Session, SessionState, Timestamp};
use crate::store::{Compare, KeyValue, Keys, Revision, Store, StoreError, Txn};

/// A session record as read (`revision: None`: there is none, and the game is Idle).
pub type SessionRecord = Versioned<Option<Session>>;

/// The longest `ref` of a session: a DNS name's length, room for any match id.
pub const MAX_REF_LENGTH: usize = 253;

/// How long [`Sessions::allocate`] retries while an operation holds the game's lease.
const BUSY_PATIENCE: Duration = Duration::from_secs(5);

/// Pause between two tries while the lease is held.
const BUSY_RETRY: Duration = Duration::from_millis(100);

/// Why a session call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// The game name is not a DNS-1123 label, or the ref is unusable.
    #[error("{0}")]
    Invalid(String),
    /// There is no such game.
    #[error("gameruntime/{game} not found")]
    NotFound {
        /// The game.
        game: String,
    },
    /// The game is not Ready: no match should be sent to it.
    #[error("gameruntime/{game} is not Ready ({why}); allocate it once it is")]
    NotReady {
        /// The game.
        game: String,
        /// What its status says instead.
        why: String,
    },
    /// Another session holds the game.
    #[error("gameruntime/{game} is already allocated{}", held_by(.reference))]
    AlreadyAllocated {
        /// The game.
        game: String,
        /// The ref of the session that holds it.
        reference: Option<String>,
    },
    /// A release named a session other than the one that holds the game.
    #[error(
        "gameruntime/{game} is allocated{}, not to {expected:?}; nothing was released",
        held_by(.reference)
    )]
    OtherSession {
        /// The game.
        game: String,
        /// The ref of the session that holds it.
        reference: Option<String>,
        /// The ref the release named.
        expected: String,
    },
    /// An operation kept the game's lease for longer than the call waits.
    #[error(
        "gameruntime/{game} is in the middle of an operation (its lease is held); try again in \
         a moment"
    )]
    Busy {
        /// The game.
        game: String,
    },
    /// etcd failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn held_by(reference: &Option<String>) -> String {
    match reference {
        Some(reference) => format!(" (ref {reference:?})"),
        None => String::new(),
    }
}

impl SessionError {
    /// The stable code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            SessionError::Invalid(_) => ErrorCode::InvalidRequest,
            SessionError::NotFound { .. } => ErrorCode::NotFound,
            SessionError::NotReady { .. } => ErrorCode::NotReady,
            SessionError::AlreadyAllocated { .. }
            | SessionError::OtherSession { .. }
            | SessionError::Busy { .. } => ErrorCode::Conflict,
            SessionError::Store(error) => error.code(),
        }
    }
}

/// Who asks, for the record and the history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionRequest {
    /// The match or request id (`--ref`), recorded with the session.
    pub reference: Option<String>,
    /// `admin_cli` for rtctl; `api` (the default) for a matchmaker.
    pub source: Option<String>,
    /// For a release: end the session only if it holds this ref.
    pub expected: Option<String>,
}

/// What a release found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// The session ended; the Idle record now stored.
    Ended(Versioned<Session>),
    /// The game was Idle already (or has no session record): nothing was written.
    AlreadyIdle,
}

/// The `source` of the Allocated session a record that does not decode reads as.
pub const UNREADABLE: &str = "unreadable";

/// The `source` of the Idle session the controller records when a session record it had
/// seen Allocated was deleted (deleting the key releases the game).
pub const DELETED: &str = "deleted";

/// Decodes a stored session. One that does not decode reads as an Allocated session with
/// no ref (source [`UNREADABLE`], always the same value, so that reading it again is no
/// change), so that it holds voluntary disruptions back rather than let them through.
pub fn decode(kv: &KeyValue) -> Session {
    serde_json::from_slice(&kv.value).unwrap_or_else(|_| Session {
        state: SessionState::Allocated,
        reference: None,
        since: Timestamp::from_unix_seconds(0),
        container_id: None,
        source: Some(UNREADABLE.to_owned()),
    })
}

/// Whether the stored bytes decode (a record garbled by hand does not).
pub fn is_readable(kv: &KeyValue) -> bool {
    serde_json::from_slice::<Session>(&kv.value).is_ok()
}

/// The stored form of a session: compact JSON.
pub fn encode(session: &Session) -> Vec<u8> {
    serde_json::to_vec(session).unwrap_or_default()
}

/// The record read from `kv` (none: Idle).
pub fn from_kv(kv: Option<&KeyValue>) -> SessionRecord {
    match kv {
        Some(kv) => Versioned::new(Some(decode(kv)), kv.mod_revision),
        None => Versioned {
            value: None,
            revision: None,
        },
    }
}

/// Whether a session ref can be stored: at most [`MAX_REF_LENGTH`] printable characters.
pub fn validate_ref(reference: &str) -> Result<(), String> {
    if reference.is_empty() || reference.len() > MAX_REF_LENGTH {
        return Err(format!(
            "a session ref must be 1 to {MAX_REF_LENGTH} characters, got {}",
            reference.len()
        ));
    }
    if reference.chars().any(char::is_control) {
        return Err("a session ref must not hold control characters".to_owned());
    }
    Ok(())
}

/// Why a status is not Ready, or `None` when it is.
pub fn not_ready(status: &GameRuntimeStatus) -> Option<String> {
    match status.conditions.iter().find(|c| c.type_ == READY) {
        Some(c) if c.status == ConditionStatus::True => None,
        Some(c) if !c.message.is_empty() => Some(format!("{}: {}", c.reason, c.message)),
        Some(c) => Some(format!("phase {}, reason {}", status.phase, c.reason)),
        None => Some(format!("phase {}", status.phase)),
    }
}

/// Reads and writes session records.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Arc<dyn Store>,
    keys: Keys,
}

impl Sessions {
    /// The session records under `keys` in `store`.
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys }
    }

    /// The game's session record.
    pub async fn get(&self, game: &str) -> Result<SessionRecord, SessionError> {
        validate_name(game).map_err(SessionError::Invalid)?;
        let kv = self.store.get(&self.keys.session(game)).await?;
        Ok(from_kv(kv.as_ref()))
    }

    /// Every session record, by game, at one revision.
    pub async fn list(
        &self,
    ) -> Result<(Vec<(String, Versioned<Session>)>, Revision), SessionError> {
        let collection = self.keys.sessions();
        let listing = self.store.list(&collection, None).await?;
        let sessions = listing
            .items
            .iter()
            .filter_map(|kv| {
                let game = self.keys.name_of(&collection, &kv.key)?;
                Some((game.to_owned(), Versioned::new(decode(kv), kv.mod_revision)))
            })
            .collect();
        Ok((sessions, listing.revision))
    }

    /// Allocates the game to a session, atomically (see the module's documentation).
    pub async fn allocate(
        &self,
        game: &str,
        request: &SessionRequest,
    ) -> Result<Versioned<Session>, SessionError> {
        validate_name(game).map_err(SessionError::Invalid)?;
        if let Some(reference) = &request.reference {
            validate_ref(reference).map_err(SessionError::Invalid)?;
        }
        let deadline = tokio::time::Instant::now() + BUSY_PATIENCE;
        loop {
            match self.try_allocate(game, request).await? {
                Some(allocated) => return Ok(allocated),
                None if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                None => {
                    return Err(SessionError::Busy {
                        game: game.to_owned(),
                    });
                }
            }
        }
    }

    /// One try: `Ok(None)` when the lease was held or a record changed in between.
    async fn try_allocate(
        &self,
        game: &str,
        request: &SessionRequest,
    ) -> Result<Option<Versioned<Session>>, SessionError> {
        let keys = &self.keys;
        let missing = || SessionError::NotFound {
            game: game.to_owned(),
        };
        if self.store.get(&keys.gameruntime(game)).await?.is_none() {
            return Err(missing());
        }
        let session = self.store.get(&keys.session(game)).await?;
        let current = session.as_ref().map(decode);
        if let Some(current) = current.as_ref().filter(|s| s.is_allocated()) {
            return Err(SessionError::AlreadyAllocated {
                game: game.to_owned(),
                reference: current.reference.clone(),
            });
        }
        let status_kv = self.store.get(&keys.status(game)).await?;
        let Some(status_kv) = status_kv else {
            return Err(SessionError::NotReady {
                game: game.to_owned(),
                why: "the controller has not reported on it yet".to_owned(),
            });
        };
        let status = super::status::decode(&status_kv).map_err(|e| SessionError::NotReady {
            game: game.to_owned(),
            why: e.to_string(),
        })?;
        if let Some(why) = not_ready(&status) {
            return Err(SessionError::NotReady {
                game: game.to_owned(),
                why,
            });
        }
        let allocated = Session {
            state: SessionState::Allocated,
            reference: request.reference.clone(),
            since: Timestamp::now(),
            container_id: status.container_id.clone(),
            source: Some(request.source.clone().unwrap_or_else(|| "api".to_owned())),
        };
        let unchanged_session = match &session {
            Some(kv) => Compare::ModRevision {
                key: kv.key.clone(),
                revision: kv.mod_revision,
            },
            None => Compare::Absent {
                key: keys.session(game),
            },
        };
        let txn = Txn::new()
            .when(unchanged_session)
            .when(Compare::ModRevision {
                key: status_kv.key.clone(),
                revision: status_kv.mod_revision,
            })
            .when(Compare::Absent {
                key: keys.lease(game),
            })
            .put(keys.session(game), encode(&allocated));
        let outcome = self.store.txn(txn).await?;
        Ok(outcome
            .succeeded
            .then(|| Versioned::new(allocated, outcome.revision)))
    }

    /// Ends the game's session (writes an Idle record); an Idle game is left as it is.
    pub async fn release(
        &self,
        game: &str,
        request: &SessionRequest,
    ) -> Result<Released, SessionError> {
        validate_name(game).map_err(SessionError::Invalid)?;
        if let Some(reference) = &request.reference {
            validate_ref(reference).map_err(SessionError::Invalid)?;
        }
        let key = self.keys.session(game);
        loop {
            let Some(kv) = self.store.get(&key).await? else {
                return Ok(Released::AlreadyIdle);
            };
            let current = decode(&kv);
            if !current.is_allocated() {
                return Ok(Released::AlreadyIdle);
            }
            if let Some(expected) = &request.expected
                && current.reference.as_ref() != Some(expected)
            {
                return Err(SessionError::OtherSession {
                    game: game.to_owned(),
                    reference: current.reference,
                    expected: expected.clone(),
                });
            }
            let idle = Session {
                state: SessionState::Idle,
                reference: request.reference.clone().or(current.reference),
                since: Timestamp::now(),
                container_id: current.container_id,
                source: Some(request.source.clone().unwrap_or_else(|| "api".to_owned())),
            };
            let txn = Txn::new()
                .when(Compare::ModRevision {
                    key: key.clone(),
                    revision: kv.mod_revision,
                })
                .put(key.clone(), encode(&idle));
            let outcome = self.store.txn(txn).await?;
            if outcome.succeeded {
                return Ok(Released::Ended(Versioned::new(idle, outcome.revision)));
            }
            // Changed in between (another release, a new allocation): look again.
        }
    }
}
