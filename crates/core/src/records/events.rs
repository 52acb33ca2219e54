//! Short-lived observations of the controller that the history is not for (`events/<game>/
//! <reason>`): a crash loop backing off, a failing health check, an update deferred by a
//! session or a budget, a lease another controller holds for long, a container adopted or a
//! duplicate removed. The one home of what an event holds and how it is stored.
//!
//! One key per game and reason, so a repeated observation folds into the event before it:
//! its `count` grows and `last_seen` moves, and a crash-looping game has one `BackOff`
//! event, not one per crash. Every key is attached to an etcd lease with a time to live
//! (the controller's `--event-ttl`): an event nobody repeats goes by itself, and the
//! records stay bounded (one per game and [`EventReason`], a message of at most
//! [`MESSAGE_LIMIT`] bytes).
//!
//! Events are observations, not operations: best effort, written without the game's lease
//! (a controller that cannot get the lease says so in one), never read by the controller to
//! decide anything. A forged or broken one changes nothing but what `rtctl events` shows.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::Timestamp;
use crate::store::{KeyValue, Keys, Store, StoreError};

/// The longest message kept; a longer one is cut (on a character boundary) and ends in `…`.
pub const MESSAGE_LIMIT: usize = 1024;

/// The largest stored event `rtctl` decodes: the message and the fields around it, with
/// room to spare. A larger one was not written by a controller.
pub const RECORD_LIMIT: usize = 4096;

/// What was observed. The set is closed: a key per game and reason keeps events bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventReason {
    /// The container exited and is restarted after a crash-loop back-off.
    BackOff,
    /// The health check judged the running container unhealthy (or never serving).
    HealthCheckFailed,
    /// A voluntary update waits: for the game's session to end, or for a disruption budget.
    UpdateDeferred,
    /// Another controller has held the game's lease for long; this one waits.
    LeaseBlocked,
    /// A running container the records did not know (or knew under another name) was
    /// adopted as the game's, not recreated.
    AdoptedContainer,
    /// A second container of the game was removed (the sweep keeps one).
    RemovedDuplicate,
    /// The game's image was pulled from its registry.
    ImagePulled,
}

impl EventReason {
    /// Every reason, in the order `rtctl` documents them.
    pub const ALL: [EventReason; 7] = [
        EventReason::BackOff,
        EventReason::HealthCheckFailed,
        EventReason::UpdateDeferred,
        EventReason::LeaseBlocked,
        EventReason::AdoptedContainer,
        EventReason::RemovedDuplicate,
        EventReason::ImagePulled,
    ];

    /// The name in keys, tables and the `reason` label of `rtmanager_events_total`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventReason::BackOff => "BackOff",
            EventReason::HealthCheckFailed => "HealthCheckFailed",
            EventReason::UpdateDeferred => "UpdateDeferred",
            EventReason::LeaseBlocked => "LeaseBlocked",
            EventReason::AdoptedContainer => "AdoptedContainer",
            EventReason::RemovedDuplicate => "RemovedDuplicate",
            EventReason::ImagePulled => "ImagePulled",
        }
    }

    /// Whether it is worth a look (`Warning`) or just so (`Normal`).
    pub const fn kind(self) -> EventKind {
        match self {
            EventReason::BackOff
            | EventReason::HealthCheckFailed
            | EventReason::LeaseBlocked
            | EventReason::RemovedDuplicate => EventKind::Warning,
            EventReason::UpdateDeferred
            | EventReason::AdoptedContainer
            | EventReason::ImagePulled => EventKind::Normal,
        }
    }
}

