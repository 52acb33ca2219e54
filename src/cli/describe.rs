//! `rtctl describe NAME`: one game laid out for a person — spec, status, conditions and the
//! last history entries.

use std::fmt::Write as _;
use std::io::Write;
use std::time::SystemTime;

use super::error::{CliError, Outcome};
use super::history::table as history_table;
use super::output::{Table, age_since};
use super::session::{Session, check_name};
use crate::history::HistoryEntry;
use crate::model::{GameRuntime, Timestamp};

/// History entries describe shows.
const HISTORY_ENTRIES: usize = 10;

/// Width of the label column: the longest label, "  Observed Restart Token:", and a space.
const LABEL_WIDTH: usize = 26;

pub async fn describe(
    session: &Session,
    name: &str,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    check_name(name)?;
    let doc = session
        .get_with_status(name)
        .await?
        .ok_or_else(|| session.not_found(name))?;
    let history = session.history(name, HISTORY_ENTRIES).await?;
    out.write_all(render(&doc, &history, SystemTime::now()).as_bytes())?;
    Ok(Outcome::Success)
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
pub fn render(doc: &GameRuntime, history: &[HistoryEntry], now: SystemTime) -> String {
    let mut text = String::new();
    let meta = &doc.metadata;
    let spec = &doc.spec;
    field(&mut text, 0, "Name", &meta.name);
    map_lines(&mut text, 0, "Labels", &meta.labels);
    map_lines(&mut text, 0, "Annotations", &meta.annotations);
    field(&mut text, 0, "Created", &when(meta.creation_timestamp, now));
    field(
        &mut text,
        0,
        "Generation",
        &meta.generation.map(|g| g.to_string()).unwrap_or_default(),
    );
    field(
        &mut text,
        0,
        "Resource Version",
        meta.resource_version.as_deref().unwrap_or(""),
    );

    let _ = writeln!(text, "Spec:");
    field(&mut text, 2, "Image", &spec.image);
    field(&mut text, 2, "State", spec.state.as_str());
    field(
        &mut text,
        2,
        "Hostname",
        spec.effective_hostname(&meta.name),
    );
    field(&mut text, 2, "Command", &list_or_none(&spec.command));
    field(&mut text, 2, "Args", &list_or_none(&spec.args));
    let env: Vec<String> = spec
        .env
        .iter()
        .map(|v| format!("{}={}", v.name, v.value))
        .collect();
    field(&mut text, 2, "Env", &list_or_none(&env));
    let ports: Vec<String> = spec
        .ports
        .iter()
        .map(|p| {
            let host = match (&p.host_ip, p.host_port) {
                (Some(ip), Some(port)) => format!("{ip}:{port}->"),
                (None, Some(port)) => format!("{port}->"),
                _ => String::new(),
            };
            format!("{host}{}/{}", p.container_port, p.protocol.as_str())
        })
        .collect();
    field(&mut text, 2, "Ports", &list_or_none(&ports));
    let mut limits = Vec::new();
    if let Some(memory) = spec.resources.memory {
        limits.push(format!("memory={memory}"));
    }
    if let Some(cpus) = spec.resources.cpus {
        limits.push(format!("cpus={cpus}"));
    }
    field(&mut text, 2, "Resources", &list_or_none(&limits));
    field(
        &mut text,
        2,
        "Stop Timeout",
        &humantime::format_duration(spec.stop_timeout).to_string(),
    );
    field(&mut text, 2, "Restart Policy", spec.restart_policy.as_str());
    field(
        &mut text,
        2,
        "Restart Token",
        if spec.restart_token.is_empty() {
            "<none>"
        } else {
            &spec.restart_token
        },
    );
    field(
        &mut text,
        2,
        "Node",
        spec.node.as_deref().unwrap_or("<any>"),
    );

    match &doc.status {
        None => {
            field(
                &mut text,
                0,
                "Status",
                "<none> (the controller has not reported yet)",
            );
        }
        Some(status) => {
            let _ = writeln!(text, "Status:");
            let phase = match status.phase_since {
                Some(since) => format!("{} (since {})", status.phase, when(Some(since), now)),
                None => status.phase.to_string(),
            };
            field(&mut text, 2, "Phase", &phase);
            if let Some(message) = &status.message {
                field(&mut text, 2, "Message", message);
            }
            let observed = status
                .observed_generation
                .map(|g| g.to_string())
                .unwrap_or_else(|| "<none>".into());
            let lag = match (status.observed_generation, meta.generation) {
                (Some(seen), Some(current)) if seen < current => " (not yet observed the latest)",
                _ => "",
            };
            field(
                &mut text,
                2,
                "Observed Generation",
                &format!("{observed}{lag}"),
            );
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "<none>".into());
            field(&mut text, 2, "Container", &opt(&status.container_id));
            field(&mut text, 2, "Image", &opt(&status.image_ref));
            field(&mut text, 2, "Hostname", &opt(&status.hostname));
            field(&mut text, 2, "Node", &opt(&status.node));
            field(&mut text, 2, "Restarts", &status.restart_count.to_string());
            field(
                &mut text,
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
                field(&mut text, 2, "Last Exit Code", &format!("{code}{oom}"));
            }
            if let Some(op) = &status.last_operation {
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
                field(&mut text, 2, "Last Operation", &line);
            }
            let _ = writeln!(text, "Conditions:");
            if status.conditions.is_empty() {
                let _ = writeln!(text, "  <none>");
            } else {
                let mut table =
                    Table::new(["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"]);
                for condition in &status.conditions {
                    table.row([
                        condition.type_.clone(),
                        condition.status.as_str().to_owned(),
                        condition.reason.clone(),
                        when(condition.last_transition_time, now),
                        condition.message.clone(),
                    ]);
                }
                indent(&mut text, &table.render());
            }
        }
    }

    let _ = writeln!(text, "History (newest first, last {HISTORY_ENTRIES}):");
    if history.is_empty() {
        let _ = writeln!(text, "  <none>");
    } else {
        indent(&mut text, &history_table(history, now).render());
    }
    text
}

fn indent(text: &mut String, block: &str) {
    for line in block.lines() {
        let _ = writeln!(text, "  {}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse::parse_documents;
    use crate::model::{GameRuntimeStatus, OpKind, OpSource, Phase};

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
        let text = render(&doc, &[entry], SystemTime::now());
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
