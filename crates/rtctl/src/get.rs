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

use self::games::{
    InvalidGame, Shown, assignments_from, games_from, note_none_found, prefixes, select,
    sessions_from,
};
pub(crate) use self::printer::OutputFormat;
use self::printer::Printer;
pub(crate) use self::row::session_state;
pub(crate) use self::selector::Selector;
use super::client::{Client, check_name};
use super::error::{CliError, Outcome};

/// The arguments of `rtctl get`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GetArgs {
    /// Games to show; all when none is given.
    pub(crate) names: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: OutputFormat,
    /// Label selector: key=value, key!=value, key (exists), !key; comma-separated, all must hold.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub(crate) selector: Option<String>,
    /// After listing, print one line (row, document or name) per change.
    #[arg(short, long)]
    pub(crate) watch: bool,
    /// Print only the changes, not the initial listing.
    #[arg(long)]
    pub(crate) watch_only: bool,
    /// With --watch: start each line with ADDED, MODIFIED or DELETED.
    #[arg(long)]
    pub(crate) output_watch_events: bool,
    /// Leave out the table's header.
    #[arg(long)]
    pub(crate) no_headers: bool,
}

/// The error `get` ends with when it met invalid documents (after printing what it could).
fn invalid_error(
    client: &Client,
    invalid: &[(&String, &InvalidGame)],
    format: OutputFormat,
) -> CliError {
    if let [(_, game)] = invalid {
        let error = client.corrupt(&game.key, &game.reason);
        return match (format, error) {
            (OutputFormat::Yaml | OutputFormat::Json, CliError::Corrupt { message }) => {
                CliError::Corrupt {
                    message: format!("{message} (it is left out of the output)"),
                }
            }
            (_, error) => error,
        };
    }
    let left_out = match format {
        OutputFormat::Yaml | OutputFormat::Json => " (they are left out of the output)",
        _ => "",
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

/// `rtctl get`: lists the games, or with `-w` follows their changes until `shutdown`.
pub(crate) async fn get(
    client: &Client,
    args: &GetArgs,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, CliError> {
    for name in &args.names {
        check_name(name)?;
    }
    let selector = match &args.selector {
        Some(text) => Selector::parse(text)?,
        None => Selector::default(),
    };
    // --watch-only implies --watch, as in kubectl.
    if args.watch || args.watch_only {
        watch::watch(client, args, &selector, out, shutdown).await
    } else {
        list(client, args, &selector, out).await
    }
}

/// Prints the games at one revision; a named game that is missing, or an invalid one, fails
/// the command after what could be printed.
async fn list(
    client: &Client,
    args: &GetArgs,
    selector: &Selector,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let keys = client.keys();
    let mut read = prefixes(keys);
    // Every game's assignment for a whole listing; for named games, their keys only.
    if args.names.is_empty() {
        read.push(keys.assignments());
    }
    let (listings, _) = client.list_at_one_revision(&read).await?;
    let assignments = match listings.get(3) {
        Some(listing) => assignments_from(keys, &listing.items),
        None => {
            let mut found = Vec::new();
            for name in &args.names {
                found.extend(client.raw(&keys.assignment(name)).await?);
            }
            assignments_from(keys, &found)
        }
    };
    let (games, invalid) = games_from(client, &listings[0], &listings[1]);
    let shown = select(&games, &invalid, &args.names, selector);
    let missing: Vec<&String> = args
        .names
        .iter()
        .filter(|n| !games.contains_key(*n) && !invalid.contains_key(*n))
        .collect();
    let mut printer = Printer::new(args.output, false, false);
    printer.set_sessions(sessions_from(client.keys(), &listings[2]));
    printer.set_assignments(assignments);
    if shown.is_empty() && args.names.is_empty() {
        note_none_found(client.keys());
        if args.output == OutputFormat::Json {
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
    match missing.first() {
        Some(name) => Err(client.not_found(name)),
        None if !met.is_empty() => {
            out.flush()?;
            Err(invalid_error(client, &met, args.output))
        }
        None => Ok(Outcome::Success),
    }
}