impl std::fmt::Display for EventReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Normal` or `Warning`, as `kubectl get events` tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Worth knowing.
    Normal,
    /// Worth a look.
    Warning,
}

impl EventKind {
    /// `Normal` or `Warning`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Normal => "Normal",
            EventKind::Warning => "Warning",
        }
    }
}

/// One event, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The game it is about.
    pub game_id: String,
    /// What was observed.
    pub reason: EventReason,
    /// `Normal` or `Warning` (from the reason).
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// What was seen, for people (the latest occurrence's), at most [`MESSAGE_LIMIT`] bytes.
    pub message: String,
    /// How many times it was observed since `first_seen` (folded into this one key).
    pub count: u64,
    /// When it was first observed.
    pub first_seen: Timestamp,
    /// When it was last observed.
    pub last_seen: Timestamp,
    /// The controller that observed it last.
    #[serde(default)]
    pub source: String,
    /// Which occurrence was counted last (the crashed container and when it exited, the
    /// generation an update waits with): a controller that sees the same one again, after
    /// a resync or its own restart, does not count it twice.
    #[serde(default)]
    pub occurrence: String,
}

impl Event {
    /// A first observation, now.
    pub fn first(game: &str, reason: EventReason, message: &str, source: &str) -> Event {
        let now = Timestamp::now();
        Event {
            game_id: game.to_owned(),
            reason,
            kind: reason.kind(),
            message: bounded(message),
            count: 1,
            first_seen: now,
            last_seen: now,
            source: source.to_owned(),
            occurrence: String::new(),
        }
    }

    /// This event observed once more, now, with `message`.
    pub fn again(mut self, message: &str, source: &str) -> Event {
        self.count = self.count.saturating_add(1);
        self.last_seen = Timestamp::now();
        self.message = bounded(message);
        self.source = source.to_owned();
        self
    }

    /// The same, counted as `occurrence` (kept at most [`MESSAGE_LIMIT`] bytes).
    pub fn of(mut self, occurrence: &str) -> Event {
        self.occurrence = bounded(occurrence);
        self
    }
}

fn bounded(message: &str) -> String {
    super::cut_message(message, MESSAGE_LIMIT)
}

/// A stored value that is not an event a controller writes (edited or forged by hand).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the value stored at {key} is not an event: {message}")]
pub struct Corrupt {
    /// Its key.
    pub key: String,
    /// What the decoder said.
    pub message: String,
}

/// The stored form.
pub fn encode(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).expect("an event always serialises")
}

/// Decodes a stored event, refusing one larger than [`RECORD_LIMIT`] or stored under
/// another game's or reason's key.
pub fn decode(keys: &Keys, kv: &KeyValue) -> Result<Event, Corrupt> {
    let corrupt = |message: String| Corrupt {
        key: kv.key.clone(),
        message,
    };
    if kv.value.len() > RECORD_LIMIT {
        return Err(corrupt(format!(
            "it holds {} bytes, more than the {RECORD_LIMIT} a controller writes",
            kv.value.len()
        )));
    }
    let event: Event = serde_json::from_slice(&kv.value).map_err(|e| corrupt(e.to_string()))?;
    if kv.key != keys.event(&event.game_id, event.reason) {
        return Err(corrupt(format!(
            "it names game {:?} and reason {}, which belong under another key",
            event.game_id, event.reason
        )));
    }
    Ok(event)
}

/// The events under one prefix, for readers.
#[derive(Debug, Clone)]
pub struct Events {
    store: Arc<dyn Store>,
    keys: Keys,
}

impl Events {
    /// The events under `keys` in `store`.
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys }
    }

    /// The game's events (every game's for `None`), oldest last seen first; a stored value
    /// that does not decode is returned as its [`Corrupt`], in key order after the rest.
    pub async fn list(
        &self,
        game: Option<&str>,
    ) -> Result<Vec<Result<Event, Corrupt>>, StoreError> {
        let prefix = match game {
            Some(game) => self.keys.game_events(game),
            None => self.keys.events(),
        };
        let listing = self.store.list(&prefix, None).await?;
        let mut events: Vec<_> = listing
            .items
            .iter()
            .map(|kv| decode(&self.keys, kv))
            .collect();
        events.sort_by_key(|e| match e {
            Ok(event) => (0, event.last_seen, String::new()),
            Err(corrupt) => (1, Timestamp::from_unix_seconds(0), corrupt.key.clone()),
        });
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_fold_into_one_event_with_a_count() {
        let first = Event::first("g1", EventReason::BackOff, "exited 1", "c1");
        let again = first.clone().again("exited 2", "c2");
        assert_eq!(again.count, 2);
        assert_eq!(again.first_seen, first.first_seen);
        assert!(again.last_seen >= first.last_seen);
        assert_eq!(
            (again.message.as_str(), again.source.as_str()),
            ("exited 2", "c2")
        );
        assert_eq!(again.kind, EventKind::Warning);
    }

    #[test]
    fn a_long_message_is_cut_on_a_character() {
        let event = Event::first("g1", EventReason::UpdateDeferred, &"é".repeat(2000), "c1");
        assert!(event.message.len() <= MESSAGE_LIMIT);
        assert!(event.message.ends_with('…'));
        assert_eq!(event.kind, EventKind::Normal);
    }

    #[test]
    fn an_event_round_trips_and_a_misplaced_or_huge_one_is_refused() {
        let keys = Keys::new("/t").unwrap();
        let event = Event::first("g1", EventReason::HealthCheckFailed, "503", "c1");
        let kv = |key: String, value: Vec<u8>| KeyValue {
            key,
            value,
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        };
        let right = kv(
            keys.event("g1", EventReason::HealthCheckFailed),
            encode(&event),
        );
        assert_eq!(decode(&keys, &right).unwrap(), event);
        let text = String::from_utf8(encode(&event)).unwrap();
        assert!(text.contains(r#""reason":"HealthCheckFailed""#), "{text}");
        assert!(text.contains(r#""type":"Warning""#), "{text}");
        let misplaced = kv(
            keys.event("g2", EventReason::HealthCheckFailed),
            encode(&event),
        );
        assert!(
            decode(&keys, &misplaced)
                .unwrap_err()
                .message
                .contains("another key")
        );
        let huge = kv(
            keys.event("g1", EventReason::BackOff),
            vec![b' '; RECORD_LIMIT + 1],
        );
        assert!(
            decode(&keys, &huge)
                .unwrap_err()
                .message
                .contains("more than")
        );
    }

    #[test]
    fn reasons_have_stable_names() {
        let names: Vec<&str> = EventReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "BackOff",
                "HealthCheckFailed",
                "UpdateDeferred",
                "LeaseBlocked",
                "AdoptedContainer",
                "RemovedDuplicate",
                "ImagePulled"
            ]
        );
        for reason in EventReason::ALL {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
    }
}
