//! `rtctl get` and `rtctl get -w`: the games as a table, YAML, JSON or names, filtered by
//! label selectors, and the stream of their changes (the status watch other tools build on).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::SystemTime;

use super::error::{CliError, Outcome};
use super::output::{Table, age_since, note, short_id, warn};
use super::session::{MultiWatch, Session, WatchItem, check_name};
use crate::model::parse::to_yaml;
use crate::model::{ConditionStatus, GameRuntime, GameRuntimeStatus};
use crate::store::{KeyValue, Listing, WatchEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
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
pub struct GetArgs {
    /// Games to show; all when none is given.
    pub names: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// Label selector: key=value, key!=value, key (exists), !key; comma-separated, all must hold.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// After listing, print one line (row, document or name) per change.
    #[arg(short, long)]
    pub watch: bool,
    /// Print only the changes, not the initial listing.
    #[arg(long)]
    pub watch_only: bool,
    /// With --watch: start each line with ADDED, MODIFIED or DELETED.
    #[arg(long)]
    pub output_watch_events: bool,
    /// Leave out the table's header.
    #[arg(long)]
    pub no_headers: bool,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A conjunction of requirements (`tier=ranked,region!=eu,canary`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, CliError> {
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

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// The table's header for a format.
pub fn headers(wide: bool) -> Vec<String> {
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
pub fn ready(status: Option<&GameRuntimeStatus>) -> String {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str().to_owned())
        .unwrap_or_else(|| "-".to_owned())
}

/// Whether the Ready condition holds.
pub fn is_ready(status: Option<&GameRuntimeStatus>) -> bool {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

/// One table row for a game (its document carries its status).
pub fn row(doc: &GameRuntime, wide: bool, now: SystemTime) -> Vec<String> {
    let status = doc.status.as_ref();
    let dash = || "-".to_owned();
    let mut cells = vec![
        doc.metadata.name.clone(),
        doc.spec.state.as_str().to_owned(),
        status
            .map(|s| s.phase.as_str().to_owned())
            .unwrap_or_else(dash),
        ready(status),
        status.map(|s| s.restart_count).unwrap_or(0).to_string(),
        doc.spec.image.clone(),
        age_since(doc.metadata.creation_timestamp, now),
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
                .or_else(|| doc.spec.node.clone())
                .unwrap_or_else(dash),
        );
        cells.push(
            status
                .and_then(|s| s.hostname.clone())
                .unwrap_or_else(|| doc.spec.effective_hostname(&doc.metadata.name).to_owned()),
        );
    }
    cells
}

/// Renders a document for `-o json` (pretty).
fn json(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map_err(|e| CliError::internal(format!("cannot print JSON: {e}")))
}

/// The games of a listing of the documents and status prefixes, by name.
pub fn games_from(
    session: &Session,
    docs: &Listing,
    statuses: &Listing,
) -> BTreeMap<String, GameRuntime> {
    let keys = session.keys();
    let mut status_of: BTreeMap<&str, GameRuntimeStatus> = BTreeMap::new();
    for kv in &statuses.items {
        if let Some(name) = keys.name_of(&keys.statuses(), &kv.key)
            && let Some(status) = session.decode_status(kv)
        {
            status_of.insert(name, status);
        }
    }
    let mut games = BTreeMap::new();
    for kv in &docs.items {
        match session.decode(kv) {
            Ok(mut doc) => {
                doc.status = status_of.remove(doc.metadata.name.as_str());
                games.insert(doc.metadata.name.clone(), doc);
            }
            Err(e) => warn(&format!("skipping {}: {e}", kv.key)),
        }
    }
    games
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

    /// The initial listing.
    fn listing(
        &mut self,
        games: &[&GameRuntime],
        no_headers: bool,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let now = SystemTime::now();
        match self.format {
            OutputFormat::Table | OutputFormat::Wide => {
                for doc in games {
                    let mut cells = row(doc, self.format == OutputFormat::Wide, now);
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
                for (i, doc) in games.iter().enumerate() {
                    if i > 0 {
                        writeln!(out, "---")?;
                    }
                    out.write_all(to_yaml(doc).as_bytes())?;
                }
            }
            OutputFormat::Json => {
                let text = match games {
                    [one] => json(one)?,
                    many => json(&serde_json::json!({
                        "apiVersion": crate::model::API_VERSION,
                        "kind": "GameRuntimeList",
                        "items": many,
                    }))?,
                };
                writeln!(out, "{text}")?;
            }
            OutputFormat::Name => {
                for doc in games {
                    writeln!(out, "gameruntime/{}", doc.metadata.name)?;
                }
            }
        }
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

pub async fn get(
    session: &Session,
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
    let keys = session.keys().clone();
    let prefixes = vec![keys.gameruntimes(), keys.statuses()];

    if !watching {
        let (listings, _) = session.list_at_one_revision(&prefixes).await?;
        let games = games_from(session, &listings[0], &listings[1]);
        let shown = select(&games, &args.names, &selector);
        let missing: Vec<&String> = args
            .names
            .iter()
            .filter(|n| !games.contains_key(*n))
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
        return match missing.first() {
            Some(name) => Err(session.not_found(name)),
            None => Ok(Outcome::Success),
        };
    }

    let (mut watch, listings, _) = MultiWatch::start(session, prefixes).await?;
    let mut games = games_from(session, &listings[0], &listings[1]);
    if !args.watch_only
        && let Some(missing) = args.names.iter().find(|n| !games.contains_key(*n))
    {
        // As kubectl: watching a named game that does not exist is an error; --watch-only
        // waits for it to appear.
        return Err(session.not_found(missing));
    }
    let mut printer = Printer::new(args.output, true, args.output_watch_events);
    if !args.watch_only {
        let shown = select(&games, &args.names, &selector);
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
    }
    // Games whose document was deleted, kept so the status updates of their removal still
    // print a whole row; dropped when their status goes.
    let mut tombstones: BTreeMap<String, GameRuntime> = BTreeMap::new();
    let wanted = |name: &str, doc: &GameRuntime| {
        (args.names.is_empty() || args.names.iter().any(|n| n == name))
            && selector.matches(&doc.metadata.labels)
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
                for event in &batch {
                    if let Some((name, kind)) =
                        apply_event(session, &mut games, &mut tombstones, event)
                    {
                        match changed.iter_mut().find(|(n, _)| *n == name) {
                            Some(entry) => entry.1 = merge_kind(entry.1, kind),
                            None => changed.push((name, kind)),
                        }
                    }
                }
                for (name, kind) in changed {
                    let doc = games.get(&name).or_else(|| tombstones.get(&name));
                    if let Some(doc) = doc
                        && wanted(&name, doc)
                    {
                        printer.change(kind, doc, out)?;
                    }
                }
            }
            WatchItem::Relisted(listings) => {
                let fresh = games_from(session, &listings[0], &listings[1]);
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
                for (name, doc) in &games {
                    if !fresh.contains_key(name) && wanted(name, doc) {
                        printer.change("DELETED", doc, out)?;
                    }
                }
                tombstones.clear();
                games = fresh;
            }
        }
    }
}

/// The games to show, in name order (or in the order named).
fn select<'g>(
    games: &'g BTreeMap<String, GameRuntime>,
    names: &[String],
    selector: &Selector,
) -> Vec<&'g GameRuntime> {
    let chosen: Vec<&GameRuntime> = if names.is_empty() {
        games.values().collect()
    } else {
        names.iter().filter_map(|n| games.get(n)).collect()
    };
    chosen
        .into_iter()
        .filter(|doc| selector.matches(&doc.metadata.labels))
        .collect()
}

fn merge_kind(first: &'static str, then: &'static str) -> &'static str {
    match (first, then) {
        ("ADDED", "DELETED") | (_, "DELETED") => "DELETED",
        ("ADDED", _) => "ADDED",
        _ => then,
    }
}

/// Folds one watch event into the cache; returns the game it changed and how.
fn apply_event(
    session: &Session,
    games: &mut BTreeMap<String, GameRuntime>,
    tombstones: &mut BTreeMap<String, GameRuntime>,
    event: &WatchEvent,
) -> Option<(String, &'static str)> {
    let keys = session.keys();
    let docs_prefix = keys.gameruntimes();
    let status_prefix = keys.statuses();
    if let Some(name) = keys.name_of(&docs_prefix, event.key()) {
        let name = name.to_owned();
        return match event {
            WatchEvent::Put(kv) => {
                let mut doc = decode_or_warn(session, kv)?;
                let kind = if games.contains_key(&name) {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                doc.status = games
                    .get(&name)
                    .and_then(|old| old.status.clone())
                    .or_else(|| tombstones.remove(&name).and_then(|t| t.status));
                games.insert(name.clone(), doc);
                Some((name, kind))
            }
            WatchEvent::Delete { .. } => {
                let doc = games.remove(&name)?;
                tombstones.insert(name.clone(), doc);
                Some((name, "DELETED"))
            }
        };
    }
    if let Some(name) = keys.name_of(&status_prefix, event.key()) {
        let name = name.to_owned();
        let status = match event {
            WatchEvent::Put(kv) => session.decode_status(kv),
            WatchEvent::Delete { .. } => None,
        };
        if let Some(doc) = games.get_mut(&name) {
            doc.status = status;
            return Some((name, "MODIFIED"));
        }
        // The status of a game whose document is gone: its removal's progress.
        return match status {
            Some(status) => {
                let doc = tombstones.get_mut(&name)?;
                doc.status = Some(status);
                Some((name, "DELETED"))
            }
            None => {
                tombstones.remove(&name);
                None
            }
        };
    }
    None
}

fn decode_or_warn(session: &Session, kv: &KeyValue) -> Option<GameRuntime> {
    match session.decode(kv) {
        Ok(doc) => Some(doc),
        Err(e) => {
            warn(&format!("skipping {}: {e}", kv.key));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse::parse_documents;
    use crate::model::{Condition, Phase, Timestamp};
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
    fn a_batch_that_adds_then_deletes_reports_deleted() {
        assert_eq!(merge_kind("ADDED", "MODIFIED"), "ADDED");
        assert_eq!(merge_kind("ADDED", "DELETED"), "DELETED");
        assert_eq!(merge_kind("MODIFIED", "MODIFIED"), "MODIFIED");
    }
}
