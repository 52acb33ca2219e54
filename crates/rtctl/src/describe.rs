//! `rtctl describe NAME`: one game laid out for a person — spec, status, conditions and the
//! last history entries.

use std::fmt::Write as _;
use std::io::Write;
use std::time::SystemTime;

use super::client::{Client, check_name};
use super::error::{CliError, Outcome};
use super::history::table as history_table;
use super::output::{Table, age_since};
use rtm_core::model::{
    Condition, GameRuntime, GameRuntimeSpec, GameRuntimeStatus, LastOperation, Timestamp,
};
use rtm_core::records::history::HistoryEntry;
use rtm_core::records::lease::LeaseRecord;
use rtm_core::store::KeyValue;

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
    let now = SystemTime::now();
    match decoded {
        Ok(mut doc) => {
            doc.status = status;
            out.write_all(render(&doc, &history, lease.as_ref(), now).as_bytes())?;
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
    if map.is_empty() {
        field(text, indent, label, "<none>");
        return;
    }
    for (i, (key, value)) in map.iter().enumerate() {
        let shown = format!("{key}={value}");
        if i == 0 {
            field(text, indent, label, &shown);
        } else {
            let _ = writeln!(text, "{:LABEL_WIDTH$} {shown}", "");
        }
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
pub(crate) fn render(
    doc: &GameRuntime,
    history: &[HistoryEntry],
    lease: Option<&LeaseView>,
    now: SystemTime,
) -> String {
    let mut text = String::new();
    render_metadata(&mut text, doc, now);
    render_spec(&mut text, doc);
    lease_field(&mut text, lease, now);
    render_status(&mut text, doc.status.as_ref(), doc.metadata.generation, now);
    render_history(&mut text, history, now);
    text
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
    field(
        text,
        2,
        "Stop Timeout",
        &humantime::format_duration(spec.stop_timeout).to_string(),
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

/// The `Status:` section (or that there is none yet), with the conditions.
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
    field(text, 2, "Hostname", &opt(&status.hostname));
    field(text, 2, "Node", &opt(&status.node));
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
    render_conditions(text, &status.conditions, now);
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
    use rtm_core::model::{OpKind, OpSource, Phase};

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
        let text = render(&doc, &[entry], None, SystemTime::now());
        for expected in [
            "Name:                      g1\n",
            "Labels:                    tier=ranked\n",
            "  Ports:                   17000->7000/TCP\n",
            "  Env:                     SEED=42\n",
            "  Resources:               memory=64Mi\n",
            "  Phase:                   Running\n",
            "  Observed Generation:     1 (not yet observed the latest)\n",
            "Conditions:\n  <none>\n",
            "History (newest first, last 10):\n  SEQ",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
