//! `rtctl history NAME`: a game's operation log, newest first, with the correlation ids that
//! tie a restart to its inner stop and start. A source the document's writer claimed (its
//! annotations) reads `admin_cli (claimed)`: only `reconcile` is the controller's own word.
//! An operation that repairs a failure (a restart after the health check failed) shows it
//! as its CAUSE, with what the probe saw (the entry's note) in MESSAGE; one that replaced or
//! removed a container that had exited shows how it ended (`exited 137, OOM-killed`) as its
//! CAUSE (`rtctl logs --previous` prints what it said last); a recreate the document asked
//! for lists the spec fields that changed in MESSAGE. The operation's own failure, if any,
//! comes first there.

use std::io::Write;
use std::time::SystemTime;

use super::client::{Client, check_name};
use super::error::{CliError, Outcome};
use super::output::{Table, age_since, note, or_none, short_id};
use rtm_core::records::history::HistoryEntry;

/// The most entries one call reads (the controller keeps 100 per game by default).
pub(crate) const MAX_LIMIT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HistoryFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HistoryArgs {
    /// The game (`NAME` or `gameruntime/NAME`).
    #[arg(value_parser = crate::resource::game_word, value_name = "NAME", add = crate::complete::game_names())]
    pub(crate) name: String,
    /// How many entries to show, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT as u64))]
    pub(crate) limit: u64,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: HistoryFormat,
}

/// `code: message`, or either alone; empty when the operation did not fail.
pub(crate) fn error_text(entry: &HistoryEntry) -> String {
    match (&entry.error_code, &entry.error_message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        (None, Some(message)) => message.clone(),
        (None, None) => String::new(),
    }
}

