//! How `get` prints games in each `-o` format: the whole listing at once, or one change at a
//! time for the watch (with the table's columns sized so later rows line up).

use std::io::Write;
use std::time::SystemTime;

use super::games::{InvalidGame, Shown, warn_invalid};
use super::row::{ADDRESS_COLUMN, CONTAINER_COLUMN, SESSION_COLUMN, headers, invalid_row, row};
use crate::error::CliError;
use crate::output::{SHORT_ID, Table};
use crate::shape::{self, LabelColumns, Output, WatchEvent};
use rtm_core::model::parse::to_yaml;
use rtm_core::model::{GameRuntime, Session};
use rtm_core::records::nodes::Assignment;
use serde_json::Value;
use std::collections::BTreeMap;

/// The `-o` formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// NAME STATE PHASE READY SESSION RESTARTS IMAGE AGE.
    Table,
    /// The table plus SESSION-REF, CONTAINER, NODE, HOSTNAME, ADDRESS and PORTS.
    Wide,
    /// The documents with their status, as `---`-separated YAML (applies back unchanged).
    Yaml,
    /// One document as a JSON object, several as a GameRuntimeList.
    Json,
    /// gameruntime/NAME.
    Name,
}

/// Renders a document for `-o json` (pretty).
fn json(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map_err(|e| CliError::internal(format!("cannot print JSON: {e}")))
}

/// A document as a JSON value (for the shaped formats and the watch's lines).
pub(crate) fn json_value(doc: &GameRuntime) -> Result<Value, CliError> {
    serde_json::to_value(doc).map_err(|e| CliError::internal(format!("cannot print JSON: {e}")))
}

/// The kind of the list the JSON output and the templates see.
pub(crate) const LIST_KIND: &str = "GameRuntimeList";

/// The printer shared by the listing and the watch.
#[derive(Debug)]
pub(crate) struct Printer {
    output: Output,
    table: Table,
    watching: bool,
    events: bool,
    /// Exactly one game was asked for by name: JSON and templates see it alone, not a list.
    single: bool,
    labels: LabelColumns,
    /// The games' session records, by game (read from one listing of `sessions/`).
    sessions: BTreeMap<String, Session>,
    /// The games' assignments, by game (the listing reads them; the watch does not).
    assignments: BTreeMap<String, Assignment>,
}

impl Printer {
    /// A printer for `output`; `watching`: rows come one at a time; `events`: each starts
    /// with ADDED, MODIFIED or DELETED (JSON lines: wrapped as `{"type", "object"}`).
    pub(crate) fn new(
        output: &Output,
        watching: bool,
        events: bool,
        labels: LabelColumns,
    ) -> Printer {
        let format = output.builtin();
        let mut headers: Vec<String> = match output {
            Output::Columns(columns) => columns.iter().map(|c| c.header.clone()).collect(),
            _ => {
                let mut headers = headers(format == Some(OutputFormat::Wide));
                headers.extend(labels.headers());
                headers
            }
        };
        if events {
            headers.insert(0, "EVENT".to_owned());
        }
        let mut table = Table::with_headers(headers);
        if watching && output.is_table() {
            // Rows arrive one at a time while watching: size the columns whose values vary
            // in width for their widest value, so later rows line up with the first.
            let offset = usize::from(events);
            if events {
                table.min_width(0, "MODIFIED".len());
            }
            table.min_width(offset + 2, "CrashLoopBackOff".len());
            table.min_width(offset + 3, "Unknown".len());
            table.min_width(offset + SESSION_COLUMN, "Allocated".len());
            if format == Some(OutputFormat::Wide) {
                // A game gets its container id and address once it runs; PORTS, the last
                // column, needs no room kept. The address is sized for dotted IPv4, the
                // usual advertised address; a longer one moves PORTS along, no more.
                table.min_width(offset + CONTAINER_COLUMN, SHORT_ID);
                table.min_width(offset + ADDRESS_COLUMN, "255.255.255.255".len());
            }
        }
        Printer {
            output: output.clone(),
            table,
            watching,
            events,
            single: false,
            labels,
            sessions: BTreeMap::new(),
            assignments: BTreeMap::new(),
        }
    }

    /// Exactly one game was named: JSON prints it alone, templates see it alone.
    pub(crate) fn set_single(&mut self, single: bool) {
        self.single = single;
    }

    /// The session records the rows show.
    pub(crate) fn set_sessions(&mut self, sessions: BTreeMap<String, Session>) {
        self.sessions = sessions;
    }

    /// The assignments the rows show (NODE, and PHASE `Unschedulable`).
    pub(crate) fn set_assignments(&mut self, assignments: BTreeMap<String, Assignment>) {
        self.assignments = assignments;
    }

    /// One game's session record changed (`None`: deleted).
    pub(crate) fn set_session(&mut self, game: &str, session: Option<Session>) {
        match session {
            Some(session) => self.sessions.insert(game.to_owned(), session),
            None => self.sessions.remove(game),
        };
    }

