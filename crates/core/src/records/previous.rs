//! What a game's previous container said and how it ended (`previous/<game>`): the record
//! `rtctl logs --previous` reads, and the one home of the exit facts a history entry keeps
//! ([`Ended`]).
//!
//! Before the controller replaces or removes a container that exited or failed its health
//! check, it keeps the container's last output (at most [`OUTPUT_LIMIT`] bytes, Docker's
//! timestamps on each line) with its exit code, OOM flag and run times here, under the
//! game's lease fence; `docker rm` would otherwise take them with it. One record per game,
//! overwritten by the next such replacement (as `kubectl logs --previous` shows one
//! container back): kept in each history entry instead, a crash-looping game's 100 entries
//! of 16 KiB would hold 1.6 MiB, and a thousand such games most of etcd's default quota.
//! The history entry of the operation keeps the small part ([`Ended`]) and names this
//! record by its operation id.
//!
//! The controller only ever writes the record; a forged or corrupt one changes nothing it
//! does, and `rtctl` shows it for what it is.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::lease::Fence;
use crate::error_code::ErrorCode;
use crate::model::Timestamp;
use crate::store::{KeyValue, Keys, Store, StoreError, Txn};

/// The most output kept: the end of it, cut on a line boundary where one is near.
pub const OUTPUT_LIMIT: usize = 16 * 1024;

/// The largest stored record `rtctl` decodes: the output, its timestamps and the exit facts,
/// with room to spare. A larger one was not written by a controller.
pub const RECORD_LIMIT: usize = 64 * 1024;

/// How a container's last run ended, as Docker recorded it: what a history entry keeps of
/// a container it replaced or removed after it exited or failed its health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// The process's exit code; `None` while it still ran (a container whose health check
    /// failed is stopped by the replacement after this was taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The kernel killed it for exceeding its memory limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    /// When its last run began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When its last run ended; `None` while it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
}

impl Ended {
    /// `exited 1`, `exited 137, OOM-killed`, `running` (a container replaced while it ran).
    pub fn summary(&self) -> String {
        match (self.exit_code, self.oom_killed) {
            (Some(code), true) => format!("exited {code}, OOM-killed"),
            (Some(code), false) => format!("exited {code}"),
            (None, true) => "OOM-killed".to_owned(),
            (None, false) => "running".to_owned(),
        }
    }
}

/// The kept output and end of one game's previous container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousContainer {
    /// The game.
    pub game_id: String,
    /// The container the output is of (Docker's id).
    pub container_id: String,
    /// The image it ran.
    #[serde(default)]
    pub image_ref: String,
    /// The operation that replaced or removed it (its history entry's `op_id`).
    pub op_id: String,
    /// How it ended.
    pub ended: Ended,
    /// The failure that had the controller replace it (`health_check_failed`,
    /// `startup_timeout`); `None` when it exited on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<ErrorCode>,
    /// Its last output, stdout and stderr interleaved as Docker logged them, each line
    /// starting with Docker's RFC 3339 timestamp and a space; at most [`OUTPUT_LIMIT`] bytes.
    #[serde(default)]
    pub output: String,
    /// Whether earlier output was cut off.
    #[serde(default)]
    pub truncated: bool,
    /// When the controller kept it.
    pub kept_at: Timestamp,
}

/// Why reading the record failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PreviousError {
    /// The stored value is not a record the controller writes (edited or forged by hand).
    #[error("the value stored at {key} is not a kept previous container: {message}; delete it")]
    Corrupt {
        /// Its key.
        key: String,
        /// What the decoder said.
        message: String,
    },
    /// The writer's lease was gone when the write compared its fence.
    #[error("the lease of game {game} was lost; its previous container's output was not kept")]
    LeaseLost {
        /// The game.
        game: String,
    },
    /// etcd failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PreviousError {
    /// The stable code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            PreviousError::Corrupt { .. } => ErrorCode::Internal,
            PreviousError::LeaseLost { .. } => ErrorCode::LeaseLost,
            PreviousError::Store(e) => e.code(),
        }
    }
}

/// The `previous/` records under one prefix.
#[derive(Debug, Clone)]
pub struct PreviousContainers {
    store: Arc<dyn Store>,
    keys: Keys,
}

impl PreviousContainers {
    /// The records under `keys` in `store`.
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys }
    }

    /// The game's record; `None` when none was kept.
    pub async fn read(&self, game: &str) -> Result<Option<PreviousContainer>, PreviousError> {
        match self.store.get(&self.keys.previous(game)).await? {
            Some(kv) => decode(&kv).map(Some),
            None => Ok(None),
        }
    }

    /// Keeps `record` as its game's, replacing the one before, while `fence` holds.
    pub async fn keep(
        &self,
        fence: &Fence,
        record: &PreviousContainer,
    ) -> Result<(), PreviousError> {
        let txn = Txn::new()
            .when(fence.compare())
            .put(self.keys.previous(&record.game_id), encode(record));
        if self.store.txn(txn).await?.succeeded {
            Ok(())
        } else {
            Err(PreviousError::LeaseLost {
                game: record.game_id.clone(),
            })
        }
    }

    /// Adds to `txn` the removal of `game`'s record (its history goes: the sweep of a
    /// deleted game's history).
    pub fn forget(&self, txn: Txn, game: &str) -> Txn {
        txn.delete(self.keys.previous(game))
    }
}

