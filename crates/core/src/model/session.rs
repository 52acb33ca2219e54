//! A game's session: whether a match runs on it (`Allocated`) or not (`Idle`), as a
//! matchmaker or an operator says at `<prefix>/sessions/<game>`. The shape only; the
//! record's home (`records::sessions`) reads and writes it, and the controller's `plan`
//! makes voluntary disruptions wait while a game is Allocated.
//!
//! The stored form is compact JSON, so that a matchmaker in any language can write it:
//!
//! ```json
//! {"state":"Allocated","ref":"match-42","since":"2026-12-02T07:00:00Z","containerId":"9f2c…"}
//! ```
//!
//! No key, or a record whose state is `Idle`, means the game is idle.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Whether a match runs on the game.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SessionState {
    /// No match: voluntary disruptions go ahead.
    Idle,
    /// A match runs: voluntary disruptions wait for its end.
    Allocated,
}

impl SessionState {
    /// The wire form: `Idle` or `Allocated`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionState::Idle => "Idle",
            SessionState::Allocated => "Allocated",
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A game's session record (and, in `status.session`, the session as the controller last
/// recorded it in the history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Session {
    /// `Allocated` or `Idle`.
    pub state: SessionState,
    /// Who allocated or released it: the matchmaker's match or request id (at most 253
    /// printable characters).
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// When it entered its state.
    pub since: Timestamp,
    /// The container the game ran when it was allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Who wrote it: `admin_cli` (rtctl), `api` (a matchmaker; the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Session {
    /// Whether a match runs on the game.
    pub fn is_allocated(&self) -> bool {
        self.state == SessionState::Allocated
    }
}
