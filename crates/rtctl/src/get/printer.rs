//! How `get` prints games in each `-o` format: the whole listing at once, or one change at a
//! time for the watch (with the table's columns sized so later rows line up).

use std::io::Write;
use std::time::SystemTime;

use super::games::{InvalidGame, Shown, warn_invalid};
use super::row::{ADDRESS_COLUMN, CONTAINER_COLUMN, SESSION_COLUMN, headers, invalid_row, row};
use crate::error::CliError;
use crate::output::{SHORT_ID, Table};
use rtm_core::model::parse::to_yaml;
use rtm_core::model::{GameRuntime, Session};
use rtm_core::records::nodes::Assignment;
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

/// The printer shared by the listing and the watch.
#[derive(Debug)]
pub(crate) struct Printer {
    format: OutputFormat,
    table: Table,
    events: bool,
    /// The games' session records, by game (read from one listing of `sessions/`).
    sessions: BTreeMap<String, Session>,
    /// The games' assignments, by game (the listing reads them; the watch does not).
    assignments: BTreeMap<String, Assignment>,
}

impl Printer {
    /// A printer for `format`; `watching`: rows come one at a time; `events`: each starts
    /// with ADDED, MODIFIED or DELETED.
    pub(crate) fn new(format: OutputFormat, watching: bool, events: bool) -> Printer {
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
            table.min_width(offset + SESSION_COLUMN, "Allocated".len());
            if format == OutputFormat::Wide {
                // A game gets its container id and address once it runs; PORTS, the last
                // column, needs no room kept. The address is sized for dotted IPv4, the
                // usual advertised address; a longer one moves PORTS along, no more.
                table.min_width(offset + CONTAINER_COLUMN, SHORT_ID);
                table.min_width(offset + ADDRESS_COLUMN, "255.255.255.255".len());
            }
        }
        Printer {
            format,
            table,
            events,
            sessions: BTreeMap::new(),
            assignments: BTreeMap::new(),
        }
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

    /// The initial listing (invalid games: rows in tables, names with `-o name`, left out of
    /// YAML and JSON, which have no document to print for them).
    pub(crate) fn listing(
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
                        Shown::Valid(doc) => {
                            let name = &doc.metadata.name;
                            row(
                                doc,
                                self.sessions.get(name),
                                self.assignments.get(name),
                                wide,
                                now,
                            )
                        }
                        Shown::Invalid(name, game) => invalid_row(
                            name,
                            game,
                            self.sessions.get(*name),
                            self.assignments.get(*name),
                            wide,
                        ),
                    };
                    if self.events {
                        cells.insert(0, "ADDED".to_owned());
                    }
                    self.table.row(cells);
                }
                let text = self.table.render_as(no_headers);
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
    pub(crate) fn change_invalid(
        &mut self,
        event: &str,
        name: &str,
        game: &InvalidGame,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        match self.format {
            OutputFormat::Table | OutputFormat::Wide => {
                let mut cells = invalid_row(
                    name,
                    game,
                    self.sessions.get(name),
                    self.assignments.get(name),
                    self.format == OutputFormat::Wide,
                );
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
        warn_invalid(name, game);
        Ok(())
    }

    /// One change of the watch.
    pub(crate) fn change(
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
                let mut cells = row(
                    doc,
                    self.sessions.get(&doc.metadata.name),
                    self.assignments.get(&doc.metadata.name),
                    self.format == OutputFormat::Wide,
                    SystemTime::now(),
                );
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
        let mut printer = Printer::new(OutputFormat::Wide, true, true);
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
