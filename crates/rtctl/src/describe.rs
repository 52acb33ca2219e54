//! `rtctl describe`: the command (games by name, `-l` or `--all`; budgets and nodes by
//! `TYPE NAME…` or `TYPE/NAME`, laid out by their modules), and one game laid out for a
//! person — spec, status (with where players connect), its session (Allocated or Idle), the
//! health check and what it last saw, conditions (UpdatePending among them: what waits, and
//! why) and the last history entries.

use std::fmt::Write as _;
use std::io::Write;
use std::time::SystemTime;

use super::client::{Client, check_name};
use super::error::{CliError, Outcome};
use super::history::table as history_table;
use super::output::{Table, age_since, published_ports, short_id};
use super::resource::{Kind, Names};
use super::target::{Targets, each};
use rtm_core::model::{
    Condition, GameRuntime, GameRuntimeSpec, GameRuntimeStatus, HealthCheck, HealthStatus,
    HealthVerdict, LastOperation, Session, Timestamp,
};
use rtm_core::records::events::{Event, Events};
use rtm_core::records::history::HistoryEntry;
use rtm_core::records::lease::LeaseRecord;
use rtm_core::records::nodes::Assignment;
use rtm_core::records::previous::PreviousContainer;
use rtm_core::store::KeyValue;

/// The arguments of `rtctl describe`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DescribeArgs {
    /// What to describe: game names; `budget NAME…`, `node NAME…`; or `TYPE/NAME`.
    #[arg(
        value_name = "[TYPE] NAME|TYPE/NAME",
        conflicts_with_all = ["selector", "all"],
        add = crate::complete::object_names()
    )]
    pub(crate) names: Vec<String>,
    /// Every game whose labels match: key=value, key!=value, key in (a,b), key notin (a,b),
    /// key (exists), !key.
    #[arg(short = 'l', long, value_name = "SELECTOR", conflicts_with = "all", add = crate::complete::label_selectors())]
    pub(crate) selector: Option<String>,
    /// Every game.
    #[arg(long)]
    pub(crate) all: bool,
}

/// `rtctl describe`: each object in turn, a blank line between two; a failure is reported
/// on its line and the others are still described; the exit code is the worst.
pub(crate) async fn command(
    client: &Client,
    args: &DescribeArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let (kind, names) = Names::parse(&args.names)?.of_one_kind("describe")?;
    let names = match kind {
        Kind::Game => {
            let targets = Targets {
                names,
                selector: args.selector.clone(),
                all: args.all,
            };
            targets.resolve(client, "describe").await?
        }
        _ if args.selector.is_some() || args.all => {
            return Err(CliError::usage(format!(
                "rtctl describe {kind} takes names; -l and --all select games"
            )));
        }
        _ if names.is_empty() => {
            return Err(CliError::usage(format!(
                "rtctl describe {kind} takes names, e.g. `rtctl describe {kind} NAME` (`rtctl \
                 get {kind}s` lists them)"
            )));
        }
        _ => names,
    };
    let mut first = true;
    Ok(each(&names, async |name: &str| {
        // One object's text is assembled first, to set it apart from the one before.
        let mut text = Vec::new();
        let outcome = match kind {
            Kind::Game => describe(client, name, &mut text).await,
            Kind::Budget => super::budget::describe(client, name, &mut text).await,
            Kind::Node => super::node::describe(client, name, &mut text).await,
        };
        if !text.is_empty() {
            if !std::mem::take(&mut first) {
                out.write_all(b"\n")?;
            }
            out.write_all(&text)?;
            out.flush()?;
        }
        outcome
    })
    .await)
}

/// History entries describe shows.
const HISTORY_ENTRIES: usize = 10;

/// Width of the label column: the longest label, "  Observed Restart Token:", and a space.
const LABEL_WIDTH: usize = 26;

