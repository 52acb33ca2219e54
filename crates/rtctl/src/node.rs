//! Nodes, the Docker hosts games run on: `get nodes` (and `-w`), `describe node NAME`, and the
//! operator's holds on a node, `cordon`, `uncordon` and `drain` (which by default waits
//! until no game is assigned there any more).
//!
//! What a node is comes from `rtm_core::records::nodes`: its registration (`nodes/<node>`,
//! written by its controller), the cordon (`cordons/<node>`, the one record rtctl writes
//! here) and the games' assignments (`assignments/<game>`). A node is live while the
//! heartbeat of the holder its registration names (`controllers/<holder>`) exists; its
//! STATUS is then `Ready`, `Cordoned` or `Draining` after its cordon, otherwise `NotReady`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::client::{Client, Known, MultiWatch};
use super::error::{CliError, Outcome, one_line};
use super::get::games::{games_from, sessions_from};
use super::get::{GetArgs, OutputFormat, Selector};
use super::output::{Table, age_since, note, warn};
use super::shape::{self, WatchEvent};
use rtm_core::model::validate::is_dns1123_subdomain;
use rtm_core::model::{Cpus, GameRuntime, Memory, Session, Timestamp};
use rtm_core::placement::Needs;
use rtm_core::records::lease::Heartbeat;
use rtm_core::records::nodes::{Assignment, Cordon, NodeRecord, NodeState, decode, encode};
use rtm_core::records::sessions::validate_ref;
use rtm_core::store::{Compare, KeyValue, Keys, Listing, Txn};

/// Checks a node name from the command line before it becomes part of a key: a DNS-1123
/// subdomain, as `--node-name` is.
pub(crate) fn check_node_name(name: &str) -> Result<(), CliError> {
    if is_dns1123_subdomain(name) {
        Ok(())
    } else {
        Err(CliError::invalid(format!(
            "invalid node name {name:?}: a node name is a DNS-1123 subdomain (lowercase \
             letters, digits, '-' and '.', at most 253 characters); list the nodes with \
             `rtctl get nodes`"
        )))
    }
}

/// The arguments of `rtctl cordon` and `rtctl uncordon`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CordonArgs {
    /// The node.
    #[arg(add = crate::complete::node_names())]
    pub(crate) node: String,
    /// Who asks (a request id), recorded with the cordon.
    #[arg(long = "ref", value_name = "REF")]
    pub(crate) reference: Option<String>,
}

/// The arguments of `rtctl drain`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DrainArgs {
    /// The node.
    #[arg(add = crate::complete::node_names())]
    pub(crate) node: String,
    /// How long games in session may finish their match before they are moved too
    /// (disruption budgets still hold); without it, games in session are waited for.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) deadline: Option<Duration>,
    /// Wait until no game is assigned to the node (the default).
    #[arg(long, overrides_with = "no_wait")]
    pub(crate) wait: bool,
    /// Only ask for the drain; do not wait.
    #[arg(long, overrides_with = "wait")]
    pub(crate) no_wait: bool,
    /// Give up waiting after this long (exit 9; the drain goes on); without it, wait until
    /// drained or Ctrl-C.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// Who asks (a request id), recorded with the cordon.
    #[arg(long = "ref", value_name = "REF")]
    pub(crate) reference: Option<String>,
}

impl DrainArgs {
    /// Whether the command waits for the node to empty.
    pub(crate) fn waits(&self) -> bool {
        !self.no_wait
    }
}

/// One node as rtctl shows it.
#[derive(Debug, Clone)]
struct NodeView {
    record: NodeRecord,
    cordon: Option<Cordon>,
    /// The heartbeat of the holder the record names, if it exists (then the node is live);
    /// `Some(None)`: it exists and does not decode.
    heartbeat: Option<Option<Heartbeat>>,
    /// The games assigned to the node, in name order.
    games: Vec<String>,
}

impl NodeView {
    fn live(&self) -> bool {
        self.heartbeat.is_some()
    }

    fn state(&self) -> NodeState {
        NodeState::of(self.live(), self.cordon.as_ref())
    }

    fn name(&self) -> &str {
        &self.record.name
    }

    /// When the holder last rewrote its heartbeat (or started, for an older controller).
    fn last_heartbeat(&self) -> Option<Timestamp> {
        self.heartbeat
            .as_ref()?
            .as_ref()
            .map(|h| h.renewed_at.unwrap_or(h.started_at))
    }
}

/// Everything the node commands show, read at one revision.
#[derive(Debug, Default)]
struct Fleet {
    nodes: Vec<NodeView>,
    assignments: BTreeMap<String, Assignment>,
    sessions: BTreeMap<String, Session>,
    /// The games (with status), when asked for.
    games: BTreeMap<String, GameRuntime>,
}

/// The prefixes a fleet is read from, in the order [`fleet_from`] takes them.
fn prefixes(keys: &Keys, with_games: bool) -> Vec<String> {
    let mut prefixes = vec![
        keys.nodes(),
        keys.cordons(),
        keys.controllers(),
        keys.assignments(),
        keys.sessions(),
    ];
    if with_games {
        prefixes.extend([keys.gameruntimes(), keys.statuses()]);
    }
    prefixes
}

/// The node name of a key under `collection` (node names may hold dots, so not
/// [`Keys::name_of`]); `None` for a key that holds no plausible node name.
fn node_of<'k>(collection: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(collection)
        .filter(|name| is_dns1123_subdomain(name))
}

