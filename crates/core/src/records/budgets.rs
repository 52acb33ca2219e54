//! `GameDisruptionBudget` documents (`budgets/<name>`) and their slots
//! (`budget-slots/<budget>/<index>`): the one place that turns both into etcd values and
//! back.
//!
//! A budget allowing `n` disruptions has the slot indices `0..n`. A controller about to
//! disrupt a covered game creates a free index's key (create-only, attached to its etcd
//! session, so the slot goes with a controller that dies) in one transaction for every
//! budget covering the game; the slot names the game and is deleted once the game is
//! Ready again on its new spec. Two controllers that pick the same index conflict, and
//! one of them looks again: a budget never has two holders of one index.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error_code::ErrorCode;
use crate::model::parse::ParseError;
use crate::model::validate::{FieldError, validate_name};
use crate::model::{GameDisruptionBudget, Timestamp, validate_budget};
use crate::store::{KeyValue, Keys, Revision, Store, StoreError};

/// Why a budget document operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BudgetError {
    /// The document fails validation; nothing was written.
    #[error(
        "gamedisruptionbudget {name:?} is invalid: {}",
        crate::model::validate::join(errors)
    )]
    Invalid {
        /// The budget's name, as given.
        name: String,
        /// Every rule it breaks.
        errors: Vec<FieldError>,
    },
    /// A create found a budget of that name.
    #[error("gamedisruptionbudget/{name} already exists")]
    AlreadyExists {
        /// The budget's name.
        name: String,
    },
    /// An update's or delete's `resourceVersion` is not the stored one.
    #[error(
        "gamedisruptionbudget/{name} was changed by someone else (resourceVersion {expected} is \
         stale); re-read and retry"
    )]
    Conflict {
        /// The budget's name.
        name: String,
        /// The revision the writer had read.
        expected: Revision,
    },
    /// No budget of that name.
    #[error("gamedisruptionbudget/{name} not found")]
    NotFound {
        /// The budget's name.
        name: String,
    },
    /// A stored budget does not decode.
    #[error("the value stored at {key} is not a valid GameDisruptionBudget: {message}")]
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

impl BudgetError {
    /// The stable code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            BudgetError::Invalid { .. } => ErrorCode::InvalidRequest,
            BudgetError::AlreadyExists { .. } | BudgetError::Conflict { .. } => ErrorCode::Conflict,
            BudgetError::NotFound { .. } => ErrorCode::NotFound,
            BudgetError::Corrupt { .. } => ErrorCode::Internal,
            BudgetError::Store(error) => error.code(),
        }
    }
}

/// What a slot key holds: which game holds it, for which controller, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    /// The game the slot is held for.
    pub game: String,
    /// The controller (session holder) that took it.
    pub holder: String,
    /// When it was taken.
    pub since: Timestamp,
    /// What the disruption is, for people (`spec change (generation 4)`, `restart`).
    pub reason: String,
}

/// A slot as read back: its budget, index and record (`None`: the value does not decode,
/// e.g. written by hand; it still counts as held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSlot {
    /// The budget it belongs to.
    pub budget: String,
    /// Its index.
    pub index: usize,
    /// The key.
    pub key: String,
    /// What it holds, when it decodes.
    pub slot: Option<Slot>,
    /// The etcd lease it is attached to (0: none — a slot made by hand, which only a
    /// person can free).
    pub lease: i64,
    /// Its create revision (compared when the holder frees it).
    pub create_revision: Revision,
}

impl HeldSlot {
    /// The game it is held for, when the record decodes.
    pub fn game(&self) -> Option<&str> {
        self.slot.as_ref().map(|s| s.game.as_str())
    }
}

/// The stored form of a slot: compact JSON.
pub fn encode_slot(slot: &Slot) -> Vec<u8> {
    serde_json::to_vec(slot).unwrap_or_default()
}

/// The slot held at `kv`, when `kv` is a slot key.
pub fn slot_from_kv(keys: &Keys, kv: &KeyValue) -> Option<HeldSlot> {
    let (budget, index) = keys.slot_of(&kv.key)?;
    Some(HeldSlot {
        budget: budget.to_owned(),
        index,
        key: kv.key.clone(),
        slot: serde_json::from_slice(&kv.value).ok(),
        lease: kv.lease,
        create_revision: kv.create_revision,
    })
}

/// The stored form of a budget document (YAML, like a game's).
pub fn encode(budget: &GameDisruptionBudget) -> Result<Vec<u8>, BudgetError> {
    validate_budget(budget).map_err(|errors| BudgetError::Invalid {
        name: budget.metadata.name.clone(),
        errors,
    })?;
    let mut stored = budget.clone();
    stored.metadata.generation = None;
    stored.metadata.resource_version = None;
    // creationTimestamp is kept, as a game's is: etcd keeps no creation time, and `rtctl get
    // budgets` shows the AGE from it.
    Ok(serde_yaml::to_string(&stored)
        .expect("a budget always serializes")
        .into_bytes())
}

