//! `rtctl get` and `rtctl get -w`: the games as a table, YAML, JSON or names, filtered by
//! label selectors, and the stream of their changes (the status watch other tools build on).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::SystemTime;

use super::client::{Client, MultiWatch, WatchItem, check_name};
use super::error::{CliError, Outcome};
use super::output::{Table, age_since, note, short_id, warn};
use rtm_core::model::parse::to_yaml;
use rtm_core::model::{GameRuntime, GameRuntimeStatus};
use rtm_core::store::{Listing, WatchEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// NAME STATE PHASE READY RESTARTS IMAGE AGE.
    Table,
    /// The table plus CONTAINER, NODE and HOSTNAME.
    Wide,
    /// The documents with their status, as `---`-separated YAML (applies back unchanged).
    Yaml,
    /// One document as a JSON object, several as a GameRuntimeList.
    Json,
    /// gameruntime/NAME.
    Name,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GetArgs {
    /// Games to show; all when none is given.
    pub(crate) names: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: OutputFormat,
    /// Label selector: key=value, key!=value, key (exists), !key; comma-separated, all must hold.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub(crate) selector: Option<String>,
    /// After listing, print one line (row, document or name) per change.
    #[arg(short, long)]
    pub(crate) watch: bool,
    /// Print only the changes, not the initial listing.
    #[arg(long)]
    pub(crate) watch_only: bool,
    /// With --watch: start each line with ADDED, MODIFIED or DELETED.
    #[arg(long)]
    pub(crate) output_watch_events: bool,
    /// Leave out the table's header.
    #[arg(long)]
    pub(crate) no_headers: bool,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A conjunction of requirements (`tier=ranked,region!=eu,canary`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector(pub Vec<Requirement>);

impl Selector {
    pub(crate) fn parse(text: &str) -> Result<Selector, CliError> {
        let bad = |part: &str, why: &str| {
            CliError::usage(format!(
                "invalid label selector {text:?} at {part:?}: {why}; write it like \
                 tier=ranked,region!=eu,canary,!legacy"
            ))
        };
        let key_ok = |key: &str| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        };
        let value_ok = |value: &str| {
            value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(bad(part, "empty requirement"));
            }
            let requirement = if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else {
                Requirement::Exists(part.to_owned())
            };
            let (key, value) = match &requirement {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, Some(v)),
                Requirement::Exists(k) | Requirement::NotExists(k) => (k, None),
            };
            if !key_ok(key) {
                return Err(bad(part, "a key is letters, digits, '-', '_', '.' and '/'"));
            }
            if value.is_some_and(|v| !value_ok(v)) {
                return Err(bad(part, "a value is letters, digits, '-', '_' and '.'"));
            }
            requirements.push(requirement);
        }
        Ok(Selector(requirements))
    }

    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// The table's header for a format.
pub(crate) fn headers(wide: bool) -> Vec<String> {
    let mut headers: Vec<String> = [
        "NAME", "STATE", "PHASE", "READY", "RESTARTS", "IMAGE", "AGE",
    ]
    .iter()
    .map(|h| (*h).to_owned())
    .collect();
    if wide {
        headers.extend(["CONTAINER", "NODE", "HOSTNAME"].map(str::to_owned));
    }
    headers
}

/// The Ready condition's status, `-` without one.
pub(crate) fn ready(status: Option<&GameRuntimeStatus>) -> String {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str().to_owned())
        .unwrap_or_else(|| "-".to_owned())
}

/// Whether the Ready condition holds (only the tests ask; the table shows [`ready`]).
#[cfg(test)]
pub(crate) fn is_ready(status: Option<&GameRuntimeStatus>) -> bool {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == rtm_core::model::ConditionStatus::True)
}