/// The records of a listing under `collection`, by the node or game name of their key; a
/// value that does not decode is warned about (`what` it would have been) and left out.
fn records<T: serde::de::DeserializeOwned>(
    listing: &Listing,
    collection: &str,
    what: &str,
) -> BTreeMap<String, T> {
    listing
        .items
        .iter()
        .filter_map(|kv| {
            let name = node_of(collection, &kv.key)?;
            match decode::<T>(&kv.value) {
                Some(record) => Some((name.to_owned(), record)),
                None => {
                    warn(&format!(
                        "ignoring the unreadable {what} at {}: it does not decode",
                        kv.key
                    ));
                    None
                }
            }
        })
        .collect()
}

fn fleet_from(client: &Client, listings: &[Listing]) -> Fleet {
    let keys = client.keys();
    let registrations: BTreeMap<String, NodeRecord> = records(
        &listings[0],
        &keys.nodes(),
        "node record (the node is NotReady until its controller registers again)",
    );
    let mut cordons: BTreeMap<String, Cordon> = records(
        &listings[1],
        &keys.cordons(),
        "cordon (the node takes games as if uncordoned)",
    );
    let heartbeats: BTreeMap<&str, &KeyValue> = listings[2]
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), kv))
        .collect();
    let assignments: BTreeMap<String, Assignment> =
        records(&listings[3], &keys.assignments(), "assignment");
    let sessions = sessions_from(keys, &listings[4]);
    let games = match listings.get(5..7) {
        Some([docs, statuses]) => games_from(client, docs, statuses).0,
        _ => BTreeMap::new(),
    };
    let nodes = registrations
        .into_iter()
        .map(|(name, mut record)| {
            // The key names the node; a record that says otherwise was edited by hand.
            record.name = name.clone();
            let heartbeat = heartbeats
                .get(keys.controller(&record.holder).as_str())
                .map(|kv| serde_json::from_slice::<Heartbeat>(&kv.value).ok());
            let games = assignments
                .iter()
                .filter(|(_, a)| a.is_on(&name))
                .map(|(game, _)| game.clone())
                .collect();
            NodeView {
                cordon: cordons.remove(&name),
                heartbeat,
                games,
                record,
            }
        })
        .collect();
    Fleet {
        nodes,
        assignments,
        sessions,
        games,
    }
}

async fn read_fleet(client: &Client, with_games: bool) -> Result<Fleet, CliError> {
    let (listings, _) = client
        .list_at_one_revision(&prefixes(client.keys(), with_games))
        .await?;
    Ok(fleet_from(client, &listings))
}

/// The failure for a node with no registration.
fn not_found(client: &Client, node: &str) -> CliError {
    CliError::NotFoundKind {
        kind: "node",
        name: node.to_owned(),
        prefix: client.keys().prefix().to_owned(),
        list: "rtctl get nodes",
    }
}

/// The columns of `get nodes`.
const HEADERS: [&str; 5] = ["NAME", "STATUS", "GAMES", "AGE", "VERSION"];

/// The columns `-o wide` adds.
const WIDE_HEADERS: [&str; 5] = ["LABELS", "CAPACITY", "ADDRESS", "PORTS", "LAST-HEARTBEAT"];

/// The GAMES cell: how many are assigned, and of how many when the capacity is bounded.
fn games_cell(count: usize, capacity: Option<u32>) -> String {
    match capacity {
        Some(most) => format!("{count}/{most}"),
        None => count.to_string(),
    }
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        "<none>".to_owned()
    } else {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One row of `get nodes`.
fn row(node: &NodeView, wide: bool, now: SystemTime) -> Vec<String> {
    let record = &node.record;
    let mut cells = vec![
        record.name.clone(),
        node.state().to_string(),
        games_cell(node.games.len(), record.capacity.games),
        age_since(Some(record.registered_at), now),
        record.version.clone(),
    ];
    if wide {
        cells.extend([
            labels_text(&record.labels),
            record.capacity.to_string(),
            record.address.clone(),
            record.port_range.to_string(),
            match node.last_heartbeat() {
                Some(at) => age_since(Some(at), now),
                None if node.live() => "<unreadable>".to_owned(),
                None => "<none>".to_owned(),
            },
        ]);
    }
    cells
}

/// A node as `-o json` and `-o yaml` print it: its registration, then what rtctl adds.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeOutput<'n> {
    #[serde(flatten)]
    record: &'n NodeRecord,
    status: NodeState,
    #[serde(skip_serializing_if = "Option::is_none")]
    cordon: Option<&'n Cordon>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_heartbeat: Option<Timestamp>,
    games: usize,
}

