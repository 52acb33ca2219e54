//! The records rtmanager keeps under its prefix, one home each: the
//! `GameRuntime` documents ([`documents`]), the per-game operation log
//! ([`history`]) and what lease keys and controller heartbeats hold
//! ([`lease`]).

pub mod documents;
pub mod history;
pub mod lease;

pub use documents::Documents;
pub use history::{History, HistoryEntry};