/// One table row for a game (its document carries its status).
pub(crate) fn row(doc: &GameRuntime, wide: bool, now: SystemTime) -> Vec<String> {
    let spec = RowSpec {
        state: doc.spec.state.as_str().to_owned(),
        image: doc.spec.image.clone(),
        age: age_since(doc.metadata.creation_timestamp, now),
        node: doc.spec.node.clone(),
        hostname: Some(doc.spec.effective_hostname(&doc.metadata.name).to_owned()),
    };
    cells(&doc.metadata.name, &spec, doc.status.as_ref(), wide)
}

/// A stored document that cannot be read (garbage bytes, a name that does not match its key),
/// shown by `get` as STATE `Invalid` so it is not mistaken for a missing game.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct InvalidGame {
    pub(crate) key: String,
    pub(crate) reason: String,
    pub(crate) status: Option<GameRuntimeStatus>,
}

/// The table row of an invalid game: what its status says, dashes for the unreadable spec.
pub(crate) fn invalid_row(name: &str, game: &InvalidGame, wide: bool) -> Vec<String> {
    let spec = RowSpec {
        state: "Invalid".to_owned(),
        image: "-".to_owned(),
        age: "-".to_owned(),
        node: None,
        hostname: None,
    };
    cells(name, &spec, game.status.as_ref(), wide)
}

/// What a row takes from the document (or says in its place).
struct RowSpec {
    state: String,
    image: String,
    age: String,
    /// Shown when the status names no node / hostname.
    node: Option<String>,
    hostname: Option<String>,
}

/// The cells of one row: NAME STATE PHASE READY RESTARTS IMAGE AGE, and
/// with `wide` CONTAINER NODE HOSTNAME.
fn cells(
    name: &str,
    spec: &RowSpec,
    status: Option<&GameRuntimeStatus>,
    wide: bool,
) -> Vec<String> {
    let dash = || "-".to_owned();
    let mut cells = vec![
        name.to_owned(),
        spec.state.clone(),
        status
            .map(|s| s.phase.as_str().to_owned())
            .unwrap_or_else(dash),
        ready(status),
        status.map(|s| s.restart_count).unwrap_or(0).to_string(),
        spec.image.clone(),
        spec.age.clone(),
    ];
    if wide {
        cells.push(
            status
                .and_then(|s| s.container_id.as_deref())
                .map(|id| short_id(id).to_owned())
                .unwrap_or_else(dash),
        );
        cells.push(
            status
                .and_then(|s| s.node.clone())
                .or_else(|| spec.node.clone())
                .unwrap_or_else(dash),
        );
        cells.push(
            status
                .and_then(|s| s.hostname.clone())
                .or_else(|| spec.hostname.clone())
                .unwrap_or_else(dash),
        );
    }
    cells
}

/// The error `get` ends with when it met invalid documents (after printing what it could).
fn invalid_error(
    client: &Client,
    invalid: &[(&String, &InvalidGame)],
    format: OutputFormat,
) -> CliError {
    if let [(_, game)] = invalid {
        let error = client.corrupt(&game.key, &game.reason);
        return match (format, error) {
            (OutputFormat::Yaml | OutputFormat::Json, CliError::Corrupt { message }) => {
                CliError::Corrupt {
                    message: format!("{message} (it is left out of the output)"),
                }
            }
            (_, error) => error,
        };
    }
    let left_out = match format {
        OutputFormat::Yaml | OutputFormat::Json => " (they are left out of the output)",
        _ => "",
    };
    let list: Vec<String> = invalid
        .iter()
        .map(|(name, game)| format!("gameruntime/{name} at {} ({})", game.key, game.reason))
        .collect();
    CliError::Corrupt {
        message: super::error::one_line(&format!(
            "{} stored documents are invalid{left_out}: {}; `rtctl apply --force -f FILE` \
             replaces one, `rtctl delete NAME` removes it",
            invalid.len(),
            list.join(", ")
        )),
    }
}