pub(crate) async fn describe(
    client: &Client,
    name: &str,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    check_name(name)?;
    let keys = client.keys();
    let Some(raw) = client.raw(&keys.gameruntime(name)).await? else {
        return Err(client.not_found(name));
    };
    let decoded = client.documents().decode(&raw);
    let status = client.status(name).await?;
    let history = client.history(name, HISTORY_ENTRIES).await?;
    // Evidence only: an unreadable record is warned about, never in the way.
    let previous = client.previous(name).await.unwrap_or_else(|error| {
        super::output::warn(&error.to_string());
        None
    });
    let events: Vec<Event> = Events::new(client.store().clone(), keys.clone())
        .list(Some(name))
        .await
        .map_err(|e| client.store_error(e, &format!("reading the events of {name}")))?
        .into_iter()
        .filter_map(|event| {
            event
                .map_err(|corrupt| super::output::warn(&corrupt.to_string()))
                .ok()
        })
        .collect();
    let session = client
        .sessions()
        .get(name)
        .await
        .map_err(|e| client.session_error(e, &format!("reading the session of {name}")))?
        .value;
    let lease = match client.raw(&keys.lease(name)).await? {
        Some(lease) => {
            let heartbeat = match lease_record(&lease) {
                Some(record) => client.raw(&keys.controller(&record.holder)).await?,
                None => None,
            };
            Some(LeaseView {
                since: lease_record(&lease).and_then(|record| {
                    history
                        .iter()
                        .find(|e| e.op_id == record.op_id)
                        .map(|e| e.started_at)
                }),
                kv: lease,
                heartbeat,
            })
        }
        None => None,
    };
    let assignment = client
        .raw(&keys.assignment(name))
        .await?
        .map(|kv| rtm_core::records::nodes::decode::<Assignment>(&kv.value).ok_or(kv.key));
    let now = SystemTime::now();
    match decoded {
        Ok(mut doc) => {
            doc.status = status;
            out.write_all(
                render(
                    &doc,
                    session.as_ref(),
                    previous.as_ref(),
                    &events,
                    &history,
                    lease.as_ref(),
                    assignment.as_ref(),
                    now,
                )
                .as_bytes(),
            )?;
            Ok(Outcome::Success)
        }
        Err(error) => {
            // What can be shown is shown; the exit code and the last line say it is invalid.
            let reason = error.to_string();
            out.write_all(
                render_invalid(
                    name,
                    &raw,
                    &reason,
                    status.as_ref(),
                    &history,
                    lease.as_ref(),
                    now,
                )
                .as_bytes(),
            )?;
            out.flush()?;
            let reason = match error {
                rtm_core::records::documents::DocumentError::Corrupt { message, .. } => message,
                other => other.to_string(),
            };
            Err(client.corrupt(&raw.key, &reason))
        }
    }
}

/// A game's lease key as describe shows it.
#[derive(Debug)]
pub(crate) struct LeaseView {
    pub(crate) kv: KeyValue,
    /// When the holder's operation began (its history entry), if known.
    pub(crate) since: Option<Timestamp>,
    /// The holder's heartbeat key, if it has one.
    pub(crate) heartbeat: Option<KeyValue>,
}

/// One line about a lease key: who holds it, for which operation, since when, and whether it
/// is attached to an etcd lease (a key that is not never expires by itself).
pub(crate) fn lease_line(kv: &KeyValue, since: Option<(Timestamp, SystemTime)>) -> String {
    let mut line = match lease_record(kv) {
        Some(record) => format!(
            "held by {} for operation {}",
            or_unknown(&record.holder),
            or_unknown(&record.op_id)
        ),
        None => format!("{} holds an unreadable value", kv.key),
    };
    match since {
        Some((time, now)) => {
            let _ = write!(line, " since {}", when(Some(time), now));
        }
        None => {
            let _ = write!(line, " since revision {}", kv.create_revision);
        }
    }
    if kv.lease == 0 {
        line.push_str(
            "; not attached to any etcd lease (forged or hand-made); the controller takes it over",
        );
    } else {
        let _ = write!(line, "; attached to etcd lease {:x}", kv.lease);
    }
    line
}

/// The record a lease key holds, if it is one.
fn lease_record(kv: &KeyValue) -> Option<LeaseRecord> {
    serde_json::from_slice(&kv.value).ok()
}

fn or_unknown(text: &str) -> &str {
    if text.is_empty() { "<unknown>" } else { text }
}

fn lease_field(text: &mut String, lease: Option<&LeaseView>, now: SystemTime) {
    let Some(lease) = lease else {
        field(text, 0, "Lease", "<none> (no operation holds the game)");
        return;
    };
    let mut line = lease_line(&lease.kv, lease.since.map(|time| (time, now)));
    if lease.kv.lease != 0 {
        match &lease.heartbeat {
            Some(heartbeat) if heartbeat.lease == lease.kv.lease => {
                line.push_str(" (the holder's session: a live controller)");
            }
            Some(_) => line.push_str(
                " (not the holder's session lease: left by an earlier session of it; it goes \
                 when that lease expires)",
            ),
            None => {
                line.push_str(" (no live controller has that name; it goes when the lease expires)")
            }
        }
    }
    field(text, 0, "Lease", &line);
}

/// What describe shows of a game whose document cannot be read.
fn render_invalid(
    name: &str,
    raw: &KeyValue,
    reason: &str,
    status: Option<&GameRuntimeStatus>,
    history: &[HistoryEntry],
    lease: Option<&LeaseView>,
    now: SystemTime,
) -> String {
    let mut text = String::new();
    field(&mut text, 0, "Name", name);
    field(&mut text, 0, "State", "Invalid");
    field(&mut text, 0, "Key", &raw.key);
    field(&mut text, 0, "Reason", &super::error::one_line(reason));
    field(
        &mut text,
        0,
        "Resource Version",
        &raw.mod_revision.to_string(),
    );
    lease_field(&mut text, lease, now);
    render_status(&mut text, status, None, now);
    if let Some(status) = status {
        render_conditions(&mut text, &status.conditions, now);
    }
    render_history(&mut text, history, now);
    text
}

fn field(text: &mut String, indent: usize, label: &str, value: &str) {
    let label = format!("{}{label}:", " ".repeat(indent));
    let _ = writeln!(text, "{label:<LABEL_WIDTH$} {value}");
}

fn map_lines(
    text: &mut String,
    indent: usize,
    label: &str,
    map: &std::collections::BTreeMap<String, String>,
) {
    let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
    lines(text, indent, label, &pairs);
}

