//! `rtctl get -w`: the initial listing (unless `--watch-only`), then one line per game per
//! change, through a [`MultiWatch`] that rides out etcd outages and relists after compaction.

use std::collections::BTreeMap;
use std::io::Write;

use super::GetArgs;
use super::games::{
    InvalidGame, Shown, corrupt_reason, games_from, note_none_found, prefixes, select,
    sessions_from, warn_invalid,
};
use super::printer::Printer;
use super::selector::Selector;
use crate::client::{Client, MultiWatch, WatchItem};
use crate::error::{CliError, Outcome};
use rtm_core::model::GameRuntime;
use rtm_core::store::{Listing, WatchBatch, WatchEvent};

/// Follows the games' changes until `shutdown` (Ctrl-C) ends the watch.
pub(super) async fn watch(
    client: &Client,
    args: &GetArgs,
    names: &[String],
    selector: &Selector,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, CliError> {
    let (mut watch, listings, _) = MultiWatch::start(client, prefixes(client.keys())).await?;
    let (games, invalid) = games_from(client, &listings[0], &listings[1]);
    let mut known = Known {
        games,
        invalid,
        tombstones: BTreeMap::new(),
    };
    if !args.watch_only
        && let Some(missing) = names
            .iter()
            .find(|n| !known.games.contains_key(*n) && !known.invalid.contains_key(*n))
    {
        // As kubectl: watching a named game that does not exist is an error; --watch-only
        // waits for it to appear.
        return Err(client.not_found(missing));
    }
    let mut printer = Printer::new(&args.output, true, args.output_watch_events, args.labels());
    printer.set_sessions(sessions_from(client.keys(), &listings[2]));
    if !args.watch_only {
        print_initial(client, &known, args, names, selector, &mut printer, out)?;
    }
    let wanted = Wanted {
        names,
        selector,
        fields: args.field_selector.as_ref(),
    };
    tokio::pin!(shutdown);
    loop {
        let item = tokio::select! {
            () = &mut shutdown => return Ok(Outcome::Success),
            item = watch.next() => item?,
        };
        match item {
            WatchItem::Batch(batch) => {
                print_batch(client, &mut known, &batch, &wanted, &mut printer, out)?;
            }
            WatchItem::Relisted(listings) => {
                print_relisted(client, &mut known, &listings, &wanted, &mut printer, out)?;
            }
        }
    }
}

/// What the watch knows of the games between changes.
struct Known {
    games: BTreeMap<String, GameRuntime>,
    invalid: BTreeMap<String, InvalidGame>,
    /// Games whose document was deleted, kept so the status updates of their removal still
    /// print a whole row; dropped when their status goes.
    tombstones: BTreeMap<String, GameRuntime>,
}

/// Which games the watch prints: the ones named (all when none is), that the selector
/// matches.
struct Wanted<'w> {
    names: &'w [String],
    selector: &'w Selector,
    fields: Option<&'w crate::shape::FieldSelector>,
}

impl Wanted<'_> {
    fn named(&self, name: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|n| n == name)
    }

    fn doc(&self, name: &str, doc: &GameRuntime) -> bool {
        self.named(name)
            && self.selector.matches(&doc.metadata.labels)
            && self.fields.is_none_or(|fields| {
                fields.matches(&super::printer::json_value(doc).unwrap_or_default())
            })
    }

    /// An invalid game has no labels or fields to match: shown unless a selector is given.
    fn invalid(&self, name: &str) -> bool {
        self.named(name) && self.selector.0.is_empty() && self.fields.is_none()
    }
}

/// The listing the watch starts with, and a warning for each invalid game in it.
fn print_initial(
    client: &Client,
    known: &Known,
    args: &GetArgs,
    names: &[String],
    selector: &Selector,
    printer: &mut Printer,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut shown = select(&known.games, &known.invalid, names, selector);
    args.filter_and_sort(&mut shown);
    if shown.is_empty() {
        if names.is_empty() {
            note_none_found(client.keys());
        }
    } else {
        printer.listing(&shown, args.no_headers, out)?;
    }
    out.flush()?;
    for shown in &shown {
        if let Shown::Invalid(name, game) = shown {
            warn_invalid(name, game);
        }
    }
    Ok(())
}

