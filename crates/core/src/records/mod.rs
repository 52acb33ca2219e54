//! The records rtmanager keeps under its prefix, one home each: the
//! `GameRuntime` documents ([`documents`]), the status records
//! ([`status`]), the per-game operation log ([`history`]) and what lease
//! keys and controller heartbeats hold ([`lease`]), the games' sessions
//! ([`sessions`]), the last output of each game's previous container ([`previous`]), the
//! controllers' short-lived observations ([`events`]), the disruption budgets with their slots ([`budgets`]), the kept specs of
//! each game ([`revisions`]), the nodes, their cordons and the games' assignments ([`nodes`]) and the prepull requests with their answers ([`prepulls`]). A record as read is a
//! [`Versioned`] value: the value and the revision it was read at.

pub mod budgets;
pub mod documents;
pub mod events;
pub mod history;
pub mod lease;
pub mod nodes;
pub mod prepulls;
pub mod previous;
pub mod revisions;
pub mod sessions;
pub mod status;

pub use documents::Documents;
pub use history::{History, HistoryEntry};
pub use status::{StatusRecord, StatusStore};

use crate::store::Revision;

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` when cut: how a
/// record bounds a message it keeps (an event's, a prepull answer's).
pub(crate) fn cut_message(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A record as read: its value, and the etcd revision that last changed it
/// (`None`: there was no record, and `value` is what its absence means).
/// Compare the revision to write only over what was read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Versioned<T> {
    /// The record's value.
    pub value: T,
    /// The record's mod revision; `None` when there was no record.
    pub revision: Option<Revision>,
}

impl<T> Versioned<T> {
    /// A record read at `revision`.
    pub fn new(value: T, revision: Revision) -> Self {
        Self {
            value,
            revision: Some(revision),
        }
    }

    /// Whether there was a record.
    pub fn exists(&self) -> bool {
        self.revision.is_some()
    }
}

impl<T: Default> Versioned<T> {
    /// No record: the default value, no revision.
    pub fn absent() -> Self {
        Self {
            value: T::default(),
            revision: None,
        }
    }
}