/// The MESSAGE cell: the operation's failure, then the note on why it ran (for a repair,
/// what the probe saw), then for a recreate the document asked for the spec fields that
/// changed (`changed: image: a → b, env[MODE] added`), `; `-separated.
pub(crate) fn message_text(entry: &HistoryEntry) -> String {
    let changes = (!entry.spec_changes.is_empty())
        .then(|| format!("changed: {}", entry.spec_changes.join(", ")));
    [Some(error_text(entry)), entry.note.clone(), changes]
        .into_iter()
        .flatten()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why the replaced container had to go: the failure the operation repairs
/// (`health_check_failed`, `startup_timeout`), else how it had ended (`exited 1`,
/// `exited 137, OOM-killed`); `-` for none.
pub(crate) fn cause_text(entry: &HistoryEntry) -> String {
    match (entry.cause, &entry.ended) {
        (Some(code), _) => code.as_str().to_owned(),
        (None, Some(ended)) => ended.summary(),
        (None, None) => "-".to_owned(),
    }
}

/// The outcome, with how many times a repeated failure happened in all
/// (`failure ×5`: the entry and the 4 folded into it).
pub(crate) fn outcome_text(entry: &HistoryEntry) -> String {
    match entry.repeated {
        0 => entry.outcome.as_str().to_owned(),
        more => format!("{} ×{}", entry.outcome.as_str(), more.saturating_add(1)),
    }
}

/// The source, marked when it is the document writer's claim rather than the controller's
/// own knowledge (`api (claimed)`).
pub(crate) fn source_text(entry: &HistoryEntry) -> String {
    if entry.source_claimed {
        format!("{} (claimed)", entry.op_source.as_str())
    } else {
        entry.op_source.as_str().to_owned()
    }
}

/// `before→after` with short ids.
pub(crate) fn containers(entry: &HistoryEntry) -> String {
    let id = |id: &Option<String>| id.as_deref().map(short_id).unwrap_or("-").to_owned();
    match (&entry.container_id_before, &entry.container_id_after) {
        (None, None) => "-".to_owned(),
        (before, after) if before == after => id(before),
        (before, after) => format!("{}→{}", id(before), id(after)),
    }
}

/// The duration of a finished entry, `-` for one in progress.
pub(crate) fn duration(entry: &HistoryEntry) -> String {
    match entry.finished_at {
        Some(finished) => humantime::format_duration(
            finished
                .system_time()
                .duration_since(entry.started_at.system_time())
                .unwrap_or_default(),
        )
        .to_string(),
        None => "-".to_owned(),
    }
}

/// The history table: SEQ OP-ID KIND SOURCE REF OUTCOME CONTAINER STARTED DURATION CAUSE
/// MESSAGE (the free text last, so the columns before it stay narrow).
pub(crate) fn table(entries: &[HistoryEntry], now: SystemTime) -> Table {
    let mut table = Table::new([
        "SEQ",
        "OP-ID",
        "KIND",
        "SOURCE",
        "REF",
        "OUTCOME",
        "CONTAINER",
        "STARTED",
        "DURATION",
        "CAUSE",
        "MESSAGE",
    ]);
    for entry in entries {
        table.row([
            entry.seq.to_string(),
            short_id(&entry.op_id).to_owned(),
            entry.op_kind.as_str().to_owned(),
            source_text(entry),
            or_none(&entry.source_ref),
            outcome_text(entry),
            containers(entry),
            format!("{} ago", age_since(Some(entry.started_at), now)),
            duration(entry),
            cause_text(entry),
            message_text(entry),
        ]);
    }
    table
}

pub(crate) async fn history(
    client: &Client,
    args: &HistoryArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    check_name(&args.name)?;
    let limit = usize::try_from(args.limit).unwrap_or(MAX_LIMIT);
    let entries = client.history(&args.name, limit).await?;
    if entries.is_empty() {
        // A game with no operations yet is not an error; an unknown one is.
        client.require(&args.name).await?;
        note(&format!("No history for gameruntime/{} yet.", args.name));
        if args.output == HistoryFormat::Json {
            writeln!(out, "[]")?;
        }
        return Ok(Outcome::Success);
    }
    out.write_all(render(&entries, args.output, SystemTime::now())?.as_bytes())?;
    Ok(Outcome::Success)
}

/// The entries in a format: the table, or the entries as they are stored (every field,
/// `cause` and `note` among them) in JSON or YAML.
pub(crate) fn render(
    entries: &[HistoryEntry],
    format: HistoryFormat,
    now: SystemTime,
) -> Result<String, CliError> {
    match format {
        HistoryFormat::Table => Ok(table(entries, now).render()),
        HistoryFormat::Json => serde_json::to_string_pretty(entries)
            .map(|text| text + "\n")
            .map_err(|e| CliError::internal(format!("cannot print JSON: {e}"))),
        HistoryFormat::Yaml => serde_yaml::to_string(entries)
            .map_err(|e| CliError::internal(format!("cannot print YAML: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::ErrorCode;
    use rtm_core::model::{OpKind, OpSource, Timestamp};

    #[test]
    fn a_failed_restart_shows_its_code_message_and_containers() {
        let mut entry = HistoryEntry::begin("g1", "op-1", OpKind::Restart, OpSource::AdminCli);
        entry.seq = 7;
        entry.source_ref = "REQ-42".into();
        entry.started_at = Timestamp::from_unix_seconds(1_700_000_000);
        entry.container_id_before = Some("aaaaaaaaaaaaaaaa".into());
        entry.container_id_after = Some("bbbbbbbbbbbbbbbb".into());
        entry.fail(ErrorCode::StartFailed, "boom");
        entry.finished_at = Some(Timestamp::from_unix_seconds(1_700_000_003));
        let now = Timestamp::from_unix_seconds(1_700_000_063).system_time();
        let text = table(&[entry], now).render();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("SEQ   OP-ID   KIND"), "{header}");
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "7",
                "op-1",
                "restart",
                "admin_cli",
                "REQ-42",
                "failure",
                "aaaaaaaaaaaa→bbbbbbbbbbbb",
                "63s",
                "ago",
                "3s",
                "-",
                "start_failed:",
                "boom"
            ]
        );
    }

    /// The restart the controller runs when a game stops serving, as it records it.
    fn repair(cause: ErrorCode, note: &str) -> HistoryEntry {
        let mut entry = HistoryEntry::begin("g1", "op-9", OpKind::Restart, OpSource::Reconcile);
        entry.seq = 9;
        entry.started_at = Timestamp::from_unix_seconds(1_700_000_000);
        entry.cause = Some(cause);
        entry.note = Some(note.into());
        entry.succeed();
        entry.finished_at = Some(Timestamp::from_unix_seconds(1_700_000_002));
        entry
    }

    /// The cells of the table's rows (split on the column gaps, so spaces inside a cell stay).
    fn rows(text: &str) -> Vec<Vec<String>> {
        text.lines()
            .map(|line| {
                line.split("   ")
                    .map(str::trim)
                    .filter(|cell| !cell.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_repair_shows_its_cause_and_what_the_probe_saw() {
        let entry = repair(
            ErrorCode::HealthCheckFailed,
            "3 probes in a row failed: http 503 from 172.17.0.5:8080/healthz",
        );
        let now = Timestamp::from_unix_seconds(1_700_000_060).system_time();
        let text = table(&[entry], now).render();
        let rows = rows(&text);
        assert_eq!(rows[0][8..], ["DURATION", "CAUSE", "MESSAGE"], "{text}");
        assert_eq!(
            rows[1][5..],
            [
                "success",
                "-",
                "60s ago",
                "2s",
                "health_check_failed",
                "3 probes in a row failed: http 503 from 172.17.0.5:8080/healthz"
            ],
            "{text}"
        );
    }

    #[test]
    fn a_replaced_crash_shows_how_it_ended_and_a_new_spec_what_changed() {
        let mut crash = HistoryEntry::begin("g1", "op-1", OpKind::Start, OpSource::Reconcile);
        crash.ended = Some(rtm_core::records::previous::Ended {
            exit_code: Some(137),
            oom_killed: true,
            started_at: None,
            finished_at: None,
        });
        crash.succeed();
        assert_eq!(cause_text(&crash), "exited 137, OOM-killed");
        assert_eq!(message_text(&crash), "");

        let mut update = HistoryEntry::begin("g1", "op-2", OpKind::Restart, OpSource::AdminCli);
        update.spec_changes = vec![
            "image: engine:1 → engine:2".into(),
            "env[MODE] added".into(),
        ];
        update.note = Some("forced past the session".into());
        assert_eq!(cause_text(&update), "-");
        assert_eq!(
            message_text(&update),
            "forced past the session; changed: image: engine:1 → engine:2, env[MODE] added"
        );
    }

    #[test]
    fn a_repair_that_failed_shows_its_failure_before_its_note() {
        let mut entry = repair(
            ErrorCode::StartupTimeout,
            "no probe passed within 2m: connection refused",
        );
        entry.fail(ErrorCode::StartFailed, "boom");
        assert_eq!(cause_text(&entry), "startup_timeout");
        assert_eq!(
            message_text(&entry),
            "start_failed: boom; no probe passed within 2m: connection refused"
        );
        // An entry with neither says nothing.
        let plain = HistoryEntry::begin("g1", "op-1", OpKind::Start, OpSource::Reconcile);
        assert_eq!(
            (cause_text(&plain), message_text(&plain)),
            ("-".into(), "".into())
        );
    }

    #[test]
    fn json_and_yaml_carry_the_cause_as_a_field() {
        let entries = [repair(ErrorCode::StartupTimeout, "connection refused")];
        let now = SystemTime::now();
        let json = render(&entries, HistoryFormat::Json, now).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value[0]["cause"], "startup_timeout", "{json}");
        assert_eq!(value[0]["note"], "connection refused", "{json}");
        let back: Vec<HistoryEntry> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, entries);
        let yaml = render(&entries, HistoryFormat::Yaml, now).unwrap();
        assert!(yaml.contains("cause: startup_timeout\n"), "{yaml}");
        let back: Vec<HistoryEntry> = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, entries);
        // An entry without a cause has no such field.
        let plain = [HistoryEntry::begin(
            "g1",
            "op-1",
            OpKind::Start,
            OpSource::Reconcile,
        )];
        let json = render(&plain, HistoryFormat::Json, now).unwrap();
        assert!(!json.contains("cause"), "{json}");
    }

    #[test]
    fn a_failure_folded_four_more_times_shows_it_happened_five_times() {
        let mut entry = HistoryEntry::begin("g1", "op-1", OpKind::Start, OpSource::Reconcile);
        entry.fail(ErrorCode::Conflict, "a container named rtm-g1 exists");
        assert_eq!(outcome_text(&entry), "failure");
        entry.repeated = 4;
        assert_eq!(outcome_text(&entry), "failure ×5");
    }

    #[test]
    fn a_claimed_source_is_marked_as_the_writers_claim() {
        let mut entry = HistoryEntry::begin("g1", "op-1", OpKind::Restart, OpSource::AdminCli);
        entry.source_ref = "REQ-OF-ALICE".into();
        assert_eq!(source_text(&entry), "admin_cli");
        entry.source_claimed = true;
        assert_eq!(source_text(&entry), "admin_cli (claimed)");
        let now = entry.started_at.system_time();
        let text = table(&[entry], now).render();
        let row = text.lines().nth(1).unwrap();
        let columns: Vec<&str> = row.split("   ").map(str::trim).collect();
        assert_eq!(
            columns[3..5],
            ["admin_cli (claimed)", "REQ-OF-ALICE"],
            "{row}"
        );
    }
}