impl<'n> NodeOutput<'n> {
    fn of(node: &'n NodeView) -> NodeOutput<'n> {
        NodeOutput {
            record: &node.record,
            status: node.state(),
            cordon: node.cordon.as_ref(),
            last_heartbeat: node.last_heartbeat(),
            games: node.games.len(),
        }
    }
}

fn json_error(e: impl std::fmt::Display) -> CliError {
    CliError::internal(format!("cannot print a node: {e}"))
}

/// Prints nodes as `get` asks (`one`: a single node was asked for by name).
fn print(
    shown: &[&NodeView],
    args: &GetArgs,
    one: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let no_headers = args.no_headers;
    let Some(format) = args.output.builtin() else {
        let items = shown
            .iter()
            .map(|n| serde_json::to_value(NodeOutput::of(n)).map_err(json_error))
            .collect::<Result<Vec<_>, _>>()?;
        return shape::print_shaped(&args.output, "NodeList", &items, one, no_headers, out);
    };
    match format {
        OutputFormat::Table | OutputFormat::Wide => {
            let wide = format == OutputFormat::Wide;
            let labels = args.labels();
            let mut headers: Vec<String> = HEADERS.iter().map(|h| (*h).to_owned()).collect();
            if wide {
                headers.extend(WIDE_HEADERS.iter().map(|h| (*h).to_owned()));
            }
            headers.extend(labels.headers());
            let mut table = Table::with_headers(headers);
            let now = SystemTime::now();
            for node in shown {
                let mut cells = row(node, wide, now);
                cells.extend(labels.cells(Some(&node.record.labels)));
                table.row(cells);
            }
            let text = table.render_as(no_headers);
            out.write_all(text.as_bytes())?;
        }
        OutputFormat::Yaml => {
            for (i, node) in shown.iter().enumerate() {
                if i > 0 {
                    writeln!(out, "---")?;
                }
                let text = serde_yaml::to_string(&NodeOutput::of(node)).map_err(json_error)?;
                out.write_all(text.as_bytes())?;
            }
        }
        OutputFormat::Json => {
            let items: Vec<NodeOutput<'_>> = shown.iter().map(|n| NodeOutput::of(n)).collect();
            let value = match (one, items.as_slice()) {
                (true, [item]) => serde_json::to_value(item),
                _ => Ok(shape::list_value(
                    "NodeList",
                    &items
                        .iter()
                        .map(serde_json::to_value)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(json_error)?,
                )),
            }
            .and_then(|v| serde_json::to_string_pretty(&v))
            .map_err(json_error)?;
            writeln!(out, "{value}")?;
        }
        OutputFormat::Name => {
            for node in shown {
                writeln!(out, "node/{}", node.name())?;
            }
        }
    }
    Ok(())
}

/// `rtctl get nodes [NAME…] [-l SELECTOR]`: a missing named node fails the command after
/// the others are printed.
pub(crate) async fn get(
    client: &Client,
    names: &[String],
    args: &GetArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    for name in names {
        check_node_name(name)?;
    }
    let selector = match &args.selector {
        Some(text) => Selector::parse(text)?,
        None => Selector::default(),
    };
    let fleet = read_fleet(client, false).await?;
    let mut shown: Vec<&NodeView> = if names.is_empty() {
        fleet.nodes.iter().collect()
    } else {
        names
            .iter()
            .filter_map(|name| fleet.nodes.iter().find(|n| n.name() == name))
            .collect()
    };
    shown.retain(|n| selector.matches(&n.record.labels));
    if let Some(fields) = &args.field_selector {
        shown.retain(|n| {
            fields.matches(&serde_json::to_value(NodeOutput::of(n)).unwrap_or_default())
        });
    }
    if let Some(sort_by) = &args.sort_by {
        shape::sort_by_path(&mut shown, sort_by, |n| {
            serde_json::to_value(NodeOutput::of(n)).unwrap_or_default()
        });
    }
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !fleet.nodes.iter().any(|n| n.name() == name.as_str()))
        .collect();
    if shown.is_empty() && names.is_empty() && !args.output.is_documents() {
        note(&format!(
            "No nodes found under prefix {} (a node's controller registers it when it starts).",
            client.keys().prefix()
        ));
        return Ok(Outcome::Success);
    }
    if !shown.is_empty() || names.is_empty() {
        print(&shown, args, names.len() == 1, out)?;
    }
    crate::target::missing_names(&missing, out, |name| not_found(client, name))?;
    Ok(Outcome::Success)
}

/// What a watch of nodes prints a line for when it changes (not the ages, nor each
/// heartbeat renewal).
type Signature = (NodeState, usize, NodeRecord, Option<Cordon>);

fn signature(node: &NodeView) -> Signature {
    (
        node.state(),
        node.games.len(),
        node.record.clone(),
        node.cordon.clone(),
    )
}

/// Prints one changed node in a watch: a row of `table`, a JSON line, a YAML document or
/// its name; with `event` (`--output-watch-events`) the row's EVENT, the name's prefix, the
/// JSON and YAML wrapped as `{type, object}`.
fn print_change(
    node: &NodeView,
    format: OutputFormat,
    event: Option<&str>,
    table: &mut Table,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let value = || serde_json::to_value(NodeOutput::of(node)).map_err(json_error);
    match format {
        OutputFormat::Table | OutputFormat::Wide => {
            let mut cells = row(node, format == OutputFormat::Wide, SystemTime::now());
            if let Some(event) = event {
                cells.insert(0, event.to_owned());
            }
            out.write_all(table.render_row(&cells).as_bytes())?;
        }
        OutputFormat::Json => match event {
            Some(event) => writeln!(
                out,
                "{}",
                WatchEvent {
                    event,
                    object: value()?
                }
                .to_line()
            )?,
            None => {
                let line = serde_json::to_string(&NodeOutput::of(node)).map_err(json_error)?;
                writeln!(out, "{line}")?;
            }
        },
        OutputFormat::Yaml => {
            writeln!(out, "---")?;
            let text = match event {
                Some(event) => serde_yaml::to_string(&WatchEvent {
                    event,
                    object: value()?,
                }),
                None => serde_yaml::to_string(&NodeOutput::of(node)),
            }
            .map_err(json_error)?;
            out.write_all(text.as_bytes())?;
        }
        OutputFormat::Name => match event {
            Some(event) => writeln!(out, "{event} node/{}", node.name())?,
            None => writeln!(out, "node/{}", node.name())?,
        },
    }
    out.flush()?;
    Ok(())
}