/// One value per line under a label, `<none>` when there is none.
fn lines(text: &mut String, indent: usize, label: &str, values: &[String]) {
    let Some((first, rest)) = values.split_first() else {
        field(text, indent, label, "<none>");
        return;
    };
    field(text, indent, label, first);
    for value in rest {
        let _ = writeln!(text, "{:LABEL_WIDTH$} {value}", "");
    }
}

fn when(time: Option<Timestamp>, now: SystemTime) -> String {
    match time {
        Some(time) => format!("{time} ({} ago)", age_since(Some(time), now)),
        None => "<unknown>".to_owned(),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "<none>".to_owned()
    } else {
        items.join(" ")
    }
}

/// The whole description.
// One argument per record shown beside the document (and the clock): a struct holding them
// would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn render(
    doc: &GameRuntime,
    session: Option<&Session>,
    previous: Option<&PreviousContainer>,
    events: &[Event],
    history: &[HistoryEntry],
    lease: Option<&LeaseView>,
    assignment: Option<&Result<Assignment, String>>,
    now: SystemTime,
) -> String {
    let mut text = String::new();
    render_metadata(&mut text, doc, now);
    render_spec(&mut text, doc);
    assignment_field(&mut text, assignment, now);
    lease_field(&mut text, lease, now);
    render_session(&mut text, session, now);
    render_status(&mut text, doc.status.as_ref(), doc.metadata.generation, now);
    if let Some(check) = &doc.spec.health_check {
        render_health(&mut text, check, doc.status.as_ref(), now);
    }
    if let Some(status) = &doc.status {
        render_conditions(&mut text, &status.conditions, now);
    }
    if let Some(previous) = previous {
        render_previous(&mut text, previous, now);
    }
    render_events(&mut text, events, now);
    render_history(&mut text, history, now);
    text
}

/// Where the scheduler put the game (`assignments/<game>`), and with no node why none fits;
/// `Err(key)`: the record there does not decode.
fn assignment_field(
    text: &mut String,
    assignment: Option<&Result<Assignment, String>>,
    now: SystemTime,
) {
    let value = match assignment {
        None => "<none> (not placed yet)".to_owned(),
        Some(Err(key)) => format!("<unreadable> (the value at {key} does not decode)"),
        Some(Ok(assignment)) => {
            let mut line = match &assignment.node {
                Some(node) => format!("node {node}"),
                None => format!(
                    "Unschedulable: {}",
                    assignment
                        .unschedulable
                        .as_deref()
                        .unwrap_or("no node fits")
                ),
            };
            let _ = write!(
                line,
                " ({}, {}, by {}",
                assignment.reason.as_str(),
                when(Some(assignment.at), now),
                assignment.by
            );
            if let Some(from) = &assignment.from {
                let _ = write!(line, ", from {from}");
            }
            line.push(')');
            line
        }
    };
    field(text, 0, "Assignment", &value);
}

/// The game's events (they expire; the history keeps the operations).
fn render_events(text: &mut String, events: &[Event], now: SystemTime) {
    let _ = writeln!(text, "Events:");
    if events.is_empty() {
        let _ = writeln!(text, "  <none>");
        return;
    }
    let mut table = Table::new(["TYPE", "REASON", "LAST SEEN", "COUNT", "MESSAGE"]);
    for event in events {
        table.row([
            event.kind.as_str().to_owned(),
            event.reason.as_str().to_owned(),
            format!("{} ago", age_since(Some(event.last_seen), now)),
            event.count.to_string(),
            event.message.clone(),
        ]);
    }
    indent(text, &table.render());
}

/// The game's last replaced container that had exited or failed its health check: how it
/// ended, and where its last output is.
fn render_previous(text: &mut String, kept: &PreviousContainer, now: SystemTime) {
    let _ = writeln!(text, "Last Termination:");
    field(
        text,
        2,
        "Container",
        &format!("{} ({})", short_id(&kept.container_id), kept.image_ref),
    );
    field(text, 2, "Ended", &kept.ended.summary());
    if let Some(cause) = kept.cause {
        field(text, 2, "Replaced For", cause.as_str());
    }
    field(text, 2, "Started", &when(kept.ended.started_at, now));
    field(text, 2, "Finished", &when(kept.ended.finished_at, now));
    field(
        text,
        2,
        "Kept By",
        &format!(
            "operation {}, {}",
            kept.op_id,
            when(Some(kept.kept_at), now)
        ),
    );
    let lines = kept.output.lines().count();
    field(
        text,
        2,
        "Last Output",
        &format!(
            "{lines} line{}{}: rtctl logs {} --previous",
            if lines == 1 { "" } else { "s" },
            if kept.truncated {
                " (the end of it)"
            } else {
                ""
            },
            kept.game_id
        ),
    );
}

/// Name, labels, annotations and the store's bookkeeping.
fn render_metadata(text: &mut String, doc: &GameRuntime, now: SystemTime) {
    let meta = &doc.metadata;
    field(text, 0, "Name", &meta.name);
    map_lines(text, 0, "Labels", &meta.labels);
    map_lines(text, 0, "Annotations", &meta.annotations);
    field(text, 0, "Created", &when(meta.creation_timestamp, now));
    field(
        text,
        0,
        "Generation",
        &meta.generation.map(|g| g.to_string()).unwrap_or_default(),
    );
    field(
        text,
        0,
        "Resource Version",
        meta.resource_version.as_deref().unwrap_or(""),
    );
}