/// Folds a batch into what is known and prints one line per game it changed (a batch is one
/// revision's worth of changes).
fn print_batch(
    client: &Client,
    known: &mut Known,
    batch: &WatchBatch,
    wanted: &Wanted<'_>,
    printer: &mut Printer,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut changed: Vec<(String, &'static str)> = Vec::new();
    // Invalid games deleted in this batch, for their last line.
    let mut invalid_gone: BTreeMap<String, InvalidGame> = BTreeMap::new();
    let keys = client.keys();
    for event in batch {
        // A session record changed: the game's row (its SESSION) changed.
        if let Some(name) = keys.name_of(&keys.sessions(), event.key()) {
            let session = match event {
                WatchEvent::Put(kv) => Some(rtm_core::records::sessions::decode(kv)),
                WatchEvent::Delete { .. } => None,
            };
            printer.set_session(name, session);
            let known = known.games.contains_key(name) || known.invalid.contains_key(name);
            if known && !changed.iter().any(|(n, _)| n == name) {
                changed.push((name.to_owned(), "MODIFIED"));
            }
            continue;
        }
        let mut cache = Cache {
            games: &mut known.games,
            tombstones: &mut known.tombstones,
            invalid: &mut known.invalid,
            invalid_gone: &mut invalid_gone,
        };
        if let Some((name, kind)) = apply_event(client, &mut cache, event) {
            match changed.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 = merge_kind(entry.1, kind),
                None => changed.push((name, kind)),
            }
        }
    }
    for (name, kind) in changed {
        let doc = known
            .games
            .get(&name)
            .or_else(|| known.tombstones.get(&name));
        if let Some(doc) = doc {
            if wanted.doc(&name, doc) {
                printer.change(kind, doc, out)?;
            }
        } else if let Some(game) = known.invalid.get(&name).or_else(|| invalid_gone.get(&name))
            && wanted.invalid(&name)
        {
            printer.change_invalid(kind, &name, game, out)?;
        }
    }
    Ok(())
}

/// After a relisting: prints what differs from what was known, then knows the listing.
fn print_relisted(
    client: &Client,
    known: &mut Known,
    listings: &[Listing],
    wanted: &Wanted<'_>,
    printer: &mut Printer,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (fresh, fresh_invalid) = games_from(client, &listings[0], &listings[1]);
    printer.set_sessions(sessions_from(client.keys(), &listings[2]));
    for (name, doc) in &fresh {
        let kind = match known.games.get(name) {
            None => "ADDED",
            Some(old) if old != doc => "MODIFIED",
            Some(_) => continue,
        };
        if wanted.doc(name, doc) {
            printer.change(kind, doc, out)?;
        }
    }
    for (name, game) in &fresh_invalid {
        let kind = match known.invalid.get(name) {
            Some(old) if old == game => continue,
            Some(_) => "MODIFIED",
            None if known.games.contains_key(name) => "MODIFIED",
            None => "ADDED",
        };
        if wanted.invalid(name) {
            printer.change_invalid(kind, name, game, out)?;
        }
    }
    let gone = |name: &String| !fresh.contains_key(name) && !fresh_invalid.contains_key(name);
    for (name, doc) in &known.games {
        if gone(name) && wanted.doc(name, doc) {
            printer.change("DELETED", doc, out)?;
        }
    }
    for (name, game) in &known.invalid {
        if gone(name) && wanted.invalid(name) {
            printer.change_invalid("DELETED", name, game, out)?;
        }
    }
    *known = Known {
        games: fresh,
        invalid: fresh_invalid,
        tombstones: BTreeMap::new(),
    };
    Ok(())
}

/// How two changes of one game in one batch read as one line.
fn merge_kind(first: &'static str, then: &'static str) -> &'static str {
    match (first, then) {
        ("ADDED", "DELETED") | (_, "DELETED") => "DELETED",
        ("ADDED", _) => "ADDED",
        _ => then,
    }
}

/// What the watch knows of the games.
struct Cache<'c> {
    games: &'c mut BTreeMap<String, GameRuntime>,
    tombstones: &'c mut BTreeMap<String, GameRuntime>,
    invalid: &'c mut BTreeMap<String, InvalidGame>,
    invalid_gone: &'c mut BTreeMap<String, InvalidGame>,
}

