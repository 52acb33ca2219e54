//! The operation log: one append-only entry per lifecycle operation under
//! `history/<game>/<seq>`, newest last, bounded per game.
//!
//! An entry is written `in_progress` *before* its side effect and finished
//! with its outcome after, so a crash in between leaves evidence that
//! recovery resolves. Every write is guarded by the writer's lease fence (a
//! fenced-out controller cannot add or finish entries); finishing also
//! compares the entry's own revision, so an entry recovery resolved is
//! never overwritten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error_code::ErrorCode;
use crate::model::{OpKind, OpSource, Outcome, Timestamp};
use crate::records::lease::Fence;
use crate::records::previous::Ended;
use crate::store::{Compare, KeyValue, Keys, Revision, Store, StoreError, Txn};

/// The default number of entries kept per game.
pub const DEFAULT_RETENTION: usize = 100;

/// Attempts at finding a free sequence number when appends race (only
/// unfenced appends can race: fenced ones are exclusive per game).
const APPEND_ATTEMPTS: usize = 5;

/// One operation, as the log keeps it. Field names follow the Go service
/// and DESIGN.md (snake_case), since scripts read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Position in the game's log; 0 until appended.
    #[serde(default)]
    pub seq: u64,
    /// The game the operation was on.
    pub game_id: String,
    /// This operation's own id (also on the container as a label).
    pub op_id: String,
    /// What the operation was.
    pub op_kind: OpKind,
    /// Who asked for it.
    pub op_source: OpSource,
    /// The correlation id: an outer restart entry and its inner stop and
    /// start entries share it.
    #[serde(default)]
    pub source_ref: String,
    /// The image the operation worked with; empty when it had none.
    #[serde(default)]
    pub image_ref: String,
    /// The game's container when the operation began; `None`: it had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id_before: Option<String>,
    /// The game's container when it ended; `None`: it has none (removed, or
    /// not yet known while in progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id_after: Option<String>,
    /// In progress until finished, then success or failure.
    pub outcome: Outcome,
    /// Why it failed; `None` unless the outcome is a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
    /// The failure for people; `None` unless the outcome is a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// When the operation began.
    pub started_at: Timestamp,
    /// When it ended; `None` while in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Why the operation ran, when the kind alone does not say (e.g. a
    /// removal because the game moved to another node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The failure the operation repairs, when it replaces a game that stopped serving
    /// (`health_check_failed`, `startup_timeout`); `note` says what the probe saw. Unlike
    /// `error_code`, it does not mean the operation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<ErrorCode>,
    /// The controller that ran the operation.
    #[serde(default)]
    pub holder: String,
    /// The lease fence the operation ran under (its lease key's create
    /// revision), if it held one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_revision: Option<Revision>,
    /// How many more times the same operation failed the same way right
    /// after this one: folded into this entry instead of one entry each,
    /// so a failure that repeats (a foreign container holding the game's
    /// name) cannot push the real history past its retention.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeated: u64,
    /// When the last of the `repeated` failures ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repeated_at: Option<Timestamp>,
    /// Whether `op_source` (and `source_ref`, when the document set one)
    /// are the document writer's claim, copied from its annotations
    /// (`rtmanager.dev/op-source`, `rtmanager.dev/source-ref`): nothing
    /// checks them; who may write documents at all is etcd's RBAC (README,
    /// Security). Never set with `op_source: reconcile`, which only the
    /// controller records. Absent in entries written before it existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_claimed: bool,
    /// How the container the operation replaced or removed had ended, when it had exited
    /// or failed its health check (its last output is the game's `previous/` record,
    /// kept by this operation: [`super::previous`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
    /// For a recreate the document asked for: the spec fields that changed since the
    /// replaced container's generation (`image: engine:1 → engine:2`, `env[MODE]`), at
    /// most [`crate::model::changes::MAX_CHANGES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spec_changes: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl HistoryEntry {
    /// A new entry, in progress, started now.
    pub fn begin(game_id: &str, op_id: &str, op_kind: OpKind, op_source: OpSource) -> Self {
        HistoryEntry {
            seq: 0,
            game_id: game_id.to_owned(),
            op_id: op_id.to_owned(),
            op_kind,
            op_source,
            source_ref: String::new(),
            image_ref: String::new(),
            container_id_before: None,
            container_id_after: None,
            outcome: Outcome::InProgress,
            error_code: None,
            error_message: None,
            started_at: Timestamp::now(),
            finished_at: None,
            note: None,
            cause: None,
            holder: String::new(),
            fence_revision: None,
            repeated: 0,
            last_repeated_at: None,
            source_claimed: false,
            ended: None,
            spec_changes: Vec::new(),
        }
    }

    /// Whether `later` is this failure again: same operation, source,
    /// code, message and container, this one finished as a failure.
    fn fails_like(&self, later: &HistoryEntry) -> bool {
        self.outcome == Outcome::Failure
            && later.outcome == Outcome::Failure
            && self.game_id == later.game_id
            && self.op_kind == later.op_kind
            && self.op_source == later.op_source
            && self.source_claimed == later.source_claimed
            && self.error_code == later.error_code
            && self.error_message == later.error_message
            && self.container_id_before == later.container_id_before
            && self.image_ref == later.image_ref
            && self.note == later.note
    }

    /// Finishes the entry as a success, now.
    pub fn succeed(&mut self) {
        self.outcome = Outcome::Success;
        self.error_code = None;
        self.error_message = None;
        self.finished_at = Some(Timestamp::now());
    }

    /// Finishes the entry as a failure with `code` and `message`, now.
    pub fn fail(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.outcome = Outcome::Failure;
        self.error_code = Some(code);
        self.error_message = Some(message.into());
        self.finished_at = Some(Timestamp::now());
    }
}

