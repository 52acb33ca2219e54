//! Prepull requests and their answers (`prepulls/<id>`, `prepulls/<id>/nodes/<node>`): the
//! one home of what `rtctl prepull` asks the controllers and what each node answers, their
//! bounds, and how they are stored.
//!
//! A request names games (and, optionally, the one image to pull for all of them; else
//! each game's own `spec.image`). Every controller pulls, for the listed games it
//! reconciles, each distinct image once, and answers with one record per node. Request and
//! answers are attached to one etcd lease the requester granted (its `--timeout` plus a
//! margin): when the requester revokes it, or it expires, they all go together, and nothing
//! of a prepull outlives it.
//!
//! Everything read here is untrusted (anyone with write access to `prepulls/` can put
//! bytes there): [`decode_request`] refuses a record larger than [`REQUEST_LIMIT`], with
//! more than [`MAX_GAMES`] games, an invalid name or image, or one not attached to a lease
//! (its answers would never expire); the controller acts on nothing it refuses.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error_code::ErrorCode;
use crate::model::Timestamp;
use crate::model::validate::{image_reference, validate_name};
use crate::store::{Compare, KeyValue, Keys, LeaseId, Store, StoreError, Txn};

/// The most games one request may name: a fleet's rollout in one command. Sized with
/// [`REQUEST_LIMIT`]: 10,000 names of 63 characters are ~670 KB of JSON.
pub const MAX_GAMES: usize = 10_000;

/// The largest request record a controller reads (below etcd's default 1.5 MiB request).
pub const REQUEST_LIMIT: usize = 1024 * 1024;

/// The most distinct images one node pulls for one request; games whose image comes after
/// those are left out of its answer (not covered), with a note. Keeps an answer within
/// [`ANSWER_LIMIT`] and a node's pulls bounded whatever the request lists.
pub const MAX_IMAGES: usize = 64;

/// The longest message kept per image; a longer one is cut on a character boundary.
pub const MESSAGE_LIMIT: usize = 512;

/// The largest answer record `rtctl` reads: [`MAX_GAMES`] names, [`MAX_IMAGES`] images
/// with their digests and messages, with room to spare.
pub const ANSWER_LIMIT: usize = 1024 * 1024;

/// The longest id: a DNS-1123 label, so it is one key segment.
const MAX_ID: usize = 63;

/// What `rtctl prepull` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrepullRequest {
    /// The games whose nodes should pull.
    pub games: Vec<String>,
    /// The image to pull for every game (`--image`); absent: each game's own `spec.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When it was asked.
    pub requested_at: Timestamp,
    /// Who asked (a request ref, like `--ref` of the write verbs); shown in the logs.
    pub requester: String,
}

/// What one image's pull on one node came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PullOutcome {
    /// Pulled (or already up to date in its registry): the image is on the node.
    Pulled,
    /// Not pulled on purpose: every game it is for has `imagePullPolicy: Never`.
    Skipped,
    /// The pull failed (`errorCode` says why).
    Failed,
}

impl PullOutcome {
    /// The form tables print.
    pub const fn as_str(self) -> &'static str {
        match self {
            PullOutcome::Pulled => "pulled",
            PullOutcome::Skipped => "skipped",
            PullOutcome::Failed => "failed",
        }
    }
}

/// One image of a node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageAnswer {
    /// The image as the request or the games named it.
    pub image: String,
    /// What came of it.
    pub outcome: PullOutcome,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
    /// The failure, or the reason it was skipped (at most [`MESSAGE_LIMIT`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What a container of it would run (`status.imageID`'s form): the repository digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// How long the pull took, in milliseconds.
    pub took_ms: u64,
}

/// One node's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAnswer {
    /// The answering controller's node (`RTM_NODE_NAME`).
    pub node: String,
    /// Per distinct image, what its pull came to.
    pub images: Vec<ImageAnswer>,
    /// The listed games this node covered (it reconciles them, and pulled their image).
    pub games: Vec<String>,
    /// Anything left out, and why (more than [`MAX_IMAGES`] images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When the node finished.
    pub finished_at: Timestamp,
}