/// Renders a document for `-o json` (pretty).
fn json(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map_err(|e| CliError::internal(format!("cannot print JSON: {e}")))
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
            && let Some(status) = client.decode_status(kv)
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

fn corrupt_reason(error: rtm_core::records::documents::DocumentError) -> String {
    match error {
        rtm_core::records::documents::DocumentError::Corrupt { message, .. } => {
            super::error::one_line(&message)
        }
        other => super::error::one_line(&other.to_string()),
    }
}

/// The printer shared by the listing and the watch.
struct Printer {
    format: OutputFormat,
    table: Table,
    events: bool,
}

impl Printer {
    fn new(format: OutputFormat, watching: bool, events: bool) -> Printer {
        let mut headers = headers(format == OutputFormat::Wide);
        if events {
            headers.insert(0, "EVENT".to_owned());
        }
        let mut table = Table::with_headers(headers);
        if watching {
            // Rows arrive one at a time while watching: size the columns whose values vary
            // in width for their widest value, so later rows line up with the first.
            let offset = usize::from(events);
            if events {
                table.min_width(0, "MODIFIED".len());
            }
            table.min_width(offset + 2, "CrashLoopBackOff".len());
            table.min_width(offset + 3, "Unknown".len());
        }
        Printer {
            format,
            table,
            events,
        }
    }

    /// The initial listing (invalid games: rows in tables, names with `-o name`, left out of
    /// YAML and JSON, which have no document to print for them).
    fn listing(
        &mut self,
        games: &[Shown<'_>],
        no_headers: bool,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let now = SystemTime::now();
        let wide = self.format == OutputFormat::Wide;
        let docs: Vec<&GameRuntime> = games
            .iter()
            .filter_map(|shown| match shown {
                Shown::Valid(doc) => Some(*doc),
                Shown::Invalid(..) => None,
            })
            .collect();
        match self.format {
            OutputFormat::Table | OutputFormat::Wide => {
                for shown in games {
                    let mut cells = match shown {
                        Shown::Valid(doc) => row(doc, wide, now),
                        Shown::Invalid(name, game) => invalid_row(name, game, wide),
                    };
                    if self.events {
                        cells.insert(0, "ADDED".to_owned());
                    }
                    self.table.row(cells);
                }
                let text = if no_headers {
                    self.table.render_rows()
                } else {
                    self.table.render()
                };
                out.write_all(text.as_bytes())?;
            }
            OutputFormat::Yaml => {
                for (i, doc) in docs.iter().enumerate() {
                    if i > 0 {
                        writeln!(out, "---")?;
                    }
                    out.write_all(to_yaml(doc).as_bytes())?;
                }
            }
            OutputFormat::Json => {
                if docs.is_empty() && !games.is_empty() {
                    // Only invalid games: no JSON for them (the error says why).
                    return Ok(());
                }
                let text = match docs.as_slice() {
                    [one] => json(one)?,
                    many => json(&serde_json::json!({
                        "apiVersion": rtm_core::model::API_VERSION,
                        "kind": "GameRuntimeList",
                        "items": many,
                    }))?,
                };
                writeln!(out, "{text}")?;
            }
            OutputFormat::Name => {
                for shown in games {
                    writeln!(out, "gameruntime/{}", shown.name())?;
                }
            }
        }
        Ok(())
    }

    /// One change of the watch to a document that cannot be read: a row in tables, the name
    /// with `-o name`, a warning for YAML and JSON.
    fn change_invalid(
        &mut self,
        event: &str,
        name: &str,
        game: &InvalidGame,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        match self.format {
            OutputFormat::Table | OutputFormat::Wide => {
                let mut cells = invalid_row(name, game, self.format == OutputFormat::Wide);
                if self.events {
                    cells.insert(0, event.to_owned());
                }
                let line = self.table.render_row(&cells);
                out.write_all(line.as_bytes())?;
            }
            OutputFormat::Name if self.events => writeln!(out, "{event} gameruntime/{name}")?,
            OutputFormat::Name => writeln!(out, "gameruntime/{name}")?,
            OutputFormat::Yaml | OutputFormat::Json => {}
        }
        out.flush()?;
        warn(&format!(
            "gameruntime/{name} is invalid: the value stored at {} is not a valid GameRuntime \
             ({})",
            game.key, game.reason
        ));
        Ok(())
    }

    /// One change of the watch.
    fn change(
        &mut self,
        event: &str,
        doc: &GameRuntime,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let prefix = if self.events {
            format!("{event} ")
        } else {
            String::new()
        };
        match self.format {
            OutputFormat::Table | OutputFormat::Wide => {
                let mut cells = row(doc, self.format == OutputFormat::Wide, SystemTime::now());
                if self.events {
                    cells.insert(0, event.to_owned());
                }
                let line = self.table.render_row(&cells);
                out.write_all(line.as_bytes())?;
            }
            OutputFormat::Yaml => {
                if self.events {
                    writeln!(out, "--- # {event}")?;
                } else {
                    writeln!(out, "---")?;
                }
                out.write_all(to_yaml(doc).as_bytes())?;
            }
            OutputFormat::Json => {
                let line = serde_json::to_string(doc)
                    .map_err(|e| CliError::internal(format!("cannot print JSON: {e}")))?;
                writeln!(out, "{prefix}{line}")?;
            }
            OutputFormat::Name => writeln!(out, "{prefix}gameruntime/{}", doc.metadata.name)?,
        }
        out.flush()?;
        Ok(())
    }
}

pub(crate) async fn get(
    client: &Client,
    args: &GetArgs,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, CliError> {
    for name in &args.names {
        check_name(name)?;
    }
    let selector = match &args.selector {
        Some(text) => Selector::parse(text)?,
        None => Selector::default(),
    };
    // --watch-only implies --watch, as in kubectl.
    let watching = args.watch || args.watch_only;
    let keys = client.keys().clone();
    let prefixes = vec![keys.gameruntimes(), keys.statuses()];

    if !watching {
        let (listings, _) = client.list_at_one_revision(&prefixes).await?;
        let (games, invalid) = games_from(client, &listings[0], &listings[1]);
        let shown = select(&games, &invalid, &args.names, &selector);
        let missing: Vec<&String> = args
            .names
            .iter()
            .filter(|n| !games.contains_key(*n) && !invalid.contains_key(*n))
            .collect();
        let mut printer = Printer::new(args.output, false, false);
        if shown.is_empty() && args.names.is_empty() {
            note(&format!(
                "No gameruntimes found under prefix {}.",
                keys.prefix()
            ));
            if args.output == OutputFormat::Json {
                // Scripts get an empty list rather than no JSON at all.
                printer.listing(&[], args.no_headers, out)?;
            }
        } else if !shown.is_empty() {
            printer.listing(&shown, args.no_headers, out)?;
        }
        let met: Vec<(&String, &InvalidGame)> = shown
            .iter()
            .filter_map(|shown| match shown {
                Shown::Invalid(name, game) => Some((*name, *game)),
                Shown::Valid(_) => None,
            })
            .collect();
        return match missing.first() {
            Some(name) => Err(client.not_found(name)),
            None if !met.is_empty() => {
                out.flush()?;
                Err(invalid_error(client, &met, args.output))
            }
            None => Ok(Outcome::Success),
        };
    }

    let (mut watch, listings, _) = MultiWatch::start(client, prefixes).await?;
    let (mut games, mut invalid) = games_from(client, &listings[0], &listings[1]);
    if !args.watch_only
        && let Some(missing) = args
            .names
            .iter()
            .find(|n| !games.contains_key(*n) && !invalid.contains_key(*n))
    {
        // As kubectl: watching a named game that does not exist is an error; --watch-only
        // waits for it to appear.
        return Err(client.not_found(missing));
    }
    let mut printer = Printer::new(args.output, true, args.output_watch_events);
    if !args.watch_only {
        let shown = select(&games, &invalid, &args.names, &selector);
        if shown.is_empty() {
            if args.names.is_empty() {
                note(&format!(
                    "No gameruntimes found under prefix {}.",
                    keys.prefix()
                ));
            }
        } else {
            printer.listing(&shown, args.no_headers, out)?;
        }
        out.flush()?;
        for shown in &shown {
            if let Shown::Invalid(name, game) = shown {
                warn(&format!(
                    "gameruntime/{name} is invalid: the value stored at {} is not a valid \
                     GameRuntime ({})",
                    game.key, game.reason
                ));
            }
        }
    }
    // Games whose document was deleted, kept so the status updates of their removal still
    // print a whole row; dropped when their status goes.
    let mut tombstones: BTreeMap<String, GameRuntime> = BTreeMap::new();
    let wanted = |name: &str, doc: &GameRuntime| {
        (args.names.is_empty() || args.names.iter().any(|n| n == name))
            && selector.matches(&doc.metadata.labels)
    };
    // An invalid game has no labels to match: shown unless a selector is given.
    let wanted_invalid = |name: &str| {
        (args.names.is_empty() || args.names.iter().any(|n| n == name)) && selector.0.is_empty()
    };

    tokio::pin!(shutdown);
    loop {
        let item = tokio::select! {
            () = &mut shutdown => return Ok(Outcome::Success),
            item = watch.next() => item?,
        };
        match item {
            WatchItem::Batch(batch) => {
                // One line per game per batch: a batch is one revision's worth of changes.
                let mut changed: Vec<(String, &'static str)> = Vec::new();
                // Invalid games deleted in this batch, for their last line.
                let mut invalid_gone: BTreeMap<String, InvalidGame> = BTreeMap::new();
                for event in &batch {
                    if let Some((name, kind)) = apply_event(
                        client,
                        &mut Cache {
                            games: &mut games,
                            tombstones: &mut tombstones,
                            invalid: &mut invalid,
                            invalid_gone: &mut invalid_gone,
                        },
                        event,
                    ) {
                        match changed.iter_mut().find(|(n, _)| *n == name) {
                            Some(entry) => entry.1 = merge_kind(entry.1, kind),
                            None => changed.push((name, kind)),
                        }
                    }
                }
                for (name, kind) in changed {
                    let doc = games.get(&name).or_else(|| tombstones.get(&name));
                    if let Some(doc) = doc {
                        if wanted(&name, doc) {
                            printer.change(kind, doc, out)?;
                        }
                    } else if let Some(game) =
                        invalid.get(&name).or_else(|| invalid_gone.get(&name))
                        && wanted_invalid(&name)
                    {
                        printer.change_invalid(kind, &name, game, out)?;
                    }
                }
            }
            WatchItem::Relisted(listings) => {
                let (fresh, fresh_invalid) = games_from(client, &listings[0], &listings[1]);
                for (name, doc) in &fresh {
                    let kind = match games.get(name) {
                        None => "ADDED",
                        Some(old) if old != doc => "MODIFIED",
                        Some(_) => continue,
                    };
                    if wanted(name, doc) {
                        printer.change(kind, doc, out)?;
                    }
                }
                for (name, game) in &fresh_invalid {
                    let kind = match invalid.get(name) {
                        Some(old) if old == game => continue,
                        Some(_) => "MODIFIED",
                        None if games.contains_key(name) => "MODIFIED",
                        None => "ADDED",
                    };
                    if wanted_invalid(name) {
                        printer.change_invalid(kind, name, game, out)?;
                    }
                }
                for (name, doc) in &games {
                    if !fresh.contains_key(name)
                        && !fresh_invalid.contains_key(name)
                        && wanted(name, doc)
                    {
                        printer.change("DELETED", doc, out)?;
                    }
                }
                for (name, game) in &invalid {
                    if !fresh.contains_key(name)
                        && !fresh_invalid.contains_key(name)
                        && wanted_invalid(name)
                    {
                        printer.change_invalid("DELETED", name, game, out)?;
                    }
                }
                tombstones.clear();
                games = fresh;
                invalid = fresh_invalid;
            }
        }
    }
}

/// A game to show: a readable document, or an invalid one.
#[derive(Debug, Clone, Copy)]
enum Shown<'g> {
    Valid(&'g GameRuntime),
    Invalid(&'g String, &'g InvalidGame),
}

impl Shown<'_> {
    fn name(&self) -> &str {
        match self {
            Shown::Valid(doc) => &doc.metadata.name,
            Shown::Invalid(name, _) => name,
        }
    }
}

/// The games to show, in name order (or in the order named). Invalid games have no labels to
/// match: with a selector they are left out, with a warning.
fn select<'g>(
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
            WatchEvent::Put(kv) => client.decode_status(kv),
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
    use rtm_core::model::parse::parse_documents;
    use rtm_core::model::{Condition, ConditionStatus, Phase, Timestamp};
    use std::time::Duration;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_parse_every_requirement_kind() {
        let selector = Selector::parse("tier=ranked, region!=eu,canary,!legacy,app==x").unwrap();
        assert_eq!(
            selector.0,
            [
                Requirement::Equals("tier".into(), "ranked".into()),
                Requirement::NotEquals("region".into(), "eu".into()),
                Requirement::Exists("canary".into()),
                Requirement::NotExists("legacy".into()),
                Requirement::Equals("app".into(), "x".into()),
            ]
        );
        for bad in ["", "a,,b", "=x", "a=b c", "a=(x)"] {
            let error = Selector::parse(bad).unwrap_err();
            assert!(matches!(error, CliError::Usage { .. }), "{bad}: {error}");
        }
    }

    #[test]
    fn selectors_match_all_their_requirements() {
        let selector = Selector::parse("tier=ranked,region!=eu,canary,!legacy").unwrap();
        assert!(selector.matches(&labels(&[("tier", "ranked"), ("canary", "")])));
        assert!(selector.matches(&labels(&[
            ("tier", "ranked"),
            ("canary", "1"),
            ("region", "us")
        ])));
        assert!(
            !selector.matches(&labels(&[("tier", "ranked")])),
            "canary missing"
        );
        assert!(!selector.matches(&labels(&[
            ("tier", "ranked"),
            ("canary", ""),
            ("region", "eu")
        ])));
        assert!(!selector.matches(&labels(&[
            ("tier", "ranked"),
            ("canary", ""),
            ("legacy", "")
        ])));
        assert!(Selector::default().matches(&labels(&[])));
    }

    #[test]
    fn rows_show_status_readiness_and_age() {
        let mut doc = parse_documents(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {name: g1}\n\
             spec: {image: 'rtmanager-test/engine:1'}\n",
        )
        .unwrap()
        .remove(0);
        let now = SystemTime::now();
        doc.metadata.creation_timestamp = Some(Timestamp::from(now - Duration::from_secs(200)));
        assert_eq!(
            row(&doc, false, now),
            [
                "g1",
                "Running",
                "-",
                "-",
                "0",
                "rtmanager-test/engine:1",
                "3m20s"
            ]
        );
        doc.status = Some(GameRuntimeStatus {
            phase: Phase::Running,
            restart_count: 2,
            container_id: Some("0123456789abcdef0123".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ConditionStatus::True,
                reason: "ContainerRunning".into(),
                message: String::new(),
                last_transition_time: None,
            }],
            ..GameRuntimeStatus::default()
        });
        assert_eq!(
            row(&doc, true, now),
            [
                "g1",
                "Running",
                "Running",
                "True",
                "2",
                "rtmanager-test/engine:1",
                "3m20s",
                "0123456789ab",
                "-",
                "g1"
            ]
        );
        assert!(is_ready(doc.status.as_ref()));
    }

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