/// An appended entry and the revision it was written at (what finishing it
/// compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The entry as written (its `seq` set).
    pub entry: HistoryEntry,
    /// The entry's key.
    pub key: String,
    /// The mod revision of the write.
    pub revision: Revision,
}

/// Why the log could not be written or read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HistoryError {
    /// A fenced write found the game's lease gone: nothing was written.
    #[error("the lease of game {game} was lost before its history entry could be written")]
    LeaseLost {
        /// The game whose lease was lost.
        game: String,
    },
    /// Finishing found the entry changed: a recovery finished it first.
    #[error("history entry {key} was resolved by someone else (recovery) first")]
    AlreadyResolved {
        /// The entry's key.
        key: String,
    },
    /// Unfenced appends kept racing for the next sequence number.
    #[error("history of game {game} is busy: {attempts} appends raced")]
    Contended {
        /// The game whose log was contended.
        game: String,
        /// How many appends were tried.
        attempts: usize,
    },
    /// A stored entry does not decode (written by hand or by a newer version).
    #[error("history entry {key} is not valid JSON: {message}")]
    Corrupt {
        /// The entry's key.
        key: String,
        /// What the decoder said.
        message: String,
    },
    /// etcd failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HistoryError {
    /// The stable error code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            HistoryError::LeaseLost { .. } => ErrorCode::LeaseLost,
            HistoryError::AlreadyResolved { .. } | HistoryError::Contended { .. } => {
                ErrorCode::Conflict
            }
            HistoryError::Corrupt { .. } => ErrorCode::Internal,
            HistoryError::Store(e) => e.code(),
        }
    }
}

/// Games whose newest entry [`History`] remembers; past it the memory is
/// dropped and rebuilt (a hint costs ~50 bytes, so this bounds it at a few
/// MiB).
const NEWEST_REMEMBERED: usize = 100_000;

/// Appends, finishes and reads operation entries.
#[derive(Debug, Clone)]
pub struct History {
    store: Arc<dyn Store>,
    keys: Keys,
    retention: usize,
    /// The newest entry of each game this process wrote or read last (its
    /// seq and mod revision; seq 0 for a log read empty), so that an append
    /// need not read the log's tail first: the append compares it in its
    /// transaction (for an empty log: that no entry exists), so a stale
    /// hint costs only the read it would have made anyway.
    newest: Arc<Mutex<HashMap<String, (u64, Revision)>>>,
}

impl History {
    /// The history under `keys`, keeping the newest `retention` entries
    /// per game (at least one).
    pub fn new(store: Arc<dyn Store>, keys: Keys, retention: usize) -> Self {
        Self {
            store,
            keys,
            retention: retention.max(1),
            newest: Arc::default(),
        }
    }