/// Folds one watch event into the cache; returns the game it changed and how.
fn apply_event(
    client: &Client,
    cache: &mut Cache<'_>,
    event: &WatchEvent,
) -> Option<(String, &'static str)> {
    let keys = client.keys();
    let docs_prefix = keys.gameruntimes();
    let status_prefix = keys.statuses();
    if let Some(name) = keys.name_of(&docs_prefix, event.key()) {
        let name = name.to_owned();
        let known = cache.games.contains_key(&name) || cache.invalid.contains_key(&name);
        return match event {
            WatchEvent::Put(kv) => {
                let kind = if known { "MODIFIED" } else { "ADDED" };
                let status = cache
                    .games
                    .get(&name)
                    .and_then(|old| old.status.clone())
                    .or_else(|| cache.invalid.get(&name).and_then(|i| i.status.clone()))
                    .or_else(|| cache.tombstones.remove(&name).and_then(|t| t.status));
                match client.documents().decode(kv) {
                    Ok(mut doc) => {
                        doc.status = status;
                        cache.invalid.remove(&name);
                        cache.games.insert(name.clone(), doc);
                    }
                    Err(e) => {
                        cache.games.remove(&name);
                        cache.invalid.insert(
                            name.clone(),
                            InvalidGame {
                                key: kv.key.clone(),
                                reason: corrupt_reason(e),
                                status,
                            },
                        );
                    }
                }
                Some((name, kind))
            }
            WatchEvent::Delete { .. } => {
                if let Some(game) = cache.invalid.remove(&name) {
                    cache.invalid_gone.insert(name.clone(), game);
                    return Some((name, "DELETED"));
                }
                let doc = cache.games.remove(&name)?;
                cache.tombstones.insert(name.clone(), doc);
                Some((name, "DELETED"))
            }
        };
    }
    if let Some(name) = keys.name_of(&status_prefix, event.key()) {
        let name = name.to_owned();
        let status = match event {
            WatchEvent::Put(kv) => crate::client::decode_status(kv),
            WatchEvent::Delete { .. } => None,
        };
        if let Some(doc) = cache.games.get_mut(&name) {
            doc.status = status;
            return Some((name, "MODIFIED"));
        }
        if let Some(game) = cache.invalid.get_mut(&name) {
            game.status = status;
            return Some((name, "MODIFIED"));
        }
        // The status of a game whose document is gone: its removal's progress.
        return match status {
            Some(status) => {
                let doc = cache.tombstones.get_mut(&name)?;
                doc.status = Some(status);
                Some((name, "DELETED"))
            }
            None => {
                cache.tombstones.remove(&name);
                None
            }
        };
    }
    None
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_watched_document_turning_to_garbage_is_invalid_until_it_is_fixed_or_deleted() {
        use rtm_core::store::{KeyValue, Keys};
        let keys = Keys::default();
        let client = Client::new(
            std::sync::Arc::new(rtm_core::store::memory::MemoryStore::new()),
            keys.clone(),
            "memory".into(),
            Duration::from_secs(1),
        );
        let put = |value: &[u8], revision| {
            WatchEvent::Put(KeyValue {
                key: keys.gameruntime("g1"),
                value: value.to_vec(),
                create_revision: 1,
                mod_revision: revision,
                version: revision,
                lease: 0,
            })
        };
        let valid =
            b"apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {name: g1}\n\
                      spec: {image: 'x:1'}\n";
        let (mut games, mut tombstones, mut invalid, mut gone) = Default::default();
        let mut cache = Cache {
            games: &mut games,
            tombstones: &mut tombstones,
            invalid: &mut invalid,
            invalid_gone: &mut gone,
        };
        let mut step = |event: &WatchEvent| apply_event(&client, &mut cache, event);
        assert_eq!(step(&put(valid, 2)), Some(("g1".into(), "ADDED")));
        assert_eq!(
            step(&put(b"\xffgarbage", 3)),
            Some(("g1".into(), "MODIFIED"))
        );
        assert_eq!(step(&put(valid, 4)), Some(("g1".into(), "MODIFIED")));
        assert_eq!(
            step(&put(b"\xffgarbage", 5)),
            Some(("g1".into(), "MODIFIED"))
        );
        let deleted = WatchEvent::Delete {
            key: keys.gameruntime("g1"),
            mod_revision: 6,
        };
        assert_eq!(step(&deleted), Some(("g1".into(), "DELETED")));
        assert!(games.is_empty() && invalid.is_empty());
        assert_eq!(
            gone.len(),
            1,
            "the deleted invalid game is kept for its last line"
        );
    }

    #[test]
    fn a_batch_that_adds_then_deletes_reports_deleted() {
        assert_eq!(merge_kind("ADDED", "MODIFIED"), "ADDED");
        assert_eq!(merge_kind("ADDED", "DELETED"), "DELETED");
        assert_eq!(merge_kind("MODIFIED", "MODIFIED"), "MODIFIED");
    }
}