/// What `get nodes -w` is asked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WatchNodes<'a> {
    pub(crate) name: Option<&'a str>,
    pub(crate) selector: Option<&'a str>,
    pub(crate) format: OutputFormat,
    pub(crate) no_headers: bool,
    /// Leave out the first listing.
    pub(crate) changes_only: bool,
    /// Say each change's kind (ADDED, MODIFIED), the first listing's included.
    pub(crate) events: bool,
}

/// `rtctl get nodes -w`: the nodes, then a line each time one's status, games count,
/// record or cordon changes, until Ctrl-C.
pub(crate) async fn watch(
    client: &Client,
    asked: WatchNodes<'_>,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    if let Some(name) = asked.name {
        check_node_name(name)?;
    }
    let selector = match asked.selector {
        Some(text) => Selector::parse(text)?,
        None => Selector::default(),
    };
    tokio::select! {
        outcome = follow_nodes(client, asked, &selector, out) => outcome,
        // Ctrl-C is how a watch ends, as `get -w` of games.
        () = interrupt.cancelled() => Ok(Outcome::Success),
    }
}

/// The watch of [`watch`]: it ends only by a failure.
async fn follow_nodes(
    client: &Client,
    asked: WatchNodes<'_>,
    selector: &Selector,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let picked = |n: &&NodeView| {
        asked.name.is_none_or(|name| n.name() == name) && selector.matches(&n.record.labels)
    };
    let wide = asked.format == OutputFormat::Wide;
    let table_format = matches!(asked.format, OutputFormat::Table | OutputFormat::Wide);
    let mut headers: Vec<String> = HEADERS.iter().map(|h| (*h).to_owned()).collect();
    if wide {
        headers.extend(WIDE_HEADERS.iter().map(|h| (*h).to_owned()));
    }
    let offset = usize::from(asked.events);
    if asked.events {
        headers.insert(0, "EVENT".to_owned());
    }
    let mut table = Table::with_headers(headers);
    // Rows come one at a time: STATUS is sized for its widest value up front.
    table.min_width(offset + 1, NodeState::NotReady.as_str().len());
    if asked.events {
        table.min_width(0, "MODIFIED".len());
    }
    let added = asked.events.then_some("ADDED");
    let modified = asked.events.then_some("MODIFIED");
    let prefixes = prefixes(client.keys(), false);
    let (mut watch, listings, _) = MultiWatch::start(client, prefixes.clone()).await?;
    let mut known = Known::new(prefixes, &listings);
    let fleet = fleet_from(client, &listings);
    let shown: Vec<&NodeView> = fleet.nodes.iter().filter(picked).collect();
    let mut printed: BTreeMap<String, Signature> = shown
        .iter()
        .map(|n| (n.name().to_owned(), signature(n)))
        .collect();
    if asked.changes_only {
        if table_format && !asked.no_headers {
            out.write_all(table.render().as_bytes())?;
        }
    } else if table_format {
        for node in &shown {
            let mut cells = row(node, wide, SystemTime::now());
            if let Some(event) = added {
                cells.insert(0, event.to_owned());
            }
            table.row(cells);
        }
        let text = table.render_as(asked.no_headers);
        out.write_all(text.as_bytes())?;
    } else {
        for node in &shown {
            print_change(node, asked.format, added, &mut table, out)?;
        }
    }
    out.flush()?;
    loop {
        known.update(watch.next().await?);
        let fleet = fleet_from(client, &known.listings());
        for node in fleet.nodes.iter().filter(picked) {
            let now = signature(node);
            if printed.get(node.name()) != Some(&now) {
                let event = if printed.contains_key(node.name()) {
                    modified
                } else {
                    added
                };
                print_change(node, asked.format, event, &mut table, out)?;
                printed.insert(node.name().to_owned(), now);
            }
        }
    }
}

/// `rtctl describe node NAME`.
pub(crate) async fn describe(
    client: &Client,
    name: &str,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    check_node_name(name)?;
    let fleet = read_fleet(client, true).await?;
    let Some(node) = fleet.nodes.iter().find(|n| n.name() == name) else {
        return Err(not_found(client, name));
    };
    out.write_all(render(node, &fleet, SystemTime::now()).as_bytes())?;
    Ok(Outcome::Success)
}

fn field(text: &mut String, label: &str, value: &str) {
    let label = format!("{label}:");
    let _ = writeln!(text, "{label:<20} {value}");
}

fn when(time: Timestamp, now: SystemTime) -> String {
    format!("{time} ({} ago)", age_since(Some(time), now))
}

/// When `time` is, from `now`: `T (in 5m)` or `T (5m ago)`.
fn until(time: Timestamp, now: SystemTime) -> String {
    match time.system_time().duration_since(now) {
        Ok(ahead) => format!(
            "{time} (in {})",
            super::output::format_age(ahead + Duration::from_millis(999))
        ),
        Err(_) => format!("{time} (passed {} ago)", age_since(Some(time), now)),
    }
}