    /// A game's cells in a table format (table, wide, custom columns), after the EVENT cell
    /// when events are on; an unreadable game's labels and fields cannot be read (`<none>`).
    fn cells(
        &self,
        event: &str,
        shown: Shown<'_>,
        now: SystemTime,
    ) -> Result<Vec<String>, CliError> {
        let wide = self.output.builtin() == Some(OutputFormat::Wide);
        let mut cells = match (&self.output, shown) {
            (Output::Columns(columns), Shown::Valid(doc)) => {
                shape::column_cells(columns, &json_value(doc)?)
            }
            (Output::Columns(columns), Shown::Invalid(name, _)) => {
                let mut cells = vec![shape::NONE.to_owned(); columns.len()];
                if let Some(first) = cells.first_mut() {
                    name.clone_into(first);
                }
                cells
            }
            (_, Shown::Valid(doc)) => {
                let name = &doc.metadata.name;
                let mut cells = row(
                    doc,
                    self.sessions.get(name),
                    self.assignments.get(name),
                    wide,
                    now,
                );
                cells.extend(self.labels.cells(Some(&doc.metadata.labels)));
                cells
            }
            (_, Shown::Invalid(name, game)) => {
                let mut cells = invalid_row(
                    name,
                    game,
                    self.sessions.get(name.as_str()),
                    self.assignments.get(name.as_str()),
                    wide,
                );
                cells.extend(self.labels.cells(None));
                cells
            }
        };
        if self.events {
            cells.insert(0, event.to_owned());
        }
        Ok(cells)
    }

    /// Whether the output is a table (a built-in one, or custom columns).
    fn is_tabular(&self) -> bool {
        self.output.is_table() || matches!(self.output, Output::Columns(_))
    }

