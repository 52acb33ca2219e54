//! `rtctl get` and `rtctl get -w`: the games as a table, YAML, JSON or names, filtered by
//! label selectors, and the stream of their changes (the status watch other tools build on).
//!
//! The list mode is here; the watch mode is [`watch`]. Both read the games through [`games`],
//! pick them with a [`selector`] and print them with one [`printer`] (rows from [`row`]).

pub(crate) mod games;
mod printer;
mod row;
mod selector;
mod watch;

use std::io::Write;

use rtm_core::store::{Keys, Listing};

use self::games::{
    InvalidGame, Shown, assignments_from, games_from, note_none_found, prefixes, select,
    sessions_from,
};
pub(crate) use self::printer::OutputFormat;
use self::printer::Printer;
pub(crate) use self::row::session_state;
pub(crate) use self::selector::Selector;
use super::client::Client;
use super::error::{CliError, Outcome};
use super::shape::{self, LabelColumns, Output, Template};
use super::target::missing_names;

/// The arguments of `rtctl get`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GetArgs {
    /// What to show: game names; a type (`gameruntimes`, `budgets`, `nodes`) alone for all
    /// of it, or followed by names; `TYPE/NAME`. Every game when none is given.
    #[arg(value_name = "[TYPE] NAME|TYPE/NAME", add = crate::complete::object_names())]
    pub(crate) names: Vec<String>,
    /// Output format: table, wide, yaml, json, name, jsonpath=TEMPLATE, jsonpath-file=FILE,
    /// custom-columns=HEADER:PATH,…, custom-columns-file=FILE.
    #[arg(short, long, default_value = "table", value_parser = shape::parse_output, value_name = "FORMAT")]
    pub(crate) output: Output,
    /// Label selector: key=value, key!=value, key in (a,b), key notin (a,b), key (exists),
    /// !key; comma-separated, all must hold.
    #[arg(short = 'l', long, value_name = "SELECTOR", add = crate::complete::label_selectors())]
    pub(crate) selector: Option<String>,
    /// Field selector: PATH=VALUE, PATH!=VALUE over the object's fields, comma-separated
    /// (e.g. `status.phase=Running,spec.node!=node-a`).
    #[arg(long, value_name = "SELECTOR", value_parser = shape::FieldSelector::parse)]
    pub(crate) field_selector: Option<shape::FieldSelector>,
    /// Sort by the value a JSONPath finds in each object (e.g. `.status.restartCount`,
    /// `{.metadata.name}`).
    #[arg(long, value_name = "JSONPATH", value_parser = shape::parse_sort_by)]
    pub(crate) sort_by: Option<Template>,
    /// A table column per label key, holding the label's value (comma-separated, repeatable).
    #[arg(short = 'L', long = "label-columns", value_name = "KEY,…")]
    pub(crate) label_columns: Vec<String>,
    /// A LABELS column with every label of each object.
    #[arg(long)]
    pub(crate) show_labels: bool,
    /// After listing, print one line (row, JSON object, document or name) per change.
    #[arg(short, long)]
    pub(crate) watch: bool,
    /// Print only the changes, not the initial listing.
    #[arg(long)]
    pub(crate) watch_only: bool,
    /// With --watch: say the kind of each change, the first listing's included: EVENT
    /// column, `ADDED gameruntime/NAME`, or JSON `{"type":"ADDED","object":{…}}`.
    #[arg(long)]
    pub(crate) output_watch_events: bool,
    /// Leave out the table's header.
    #[arg(long)]
    pub(crate) no_headers: bool,
}

impl GetArgs {
    /// Applies `--field-selector` and `--sort-by` to the games a listing shows (the list and
    /// the watch's first listing). An invalid game has no fields to read: like a label
    /// selector, a field selector leaves it out.
    pub(crate) fn filter_and_sort(&self, shown: &mut Vec<Shown<'_>>) {
        if let Some(fields) = &self.field_selector {
            shown.retain(|shown| match shown {
                Shown::Valid(doc) => fields.matches(&printer::json_value(doc).unwrap_or_default()),
                Shown::Invalid(..) => false,
            });
        }
        if let Some(sort_by) = &self.sort_by {
            shape::sort_by_path(shown, sort_by, |shown| match shown {
                Shown::Valid(doc) => printer::json_value(doc).unwrap_or_default(),
                Shown::Invalid(..) => serde_json::Value::Null,
            });
        }
    }

    /// The label columns `-L` and `--show-labels` ask for.
    pub(crate) fn labels(&self) -> LabelColumns {
        LabelColumns::new(&self.label_columns, self.show_labels)
    }
}