/// The stored form.
pub fn encode(record: &PreviousContainer) -> Vec<u8> {
    serde_json::to_vec(record).expect("a kept previous container always serialises")
}

/// Decodes a stored record, refusing one larger than [`RECORD_LIMIT`].
pub fn decode(kv: &KeyValue) -> Result<PreviousContainer, PreviousError> {
    let corrupt = |message: String| PreviousError::Corrupt {
        key: kv.key.clone(),
        message,
    };
    if kv.value.len() > RECORD_LIMIT {
        return Err(corrupt(format!(
            "it holds {} bytes, more than the {RECORD_LIMIT} a controller writes",
            kv.value.len()
        )));
    }
    serde_json::from_slice(&kv.value).map_err(|e| corrupt(e.to_string()))
}

/// The end of `output` that fits in [`OUTPUT_LIMIT`] bytes, starting on a line where the
/// cut falls within the last 1 KiB of a line, else on a character boundary; and whether
/// anything was cut.
pub fn tail_of(output: &str) -> (String, bool) {
    if output.len() <= OUTPUT_LIMIT {
        return (output.to_owned(), false);
    }
    let mut start = output.len() - OUTPUT_LIMIT;
    while !output.is_char_boundary(start) {
        start += 1;
    }
    let rest = &output[start..];
    let rest = match rest.find('\n') {
        Some(newline) if newline < 1024 => &rest[newline + 1..],
        _ => rest,
    };
    (rest.to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn record(game: &str, output: &str) -> PreviousContainer {
        PreviousContainer {
            game_id: game.to_owned(),
            container_id: "c1".to_owned(),
            image_ref: "engine:1".to_owned(),
            op_id: "op-1".to_owned(),
            ended: Ended {
                exit_code: Some(1),
                oom_killed: false,
                started_at: Some(Timestamp::from_unix_seconds(1_700_000_000)),
                finished_at: Some(Timestamp::from_unix_seconds(1_700_000_005)),
            },
            cause: None,
            output: output.to_owned(),
            truncated: false,
            kept_at: Timestamp::from_unix_seconds(1_700_000_006),
        }
    }

    #[test]
    fn summaries_say_how_it_ended() {
        let mut ended = record("g1", "").ended;
        assert_eq!(ended.summary(), "exited 1");
        ended.exit_code = Some(137);
        ended.oom_killed = true;
        assert_eq!(ended.summary(), "exited 137, OOM-killed");
        ended.exit_code = None;
        ended.oom_killed = false;
        assert_eq!(ended.summary(), "running");
    }

    #[test]
    fn a_short_output_is_kept_whole() {
        assert_eq!(tail_of("a\nb\n"), ("a\nb\n".to_owned(), false));
    }

    #[test]
    fn a_long_output_keeps_its_end_from_a_line_start() {
        let line = "x".repeat(99);
        let output: String = (0..400).map(|i| format!("{i:04} {line}\n")).collect();
        let (tail, cut) = tail_of(&output);
        assert!(cut);
        assert!(tail.len() <= OUTPUT_LIMIT, "{}", tail.len());
        assert!(tail.len() > OUTPUT_LIMIT - 1024);
        assert!(tail.ends_with(&format!("0399 {line}\n")));
        // Starts on a whole line.
        assert_eq!(tail.as_bytes()[4], b' ', "{}", &tail[..10]);
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let output = "é".repeat(OUTPUT_LIMIT);
        let (tail, cut) = tail_of(&output);
        assert!(cut);
        assert!(tail.chars().all(|c| c == 'é'));
        assert!(tail.len() <= OUTPUT_LIMIT);
    }

    #[tokio::test]
    async fn a_kept_record_reads_back_and_a_new_one_replaces_it() {
        let store = Arc::new(MemoryStore::new());
        let keys = Keys::new("/t").unwrap();
        let records = PreviousContainers::new(store.clone(), keys.clone());
        let key = keys.lease("g1");
        let revision = store.create(&key, b"me".to_vec(), None).await.unwrap();
        let fence = Fence { key, revision };
        assert_eq!(records.read("g1").await.unwrap(), None);
        records
            .keep(&fence, &record("g1", "first\n"))
            .await
            .unwrap();
        records
            .keep(&fence, &record("g1", "second\n"))
            .await
            .unwrap();
        let read = records.read("g1").await.unwrap().unwrap();
        assert_eq!(read.output, "second\n");
        // Another holder's fence writes nothing.
        let stale = Fence {
            revision: fence.revision + 1000,
            ..fence
        };
        let error = records
            .keep(&stale, &record("g1", "third\n"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::LeaseLost);
        assert_eq!(
            records.read("g1").await.unwrap().unwrap().output,
            "second\n"
        );
    }

    #[tokio::test]
    async fn a_forged_record_is_named_by_its_key() {
        let store = Arc::new(MemoryStore::new());
        let keys = Keys::new("/t").unwrap();
        store
            .txn(Txn::new().put(keys.previous("g1"), b"{not json".to_vec()))
            .await
            .unwrap();
        store
            .txn(Txn::new().put(keys.previous("g2"), vec![b' '; RECORD_LIMIT + 1]))
            .await
            .unwrap();
        let records = PreviousContainers::new(store, keys);
        let error = records.read("g1").await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::Internal);
        assert!(error.to_string().contains("/t/previous/g1"), "{error}");
        let error = records.read("g2").await.unwrap_err();
        assert!(error.to_string().contains("more than the 65536"), "{error}");
    }
}