    fn newest_known(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Revision)>> {
        self.newest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers `seq` at `revision` as the newest entry of `game` (unless
    /// a newer one is known).
    fn remember(&self, game: &str, seq: u64, revision: Revision) {
        let mut newest = self.newest_known();
        if newest.len() >= NEWEST_REMEMBERED && !newest.contains_key(game) {
            newest.clear();
        }
        match newest.get_mut(game) {
            Some(known) if known.0 > seq => {}
            Some(known) => *known = (seq, revision),
            None => {
                newest.insert(game.to_owned(), (seq, revision));
            }
        }
    }

    /// Tells the log an entry was written outside it (finished in a
    /// transaction of the caller's, see [`History::finish_txn`]).
    pub fn written(&self, appended: &Appended) {
        self.remember(
            &appended.entry.game_id,
            appended.entry.seq,
            appended.revision,
        );
    }

    /// Appends `entry` (usually in progress) as the game's newest entry,
    /// in the same transaction dropping entries beyond the retention. With a
    /// fence, the append happens only while the lease is still held.
    pub async fn append(
        &self,
        fence: Option<&Fence>,
        mut entry: HistoryEntry,
    ) -> Result<Appended, HistoryError> {
        let game = entry.game_id.clone();
        entry.fence_revision = fence.map(|f| f.revision);
        let mut hint = self.newest_known().get(&game).copied();
        for _ in 0..APPEND_ATTEMPTS {
            // The tail as remembered (checked by the transaction), or read.
            let (seq, known) = match hint.take() {
                Some((last, revision)) => (last + 1, Some((last, revision))),
                None => {
                    let last = self.store.newest(&self.keys.history(&game), 1).await?;
                    match last.first() {
                        Some(kv) => (self.seq_of(&game, kv)? + 1, None),
                        None => (1, None),
                    }
                }
            };
            entry.seq = seq;
            let key = self.keys.history_entry(&game, seq);
            let mut txn = Txn::new().when(Compare::Absent { key: key.clone() });
            match known {
                // The log is still empty.
                Some((0, _)) => {
                    txn = txn.when(Compare::PrefixEmpty {
                        prefix: self.keys.history(&game),
                    })
                }
                // The remembered tail is still the tail, unchanged.
                Some((last, revision)) => {
                    txn = txn.when(Compare::ModRevision {
                        key: self.keys.history_entry(&game, last),
                        revision,
                    })
                }
                None => {}
            }
            if let Some(fence) = fence {
                txn = txn.when(fence.compare());
            }
            txn = txn.put(key.clone(), encode(&entry));
            // Keep the newest `retention` entries, this one included.
            let keep_from = (seq + 1).saturating_sub(self.retention as u64);
            if keep_from > 1 {
                txn = txn.delete_range(
                    self.keys.history_entry(&game, 0),
                    self.keys.history_entry(&game, keep_from),
                );
            }
            let outcome = self.store.txn(txn).await?;
            if outcome.succeeded {
                self.remember(&game, seq, outcome.revision);
                return Ok(Appended {
                    entry,
                    key,
                    revision: outcome.revision,
                });
            }
            if let Some(fence) = fence
                && !self.fence_holds(fence).await?
            {
                return Err(HistoryError::LeaseLost { game });
            }
            // Another append took this seq: read the new tail and retry.
        }
        Err(HistoryError::Contended {
            game,
            attempts: APPEND_ATTEMPTS,
        })
    }

    /// Writes the final form of an appended entry, unless someone (the
    /// recovery of a crashed operation) has resolved it since. With a
    /// fence (the writer's lease: every operation passes its own), only
    /// while it still holds: a writer whose lease was lost writes nothing,
    /// and the entry stays `in_progress` until the next holder's recovery
    /// resolves it.
    pub async fn finish(
        &self,
        appended: &Appended,
        fence: Option<&Fence>,
    ) -> Result<Appended, HistoryError> {
        let outcome = self.store.txn(self.finish_txn(appended, fence)).await?;
        if !outcome.succeeded {
            if let Some(fence) = fence
                && !self.fence_holds(fence).await?
            {
                return Err(HistoryError::LeaseLost {
                    game: appended.entry.game_id.clone(),
                });
            }
            return Err(HistoryError::AlreadyResolved {
                key: appended.key.clone(),
            });
        }
        let finished = Appended {
            revision: outcome.revision,
            ..appended.clone()
        };
        self.written(&finished);
        Ok(finished)
    }

    /// Finishes a failed entry like [`History::finish`], unless the entry
    /// before it is the same failure: then that one counts it
    /// ([`HistoryEntry::repeated`]) and this one is deleted, in one
    /// transaction under `fence`. Returns the entry that now records it.
    pub async fn finish_failure(
        &self,
        appended: &Appended,
        fence: &Fence,
    ) -> Result<Appended, HistoryError> {
        let game = &appended.entry.game_id;
        let previous = match appended.entry.seq.checked_sub(1).filter(|seq| *seq > 0) {
            Some(seq) => self.store.get(&self.keys.history_entry(game, seq)).await?,
            None => None,
        };
        let folded = previous.and_then(|kv| {
            let entry = decode(&kv).ok()?;
            entry.fails_like(&appended.entry).then_some((kv, entry))
        });
        let Some((kv, mut first)) = folded else {
            return self.finish(appended, Some(fence)).await;
        };
        first.repeated += 1;
        first.last_repeated_at = appended.entry.finished_at;
        let txn = Txn::new()
            .when(fence.compare())
            .when(Compare::ModRevision {
                key: kv.key.clone(),
                revision: kv.mod_revision,
            })
            .when(Compare::ModRevision {
                key: appended.key.clone(),
                revision: appended.revision,
            })
            .put(kv.key.clone(), encode(&first))
            .delete(appended.key.clone());
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            // Changed meanwhile (recovery, a peer): record it on its own.
            return self.finish(appended, Some(fence)).await;
        }
        let folded = Appended {
            entry: first,
            key: kv.key,
            revision: outcome.revision,
        };
        self.forget_newer(game, folded.entry.seq, outcome.revision);
        Ok(folded)
    }

    /// The newest entry of `game` is `seq` again (a newer one was
    /// deleted): what an append compares must follow.
    fn forget_newer(&self, game: &str, seq: u64, revision: Revision) {
        self.newest_known().insert(game.to_owned(), (seq, revision));
    }

    /// The transaction [`History::finish`] runs, for a caller that adds
    /// its own last writes to it (one round trip, one etcd revision).
    pub fn finish_txn(&self, appended: &Appended, fence: Option<&Fence>) -> Txn {
        let txn = Txn::new();
        let txn = match fence {
            Some(fence) => txn.when(fence.compare()),
            None => txn,
        };
        txn.when(Compare::ModRevision {
            key: appended.key.clone(),
            revision: appended.revision,
        })
        .put(appended.key.clone(), encode(&appended.entry))
    }

    /// The newest `limit` entries of a game, newest first.
    pub async fn recent(
        &self,
        game: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, HistoryError> {
        Ok(self
            .recent_appended(game, limit)
            .await?
            .into_iter()
            .map(|a| a.entry)
            .collect())
    }

    /// Like [`History::recent`], with each entry's key and revision (what
    /// recovery needs to resolve an entry).
    async fn recent_appended(
        &self,
        game: &str,
        limit: usize,
    ) -> Result<Vec<Appended>, HistoryError> {
        self.read_recent(game, limit)
            .await?
            .into_iter()
            .collect::<Result<_, _>>()
    }

    /// The newest `limit` entries that decode, newest first, for the
    /// controller's recovery: an entry garbled by hand is a record lost
    /// (logged with its key), never a reason to stop reconciling the game.
    pub async fn recent_readable(
        &self,
        game: &str,
        limit: usize,
    ) -> Result<Vec<Appended>, HistoryError> {
        Ok(self
            .read_recent(game, limit)
            .await?
            .into_iter()
            .filter_map(|read| {
                read.map_err(
                    |error| warn!(%game, %error, "skipping a history entry that does not decode"),
                )
                .ok()
            })
            .collect())
    }

    async fn read_recent(
        &self,
        game: &str,
        limit: usize,
    ) -> Result<Vec<Result<Appended, HistoryError>>, HistoryError> {
        let kvs = self.store.newest(&self.keys.history(game), limit).await?;
        match kvs.first() {
            Some(kv) => {
                if let Some(seq) = self.keys.history_seq(game, &kv.key) {
                    self.remember(game, seq, kv.mod_revision);
                }
            }
            None if limit > 0 => self.remember(game, 0, 0),
            None => {}
        }
        Ok(kvs
            .iter()
            .map(|kv| {
                Ok(Appended {
                    entry: decode(kv)?,
                    key: kv.key.clone(),
                    revision: kv.mod_revision,
                })
            })
            .collect())
    }

    fn seq_of(&self, game: &str, kv: &KeyValue) -> Result<u64, HistoryError> {
        self.keys
            .history_seq(game, &kv.key)
            .ok_or_else(|| HistoryError::Corrupt {
                key: kv.key.clone(),
                message: "the key does not end in a sequence number".into(),
            })
    }

    async fn fence_holds(&self, fence: &Fence) -> Result<bool, HistoryError> {
        let current = self.store.get(&fence.key).await?;
        Ok(current.is_some_and(|kv| kv.create_revision == fence.revision))
    }
}

fn encode(entry: &HistoryEntry) -> Vec<u8> {
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_vec(entry).unwrap_or_default()
}

fn decode(kv: &KeyValue) -> Result<HistoryEntry, HistoryError> {
    serde_json::from_slice(&kv.value).map_err(|e| HistoryError::Corrupt {
        key: kv.key.clone(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn history(retention: usize) -> (Arc<MemoryStore>, History) {
        let store = Arc::new(MemoryStore::new());
        (
            store.clone(),
            History::new(store, Keys::default(), retention),
        )
    }

    fn entry(game: &str, op: &str) -> HistoryEntry {
        HistoryEntry::begin(game, op, OpKind::Start, OpSource::Reconcile)
    }

    /// A lease key of `game` held by the test, and its fence.
    async fn held(store: &MemoryStore, game: &str) -> Fence {
        let key = Keys::default().lease(game);
        let revision = store.create(&key, b"me".to_vec(), None).await.unwrap();
        Fence { key, revision }
    }

    /// The game's log as (seq, op id), newest first.
    async fn ops(history: &History, game: &str) -> Vec<(u64, String)> {
        history
            .recent(game, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.seq, e.op_id))
            .collect()
    }

    fn owned(ops: &[(u64, &str)]) -> Vec<(u64, String)> {
        ops.iter()
            .map(|(seq, op)| (*seq, (*op).to_owned()))
            .collect()
    }

    #[test]
    fn an_entry_written_before_claims_were_recorded_decodes_as_unclaimed() {
        let old = br#"{"seq":3,"game_id":"g1","op_id":"op-1","op_kind":"restart",
            "op_source":"admin_cli","source_ref":"REQ-1","outcome":"success",
            "started_at":"2024-01-01T00:00:00Z"}"#;
        let entry: HistoryEntry = serde_json::from_slice(old).unwrap();
        assert!(!entry.source_claimed);
        assert!(
            !String::from_utf8(encode(&entry))
                .unwrap()
                .contains("source_claimed"),
            "an unclaimed source is not written out"
        );
        let mut claimed = entry.clone();
        claimed.source_claimed = true;
        let text = String::from_utf8(encode(&claimed)).unwrap();
        assert!(text.contains(r#""source_claimed":true"#), "{text}");
    }

    #[tokio::test]
    async fn entries_are_appended_in_order_and_read_newest_first() {
        let (_, history) = history(10);
        for op in ["op-1", "op-2", "op-3"] {
            history.append(None, entry("g1", op)).await.unwrap();
        }
        history.append(None, entry("g10", "other")).await.unwrap();
        let recent = history.recent("g1", 10).await.unwrap();
        let ops: Vec<_> = recent.iter().map(|e| (e.seq, e.op_id.as_str())).collect();
        assert_eq!(ops, [(3, "op-3"), (2, "op-2"), (1, "op-1")]);
        assert_eq!(history.recent("g1", 2).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn retention_keeps_only_the_newest_entries() {
        let (store, history) = history(3);
        for i in 0..7 {
            history
                .append(None, entry("g1", &format!("op-{i}")))
                .await
                .unwrap();
        }
        let seqs: Vec<_> = history
            .recent("g1", 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [7, 6, 5]);
        assert_eq!(store.dump().len(), 3);
    }

    #[tokio::test]
    async fn an_in_progress_entry_is_finished_unless_resolved_first() {
        let (store, history) = history(10);
        let fence = held(&store, "g1").await;
        let mut appended = history
            .append(Some(&fence), entry("g1", "op-1"))
            .await
            .unwrap();
        assert_eq!(
            history.recent("g1", 1).await.unwrap()[0].outcome,
            Outcome::InProgress
        );
        appended.entry.fail(ErrorCode::StartFailed, "boom");
        let finished = history.finish(&appended, Some(&fence)).await.unwrap();
        let stored = &history.recent("g1", 1).await.unwrap()[0];
        assert_eq!(stored.outcome, Outcome::Failure);
        assert_eq!(stored.error_code, Some(ErrorCode::StartFailed));

        // Recovery resolved it meanwhile: a late finish must not overwrite.
        store
            .update(&finished.key, b"{}".to_vec(), finished.revision)
            .await
            .unwrap();
        let late = history.finish(&finished, Some(&fence)).await.unwrap_err();
        assert!(matches!(late, HistoryError::AlreadyResolved { .. }));
    }

    #[tokio::test]
    async fn a_finish_is_refused_once_the_writers_lease_is_gone() {
        let (store, history) = history(10);
        let fence = held(&store, "g1").await;
        let mut appended = history
            .append(Some(&fence), entry("g1", "op-1"))
            .await
            .unwrap();
        // The lease expired (a frozen controller) and another took it.
        let kv = store.get(&fence.key).await.unwrap().unwrap();
        store.delete(&fence.key, kv.mod_revision).await.unwrap();
        let _taken_over = held(&store, "g1").await;
        appended.entry.fail(ErrorCode::ServiceUnavailable, "late");
        let refused = history.finish(&appended, Some(&fence)).await.unwrap_err();
        assert!(
            matches!(refused, HistoryError::LeaseLost { .. }),
            "{refused}"
        );
        let stored = &history.recent("g1", 1).await.unwrap()[0];
        assert_eq!(
            stored.outcome,
            Outcome::InProgress,
            "left for the new holder's recovery"
        );
    }

    #[tokio::test]
    async fn a_fenced_append_is_refused_once_the_lease_key_is_gone() {
        let (store, history) = history(10);
        let lease_key = Keys::default().lease("g1");
        let revision = store
            .create(&lease_key, b"me".to_vec(), None)
            .await
            .unwrap();
        let fence = Fence {
            key: lease_key.clone(),
            revision,
        };
        let appended = history
            .append(Some(&fence), entry("g1", "op-1"))
            .await
            .unwrap();
        assert_eq!(appended.entry.fence_revision, Some(revision));

        let kv = store.get(&lease_key).await.unwrap().unwrap();
        store.delete(&lease_key, kv.mod_revision).await.unwrap();
        let refused = history
            .append(Some(&fence), entry("g1", "op-2"))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, HistoryError::LeaseLost { .. }),
            "{refused}"
        );
        assert_eq!(history.recent("g1", 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_remembered_tail_that_went_stale_is_read_again() {
        // Two controllers share one log: each remembers the tail it wrote.
        let store = Arc::new(MemoryStore::new());
        let fence = held(&store, "g1").await;
        let a = History::new(store.clone(), Keys::default(), 10);
        let b = History::new(store.clone(), Keys::default(), 10);
        a.append(None, entry("g1", "op-1")).await.unwrap();
        let second = b.append(None, entry("g1", "op-2")).await.unwrap();
        // a's tail (1) is stale: its append must land after 2, not on it.
        a.append(None, entry("g1", "op-3")).await.unwrap();
        // b's tail (2) changed since (finished elsewhere): same.
        let mut finished = second.clone();
        finished.entry.succeed();
        a.finish(&finished, Some(&fence)).await.unwrap();
        b.append(None, entry("g1", "op-4")).await.unwrap();
        assert_eq!(
            ops(&a, "g1").await,
            owned(&[(4, "op-4"), (3, "op-3"), (2, "op-2"), (1, "op-1")])
        );
    }

    #[tokio::test]
    async fn a_log_read_empty_is_appended_to_without_reading_it_again() {
        let store = Arc::new(MemoryStore::new());
        let a = History::new(store.clone(), Keys::default(), 3);
        let b = History::new(store.clone(), Keys::default(), 3);
        assert!(a.recent("g1", 20).await.unwrap().is_empty());
        let before = store.requests();
        a.append(None, entry("g1", "op-1")).await.unwrap();
        let after = store.requests();
        assert_eq!(after.reads, before.reads, "the empty log is not read again");
        assert_eq!(after.txns, before.txns + 1);

        // Stale: b read the log empty, then a filled it past its retention
        // (seq 1 is gone): b's append must still land after the tail.
        assert!(b.recent("g2", 20).await.unwrap().is_empty());
        for i in 0..5 {
            a.append(None, entry("g2", &format!("a-{i}")))
                .await
                .unwrap();
        }
        b.append(None, entry("g2", "b-0")).await.unwrap();
        assert_eq!(
            ops(&a, "g2").await,
            owned(&[(6, "b-0"), (5, "a-4"), (4, "a-3")])
        );
    }
}