/// The error `get` ends with when it met invalid documents (after printing what it could).
fn invalid_error(
    client: &Client,
    invalid: &[(&String, &InvalidGame)],
    output: &Output,
) -> CliError {
    if let [(_, game)] = invalid {
        let error = client.corrupt(&game.key, &game.reason);
        return match error {
            CliError::Corrupt { message } if output.is_documents() => CliError::Corrupt {
                message: format!("{message} (it is left out of the output)"),
            },
            error => error,
        };
    }
    let left_out = if output.is_documents() {
        " (they are left out of the output)"
    } else {
        ""
    };
    let list: Vec<String> = invalid
        .iter()
        .map(|(name, game)| format!("gameruntime/{name} at {} ({})", game.key, game.reason))
        .collect();
    CliError::Corrupt {
        message: super::error::one_line(&format!(
            "{} stored documents are invalid{left_out}: {}; `rtctl apply --force -f FILE` \
             replaces one, `rtctl delete NAME` removes it",
            invalid.len(),
            list.join(", ")
        )),
    }
}

/// `rtctl get` of games (`names`: those named, all when none is): lists them, or with `-w`
/// follows their changes until `shutdown`.
pub(crate) async fn get(
    client: &Client,
    args: &GetArgs,
    names: &[String],
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, CliError> {
    let selector = match &args.selector {
        Some(text) => Selector::parse(text)?,
        None => Selector::default(),
    };
    // --watch-only implies --watch, as in kubectl.
    if args.watch || args.watch_only {
        watch::watch(client, args, names, &selector, out, shutdown).await
    } else {
        list(client, args, names, &selector, out).await
    }
}

/// The listings a `get` reads (documents, statuses, sessions, assignments, in that order):
/// every key of the four prefixes at one revision, or for named games their own keys only.
async fn read(client: &Client, names: &[String]) -> Result<Vec<Listing>, CliError> {
    let keys = client.keys();
    if names.is_empty() {
        let mut read = prefixes(keys);
        read.push(keys.assignments());
        return Ok(client.list_at_one_revision(&read).await?.0);
    }
    let per_game: [fn(&Keys, &str) -> String; 4] = [
        Keys::gameruntime,
        Keys::status,
        Keys::session,
        Keys::assignment,
    ];
    let reads = names.iter().flat_map(|name| {
        per_game
            .iter()
            .map(move |key_of| client.raw_owned(key_of(keys, name)))
    });
    let found = futures::future::try_join_all(reads).await?;
    let mut listings: Vec<Listing> = (0..per_game.len())
        .map(|_| Listing {
            items: Vec::new(),
            revision: 0,
        })
        .collect();
    for (i, kv) in found.into_iter().enumerate() {
        if let Some(kv) = kv {
            listings[i % per_game.len()].items.push(kv);
        }
    }
    Ok(listings)
}

/// Prints the games (all of them at one revision, or the named ones); a named game that is
/// missing, or an invalid one, fails the command after what could be printed.
async fn list(
    client: &Client,
    args: &GetArgs,
    names: &[String],
    selector: &Selector,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let keys = client.keys();
    let listings = read(client, names).await?;
    let (games, invalid) = games_from(client, &listings[0], &listings[1]);
    let mut shown = select(&games, &invalid, names, selector);
    args.filter_and_sort(&mut shown);
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !games.contains_key(*n) && !invalid.contains_key(*n))
        .collect();
    let mut printer = Printer::new(&args.output, false, false, args.labels());
    printer.set_single(names.len() == 1);
    printer.set_sessions(sessions_from(keys, &listings[2]));
    printer.set_assignments(assignments_from(keys, &listings[3].items));
    if shown.is_empty() && names.is_empty() {
        note_none_found(keys);
        if args.output.is_documents() && args.output.builtin() != Some(OutputFormat::Yaml) {
            // Scripts get an empty list rather than no JSON at all.
            printer.listing(&[], args.no_headers, out)?;
        }
    } else if !shown.is_empty() {
        printer.listing(&shown, args.no_headers, out)?;
    }
    let met: Vec<(&String, &InvalidGame)> = shown
        .iter()
        .filter_map(|shown| match shown {
            Shown::Invalid(name, game) => Some((*name, *game)),
            Shown::Valid(_) => None,
        })
        .collect();
    missing_names(&missing, out, |name| client.not_found(name))?;
    if !met.is_empty() {
        out.flush()?;
        return Err(invalid_error(client, &met, &args.output));
    }
    Ok(Outcome::Success)
}