/// The `Spec:` section.
fn render_spec(text: &mut String, doc: &GameRuntime) {
    let spec = &doc.spec;
    let _ = writeln!(text, "Spec:");
    field(text, 2, "Image", &spec.image);
    field(text, 2, "State", spec.state.as_str());
    field(
        text,
        2,
        "Hostname",
        spec.effective_hostname(&doc.metadata.name),
    );
    field(text, 2, "Command", &list_or_none(&spec.command));
    field(text, 2, "Args", &list_or_none(&spec.args));
    let env: Vec<String> = spec
        .env
        .iter()
        .map(|v| format!("{}={}", v.name, v.value))
        .collect();
    field(text, 2, "Env", &list_or_none(&env));
    field(text, 2, "Ports", &list_or_none(&ports(spec)));
    field(text, 2, "Resources", &list_or_none(&limits(spec)));
    lines(text, 2, "Volumes", &volumes(spec));
    field(
        text,
        2,
        "Stop Timeout",
        &humantime::format_duration(spec.stop_timeout).to_string(),
    );
    field(
        text,
        2,
        "Image Pull Policy",
        spec.image_pull_policy.as_str(),
    );
    field(text, 2, "Restart Policy", spec.restart_policy.as_str());
    field(
        text,
        2,
        "Restart Token",
        if spec.restart_token.is_empty() {
            "<none>"
        } else {
            &spec.restart_token
        },
    );
    field(text, 2, "Node", spec.node.as_deref().unwrap_or("<any>"));
}

/// One line per volume: where it is mounted, what it is, how (`/data <- saves (the game's
/// own, retained)`, `/maps <- volume shared-maps (read-only)`, `/host <- host path /srv`).
fn volumes(spec: &GameRuntimeSpec) -> Vec<String> {
    use rtm_core::model::volume::VolumeKind;
    spec.volumes
        .iter()
        .map(|v| {
            let what = match v.kind() {
                Some(VolumeKind::Game(name)) => format!("{name} (the game's own)"),
                Some(VolumeKind::Shared(name)) => format!("volume {name}"),
                Some(VolumeKind::HostPath(path)) => format!("host path {path}"),
                None => "<invalid>".to_owned(),
            };
            let how: Vec<&str> = [(v.read_only, "read-only"), (v.retain, "retained")]
                .into_iter()
                .filter_map(|(on, word)| on.then_some(word))
                .collect();
            if how.is_empty() {
                format!("{} <- {what}", v.container_path)
            } else {
                format!("{} <- {what} ({})", v.container_path, how.join(", "))
            }
        })
        .collect()
}

/// `HOST_IP:HOST_PORT->CONTAINER_PORT/PROTOCOL` per port.
fn ports(spec: &GameRuntimeSpec) -> Vec<String> {
    spec.ports
        .iter()
        .map(|p| {
            let host = match (&p.host_ip, p.host_port) {
                (Some(ip), Some(port)) => format!("{ip}:{port}->"),
                (None, Some(port)) => format!("{port}->"),
                _ => String::new(),
            };
            format!("{host}{}/{}", p.container_port, p.protocol.as_str())
        })
        .collect()
}

/// `memory=…`, `cpus=…`: the limits the spec sets.
fn limits(spec: &GameRuntimeSpec) -> Vec<String> {
    let mut limits = Vec::new();
    if let Some(memory) = spec.resources.memory {
        limits.push(format!("memory={memory}"));
    }
    if let Some(cpus) = spec.resources.cpus {
        limits.push(format!("cpus={cpus}"));
    }
    limits
}

/// The `Status:` section (or that there is none yet); the conditions follow it.
fn render_status(
    text: &mut String,
    status: Option<&GameRuntimeStatus>,
    generation: Option<i64>,
    now: SystemTime,
) {
    let Some(status) = status else {
        field(
            text,
            0,
            "Status",
            "<none> (the controller has not reported yet)",
        );
        return;
    };
    let _ = writeln!(text, "Status:");
    let phase = match status.phase_since {
        Some(since) => format!("{} (since {})", status.phase, when(Some(since), now)),
        None => status.phase.to_string(),
    };
    field(text, 2, "Phase", &phase);
    if let Some(message) = &status.message {
        field(text, 2, "Message", message);
    }
    let observed = status
        .observed_generation
        .map(|g| g.to_string())
        .unwrap_or_else(|| "<none>".into());
    let lag = match (status.observed_generation, generation) {
        (Some(seen), Some(current)) if seen < current => " (not yet observed the latest)",
        _ => "",
    };
    field(text, 2, "Observed Generation", &format!("{observed}{lag}"));
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "<none>".into());
    field(text, 2, "Container", &opt(&status.container_id));
    field(text, 2, "Image", &opt(&status.image_ref));
    if let Some(image_id) = &status.image_id {
        field(text, 2, "Image ID", image_id);
    }
    field(text, 2, "Hostname", &opt(&status.hostname));
    field(text, 2, "Node", &opt(&status.node));
    field(text, 2, "Address", &opt(&status.address));
    lines(text, 2, "Ports", &published_ports(&status.ports));
    field(text, 2, "Restarts", &status.restart_count.to_string());
    field(
        text,
        2,
        "Observed Restart Token",
        &opt(&status.observed_restart_token),
    );
    if let Some(code) = status.last_exit_code {
        let oom = if status.oom_killed {
            " (OOM killed)"
        } else {
            ""
        };
        field(text, 2, "Last Exit Code", &format!("{code}{oom}"));
    }
    if let Some(op) = &status.last_operation {
        field(text, 2, "Last Operation", &last_operation(op, now));
    }
}

