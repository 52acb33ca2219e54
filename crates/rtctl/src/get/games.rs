//! The games a `get` shows, read from a listing of the documents and status prefixes: the
//! readable ones with their status merged in, and the invalid ones (shown, not hidden), and
//! which of them a command line picks.

use std::collections::BTreeMap;

use super::selector::Selector;
use crate::client::Client;
use crate::error::one_line;
use crate::output::{note, warn};
use rtm_core::model::{GameRuntime, GameRuntimeStatus, Session};
use rtm_core::records::documents::DocumentError;
use rtm_core::records::nodes::{self, Assignment};
use rtm_core::store::{KeyValue, Keys, Listing};

/// A stored document that cannot be read (garbage bytes, a name that does not match its key),
/// shown by `get` as STATE `Invalid` so it is not mistaken for a missing game.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InvalidGame {
    pub(crate) key: String,
    pub(crate) reason: String,
    pub(crate) status: Option<GameRuntimeStatus>,
}

/// What a listing of games reads: documents and statuses (in the order [`games_from`] takes
/// them), then sessions ([`sessions_from`]).
pub(crate) fn prefixes(keys: &Keys) -> Vec<String> {
    vec![keys.gameruntimes(), keys.statuses(), keys.sessions()]
}

/// The session records of a listing of `sessions/`, by game.
pub(crate) fn sessions_from(keys: &Keys, sessions: &Listing) -> BTreeMap<String, Session> {
    sessions
        .items
        .iter()
        .filter_map(|kv| {
            let game = keys.name_of(&keys.sessions(), &kv.key)?;
            Some((game.to_owned(), rtm_core::records::sessions::decode(kv)))
        })
        .collect()
}

/// The assignments among `items` (keys under `assignments/`), by game; one that does not
/// decode is left out (the game then shows as if it had none).
pub(crate) fn assignments_from(keys: &Keys, items: &[KeyValue]) -> BTreeMap<String, Assignment> {
    items
        .iter()
        .filter_map(|kv| {
            let game = keys.name_of(&keys.assignments(), &kv.key)?;
            Some((game.to_owned(), nodes::decode::<Assignment>(&kv.value)?))
        })
        .collect()
}

/// The games of a listing of the documents and status prefixes, by name: the readable ones,
/// and the invalid ones.
pub(crate) fn games_from(
    client: &Client,
    docs: &Listing,
    statuses: &Listing,
) -> (BTreeMap<String, GameRuntime>, BTreeMap<String, InvalidGame>) {
    let keys = client.keys();
    let mut status_of: BTreeMap<&str, GameRuntimeStatus> = BTreeMap::new();
    for kv in &statuses.items {
        if let Some(name) = keys.name_of(&keys.statuses(), &kv.key)
            && let Some(status) = crate::client::decode_status(kv)
        {
            status_of.insert(name, status);
        }
    }
    let mut games = BTreeMap::new();
    let mut invalid = BTreeMap::new();
    for kv in &docs.items {
        match client.documents().decode(kv) {
            Ok(mut doc) => {
                doc.status = status_of.remove(doc.metadata.name.as_str());
                games.insert(doc.metadata.name.clone(), doc);
            }
            Err(e) => match keys.name_of(&keys.gameruntimes(), &kv.key) {
                Some(name) => {
                    invalid.insert(
                        name.to_owned(),
                        InvalidGame {
                            key: kv.key.clone(),
                            reason: corrupt_reason(e),
                            status: status_of.get(name).cloned(),
                        },
                    );
                }
                // Not a game's key at all (a deeper key, a name no game can have).
                None => warn(&format!("skipping {}: {e}", kv.key)),
            },
        }
    }
    (games, invalid)
}

/// Why a stored document is invalid, on one line.
pub(crate) fn corrupt_reason(error: DocumentError) -> String {
    match error {
        DocumentError::Corrupt { message, .. } => one_line(&message),
        other => one_line(&other.to_string()),
    }
}

/// Warns that a game is invalid, and why (its table row or name is printed on stdout).
pub(crate) fn warn_invalid(name: &str, game: &InvalidGame) {
    warn(&format!(
        "gameruntime/{name} is invalid: the value stored at {} is not a valid GameRuntime ({})",
        game.key, game.reason
    ));
}

/// Tells that there is no game at all, naming where rtctl looked.
pub(crate) fn note_none_found(keys: &Keys) {
    note(&format!(
        "No gameruntimes found under prefix {}.",
        keys.prefix()
    ));
}

/// A game to show: a readable document, or an invalid one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shown<'g> {
    Valid(&'g GameRuntime),
    Invalid(&'g String, &'g InvalidGame),
}

impl Shown<'_> {
    /// The game's name.
    pub(crate) fn name(&self) -> &str {
        match self {
            Shown::Valid(doc) => &doc.metadata.name,
            Shown::Invalid(name, _) => name,
        }
    }
}

/// The games to show, in name order (or in the order named). Invalid games have no labels to
/// match: with a selector they are left out, with a warning.
pub(crate) fn select<'g>(
    games: &'g BTreeMap<String, GameRuntime>,
    invalid: &'g BTreeMap<String, InvalidGame>,
    names: &[String],
    selector: &Selector,
) -> Vec<Shown<'g>> {
    let find = |name: &String| -> Option<Shown<'g>> {
        match games.get_key_value(name) {
            Some((_, doc)) => Some(Shown::Valid(doc)),
            None => invalid
                .get_key_value(name)
                .map(|(name, game)| Shown::Invalid(name, game)),
        }
    };
    let chosen: Vec<Shown<'g>> = if names.is_empty() {
        let mut all: Vec<Shown<'g>> = games
            .values()
            .map(Shown::Valid)
            .chain(
                invalid
                    .iter()
                    .map(|(name, game)| Shown::Invalid(name, game)),
            )
            .collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    } else {
        names.iter().filter_map(find).collect()
    };
    chosen
        .into_iter()
        .filter(|shown| match shown {
            Shown::Valid(doc) => selector.matches(&doc.metadata.labels),
            Shown::Invalid(name, game) if !selector.0.is_empty() => {
                warn(&format!(
                    "gameruntime/{name} is invalid (the value stored at {} cannot be read), so \
                     the label selector cannot match it: left out",
                    game.key
                ));
                false
            }
            Shown::Invalid(..) => true,
        })
        .collect()
}