/// Decodes a stored budget, with its generation and resourceVersion from etcd.
pub fn decode(kv: &KeyValue) -> Result<GameDisruptionBudget, BudgetError> {
    let corrupt = |message: String| BudgetError::Corrupt {
        key: kv.key.clone(),
        message,
    };
    let text =
        std::str::from_utf8(&kv.value).map_err(|_| corrupt(ParseError::NotUtf8.to_string()))?;
    let mut budget: GameDisruptionBudget = match crate::model::parse::parse_objects(text) {
        Ok(objects) => match <[_; 1]>::try_from(objects) {
            Ok([crate::model::parse::Object::Budget(budget)]) => budget,
            Ok(_) => return Err(corrupt("holds a document of another kind".to_owned())),
            Err(objects) => {
                return Err(corrupt(format!(
                    "expected exactly one document, found {}",
                    objects.len()
                )));
            }
        },
        Err(error) => return Err(corrupt(error.to_string())),
    };
    budget.metadata.generation = Some(kv.version);
    budget.metadata.resource_version = Some(kv.mod_revision.to_string());
    Ok(budget)
}

/// Every budget document at one revision, and those that do not decode.
#[derive(Debug, Clone, Default)]
pub struct BudgetList {
    /// The budgets that decode, in name order.
    pub items: Vec<GameDisruptionBudget>,
    /// The keys that do not, with why.
    pub invalid: Vec<(String, BudgetError)>,
    /// The revision of the listing.
    pub revision: Revision,
}

/// Reads and writes budget documents, and reads their slots.
#[derive(Debug, Clone)]
pub struct Budgets {
    store: Arc<dyn Store>,
    keys: Keys,
}

impl Budgets {
    /// The budgets under `keys` in `store`.
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys }
    }

    /// One budget.
    pub async fn get(&self, name: &str) -> Result<Option<GameDisruptionBudget>, BudgetError> {
        check_name(name)?;
        match self.store.get(&self.keys.budget(name)).await? {
            Some(kv) => decode(&kv).map(Some),
            None => Ok(None),
        }
    }

    /// Every budget.
    pub async fn list(&self) -> Result<BudgetList, BudgetError> {
        let listing = self.store.list(&self.keys.budgets(), None).await?;
        let mut list = BudgetList {
            revision: listing.revision,
            ..BudgetList::default()
        };
        for kv in &listing.items {
            match decode(kv) {
                Ok(budget) => list.items.push(budget),
                Err(error) => list.invalid.push((kv.key.clone(), error)),
            }
        }
        Ok(list)
    }

    /// Creates a budget; fails if one of that name exists.
    pub async fn create(
        &self,
        budget: &GameDisruptionBudget,
    ) -> Result<GameDisruptionBudget, BudgetError> {
        let name = &budget.metadata.name;
        let value = encode(budget)?;
        match self
            .store
            .create(&self.keys.budget(name), value, None)
            .await
        {
            Ok(revision) => Ok(written(budget, revision, 1)),
            Err(StoreError::Conflict { .. }) => {
                Err(BudgetError::AlreadyExists { name: name.clone() })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Replaces a budget if it is still at `expected`.
    pub async fn update(
        &self,
        budget: &GameDisruptionBudget,
        expected: Revision,
    ) -> Result<GameDisruptionBudget, BudgetError> {
        let name = &budget.metadata.name;
        let value = encode(budget)?;
        let generation = budget.metadata.generation.unwrap_or(0) + 1;
        match self
            .store
            .update(&self.keys.budget(name), value, expected)
            .await
        {
            Ok(revision) => Ok(written(budget, revision, generation)),
            Err(StoreError::Conflict { .. }) => Err(self.conflict_or_missing(name, expected).await),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes a budget if it is still at `expected`. Its held slots stay until their
    /// holders free them (or their sessions end); no new slot is taken.
    pub async fn delete(&self, name: &str, expected: Revision) -> Result<(), BudgetError> {
        check_name(name)?;
        match self.store.delete(&self.keys.budget(name), expected).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(self.conflict_or_missing(name, expected).await),
            Err(error) => Err(error.into()),
        }
    }

    /// Every held slot of every budget, at one revision.
    pub async fn slots(&self) -> Result<(Vec<HeldSlot>, Revision), BudgetError> {
        let listing = self.store.list(&self.keys.all_budget_slots(), None).await?;
        let slots = listing
            .items
            .iter()
            .filter_map(|kv| slot_from_kv(&self.keys, kv))
            .collect();
        Ok((slots, listing.revision))
    }

    async fn conflict_or_missing(&self, name: &str, expected: Revision) -> BudgetError {
        match self.store.get(&self.keys.budget(name)).await {
            Ok(None) => BudgetError::NotFound {
                name: name.to_owned(),
            },
            _ => BudgetError::Conflict {
                name: name.to_owned(),
                expected,
            },
        }
    }
}

fn check_name(name: &str) -> Result<(), BudgetError> {
    validate_name(name).map_err(|message| BudgetError::Invalid {
        name: name.to_owned(),
        errors: vec![FieldError::new("metadata.name", message)],
    })
}

fn written(
    budget: &GameDisruptionBudget,
    revision: Revision,
    generation: i64,
) -> GameDisruptionBudget {
    let mut written = budget.clone();
    written.metadata.resource_version = Some(revision.to_string());
    written.metadata.generation = Some(generation);
    written
}