impl ImageAnswer {
    /// A failed pull, its message cut to [`MESSAGE_LIMIT`].
    pub fn failed(image: &str, code: ErrorCode, message: &str, took_ms: u64) -> ImageAnswer {
        ImageAnswer {
            image: image.to_owned(),
            outcome: PullOutcome::Failed,
            error_code: Some(code),
            message: Some(cut(message)),
            digest: None,
            took_ms,
        }
    }
}

/// Why a prepull record cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PrepullError {
    /// The record breaks a bound or a rule; it is refused whole.
    #[error("prepull request {key} refused: {reason}")]
    Refused {
        /// The key it was read from (or would be written at).
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// etcd failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PrepullError {
    /// The stable code of the failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            PrepullError::Refused { .. } => ErrorCode::InvalidRequest,
            PrepullError::Store(e) => e.code(),
        }
    }
}

/// What a key under `prepulls/` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrepullKey<'k> {
    /// `prepulls/<id>`: a request.
    Request(&'k str),
    /// `prepulls/<id>/nodes/<node>`: a node's answer.
    Answer(&'k str, &'k str),
}

impl<'k> PrepullKey<'k> {
    /// Decodes `key`; `None` for a key no version writes (an implausible id or node).
    pub fn of(keys: &Keys, key: &'k str) -> Option<PrepullKey<'k>> {
        let rest = key.strip_prefix(&keys.prepulls())?;
        match rest.split_once('/') {
            None => check_id(rest).ok().map(|()| PrepullKey::Request(rest)),
            Some((id, answer)) => {
                let node = answer.strip_prefix("nodes/")?;
                (check_id(id).is_ok()
                    && crate::model::validate::is_dns1123_subdomain(node)
                    && !node.contains('/'))
                .then_some(PrepullKey::Answer(id, node))
            }
        }
    }
}

/// Checks a request id: a DNS-1123 label of at most 63 characters (one key segment).
pub fn check_id(id: &str) -> Result<(), String> {
    let plausible = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if plausible {
        Ok(())
    } else {
        Err(format!(
            "invalid prepull id {id:?}: 1 to {MAX_ID} lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

/// Checks a request against every bound a controller holds it to.
pub fn check_request(request: &PrepullRequest) -> Result<(), String> {
    if request.games.is_empty() {
        return Err("it names no game".to_owned());
    }
    if request.games.len() > MAX_GAMES {
        return Err(format!(
            "it names {} games, more than {MAX_GAMES}",
            request.games.len()
        ));
    }
    if let Some(bad) = request.games.iter().find(|g| validate_name(g).is_err()) {
        return Err(format!(
            "{:?} is not a game name",
            bad.chars().take(80).collect::<String>()
        ));
    }
    if let Some(image) = &request.image {
        image_reference(image).map_err(|reason| format!("image: {reason}"))?;
    }
    if request.requester.is_empty()
        || request.requester.chars().count() > 253
        || request.requester.chars().any(char::is_control)
    {
        return Err("requester must be 1 to 253 characters without control characters".into());
    }
    Ok(())
}

/// Reads a request as stored at `kv`, refusing what breaks a bound (see the module doc).
pub fn decode_request(kv: &KeyValue) -> Result<PrepullRequest, PrepullError> {
    let refused = |reason: String| PrepullError::Refused {
        key: kv.key.clone(),
        reason,
    };
    if kv.value.len() > REQUEST_LIMIT {
        return Err(refused(format!(
            "{} bytes, more than {REQUEST_LIMIT}",
            kv.value.len()
        )));
    }
    if kv.lease == 0 {
        return Err(refused(
            "it is not attached to an etcd lease, so its answers would never expire \
             (rtctl prepull attaches it to one)"
                .to_owned(),
        ));
    }
    let request: PrepullRequest = serde_json::from_slice(&kv.value)
        .map_err(|e| refused(format!("not a prepull request: {e}")))?;
    check_request(&request).map_err(refused)?;
    Ok(request)
}

/// Reads a node's answer as stored at `kv`; `None` for one no controller wrote (too large,
/// not JSON of an answer, or naming another node than its key).
pub fn decode_answer(kv: &KeyValue, node: &str) -> Option<NodeAnswer> {
    if kv.value.len() > ANSWER_LIMIT {
        return None;
    }
    serde_json::from_slice::<NodeAnswer>(&kv.value)
        .ok()
        .filter(|answer| answer.node == node)
}

/// Cuts `message` to [`MESSAGE_LIMIT`] bytes on a character boundary, ending in `…`.
fn cut(message: &str) -> String {
    super::cut_message(message, MESSAGE_LIMIT)
}

/// Reads and writes prepull records.
#[derive(Debug, Clone)]
pub struct Prepulls {
    store: Arc<dyn Store>,
    keys: Keys,
}

impl Prepulls {
    /// Prepull records of the installation `keys` names.
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys }
    }

    /// Writes `request` at `prepulls/<id>`, attached to `lease`, only if no such key exists;
    /// the revision of the write. Refuses a request a controller would refuse.
    pub async fn create(
        &self,
        id: &str,
        request: &PrepullRequest,
        lease: LeaseId,
    ) -> Result<i64, PrepullError> {
        let key = self.keys.prepull(id);
        let refused = |reason: String| PrepullError::Refused {
            key: key.clone(),
            reason,
        };
        check_id(id).map_err(refused)?;
        check_request(request).map_err(refused)?;
        let value = serde_json::to_vec(request).map_err(|e| refused(e.to_string()))?;
        if value.len() > REQUEST_LIMIT {
            return Err(refused(format!(
                "{} bytes, more than {REQUEST_LIMIT}",
                value.len()
            )));
        }
        let outcome = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::Absent { key: key.clone() })
                    .put_with_lease(key.clone(), value, lease),
            )
            .await?;
        if !outcome.succeeded {
            return Err(refused("a request with this id exists".to_owned()));
        }
        Ok(outcome.revision)
    }

    /// Writes `answer` for the request at `prepulls/<id>` created at `created`, attached to
    /// the request's `lease`, only while that very request is there (not deleted, not
    /// replaced); `false` when it is gone.
    pub async fn answer(
        &self,
        id: &str,
        created: i64,
        lease: LeaseId,
        answer: &NodeAnswer,
    ) -> Result<bool, PrepullError> {
        let key = self.keys.prepull_answer(id, &answer.node);
        let mut answer = answer.clone();
        let mut value = serde_json::to_vec(&answer).map_err(|e| PrepullError::Refused {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        if value.len() > ANSWER_LIMIT {
            // Only the list of covered games can be that long: say how many instead.
            answer.note = Some(format!(
                "{} games covered (too many to list); {}",
                answer.games.len(),
                answer.note.take().unwrap_or_default()
            ));
            answer.games.clear();
            value = serde_json::to_vec(&answer).unwrap_or_default();
        }
        let written = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::CreateRevision {
                        key: self.keys.prepull(id),
                        revision: created,
                    })
                    .put_with_lease(key, value, lease),
            )
            .await;
        match written {
            Ok(outcome) => Ok(outcome.succeeded),
            // The lease went (revoked or expired) with the request.
            Err(StoreError::LeaseNotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(games: &[&str]) -> PrepullRequest {
        PrepullRequest {
            games: games.iter().map(|g| (*g).to_owned()).collect(),
            image: Some("127.0.0.1:5100/a/engine:2".into()),
            requested_at: Timestamp::from_unix_seconds(1_800_000_000),
            requester: "rtctl-prepull-1".into(),
        }
    }

    fn kv(value: Vec<u8>, lease: LeaseId) -> KeyValue {
        KeyValue {
            key: "/r/prepulls/p1".into(),
            value,
            create_revision: 5,
            mod_revision: 5,
            version: 1,
            lease,
        }
    }

    #[test]
    fn a_request_reads_back_as_written() {
        let written = request(&["g1", "g2"]);
        let read = decode_request(&kv(serde_json::to_vec(&written).unwrap(), 7)).unwrap();
        assert_eq!(read, written);
        let text = String::from_utf8(serde_json::to_vec(&written).unwrap()).unwrap();
        assert!(
            text.contains("\"requestedAt\":\"2027-01-15T08:00:00Z\""),
            "{text}"
        );
    }

    #[test]
    fn forged_oversized_or_unleased_requests_are_refused() {
        let good = serde_json::to_vec(&request(&["g1"])).unwrap();
        let refused = |kv: KeyValue| match decode_request(&kv) {
            Err(PrepullError::Refused { reason, .. }) => reason,
            other => panic!("accepted: {other:?}"),
        };
        assert!(refused(kv(good.clone(), 0)).contains("lease"));
        assert!(refused(kv(b"{not json".to_vec(), 7)).contains("not a prepull request"));
        assert!(refused(kv(vec![b' '; REQUEST_LIMIT + 1], 7)).contains("more than"));
        let many: Vec<String> = (0..=MAX_GAMES).map(|i| format!("g{i}")).collect();
        let mut too_many = request(&[]);
        too_many.games = many;
        assert!(refused(kv(serde_json::to_vec(&too_many).unwrap(), 7)).contains("more than 10000"));
        let mut bad_name = request(&["../etc"]);
        assert!(refused(kv(serde_json::to_vec(&bad_name).unwrap(), 7)).contains("game name"));
        bad_name.games = vec!["g1".into()];
        bad_name.image = Some("a b".into());
        assert!(refused(kv(serde_json::to_vec(&bad_name).unwrap(), 7)).contains("image"));
        assert!(refused(kv(serde_json::to_vec(&request(&[])).unwrap(), 7)).contains("no game"));
        let unknown =
            br#"{"games":["g1"],"requestedAt":"2027-01-15T08:00:00Z","requester":"x","cmd":"rm"}"#;
        assert!(refused(kv(unknown.to_vec(), 7)).contains("unknown field"));
    }

    #[test]
    fn keys_under_prepulls_decode_to_requests_and_answers() {
        let keys = Keys::new("/r").unwrap();
        assert_eq!(
            PrepullKey::of(&keys, "/r/prepulls/p1"),
            Some(PrepullKey::Request("p1"))
        );
        assert_eq!(
            PrepullKey::of(&keys, &keys.prepull_answer("p1", "node-a.eu")),
            Some(PrepullKey::Answer("p1", "node-a.eu"))
        );
        for junk in [
            "/r/prepulls/",
            "/r/prepulls/P1",
            "/r/prepulls/p1/x/node-a",
            "/r/prepulls/p1/nodes/a/b",
            "/r/status/g1",
        ] {
            assert_eq!(PrepullKey::of(&keys, junk), None, "{junk}");
        }
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MESSAGE_LIMIT);
        let answer = ImageAnswer::failed("x:1", ErrorCode::ImagePullFailed, &long, 3);
        let message = answer.message.unwrap();
        assert!(message.len() <= MESSAGE_LIMIT && message.ends_with('…'));
    }

    #[test]
    fn an_answer_under_another_nodes_key_is_not_read() {
        let answer = NodeAnswer {
            node: "node-a".into(),
            images: vec![],
            games: vec!["g1".into()],
            note: None,
            finished_at: Timestamp::from_unix_seconds(1),
        };
        let kv = kv(serde_json::to_vec(&answer).unwrap(), 7);
        assert_eq!(decode_answer(&kv, "node-a"), Some(answer));
        assert_eq!(decode_answer(&kv, "node-b"), None);
    }
}
