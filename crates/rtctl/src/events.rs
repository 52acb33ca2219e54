//! `rtctl events [NAME] [-w]`: the controllers' short-lived observations (a crash loop
//! backing off, a failing health check, an update deferred, a lease held long, a container
//! adopted or a duplicate removed), oldest last seen first; `-w` follows new ones and
//! repeats. Each event folds its repeats: COUNT says how many. They expire by themselves
//! (the controller's `--event-ttl`); the history keeps the operations.

use std::io::Write;
use std::time::SystemTime;

use super::client::Client;
use super::client::{MultiWatch, WatchItem};
use super::error::{CliError, Outcome};
use super::output::{Table, age_since, note};
use rtm_core::records::events::{Corrupt, Event, Events, decode};
use rtm_core::store::WatchEvent;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EventsFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EventsArgs {
    /// Only this game's events (`NAME` or `gameruntime/NAME`).
    #[arg(value_parser = crate::resource::game_word, value_name = "NAME", add = crate::complete::game_names())]
    pub(crate) name: Option<String>,
    /// After the list, print each new event and each repeat as it is recorded (Ctrl-C ends).
    #[arg(short, long)]
    pub(crate) watch: bool,
    /// Output format (`json` and `yaml` print the events as stored; with -w one compact JSON
    /// object per line).
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: EventsFormat,
    /// Leave the column headers out.
    #[arg(long)]
    pub(crate) no_headers: bool,
}

const HEADERS: [&str; 6] = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"];

/// The events as a table, `now` for their ages.
pub(crate) fn table(events: &[Event], now: SystemTime) -> Table {
    let mut table = Table::new(HEADERS);
    for event in events {
        table.row(row(event, now));
    }
    table
}

fn row(event: &Event, now: SystemTime) -> [String; 6] {
    [
        format!("{} ago", age_since(Some(event.last_seen), now)),
        event.kind.as_str().to_owned(),
        event.reason.as_str().to_owned(),
        format!("gameruntime/{}", event.game_id),
        event.count.to_string(),
        event.message.clone(),
    ]
}

pub(crate) async fn events(
    client: &Client,
    args: &EventsArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    let keys = client.keys();
    let prefix = match &args.name {
        Some(name) => keys.game_events(name),
        None => keys.events(),
    };
    let listed = if args.watch {
        None
    } else {
        Some(
            Events::new(client.store().clone(), keys.clone())
                .list(args.name.as_deref())
                .await
                .map_err(|e| client.store_error(e, &format!("listing {prefix}")))?,
        )
    };
    let Some(listed) = listed else {
        return follow(client, &prefix, args, out, interrupt).await;
    };
    let (readable, corrupt) = split(listed);
    if readable.is_empty() && corrupt.is_none() && args.output == EventsFormat::Table {
        note("No events.");
        return Ok(Outcome::Success);
    }
    match args.output {
        EventsFormat::Table => {
            let table = table(&readable, SystemTime::now());
            let text = table.render_as(args.no_headers);
            out.write_all(text.as_bytes())?;
        }
        EventsFormat::Json => {
            let text = serde_json::to_string_pretty(&readable)
                .map_err(|e| CliError::internal(format!("cannot print JSON: {e}")))?;
            writeln!(out, "{text}")?;
        }
        EventsFormat::Yaml => {
            let text = serde_yaml::to_string(&readable)
                .map_err(|e| CliError::internal(format!("cannot print YAML: {e}")))?;
            out.write_all(text.as_bytes())?;
        }
    }
    match corrupt {
        Some(error) => Err(error),
        None => Ok(Outcome::Success),
    }
}

/// `-w`: the events there now, then each new one and each repeat as it is written, a
/// table row (aligned with those before) or one compact JSON object per line.
async fn follow(
    client: &Client,
    prefix: &str,
    args: &EventsArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    let keys = client.keys();
    let (mut watch, listings, _) = MultiWatch::start(client, vec![prefix.to_owned()]).await?;
    let mut table = Table::new(HEADERS);
    if args.output == EventsFormat::Table && !args.no_headers {
        out.write_all(table.render().as_bytes())?;
    }
    let mut print = |kvs: Vec<rtm_core::store::KeyValue>, out: &mut dyn Write| {
        let (mut readable, corrupt) = split(kvs.iter().map(|kv| decode(keys, kv)).collect());
        readable.sort_by_key(|e| e.last_seen);
        if let Some(corrupt) = corrupt {
            super::output::warn(&corrupt.to_string());
        }
        for event in &readable {
            match args.output {
                EventsFormat::Table => {
                    out.write_all(table.render_row(&row(event, SystemTime::now())).as_bytes())?
                }
                EventsFormat::Json | EventsFormat::Yaml => {
                    let line = serde_json::to_string(event)
                        .map_err(|e| CliError::internal(format!("cannot print JSON: {e}")))?;
                    writeln!(out, "{line}")?;
                }
            }
        }
        out.flush()?;
        Ok::<(), CliError>(())
    };
    print(listings.into_iter().flat_map(|l| l.items).collect(), out)?;
    loop {
        let item = tokio::select! {
            () = interrupt.cancelled() => return Ok(Outcome::Success),
            item = watch.next() => item?,
        };
        let kvs = match item {
            WatchItem::Batch(batch) => batch
                .into_iter()
                .filter_map(|event| match event {
                    WatchEvent::Put(kv) => Some(kv),
                    // An event that expired: nothing to tell.
                    WatchEvent::Delete { .. } => None,
                })
                .collect(),
            // Compacted meanwhile: what is there now.
            WatchItem::Relisted(listings) => listings.into_iter().flat_map(|l| l.items).collect(),
        };
        print(kvs, out)?;
    }
}

/// The readable events, and for the stored values that are not events the failure to end
/// with (the first, naming its key; the others warned about).
fn split(listed: Vec<Result<Event, Corrupt>>) -> (Vec<Event>, Option<CliError>) {
    let mut readable = Vec::new();
    let mut first = None;
    for item in listed {
        match item {
            Ok(event) => readable.push(event),
            Err(corrupt) if first.is_none() => first = Some(corrupt),
            Err(corrupt) => super::output::warn(&corrupt.to_string()),
        }
    }
    let error = first.map(|corrupt| CliError::Corrupt {
        message: format!(
            "{corrupt}; only controllers write events: delete it with etcdctl (one attached \
             to a lease also expires with it)"
        ),
    });
    (readable, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::Timestamp;
    use rtm_core::records::events::EventReason;

    #[test]
    fn the_table_says_when_what_how_often_and_why() {
        let mut event = Event::first(
            "g1",
            EventReason::BackOff,
            "the container exited with code 1; restarting after a back-off of 20s",
            "c1",
        );
        event.count = 4;
        event.last_seen = Timestamp::from_unix_seconds(1_800_000_000);
        let now = Timestamp::from_unix_seconds(1_800_000_030).system_time();
        let text = table(&[event], now).render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("LAST SEEN   TYPE      REASON    OBJECT"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("30s ago     Warning   BackOff   gameruntime/g1   4 "),
            "{text}"
        );
        assert!(
            lines[1].ends_with("restarting after a back-off of 20s"),
            "{text}"
        );
    }
}