fn millis(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// `used of capacity` (or `used (unlimited)`).
fn usage<T: std::fmt::Display>(used: T, capacity: Option<T>) -> String {
    match capacity {
        Some(most) => format!("{used} of {most}"),
        None => format!("{used} (unlimited)"),
    }
}

/// The description of a node.
fn render(node: &NodeView, fleet: &Fleet, now: SystemTime) -> String {
    let mut text = String::new();
    let record = &node.record;
    field(&mut text, "Name", &record.name);
    field(&mut text, "Status", node.state().as_str());
    field(&mut text, "Labels", &labels_text(&record.labels));
    field(&mut text, "Address", &record.address);
    field(&mut text, "Port Range", &record.port_range.to_string());
    field(&mut text, "Version", &record.version);
    field(
        &mut text,
        "Docker Engine",
        record.engine.as_deref().unwrap_or("<unknown>"),
    );
    field(&mut text, "Registered", &when(record.registered_at, now));
    field(&mut text, "Session TTL", &millis(record.ttl_ms));
    field(
        &mut text,
        "Self-Fence After",
        &record
            .self_fence_after_ms
            .map(millis)
            .unwrap_or_else(|| "<off> (its games are never moved when it is lost)".to_owned()),
    );
    if let Some(lost) = record.lost_at {
        field(&mut text, "Lost At", &when(lost, now));
    }
    let cordon = match &node.cordon {
        None => "<none> (takes new games)".to_owned(),
        Some(cordon) => {
            let mut line = if cordon.drain {
                format!("draining since {}", when(cordon.at, now))
            } else {
                format!("cordoned since {}", when(cordon.at, now))
            };
            if let Some(by) = &cordon.by {
                let _ = write!(line, ", by {by}");
            }
            if let Some(deadline) = cordon.deadline {
                let _ = write!(line, ", deadline {}", until(deadline, now));
            }
            line
        }
    };
    field(&mut text, "Cordon", &cordon);
    let _ = writeln!(text, "Heartbeat:");
    field(&mut text, "  Holder", &record.holder);
    match &node.heartbeat {
        None => field(
            &mut text,
            "  Live",
            &format!(
                "no: controllers/{} does not exist (the controller is gone, or has not \
                 registered again)",
                record.holder
            ),
        ),
        Some(None) => field(&mut text, "  Live", "yes (its heartbeat does not decode)"),
        Some(Some(heartbeat)) => {
            field(&mut text, "  Live", "yes");
            field(&mut text, "  Version", &heartbeat.version);
            field(&mut text, "  Started", &when(heartbeat.started_at, now));
            field(
                &mut text,
                "  Last Heartbeat",
                &heartbeat
                    .renewed_at
                    .map(|t| when(t, now))
                    .unwrap_or_else(|| "<not recorded>".to_owned()),
            );
        }
    }
    let (mut nano_cpus, mut memory) = (0i64, 0u64);
    for game in &node.games {
        if let Some(doc) = fleet.games.get(game) {
            let needs = Needs::of(doc);
            nano_cpus = nano_cpus.saturating_add(needs.nano_cpus);
            memory = memory.saturating_add(needs.memory);
        }
    }
    let capacity = &record.capacity;
    let _ = writeln!(text, "Used / Capacity:");
    field(
        &mut text,
        "  Games",
        &usage(node.games.len(), capacity.games.map(|g| g as usize)),
    );
    let cpus = Cpus::from_nano_cpus(nano_cpus)
        .map(|c| c.to_string())
        .unwrap_or_else(|_| nano_cpus.to_string());
    field(
        &mut text,
        "  CPUs",
        &usage(cpus, capacity.cpus.map(|c| c.to_string())),
    );
    field(
        &mut text,
        "  Memory",
        &usage(
            Memory::from_bytes(memory).to_string(),
            capacity.memory.map(|m| m.to_string()),
        ),
    );
    let _ = writeln!(text, "Games ({}):", node.games.len());
    if node.games.is_empty() {
        let _ = writeln!(text, "  <none>");
    } else {
        let mut table = Table::new(["NAME", "PHASE", "SESSION", "REASON", "FROM", "SINCE"]);
        for game in &node.games {
            let assignment = fleet.assignments.get(game);
            let phase = match fleet.games.get(game) {
                Some(doc) => doc
                    .status
                    .as_ref()
                    .map(|s| s.phase.as_str().to_owned())
                    .unwrap_or_else(|| "-".to_owned()),
                None => "<no document>".to_owned(),
            };
            table.row([
                game.clone(),
                phase,
                super::get::session_state(fleet.sessions.get(game)).to_owned(),
                assignment.map_or("-", |a| a.reason.as_str()).to_owned(),
                assignment
                    .and_then(|a| a.from.clone())
                    .unwrap_or_else(|| "-".to_owned()),
                assignment
                    .map(|a| format!("{} ago", age_since(Some(a.at), now)))
                    .unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        for line in table.render().lines() {
            let _ = writeln!(text, "  {line}");
        }
    }
    text
}

fn check_ref(reference: Option<&String>) -> Result<(), CliError> {
    match reference {
        Some(reference) => validate_ref(reference).map_err(|message| {
            CliError::invalid(format!("invalid --ref {reference:?}: {message}"))
        }),
        None => Ok(()),
    }
}

/// What a hold on a node does to the cordon it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Cordon,
    Uncordon,
    Drain { deadline: Option<Duration> },
}

/// The cordon a hold leaves (`None`: no cordon), or `Err(())` when the one found is already
/// what was asked for (nothing to write).
fn plan(
    hold: Hold,
    found: Option<&Cordon>,
    by: Option<&str>,
    now: SystemTime,
) -> Result<Option<Cordon>, ()> {
    let new = |drain: bool, deadline: Option<Duration>| Cordon {
        drain,
        deadline: deadline.map(|d| Timestamp::from(now + d)),
        at: Timestamp::from(now),
        by: by.map(str::to_owned),
    };
    match (hold, found) {
        (Hold::Cordon, Some(c)) if !c.drain => Err(()),
        (Hold::Cordon, _) => Ok(Some(new(false, None))),
        (Hold::Uncordon, None) => Err(()),
        (Hold::Uncordon, Some(_)) => Ok(None),
        (Hold::Drain { deadline }, _) => Ok(Some(new(true, deadline))),
    }
}

/// Writes the cordon of `node` by compare-and-swap on what was read (the node's
/// registration still there, the cordon key as read), re-reading when someone else wrote
/// first. `Ok(false)`: the node already was as asked.
async fn hold(client: &Client, node: &str, hold: Hold, by: Option<&str>) -> Result<bool, CliError> {
    let keys = client.keys();
    let (node_key, cordon_key) = (keys.node(node), keys.cordon(node));
    let doing = format!("writing {cordon_key}");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(registration) = client.raw(&node_key).await? else {
            return Err(not_found(client, node));
        };
        let found = client.raw(&cordon_key).await?;
        let cordon = found.as_ref().and_then(|kv| decode::<Cordon>(&kv.value));
        let Ok(next) = plan(hold, cordon.as_ref(), by, SystemTime::now()) else {
            return Ok(false);
        };
        let mut txn = Txn::new().when(Compare::CreateRevision {
            key: node_key.clone(),
            revision: registration.create_revision,
        });
        txn = txn.when(match &found {
            Some(kv) => Compare::ModRevision {
                key: cordon_key.clone(),
                revision: kv.mod_revision,
            },
            None => Compare::Absent {
                key: cordon_key.clone(),
            },
        });
        txn = match &next {
            Some(cordon) => txn.put(cordon_key.clone(), encode(cordon)),
            None => txn.delete(cordon_key.clone()),
        };
        let outcome = client
            .store()
            .txn(txn)
            .await
            .map_err(|e| client.store_error(e, &doing))?;
        if outcome.succeeded {
            return Ok(true);
        }
        if attempt >= super::apply::WRITE_ATTEMPTS {
            return Err(CliError::Conflict {
                message: format!(
                    "node/{node}: its cordon or registration kept changing while {doing} \
                     ({attempt} attempts); run the command again"
                ),
            });
        }
        super::apply::backoff(attempt).await;
    }
}

/// `rtctl cordon NODE`: the node takes no new game; those it runs stay.
pub(crate) async fn cordon(
    client: &Client,
    args: &CordonArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    check_node_name(&args.node)?;
    check_ref(args.reference.as_ref())?;
    let changed = hold(client, &args.node, Hold::Cordon, args.reference.as_deref()).await?;
    let node = &args.node;
    if changed {
        writeln!(out, "node/{node} cordoned")?;
    } else {
        writeln!(out, "node/{node} already cordoned")?;
    }
    Ok(Outcome::Success)
}

/// `rtctl uncordon NODE`: the node takes games again (a drain under way stops).
pub(crate) async fn uncordon(
    client: &Client,
    args: &CordonArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    check_node_name(&args.node)?;
    check_ref(args.reference.as_ref())?;
    let changed = hold(
        client,
        &args.node,
        Hold::Uncordon,
        args.reference.as_deref(),
    )
    .await?;
    let node = &args.node;
    if changed {
        writeln!(out, "node/{node} uncordoned")?;
    } else {
        writeln!(out, "node/{node} already uncordoned")?;
    }
    Ok(Outcome::Success)
}

/// What is left on a draining node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Left {
    games: usize,
    in_session: usize,
}

impl Left {
    fn line(self, node: &str) -> String {
        format!(
            "node/{node} draining: {} game{} left ({} in session)",
            self.games,
            if self.games == 1 { "" } else { "s" },
            self.in_session
        )
    }
}

/// What is left on `node`, from the keys under assignments/ and sessions/; `None` when its
/// drain was called off (the cordon is gone, or no longer a drain).
fn left(keys: &Keys, node: &str, known: &[BTreeMap<String, KeyValue>]) -> Option<Left> {
    let draining = known[2]
        .get(&keys.cordon(node))
        .and_then(|kv| decode::<Cordon>(&kv.value))
        .is_some_and(|c| c.drain);
    if !draining {
        return None;
    }
    let sessions = &known[1];
    let mut left = Left {
        games: 0,
        in_session: 0,
    };
    for kv in known[0].values() {
        let Some(assignment) = decode::<Assignment>(&kv.value) else {
            continue;
        };
        if !assignment.is_on(node) {
            continue;
        }
        left.games += 1;
        let in_session = keys
            .name_of(&keys.assignments(), &kv.key)
            .and_then(|game| sessions.get(&keys.session(game)))
            .is_some_and(|kv| rtm_core::records::sessions::decode(kv).is_allocated());
        if in_session {
            left.in_session += 1;
        }
    }
    Some(left)
}

/// `rtctl drain NODE`: cordons the node for its games to be moved off, and (unless
/// `--no-wait`) waits until none is assigned there.
pub(crate) async fn drain(
    client: &Client,
    args: &DrainArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    let node = args.node.as_str();
    check_node_name(node)?;
    check_ref(args.reference.as_ref())?;
    hold(
        client,
        node,
        Hold::Drain {
            deadline: args.deadline,
        },
        args.reference.as_deref(),
    )
    .await?;
    writeln!(out, "node/{node} cordoned for draining")?;
    out.flush()?;
    if !args.waits() {
        return Ok(Outcome::Success);
    }
    let keys = client.keys();
    let prefixes = vec![keys.assignments(), keys.sessions(), keys.cordons()];
    // Shared with the timeout's message (the follower keeps writing it).
    let last: Cell<Option<Left>> = Cell::new(None);
    let what = format!("node/{node} to drain");
    let hint = format!(
        "the drain goes on; see what is left with `rtctl describe node {node}`, stop it with \
         `rtctl uncordon {node}`"
    );
    let follow = async {
        let (mut watch, listings, _) = MultiWatch::start(client, prefixes.clone()).await?;
        let mut known = Known::new(prefixes, &listings);
        loop {
            let Some(now) = left(keys, node, known.maps()) else {
                return Err(CliError::Conflict {
                    message: format!(
                        "node/{node} is no longer draining (uncordoned, or cordoned only, \
                         meanwhile); `rtctl drain {node}` asks again"
                    ),
                });
            };
            if now.games == 0 {
                writeln!(out, "node/{node} drained")?;
                return Ok(Outcome::Success);
            }
            if last.get() != Some(now) {
                writeln!(out, "{}", now.line(node))?;
                out.flush()?;
                last.set(Some(now));
            }
            known.update(watch.next().await?);
        }
    };
    let timeout = async {
        match args.timeout {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        outcome = follow => outcome,
        () = timeout => Err(CliError::Timeout {
            what: match last.get() {
                Some(left) => format!("{what} (last seen: {})", one_line(&left.line(node))),
                None => what,
            },
            after: humantime::format_duration(args.timeout.unwrap_or_default()).to_string(),
            hint,
        }),
        () = interrupt.cancelled() => Err(CliError::Interrupted { what, hint }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::fixtures::game;
    use rtm_core::records::nodes::{AssignmentReason, Capacity, DEFAULT_PORT_RANGE};

    fn record(name: &str) -> NodeRecord {
        NodeRecord {
            name: name.to_owned(),
            labels: [("region".to_owned(), "eu".to_owned())].into(),
            capacity: "games=200,cpus=30,memory=60Gi".parse().unwrap(),
            address: "10.0.0.7".into(),
            port_range: DEFAULT_PORT_RANGE,
            holder: format!("{name}-abc"),
            engine: None,
            version: "0.1.0".into(),
            registered_at: Timestamp::from(SystemTime::now() - Duration::from_secs(600)),
            ttl_ms: 10_000,
            self_fence_after_ms: Some(30_000),
            lost_at: None,
        }
    }

    fn heartbeat(holder: &str, renewed: Duration) -> Heartbeat {
        let mut heartbeat = Heartbeat::new(holder, Some("n1"));
        heartbeat.renewed_at = Some(Timestamp::from(SystemTime::now() - renewed));
        heartbeat
    }

    fn view(games: &[&str], live: bool, cordon: Option<Cordon>) -> NodeView {
        NodeView {
            record: record("n1"),
            cordon,
            heartbeat: live.then(|| Some(heartbeat("n1-abc", Duration::from_secs(3)))),
            games: games.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn cordon(drain: bool) -> Cordon {
        Cordon {
            drain,
            deadline: None,
            at: Timestamp::now(),
            by: Some("REQ-1".into()),
        }
    }

    #[test]
    fn rows_show_status_games_of_capacity_and_age() {
        let now = SystemTime::now();
        let cells = row(&view(&["g1", "g2"], true, None), false, now);
        assert_eq!(cells, ["n1", "Ready", "2/200", "10m", "0.1.0"]);
        assert_eq!(row(&view(&[], false, None), false, now)[1], "NotReady");
        assert_eq!(
            row(&view(&[], true, Some(cordon(false))), false, now)[1],
            "Cordoned"
        );
        assert_eq!(
            row(&view(&[], true, Some(cordon(true))), false, now)[1],
            "Draining"
        );
        let mut unbounded = view(&["g1"], true, None);
        unbounded.record.capacity = Capacity::default();
        assert_eq!(row(&unbounded, false, now)[2], "1");
    }

    #[test]
    fn wide_rows_add_labels_capacity_address_ports_and_the_last_heartbeat() {
        let now = SystemTime::now();
        let cells = row(&view(&[], true, None), true, now);
        assert_eq!(
            cells[5..],
            [
                "region=eu",
                "games=200,cpus=30,memory=60Gi",
                "10.0.0.7",
                "17000-17999",
                "3s"
            ]
        );
        assert_eq!(row(&view(&[], false, None), true, now)[9], "<none>");
        assert_eq!(HEADERS.len() + WIDE_HEADERS.len(), cells.len());
    }

    #[test]
    fn json_output_is_the_record_with_status_cordon_and_games() {
        let node = view(&["g1"], true, Some(cordon(true)));
        let value = serde_json::to_value(NodeOutput::of(&node)).unwrap();
        assert_eq!(value["name"], "n1");
        assert_eq!(value["status"], "Draining");
        assert_eq!(value["cordon"]["drain"], true);
        assert_eq!(value["portRange"]["first"], 17000);
        assert_eq!(value["games"], 1);
        assert!(value["lastHeartbeat"].is_string(), "{value}");
    }

    #[test]
    fn holds_plan_what_they_write() {
        let now = SystemTime::now();
        let drain = plan(
            Hold::Drain {
                deadline: Some(Duration::from_secs(7200)),
            },
            None,
            Some("R"),
            now,
        )
        .unwrap()
        .unwrap();
        assert!(drain.drain);
        assert_eq!(
            drain.deadline,
            Some(Timestamp::from(now + Duration::from_secs(7200)))
        );
        assert_eq!(drain.by.as_deref(), Some("R"));
        // Cordoning a cordoned node writes nothing; cordoning a draining one stops the drain.
        assert_eq!(plan(Hold::Cordon, Some(&cordon(false)), None, now), Err(()));
        let cordoned = plan(Hold::Cordon, Some(&cordon(true)), None, now).unwrap();
        assert!(cordoned.is_some_and(|c| !c.drain));
        assert_eq!(plan(Hold::Uncordon, None, None, now), Err(()));
        assert_eq!(
            plan(Hold::Uncordon, Some(&cordon(true)), None, now),
            Ok(None)
        );
    }

    #[test]
    fn node_names_are_dns_subdomains() {
        for good in ["n1", "node-a.eu.example"] {
            assert!(check_node_name(good).is_ok(), "{good}");
        }
        for bad in ["", "N1", "a/b", "-a", "a..b"] {
            let error = check_node_name(bad).unwrap_err();
            assert!(error.to_string().contains("rtctl get nodes"), "{error}");
        }
    }

    #[test]
    fn a_description_has_the_cordon_heartbeat_usage_and_games() {
        let mut g1 = game("g1").build();
        g1.spec.resources.cpus = Some("1.5".parse().unwrap());
        g1.spec.resources.memory = Some("1Gi".parse().unwrap());
        let mut g2 = game("g2").build();
        g2.spec.resources.cpus = Some("500m".parse().unwrap());
        let mut fleet = Fleet::default();
        fleet.games.insert("g1".into(), g1);
        fleet.games.insert("g2".into(), g2);
        let mut moved = Assignment::to("n1", AssignmentReason::Drained, "n2-x");
        moved.from = Some("n2".into());
        fleet.assignments.insert("g1".into(), moved);
        fleet.assignments.insert(
            "g2".into(),
            Assignment::to("n1", AssignmentReason::Scheduled, "n2-x"),
        );
        let mut draining = cordon(true);
        draining.deadline = Some(Timestamp::from(
            SystemTime::now() + Duration::from_secs(3600),
        ));
        let node = view(&["g1", "g2"], true, Some(draining));
        let text = render(&node, &fleet, SystemTime::now());
        assert!(text.contains("Status:              Draining"), "{text}");
        assert!(text.contains("draining since"), "{text}");
        assert!(text.contains("by REQ-1, deadline"), "{text}");
        assert!(text.contains("(in "), "{text}");
        assert!(text.contains("Holder:            n1-abc"), "{text}");
        assert!(text.contains("Live:              yes"), "{text}");
        assert!(text.contains("Games:             2 of 200"), "{text}");
        assert!(text.contains("CPUs:              2 of 30"), "{text}");
        assert!(text.contains("Memory:            1Gi of 60Gi"), "{text}");
        assert!(text.contains("Games (2):"), "{text}");
        assert!(text.contains("Drained"), "{text}");
        assert!(text.contains("n2"), "{text}");
        let gone = view(&[], false, None);
        let text = render(&gone, &Fleet::default(), SystemTime::now());
        assert!(text.contains("Status:              NotReady"), "{text}");
        assert!(text.contains("controllers/n1-abc does not exist"), "{text}");
        assert!(text.contains("<none> (takes new games)"), "{text}");
    }

    #[test]
    fn what_is_left_counts_the_nodes_assignments_and_their_sessions() {
        let keys = Keys::new("/t").unwrap();
        let kv = |key: String, value: Vec<u8>| KeyValue {
            key,
            value,
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        };
        let mut known = vec![BTreeMap::new(), BTreeMap::new(), BTreeMap::new()];
        for (game, node) in [("g1", "n1"), ("g2", "n1"), ("g3", "n2")] {
            let key = keys.assignment(game);
            let value = encode(&Assignment::to(node, AssignmentReason::Scheduled, "c"));
            known[0].insert(key.clone(), kv(key, value));
        }
        let session = Session {
            state: rtm_core::model::SessionState::Allocated,
            reference: Some("m".into()),
            since: Timestamp::now(),
            container_id: None,
            source: None,
        };
        let key = keys.session("g2");
        known[1].insert(
            key.clone(),
            kv(key, rtm_core::records::sessions::encode(&session)),
        );
        assert_eq!(left(&keys, "n1", &known), None, "no drain: called off");
        let key = keys.cordon("n1");
        known[2].insert(key.clone(), kv(key, encode(&cordon(true))));
        let now = left(&keys, "n1", &known).unwrap();
        assert_eq!(
            now,
            Left {
                games: 2,
                in_session: 1
            }
        );
        assert_eq!(
            now.line("n1"),
            "node/n1 draining: 2 games left (1 in session)"
        );
    }
}