    /// The initial listing (invalid games: rows in tables, names with `-o name`, left out of
    /// YAML, JSON and templates, which have no document to print for them). While watching,
    /// it is the first changes: one line each, as [`Printer::change`] prints them.
    pub(crate) fn listing(
        &mut self,
        games: &[Shown<'_>],
        no_headers: bool,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let now = SystemTime::now();
        let docs: Vec<&GameRuntime> = games
            .iter()
            .filter_map(|shown| match shown {
                Shown::Valid(doc) => Some(*doc),
                Shown::Invalid(..) => None,
            })
            .collect();
        if self.watching && !self.is_tabular() {
            for shown in games {
                match shown {
                    Shown::Valid(doc) => self.change("ADDED", doc, out)?,
                    Shown::Invalid(name, game) => self.print_invalid("ADDED", name, game, out)?,
                }
            }
            return Ok(());
        }
        match &self.output {
            Output::Builtin(OutputFormat::Table | OutputFormat::Wide) | Output::Columns(_) => {
                for shown in games {
                    let cells = self.cells("ADDED", *shown, now)?;
                    self.table.row(cells);
                }
                let text = self.table.render_as(no_headers);
                out.write_all(text.as_bytes())?;
            }
            Output::Builtin(OutputFormat::Yaml) => {
                for (i, doc) in docs.iter().enumerate() {
                    if i > 0 {
                        writeln!(out, "---")?;
                    }
                    out.write_all(to_yaml(doc).as_bytes())?;
                }
            }
            Output::Builtin(OutputFormat::Json) => {
                if docs.is_empty() && !games.is_empty() {
                    // Only invalid games: no JSON for them (the error says why).
                    return Ok(());
                }
                let text = match (self.single, docs.as_slice()) {
                    (true, [one]) => json(one)?,
                    (_, many) => json(&serde_json::json!({
                        "apiVersion": rtm_core::model::API_VERSION,
                        "kind": LIST_KIND,
                        "items": many,
                    }))?,
                };
                writeln!(out, "{text}")?;
            }
            Output::JsonPath(_) => {
                if docs.is_empty() && !games.is_empty() {
                    return Ok(());
                }
                let items = docs
                    .iter()
                    .map(|doc| json_value(doc))
                    .collect::<Result<Vec<_>, _>>()?;
                shape::print_shaped(
                    &self.output,
                    LIST_KIND,
                    &items,
                    self.single,
                    no_headers,
                    out,
                )?;
            }
            Output::Builtin(OutputFormat::Name) => {
                for shown in games {
                    writeln!(out, "gameruntime/{}", shown.name())?;
                }
            }
        }
        Ok(())
    }

    /// One change of the watch to a document that cannot be read: a row in tables, the name
    /// with `-o name`, a warning for YAML and JSON.
    pub(crate) fn change_invalid(
        &mut self,
        event: &str,
        name: &str,
        game: &InvalidGame,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        self.print_invalid(event, name, game, out)?;
        warn_invalid(name, game);
        Ok(())
    }

    fn print_invalid(
        &mut self,
        event: &str,
        name: &str,
        game: &InvalidGame,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        match &self.output {
            Output::Builtin(OutputFormat::Table | OutputFormat::Wide) | Output::Columns(_) => {
                let cells = self.cells(
                    event,
                    Shown::Invalid(&name.to_owned(), game),
                    SystemTime::now(),
                )?;
                let line = self.table.render_row(&cells);
                out.write_all(line.as_bytes())?;
            }
            Output::Builtin(OutputFormat::Name) if self.events => {
                writeln!(out, "{event} gameruntime/{name}")?;
            }
            Output::Builtin(OutputFormat::Name) => writeln!(out, "gameruntime/{name}")?,
            Output::Builtin(OutputFormat::Yaml | OutputFormat::Json) | Output::JsonPath(_) => {}
        }
        out.flush()?;
        Ok(())
    }

    /// One change of the watch: a table row, one compact JSON object per line (wrapped as
    /// `{"type": EVENT, "object": …}` with events), a YAML document, a name, or the
    /// template rendered for the game alone.
    pub(crate) fn change(
        &mut self,
        event: &str,
        doc: &GameRuntime,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        match &self.output {
            Output::Builtin(OutputFormat::Table | OutputFormat::Wide) | Output::Columns(_) => {
                let cells = self.cells(event, Shown::Valid(doc), SystemTime::now())?;
                let line = self.table.render_row(&cells);
                out.write_all(line.as_bytes())?;
            }
            Output::Builtin(OutputFormat::Yaml) => {
                writeln!(out, "---")?;
                if self.events {
                    let wrapped = WatchEvent {
                        event,
                        object: json_value(doc)?,
                    };
                    let text = serde_yaml::to_string(&wrapped)
                        .map_err(|e| CliError::internal(format!("cannot print YAML: {e}")))?;
                    out.write_all(text.as_bytes())?;
                } else {
                    out.write_all(to_yaml(doc).as_bytes())?;
                }
            }
            Output::Builtin(OutputFormat::Json) => {
                let value = json_value(doc)?;
                if self.events {
                    writeln!(
                        out,
                        "{}",
                        WatchEvent {
                            event,
                            object: value
                        }
                        .to_line()
                    )?;
                } else {
                    writeln!(out, "{value}")?;
                }
            }
            Output::JsonPath(template) => {
                let mut value = json_value(doc)?;
                if self.events {
                    value = WatchEvent {
                        event,
                        object: value,
                    }
                    .to_value();
                }
                let text = template.render(&value);
                out.write_all(text.as_bytes())?;
                if !text.ends_with('\n') {
                    out.write_all(b"\n")?;
                }
            }
            Output::Builtin(OutputFormat::Name) if self.events => {
                writeln!(out, "{event} gameruntime/{}", doc.metadata.name)?;
            }
            Output::Builtin(OutputFormat::Name) => {
                writeln!(out, "gameruntime/{}", doc.metadata.name)?;
            }
        }
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::fixtures::game;
    use rtm_core::model::{GameRuntimeStatus, Phase, Protocol, PublishedPort};

    /// Where PORTS starts in each line (the last column: the one a shifted column would move).
    fn ports_offsets(text: &str) -> Vec<usize> {
        text.lines()
            .map(|line| {
                line.rfind("   ")
                    .map(|gap| gap + 3)
                    .unwrap_or_else(|| panic!("no columns in {line:?}"))
            })
            .collect()
    }

    #[test]
    fn a_wide_watch_keeps_its_columns_when_a_game_gets_a_container_and_an_address() {
        let mut printer = Printer::new(
            &Output::Builtin(OutputFormat::Wide),
            true,
            true,
            LabelColumns::default(),
        );
        let mut doc = game("g1").build();
        let mut out = Vec::new();
        printer
            .listing(&[Shown::Valid(&doc)], false, &mut out)
            .unwrap();
        doc.status = Some(GameRuntimeStatus {
            phase: Phase::Running,
            container_id: Some("0123456789abcdef".into()),
            address: Some("192.168.100.200".into()),
            ports: vec![PublishedPort {
                container_port: 7000,
                protocol: Protocol::Tcp,
                host_ip: Some("0.0.0.0".into()),
                host_port: 17000,
            }],
            ..GameRuntimeStatus::default()
        });
        printer.change("MODIFIED", &doc, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("EVENT"), "{text}");
        assert!(lines[0].ends_with("ADDRESS           PORTS"), "{text}");
        assert!(lines[1].ends_with("<none>            <none>"), "{text}");
        assert!(
            lines[2].ends_with("192.168.100.200   17000->7000/tcp"),
            "{text}"
        );
        let offsets = ports_offsets(&text);
        assert!(
            offsets.iter().all(|o| *o == offsets[0]),
            "PORTS moved:\n{text}"
        );
    }
}
