//! A game's status record (`status/<game>`): read, changed under the game's
//! lease fence, and written only when it actually changed, so a converged
//! game costs no etcd writes.

use std::sync::Arc;

use crate::error_code::ErrorCode;
use crate::lease::{Fence, GameLease, LeaseError};
use crate::model::GameRuntimeStatus;
use crate::store::documents::{decode_status, encode_status};
use crate::store::{KeyValue, Keys, Store, StoreError, Txn};

/// Why a status write failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StatusError {
    #[error("the lease of game {game} was lost; its status was not written")]
    LeaseLost { game: String },
    #[error("status of game {game} is unreadable: {message}")]
    Corrupt { game: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StatusError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StatusError::LeaseLost { .. } => ErrorCode::LeaseLost,
            StatusError::Corrupt { .. } => ErrorCode::Internal,
            StatusError::Store(e) => e.code(),
        }
    }
}

/// Reads and writes status records.
#[derive(Debug, Clone)]
pub struct StatusStore {
    store: Arc<dyn Store>,
    keys: Keys,
}

/// A status as read, with the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredStatus {
    pub status: GameRuntimeStatus,
    /// 0 when there was no record.
    pub mod_revision: i64,
}

impl StoredStatus {
    /// No record.
    pub fn absent() -> Self {
        StoredStatus {
            status: GameRuntimeStatus::default(),
            mod_revision: 0,
        }
    }
}

impl StatusStore {
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys }
    }

    /// The current record, or a default one (phase Pending) when none.
    pub async fn read(&self, game: &str) -> Result<StoredStatus, StatusError> {
        let kv = self.store.get(&self.keys.status(game)).await?;
        self.decode(game, kv.as_ref())
    }

    fn decode(&self, game: &str, kv: Option<&KeyValue>) -> Result<StoredStatus, StatusError> {
        match kv {
            None => Ok(StoredStatus {
                status: GameRuntimeStatus::default(),
                mod_revision: 0,
            }),
            Some(kv) => Ok(StoredStatus {
                status: decode_status(kv).map_err(|e| StatusError::Corrupt {
                    game: game.to_owned(),
                    message: e.to_string(),
                })?,
                mod_revision: kv.mod_revision,
            }),
        }
    }

    /// Applies `change` to the current record and writes the result if it
    /// differs, while `fence` still holds. Returns the record as it now is.
    pub async fn update(
        &self,
        fence: &Fence,
        game: &str,
        change: impl FnOnce(&mut GameRuntimeStatus),
    ) -> Result<GameRuntimeStatus, StatusError> {
        let current = self.read(game).await?;
        let mut next = current.status.clone();
        change(&mut next);
        self.write(fence, game, &current, next).await
    }

    /// Writes `next` if it differs from `current` (read earlier under the
    /// same lease), while `fence` still holds.
    pub async fn write(
        &self,
        fence: &Fence,
        game: &str,
        current: &StoredStatus,
        next: GameRuntimeStatus,
    ) -> Result<GameRuntimeStatus, StatusError> {
        if next == current.status && current.mod_revision != 0 {
            return Ok(next);
        }
        let key = self.keys.status(game);
        let txn = Txn::new()
            .when(fence.compare())
            .put(key, encode_status(&next));
        if self.store.txn(txn).await?.succeeded {
            Ok(next)
        } else {
            Err(StatusError::LeaseLost {
                game: game.to_owned(),
            })
        }
    }

    /// The transaction [`StatusStore::write`] (for `Some`) or
    /// [`StatusStore::clear`] (for `None`) runs, for a caller that adds its
    /// own writes to it; it holds only the fence comparison when `next`
    /// changes nothing.
    pub fn txn(
        &self,
        fence: &Fence,
        game: &str,
        current: &StoredStatus,
        next: Option<&GameRuntimeStatus>,
    ) -> Txn {
        let key = self.keys.status(game);
        let txn = Txn::new().when(fence.compare());
        match next {
            None => txn.delete(key),
            Some(next) if *next == current.status && current.mod_revision != 0 => txn,
            Some(next) => txn.put(key, encode_status(next)),
        }
    }

    /// Writes `next` and releases `lease` in one transaction (the last step
    /// of a reconcile under the lease), if the lease is still held; the
    /// lease is released in any case.
    pub async fn write_and_release(
        &self,
        lease: GameLease,
        next: &GameRuntimeStatus,
    ) -> Result<(), StatusError> {
        let game = lease.game().to_owned();
        let txn = Txn::new().put(self.keys.status(&game), encode_status(next));
        match lease.release_with(txn).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StatusError::LeaseLost { game }),
            Err(LeaseError::Store(error)) => Err(error.into()),
            Err(_) => Err(StatusError::LeaseLost { game }),
        }
    }

    /// Deletes the record (the game is gone), while `fence` still holds.
    pub async fn clear(&self, fence: &Fence, game: &str) -> Result<(), StatusError> {
        let txn = Txn::new()
            .when(fence.compare())
            .delete(self.keys.status(game));
        if self.store.txn(txn).await?.succeeded {
            Ok(())
        } else {
            Err(StatusError::LeaseLost {
                game: game.to_owned(),
            })
        }
    }

    /// Whether a record exists (a removed game keeps none).
    pub async fn exists(&self, game: &str) -> Result<bool, StatusError> {
        Ok(self.store.get(&self.keys.status(game)).await?.is_some())
    }
}
