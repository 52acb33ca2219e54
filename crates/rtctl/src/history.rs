//! `rtctl history NAME`: a game's operation log, newest first, with the correlation ids that
//! tie a restart to its inner stop and start. A source the document's writer claimed (its
//! annotations) reads `admin_cli (claimed)`: only `reconcile` is the controller's own word.

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
    /// The game.
    pub(crate) name: String,
    /// How many entries to show, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=MAX_LIMIT as u64))]
    pub(crate) limit: u64,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: HistoryFormat,
}

/// `code: message`, or the outcome alone.
pub(crate) fn error_text(entry: &HistoryEntry) -> String {
    match (&entry.error_code, &entry.error_message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        (None, Some(message)) => message.clone(),
        (None, None) => String::new(),
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

/// The history table: SEQ OP-ID KIND SOURCE REF OUTCOME ERROR CONTAINER STARTED DURATION.
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
        "ERROR",
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
            error_text(entry),
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
    match args.output {
        HistoryFormat::Table => {
            out.write_all(table(&entries, SystemTime::now()).render().as_bytes())?;
        }
        HistoryFormat::Json => {
            let text = serde_json::to_string_pretty(&entries)
                .map_err(|e| CliError::internal(format!("cannot print JSON: {e}")))?;
            writeln!(out, "{text}")?;
        }
        HistoryFormat::Yaml => {
            let text = serde_yaml::to_string(&entries)
                .map_err(|e| CliError::internal(format!("cannot print YAML: {e}")))?;
            out.write_all(text.as_bytes())?;
        }
    }
    Ok(Outcome::Success)
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
                "start_failed:",
                "boom"
            ]
        );
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
