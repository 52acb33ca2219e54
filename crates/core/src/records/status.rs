//! A game's status record (`status/<game>`): its one stored form, read as a
//! [`StatusRecord`] (the status with the revision it was read at), and
//! written only when it changed — so a converged game costs no etcd writes —
//! under the [`Fence`] of the game's lease.
//!
//! The record is a cache of what runs: one that does not decode (edited by
//! hand) is read as empty at its revision, with a warning naming its key,
//! and the next reconcile rebuilds it from the container.

use std::sync::Arc;

use tracing::warn;

use super::Versioned;
use super::lease::Fence;
use crate::error_code::ErrorCode;
use crate::model::GameRuntimeStatus;
use crate::store::{KeyValue, Keys, Revision, Store, StoreError, Txn};

/// A status record as read: the status, and the revision it was read at
/// (`None`: there was no record; its status is then the default, phase
/// Pending).
pub type StatusRecord = Versioned<GameRuntimeStatus>;

/// Why a status write failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StatusError {
    /// The writer's lease was gone when the write compared its fence.
    #[error("the lease of game {game} was lost; its status was not written")]
    LeaseLost {
        /// The game whose record was not written.
        game: String,
    },
    /// etcd failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StatusError {
    /// The stable code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            StatusError::LeaseLost { .. } => ErrorCode::LeaseLost,
            StatusError::Store(e) => e.code(),
        }
    }
}

/// A stored status record that does not decode (edited by hand).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the value stored at {key} is not a valid status record: {message}")]
pub struct Corrupt {
    /// Its key.
    pub key: String,
    /// What the decoder said.
    pub message: String,
}

/// Decodes a stored status.
pub fn decode(kv: &KeyValue) -> Result<GameRuntimeStatus, Corrupt> {
    serde_json::from_slice(&kv.value).map_err(|e| Corrupt {
        key: kv.key.clone(),
        message: e.to_string(),
    })
}

/// The stored form of a status (JSON: written often, read by machines).
pub fn encode(status: &GameRuntimeStatus) -> Vec<u8> {
    // Serializing plain data with string keys cannot fail.
    serde_json::to_vec(status).unwrap_or_default()
}

/// The record stored in `kv`, and whether it decoded. One that does not is
/// read as an empty record at its revision (so the rewrite compares it),
/// with a warning naming the key: a cache of what runs is rebuilt, never a
/// reason to stop reconciling the game.
pub fn from_kv(kv: &KeyValue) -> (StatusRecord, bool) {
    let (status, valid) = match decode(kv) {
        Ok(status) => (status, true),
        Err(error) => {
            warn!(key = %kv.key, %error, "a status record does not decode; rebuilding it from the container");
            (GameRuntimeStatus::default(), false)
        }
    };
    (Versioned::new(status, kv.mod_revision), valid)
}

/// Reads and writes status records.
#[derive(Debug, Clone)]
pub struct StatusStore {
    store: Arc<dyn Store>,
    keys: Keys,
}

impl StatusStore {
    /// Status records under `keys`, in `store`.
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys }
    }

    /// The current record ([`Versioned::absent`] when there is none).
    pub async fn read(&self, game: &str) -> Result<StatusRecord, StatusError> {
        let kv = self.store.get(&self.keys.status(game)).await?;
        Ok(kv
            .as_ref()
            .map_or_else(Versioned::absent, |kv| from_kv(kv).0))
    }

    /// The transaction that writes `next` (or, for `None`, deletes the
    /// record) while `fence` holds, for a caller that adds its own writes
    /// to it; it holds only the fence comparison when `next` changes
    /// nothing in `current` (read earlier under the same fence).
    pub fn txn(
        &self,
        fence: &Fence,
        game: &str,
        current: &StatusRecord,
        next: Option<&GameRuntimeStatus>,
    ) -> Txn {
        let key = self.keys.status(game);
        let txn = Txn::new().when(fence.compare());
        match next {
            None => txn.delete(key),
            Some(next) if *next == current.value && current.exists() => txn,
            Some(next) => txn.put(key, encode(next)),
        }
    }

    /// The transaction that writes `next` unconditionally: the caller
    /// guards it (a lease release compares the fence itself).
    pub fn put(&self, game: &str, next: &GameRuntimeStatus) -> Txn {
        Txn::new().put(self.keys.status(game), encode(next))
    }

    /// Writes `next` if it differs from `current`, while `fence` holds.
    /// Returns the record as it now is.
    pub async fn write(
        &self,
        fence: &Fence,
        game: &str,
        current: &StatusRecord,
        next: GameRuntimeStatus,
    ) -> Result<StatusRecord, StatusError> {
        let txn = self.txn(fence, game, current, Some(&next));
        if txn.then.is_empty() {
            return Ok(Versioned {
                value: next,
                revision: current.revision,
            });
        }
        let revision = self.commit(txn, game).await?;
        Ok(Versioned::new(next, revision))
    }

    /// Deletes the record (the game is gone), while `fence` holds.
    pub async fn clear(&self, fence: &Fence, game: &str) -> Result<(), StatusError> {
        let txn = self.txn(fence, game, &Versioned::absent(), None);
        self.commit(txn, game).await.map(|_| ())
    }

    async fn commit(&self, txn: Txn, game: &str) -> Result<Revision, StatusError> {
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Err(StatusError::LeaseLost {
                game: game.to_owned(),
            });
        }
        Ok(outcome.revision)
    }
}
