//! `rtctl delete`: deletes the documents (named, or read from `-f` files); with `--wait`,
//! waits until the controller has removed the containers (their status is gone).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{Client, check_name};
use super::error::{CliError, Outcome};
use super::input::read_inputs;
use super::request::DEFAULT_ACTION_TIMEOUT;
use super::wait::engine::{Deadline, Follow, Wait, wait_for};
use super::wait::{GoneWaiter, PhaseTracker};

/// The arguments of `rtctl delete`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DeleteArgs {
    /// Games to delete.
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    pub(crate) names: Vec<String>,
    /// Delete the games named in these files, directories or - (stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub(crate) files: Vec<PathBuf>,
    /// Read directories' subdirectories too.
    #[arg(short = 'R', long)]
    pub(crate) recursive: bool,
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

/// `rtctl delete`: deletes every game, then with `--wait` waits for each to be removed.
pub(crate) async fn delete(
    client: &Client,
    args: &DeleteArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    let names: Vec<String> = if args.files.is_empty() {
        args.names.clone()
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
    for name in &names {
        match client.delete(name).await {
            Ok(()) => {
                writeln!(out, "gameruntime/{name} deleted")?;
                deleted.push(name.clone());
            }
            Err(CliError::NotFound { .. }) if args.ignore_not_found => {}
            Err(e) => return Err(e),
        }
    }
    out.flush()?;
    if !args.wait {
        return Ok(Outcome::Success);
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
    Ok(Outcome::Success)
}