/// The `Health Check:` section of a game whose spec has one: the probe and its timing, then
/// what the probes of the current container last said (`status.health`).
fn render_health(
    text: &mut String,
    check: &HealthCheck,
    status: Option<&GameRuntimeStatus>,
    now: SystemTime,
) {
    let duration = |d| humantime::format_duration(d).to_string();
    let probes: Vec<String> = check.probes().iter().map(ToString::to_string).collect();
    let _ = writeln!(text, "Health Check:");
    field(text, 2, "Probe", &list_or_none(&probes));
    field(text, 2, "Interval", &duration(check.interval));
    field(text, 2, "Timeout", &duration(check.timeout));
    field(
        text,
        2,
        "Failure Threshold",
        &check.failure_threshold.to_string(),
    );
    field(text, 2, "Start Period", &duration(check.start_period));
    field(text, 2, "Startup Timeout", &duration(check.startup_timeout));
    let Some(health) = status.and_then(|s| s.health.as_ref()) else {
        field(text, 2, "Verdict", "no result yet");
        return;
    };
    let mut verdict = health.verdict.to_string();
    if health.verdict == HealthVerdict::Unknown {
        verdict.push_str(" (no result yet)");
    }
    if let Some(since) = health.since {
        let _ = write!(verdict, " since {}", when(Some(since), now));
    }
    field(text, 2, "Verdict", &verdict);
    if probes.first() != Some(&health.probe) {
        // The spec changed and the controller has not probed the new way yet.
        field(
            text,
            2,
            "Probed With",
            &format!("{} (an earlier spec)", health.probe),
        );
    }
    if let Some(about) = stale_container(health, status) {
        field(
            text,
            2,
            "Container",
            &format!("{about} (an earlier container, not the current one)"),
        );
    }
    field(
        text,
        2,
        "Passed",
        if health.passed { "yes" } else { "not yet" },
    );
    field(
        text,
        2,
        "Consecutive Failures",
        &format!(
            "{} (of {} that make it unhealthy)",
            health.consecutive_failures, check.failure_threshold
        ),
    );
    field(
        text,
        2,
        "Last Message",
        health.message.as_deref().unwrap_or("<none>"),
    );
}

/// The short id of the container a verdict is about, when that is not the status's current
/// one (the controller has not probed the new container yet).
fn stale_container<'h>(
    health: &'h HealthStatus,
    status: Option<&GameRuntimeStatus>,
) -> Option<&'h str> {
    let about = health.container_id.as_deref()?;
    let current = status.and_then(|s| s.container_id.as_deref());
    (current != Some(about)).then(|| short_id(about))
}

/// `restart failure start_failed: boom (ref REQ-42), finished …`.
fn last_operation(op: &LastOperation, now: SystemTime) -> String {
    let mut line = format!("{} {}", op.op_kind, op.outcome);
    if let Some(code) = &op.error_code {
        let _ = write!(line, " {code}");
        if let Some(message) = &op.error_message {
            let _ = write!(line, ": {message}");
        }
    }
    if let Some(source_ref) = &op.source_ref {
        let _ = write!(line, " (ref {source_ref})");
    }
    if let Some(finished) = op.finished_at {
        let _ = write!(line, ", finished {}", when(Some(finished), now));
    }
    line
}

/// The `Session:` section: the record at `sessions/<game>` (none: Idle).
fn render_session(text: &mut String, session: Option<&Session>, now: SystemTime) {
    let Some(session) = session else {
        field(text, 0, "Session", "Idle (no session record)");
        return;
    };
    let _ = writeln!(text, "Session:");
    field(text, 2, "State", session.state.as_str());
    field(
        text,
        2,
        "Ref",
        session.reference.as_deref().unwrap_or("<none>"),
    );
    field(text, 2, "Since", &when(Some(session.since), now));
    field(
        text,
        2,
        "Container",
        session.container_id.as_deref().map_or("<none>", short_id),
    );
    field(
        text,
        2,
        "Source",
        session.source.as_deref().unwrap_or("api"),
    );
}

/// The `Conditions:` table.
fn render_conditions(text: &mut String, conditions: &[Condition], now: SystemTime) {
    let _ = writeln!(text, "Conditions:");
    if conditions.is_empty() {
        let _ = writeln!(text, "  <none>");
        return;
    }
    let mut table = Table::new(["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"]);
    for condition in conditions {
        table.row([
            condition.type_.clone(),
            condition.status.as_str().to_owned(),
            condition.reason.clone(),
            when(condition.last_transition_time, now),
            condition.message.clone(),
        ]);
    }
    indent(text, &table.render());
}

