//! A game's status record (`status/<game>`): read, changed under the game's
//! lease fence, and written only when it actually changed, so a converged
//! game costs no etcd writes. Under a lease, what the holder last read or
//! wrote is kept with the lease ([`GameLease::known_status`]) and not read
//! again: nobody else can write the record meanwhile.
//!
//! The record is a cache of what runs: one that does not decode (edited by
//! hand) is read as empty, with a warning naming its key, and the next
//! reconcile rebuilds it from the container.

use std::sync::Arc;

use tracing::warn;

use crate::lease::{GameLease, LeaseError};
use rtm_core::error_code::ErrorCode;
use rtm_core::model::GameRuntimeStatus;
use rtm_core::records::documents::{decode_status, encode_status};
use rtm_core::store::{KeyValue, Keys, Store, StoreError, Txn};

/// Why a status write failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StatusError {
    #[error("the lease of game {game} was lost; its status was not written")]
    LeaseLost { game: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StatusError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StatusError::LeaseLost { .. } => ErrorCode::LeaseLost,
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

    /// The record stored in `kv`. One that does not decode is read as an
    /// empty record at its revision (so the rewrite compares it), with a
    /// warning naming the key: a cache of what runs is rebuilt, never a
    /// reason to stop reconciling the game.
    pub fn from_kv(kv: &KeyValue) -> Self {
        Self::decoded(kv).0
    }

    /// [`StoredStatus::from_kv`], and whether the record decoded.
    pub fn decoded(kv: &KeyValue) -> (Self, bool) {
        let (status, valid) = match decode_status(kv) {
            Ok(status) => (status, true),
            Err(error) => {
                warn!(key = %kv.key, %error, "a status record does not decode; rebuilding it from the container");
                (GameRuntimeStatus::default(), false)
            }
        };
        let stored = StoredStatus {
            status,
            mod_revision: kv.mod_revision,
        };
        (stored, valid)
    }
}

impl StatusStore {
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys }
    }

    /// The current record, or a default one (phase Pending) when none.
    pub async fn read(&self, game: &str) -> Result<StoredStatus, StatusError> {
        let kv = self.store.get(&self.keys.status(game)).await?;
        Ok(kv
            .as_ref()
            .map_or_else(StoredStatus::absent, StoredStatus::from_kv))
    }

    /// The current record, as the holder of the game's lease sees it: read
    /// once, then kept with the lease.
    pub async fn read_under(&self, lease: &GameLease) -> Result<StoredStatus, StatusError> {
        if let Some(known) = lease.known_status() {
            return Ok(known);
        }
        let stored = self.read(lease.game()).await?;
        lease.learn_status(stored.clone());
        Ok(stored)
    }

    /// Applies `change` to the current record and writes the result if it
    /// differs, while `lease` is still held. Returns the record as it now is.
    pub async fn update(
        &self,
        lease: &GameLease,
        change: impl FnOnce(&mut GameRuntimeStatus),
    ) -> Result<GameRuntimeStatus, StatusError> {
        let current = self.read_under(lease).await?;
        let mut next = current.status.clone();
        change(&mut next);
        self.write(lease, &current, next).await
    }

    /// Writes `next` if it differs from `current` (read earlier under the
    /// same lease), while `lease` is still held.
    pub async fn write(
        &self,
        lease: &GameLease,
        current: &StoredStatus,
        next: GameRuntimeStatus,
    ) -> Result<GameRuntimeStatus, StatusError> {
        let txn = self.txn(lease, current, Some(&next));
        if txn.then.is_empty() {
            return Ok(next);
        }
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Err(StatusError::LeaseLost {
                game: lease.game().to_owned(),
            });
        }
        self.committed(lease, Some(&next), outcome.revision);
        Ok(next)
    }

    /// The transaction [`StatusStore::write`] (for `Some`) or
    /// [`StatusStore::clear`] (for `None`) runs, for a caller that adds its
    /// own writes to it (and then calls [`StatusStore::committed`]); it holds
    /// only the fence comparison when `next` changes nothing.
    pub fn txn(
        &self,
        lease: &GameLease,
        current: &StoredStatus,
        next: Option<&GameRuntimeStatus>,
    ) -> Txn {
        let key = self.keys.status(lease.game());
        let txn = Txn::new().when(lease.fence().compare());
        match next {
            None => txn.delete(key),
            Some(next) if *next == current.status && current.mod_revision != 0 => txn,
            Some(next) => txn.put(key, encode_status(next)),
        }
    }

    /// Tells the lease what a transaction from [`StatusStore::txn`] that
    /// applied at `revision` left in the record.
    pub fn committed(&self, lease: &GameLease, next: Option<&GameRuntimeStatus>, revision: i64) {
        lease.learn_status(match next {
            Some(next) => StoredStatus {
                status: next.clone(),
                mod_revision: revision,
            },
            None => StoredStatus::absent(),
        });
    }

    /// Writes `next` and releases `lease` in one transaction (the last step
    /// of a reconcile under the lease), if the lease is still held; the
    /// lease is released in any case. Returns the record as written.
    pub async fn write_and_release(
        &self,
        lease: GameLease,
        next: &GameRuntimeStatus,
    ) -> Result<StoredStatus, StatusError> {
        let game = lease.game().to_owned();
        let txn = Txn::new().put(self.keys.status(&game), encode_status(next));
        match lease.release_with(txn).await {
            Ok(Some(revision)) => Ok(StoredStatus {
                status: next.clone(),
                mod_revision: revision,
            }),
            Ok(None) => Err(StatusError::LeaseLost { game }),
            Err(LeaseError::Store(error)) => Err(error.into()),
            Err(_) => Err(StatusError::LeaseLost { game }),
        }
    }

    /// Deletes the record (the game is gone), while `lease` is still held.
    pub async fn clear(&self, lease: &GameLease) -> Result<(), StatusError> {
        let txn = self.txn(lease, &StoredStatus::absent(), None);
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Err(StatusError::LeaseLost {
                game: lease.game().to_owned(),
            });
        }
        self.committed(lease, None, outcome.revision);
        Ok(())
    }

    /// Whether a record exists (a removed game keeps none).
    pub async fn exists(&self, game: &str) -> Result<bool, StatusError> {
        Ok(self.store.get(&self.keys.status(game)).await?.is_some())
    }
}
