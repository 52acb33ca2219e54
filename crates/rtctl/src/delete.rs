//! `rtctl delete`: deletes the documents (named, read from `-f` files, or matched by `-l` /
//! `--all`), refusing games in session unless `--force`; with `--wait`, waits until the
//! controller has removed the containers (their status is gone). `delete budget NAME`
//! deletes a disruption budget.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{Client, check_name};
use super::error::{CliError, Outcome};
use super::input::read_inputs;
use super::request::DEFAULT_ACTION_TIMEOUT;
use super::resource::{Kind, Names};
use super::session::with_ref;
use super::target::{Targets, each};
use super::wait::engine::{Deadline, Follow, Wait, wait_for};
use super::wait::{GoneWaiter, PhaseTracker};

/// The arguments of `rtctl delete`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DeleteArgs {
    /// Games to delete (`NAME`, `gameruntime/NAME`), or disruption budgets (`budget NAME…`,
    /// `gdb/NAME`).
    #[arg(
        value_name = "[TYPE] NAME|TYPE/NAME",
        conflicts_with_all = ["files", "selector", "all"],
        add = crate::complete::object_names()
    )]
    pub(crate) names: Vec<String>,
    /// Delete the games named in these files, directories or - (stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", conflicts_with_all = ["selector", "all"])]
    pub(crate) files: Vec<PathBuf>,
    /// Read directories' subdirectories too.
    #[arg(short = 'R', long)]
    pub(crate) recursive: bool,
    /// Delete every game whose labels match: key=value, key!=value, key in (a,b),
    /// key notin (a,b), key, !key.
    #[arg(short = 'l', long, value_name = "SELECTOR", conflicts_with = "all", add = crate::complete::label_selectors())]
    pub(crate) selector: Option<String>,
    /// Delete every game.
    #[arg(long)]
    pub(crate) all: bool,
    /// Delete games in session (Allocated) too, ending their matches.
    #[arg(long)]
    pub(crate) force: bool,
    /// Succeed for games that do not exist.
    #[arg(long)]
    pub(crate) ignore_not_found: bool,
    /// Wait until the controller has removed the containers (their status is gone).
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = DEFAULT_ACTION_TIMEOUT, value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// `rtctl delete`: deletes every game, then with `--wait` waits for each to be removed. A game
/// in session is refused (in_session) unless `--force`; with several games each is reported
/// on its own line and the exit code is the worst.
pub(crate) async fn delete(
    client: &Client,
    args: &DeleteArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    let (kind, named) = Names::parse(&args.names)?.of_one_kind("delete")?;
    match kind {
        Kind::Game => {}
        Kind::Budget if named.is_empty() => {
            return Err(CliError::usage(
                "rtctl delete budget takes names, e.g. `rtctl delete budget casual`",
            ));
        }
        Kind::Budget => {
            return Ok(each(&named, async |name: &str| {
                super::budget::delete(client, name, &mut *out).await
            })
            .await);
        }
        Kind::Node => {
            return Err(CliError::usage(
                "rtctl does not delete nodes: a node's record is its controller's (it writes \
                 it again when it starts); `rtctl drain NODE` moves its games off, then stop \
                 its controller",
            ));
        }
    }
    let bulk = args.selector.is_some() || args.all;
    let names: Vec<String> = if bulk {
        Targets {
            names: Vec::new(),
            selector: args.selector.clone(),
            all: args.all,
        }
        .resolve(client, "delete")
        .await?
    } else if args.files.is_empty() {
        if named.is_empty() {
            return Err(CliError::usage(
                "rtctl delete takes game names, -f FILE, -l SELECTOR or --all, e.g. `rtctl \
                 delete arena-1`",
            ));
        }
        named
    } else {
        read_inputs(&args.files, args.recursive)?
            .into_iter()
            .map(|input| input.doc.metadata.name)
            .collect()
    };
    for name in &names {
        check_name(name)?;
    }
    let mut deleted = Vec::new();
    // Each game on its line, the others deleted even when one fails; the worst exit code.
    let outcome = each(&names, async |name: &str| {
        delete_one(client, name, args, &mut *out).await.map(|gone| {
            deleted.extend(gone.then(|| name.to_owned()));
            Outcome::Success
        })
    })
    .await;
    out.flush()?;
    if !args.wait {
        return Ok(outcome);
    }
    let deadline = Deadline::after(args.timeout);
    for name in &deleted {
        let mut waiter = GoneWaiter::new(name, PhaseTracker::default());
        wait_for(Wait {
            client,
            name,
            follow: Follow::default(),
            waiter: &mut waiter,
            deadline,
            what: format!("the controller to remove gameruntime/{name}"),
            hint: "the document is deleted; the controller removes the container when it gets \
                   to it (see `rtctl get -w`)"
                .to_owned(),
            out: &mut *out,
            interrupt,
        })
        .await?;
    }
    Ok(outcome)
}

/// Deletes one game unless it is in session (and not `--force`); `false` when it did not
/// exist and `--ignore-not-found` says that is fine.
async fn delete_one(
    client: &Client,
    name: &str,
    args: &DeleteArgs,
    out: &mut dyn Write,
) -> Result<bool, CliError> {
    if !args.force {
        let session = client
            .sessions()
            .get(name)
            .await
            .map_err(|e| client.session_error(e, &format!("reading the session of {name}")))?;
        if let Some(session) = session.value.filter(|s| s.is_allocated()) {
            return Err(CliError::InSession {
                message: format!(
                    "gameruntime/{name} is in session{} (in_session): deleting it ends the \
                     match; release it first (`rtctl release {name}`) or delete with --force",
                    with_ref(session.reference.as_deref())
                ),
            });
        }
    }
    match client.delete(name).await {
        Ok(()) => {
            writeln!(out, "gameruntime/{name} deleted")?;
            Ok(true)
        }
        Err(CliError::NotFound { .. }) if args.ignore_not_found => Ok(false),
        Err(e) => Err(e),
    }
}