fn render_history(text: &mut String, history: &[HistoryEntry], now: SystemTime) {
    let _ = writeln!(text, "History (newest first, last {HISTORY_ENTRIES}):");
    if history.is_empty() {
        let _ = writeln!(text, "  <none>");
    } else {
        indent(text, &history_table(history, now).render());
    }
}

fn indent(text: &mut String, block: &str) {
    for line in block.lines() {
        let _ = writeln!(text, "  {}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::parse::parse_documents;
    use rtm_core::model::{ConditionStatus, OpKind, OpSource, Phase, Protocol, PublishedPort};

    #[test]
    fn the_assignment_says_the_node_or_why_none_fits() {
        use rtm_core::records::nodes::AssignmentReason;
        let doc = rtm_core::model::fixtures::game("g1").build();
        let now = SystemTime::now();
        let text = render(&doc, None, None, &[], &[], None, None, now);
        assert!(
            text.contains("Assignment:                <none> (not placed yet)"),
            "{text}"
        );
        let mut moved = Assignment::to("n2", AssignmentReason::Drained, "n3-x");
        moved.from = Some("n1".into());
        let text = render(&doc, None, None, &[], &[], None, Some(&Ok(moved)), now);
        assert!(
            text.contains("Assignment:                node n2 (Drained, "),
            "{text}"
        );
        assert!(text.contains("by n3-x, from n1)"), "{text}");
        let nowhere = Assignment::unschedulable("0/3 nodes fit: 3 node selector region=eu", "c");
        let text = render(&doc, None, None, &[], &[], None, Some(&Ok(nowhere)), now);
        assert!(
            text.contains("Unschedulable: 0/3 nodes fit: 3 node selector region=eu (Scheduled"),
            "{text}"
        );
    }

    #[test]
    fn a_description_has_every_section() {
        let mut doc = parse_documents(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {name: g1, labels: \
             {tier: ranked}}\nspec: {image: 'x:1', ports: [{containerPort: 7000, hostPort: \
             17000}], env: [{name: SEED, value: '42'}], resources: {memory: 64Mi}}\n",
        )
        .unwrap()
        .remove(0);
        doc.metadata.generation = Some(2);
        doc.status = Some(GameRuntimeStatus {
            phase: Phase::Running,
            observed_generation: Some(1),
            ..GameRuntimeStatus::default()
        });
        let entry = HistoryEntry::begin("g1", "op-1", OpKind::Start, OpSource::Reconcile);
        let text = render(
            &doc,
            None,
            None,
            &[],
            &[entry],
            None,
            None,
            SystemTime::now(),
        );
        for expected in [
            "Name:                      g1\n",
            "Labels:                    tier=ranked\n",
            "  Ports:                   17000->7000/TCP\n",
            "  Env:                     SEED=42\n",
            "  Resources:               memory=64Mi\n",
            "  Volumes:                 <none>\n",
            "  Phase:                   Running\n",
            "  Observed Generation:     1 (not yet observed the latest)\n",
            "Conditions:\n  <none>\n",
            "Events:\n  <none>\n",
            "History (newest first, last 10):\n  SEQ",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    /// A game with an HTTP health check, every timing set, from YAML as a user writes it.
    fn checked_game() -> GameRuntime {
        parse_documents(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {name: g1}\n\
             spec: {image: 'x:1', healthCheck: {http: {port: 8080, path: /healthz}, interval: \
             5s, timeout: 2s, failureThreshold: 3, startPeriod: 10s, startupTimeout: 2m}}\n",
        )
        .unwrap()
        .remove(0)
    }

    fn ready(status: ConditionStatus, reason: &str, message: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: None,
        }
    }

    /// The lines of `text` from the one starting with `heading` to the next unindented one.
    fn section<'t>(text: &'t str, heading: &str) -> Vec<&'t str> {
        let mut lines = text.lines().skip_while(|l| !l.starts_with(heading));
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("no {heading} in\n{text}"));
        std::iter::once(first)
            .chain(lines.take_while(|l| l.starts_with(' ')))
            .collect()
    }

    #[test]
    fn volumes_say_where_each_is_mounted_what_it_is_and_how() {
        let doc = parse_documents(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {name: g1}\nspec:\n  \
             image: 'x:1'\n  volumes:\n  - {name: saves, containerPath: /data, retain: true}\n  \
             - {containerPath: /maps, readOnly: true, source: {volume: shared-maps}}\n  \
             - {containerPath: /host, source: {hostPath: /srv/maps}}\n",
        )
        .unwrap()
        .remove(0);
        let text = render(&doc, None, None, &[], &[], None, None, SystemTime::now());
        let at = text.find("  Volumes:").expect("a Volumes field");
        let block: Vec<&str> = text[at..].lines().take(3).collect();
        assert_eq!(
            block,
            [
                "  Volumes:                 /data <- saves (the game's own) (retained)",
                "                           /maps <- volume shared-maps (read-only)",
                "                           /host <- host path /srv/maps",
            ],
            "{text}"
        );
    }

    #[test]
    fn the_last_termination_says_how_it_ended_and_where_its_output_is() {
        let doc = checked_game();
        let now = Timestamp::from_unix_seconds(1_800_000_600).system_time();
        let kept = PreviousContainer {
            game_id: "g1".into(),
            container_id: "0123456789abcdef".into(),
            image_ref: "engine:1".into(),
            op_id: "op-9".into(),
            ended: rtm_core::records::previous::Ended {
                exit_code: Some(137),
                oom_killed: true,
                started_at: Some(Timestamp::from_unix_seconds(1_800_000_000)),
                finished_at: Some(Timestamp::from_unix_seconds(1_800_000_300)),
            },
            cause: None,
            output: "a\nb\n".into(),
            truncated: true,
            kept_at: Timestamp::from_unix_seconds(1_800_000_301),
        };
        let text = render(&doc, None, Some(&kept), &[], &[], None, None, now);
        assert_eq!(
            section(&text, "Last Termination:"),
            [
                "Last Termination:",
                "  Container:               0123456789ab (engine:1)",
                "  Ended:                   exited 137, OOM-killed",
                "  Started:                 2027-01-15T08:00:00Z (10m ago)",
                "  Finished:                2027-01-15T08:05:00Z (5m ago)",
                "  Kept By:                 operation op-9, 2027-01-15T08:05:01Z (4m59s ago)",
                "  Last Output:             2 lines (the end of it): rtctl logs g1 --previous",
            ],
            "{text}"
        );
        let without = render(&doc, None, None, &[], &[], None, None, now);
        assert!(!without.contains("Last Termination"), "{without}");
        let mut event = Event::first(
            "g1",
            rtm_core::records::events::EventReason::BackOff,
            "the container exited with code 137, OOM-killed; restarting after a back-off of 20s",
            "c1",
        );
        event.count = 3;
        event.last_seen = Timestamp::from_unix_seconds(1_800_000_590);
        let text = render(&doc, None, Some(&kept), &[event], &[], None, None, now);
        assert_eq!(
            section(&text, "Events:")[1..],
            [
                "  TYPE      REASON    LAST SEEN   COUNT   MESSAGE",
                "  Warning   BackOff   10s ago     3       the container exited with code 137, \
                 OOM-killed; restarting after a back-off of 20s",
            ],
            "{text}"
        );
    }

    #[test]
    fn the_status_says_where_players_connect() {
        let mut doc = parse_documents(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {name: g1}\n\
             spec: {image: 'x:1'}\n",
        )
        .unwrap()
        .remove(0);
        doc.status = Some(GameRuntimeStatus {
            phase: Phase::Running,
            ..GameRuntimeStatus::default()
        });
        let text = render(&doc, None, None, &[], &[], None, None, SystemTime::now());
        assert!(
            text.contains("  Address:                 <none>\n  Ports:                   <none>\n"),
            "{text}"
        );
        let status = doc.status.as_mut().unwrap();
        status.address = Some("10.1.2.3".into());
        status.ports = vec![
            PublishedPort {
                container_port: 7000,
                protocol: Protocol::Tcp,
                host_ip: Some("0.0.0.0".into()),
                host_port: 17000,
            },
            PublishedPort {
                container_port: 7001,
                protocol: Protocol::Udp,
                host_ip: Some("127.0.0.1".into()),
                host_port: 17001,
            },
        ];
        let text = render(&doc, None, None, &[], &[], None, None, SystemTime::now());
        assert!(
            text.contains(
                "  Address:                 10.1.2.3\n\
                 \x20 Ports:                   17000->7000/tcp\n\
                 \x20                          127.0.0.1:17001->7001/udp\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_health_check_shows_its_probe_and_what_the_probes_last_saw() {
        let mut doc = checked_game();
        let now = Timestamp::from_unix_seconds(1_700_000_100).system_time();
        doc.status = Some(GameRuntimeStatus {
            phase: Phase::Running,
            container_id: Some("0123456789abcdef".into()),
            conditions: vec![ready(
                ConditionStatus::False,
                "HealthCheckFailing",
                "http 503 from 172.17.0.5:8080/healthz",
            )],
            health: Some(HealthStatus {
                probe: "http :8080/healthz".into(),
                verdict: HealthVerdict::Failing,
                container_id: Some("0123456789abcdef".into()),
                passed: true,
                consecutive_failures: 2,
                message: Some("http 503 from 172.17.0.5:8080/healthz".into()),
                since: Some(Timestamp::from_unix_seconds(1_700_000_040)),
            }),
            ..GameRuntimeStatus::default()
        });
        let text = render(&doc, None, None, &[], &[], None, None, now);
        assert_eq!(
            section(&text, "Health Check:"),
            [
                "Health Check:",
                "  Probe:                   http :8080/healthz",
                "  Interval:                5s",
                "  Timeout:                 2s",
                "  Failure Threshold:       3",
                "  Start Period:            10s",
                "  Startup Timeout:         2m",
                "  Verdict:                 Failing since 2023-11-14T22:14:00Z (60s ago)",
                "  Passed:                  yes",
                "  Consecutive Failures:    2 (of 3 that make it unhealthy)",
                "  Last Message:            http 503 from 172.17.0.5:8080/healthz",
            ]
        );
        // It sits between the status and the conditions, whose Ready reason it explains.
        let health_at = text.find("Health Check:").unwrap();
        assert!(text.find("Status:").unwrap() < health_at, "{text}");
        assert!(health_at < text.find("Conditions:").unwrap(), "{text}");
        assert!(text.contains("HealthCheckFailing"), "{text}");
    }

    #[test]
    fn a_health_check_without_a_result_says_so() {
        let mut doc = checked_game();
        let now = SystemTime::now();
        // No status at all yet, then a status the probes have not reported in.
        let text = render(&doc, None, None, &[], &[], None, None, now);
        assert!(
            text.contains(
                "  Startup Timeout:         2m\n  Verdict:                 no result yet\n"
            ),
            "{text}"
        );
        doc.status = Some(GameRuntimeStatus {
            phase: Phase::Starting,
            conditions: vec![ready(ConditionStatus::False, "Starting", "")],
            ..GameRuntimeStatus::default()
        });
        let text = render(&doc, None, None, &[], &[], None, None, now);
        assert!(
            text.contains("  Verdict:                 no result yet\n"),
            "{text}"
        );
        doc.status.as_mut().unwrap().health = Some(HealthStatus {
            probe: "http :8080/healthz".into(),
            verdict: HealthVerdict::Unknown,
            container_id: None,
            passed: false,
            consecutive_failures: 0,
            message: None,
            since: None,
        });
        let text = render(&doc, None, None, &[], &[], None, None, now);
        for expected in [
            "  Verdict:                 Unknown (no result yet)\n",
            "  Passed:                  not yet\n",
            "  Last Message:            <none>\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn a_verdict_about_an_earlier_probe_or_container_says_so() {
        let mut doc = checked_game();
        doc.status = Some(GameRuntimeStatus {
            phase: Phase::Running,
            container_id: Some("bbbbbbbbbbbbbbbbbbbb".into()),
            health: Some(HealthStatus {
                probe: "tcp :7000".into(),
                verdict: HealthVerdict::Passing,
                container_id: Some("aaaaaaaaaaaaaaaaaaaa".into()),
                passed: true,
                consecutive_failures: 0,
                message: None,
                since: None,
            }),
            ..GameRuntimeStatus::default()
        });
        let text = render(&doc, None, None, &[], &[], None, None, SystemTime::now());
        for expected in [
            "  Verdict:                 Passing\n",
            "  Probed With:             tcp :7000 (an earlier spec)\n",
            "  Container:               aaaaaaaaaaaa (an earlier container, not the current one)\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn a_game_without_a_health_check_has_no_health_section() {
        let mut doc = parse_documents(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {name: g1}\n\
             spec: {image: 'x:1'}\n",
        )
        .unwrap()
        .remove(0);
        doc.status = Some(GameRuntimeStatus::default());
        let text = render(&doc, None, None, &[], &[], None, None, SystemTime::now());
        assert!(!text.contains("Health Check:"), "{text}");
        assert!(text.contains("Conditions:\n  <none>\n"), "{text}");
    }

    #[test]
    fn the_session_and_an_update_pending_condition_are_described() {
        use rtm_core::model::{SessionState, UPDATE_PENDING};
        let now = SystemTime::now();
        let mut doc = rtm_core::model::fixtures::game("g1").build();
        doc.status = Some(GameRuntimeStatus {
            conditions: vec![
                ready(ConditionStatus::True, "ContainerRunning", ""),
                Condition {
                    type_: UPDATE_PENDING.into(),
                    status: ConditionStatus::True,
                    reason: "InSession".into(),
                    message: "the restart waits for the session (ref match-42) to end".into(),
                    last_transition_time: Some(Timestamp::now()),
                },
            ],
            ..GameRuntimeStatus::default()
        });
        let session = Session {
            state: SessionState::Allocated,
            reference: Some("match-42".into()),
            since: Timestamp::now(),
            container_id: Some("0123456789abcdef0123".into()),
            source: Some("admin_cli".into()),
        };
        let text = render(&doc, Some(&session), None, &[], &[], None, None, now);
        let described = section(&text, "Session:");
        assert!(
            described
                .iter()
                .any(|l| l.contains("State:") && l.ends_with("Allocated")),
            "{text}"
        );
        assert!(described.iter().any(|l| l.ends_with("match-42")), "{text}");
        assert!(
            described.iter().any(|l| l.ends_with("0123456789ab")),
            "{text}"
        );
        assert!(described.iter().any(|l| l.ends_with("admin_cli")), "{text}");
        let conditions = section(&text, "Conditions:");
        let pending = conditions
            .iter()
            .find(|l| l.trim_start().starts_with("UpdatePending"))
            .unwrap_or_else(|| panic!("no UpdatePending row:\n{text}"));
        assert!(
            pending.contains("True") && pending.contains("InSession"),
            "{pending}"
        );
        assert!(
            pending.ends_with("the restart waits for the session (ref match-42) to end"),
            "{pending}"
        );
        let idle = render(&doc, None, None, &[], &[], None, None, now);
        assert!(idle.contains("Session:"), "{idle}");
        assert!(idle.contains("Idle (no session record)"), "{idle}");
    }
}
