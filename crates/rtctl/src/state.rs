//! `rtctl stop` and `rtctl start`: set `spec.state`; with `--wait`, wait for the phase the
//! controller reports for the written generation.

use std::io::Write;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::apply::WRITE_ATTEMPTS;
use super::client::{Client, check_name};
use super::error::{CliError, Outcome};
use super::request::{DEFAULT_ACTION_TIMEOUT, modify, request_ref};
use super::wait::engine::{Deadline, Follow, Wait, wait_for};
use super::wait::{PhaseTracker, PhaseWaiter};
use rtm_core::model::{DesiredState, Phase};

/// The arguments of `rtctl stop` and `rtctl start`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StateArgs {
    /// The game.
    pub(crate) name: String,
    /// The request id (correlation id) the controller records; generated when absent.
    #[arg(long = "ref", value_name = "SOURCE_REF")]
    pub(crate) source_ref: Option<String>,
    /// Wait until the controller reports the phase for this change.
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = DEFAULT_ACTION_TIMEOUT, value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// `rtctl stop` (`state` Stopped) and `rtctl start` (Running): writes the state, then with
/// `--wait` waits for the phase.
pub(crate) async fn set_state(
    client: &Client,
    args: &StateArgs,
    state: DesiredState,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    check_name(&args.name)?;
    let verb = match state {
        DesiredState::Running => "start",
        DesiredState::Stopped => "stop",
    };
    let source_ref = request_ref(&args.source_ref, verb)?;
    let modified = modify(client, &args.name, &source_ref, WRITE_ATTEMPTS, |doc| {
        if doc.spec.state == state {
            false
        } else {
            doc.spec.state = state;
            true
        }
    })
    .await?;
    if modified.changed {
        writeln!(
            out,
            "gameruntime/{} {verb} requested (ref {source_ref})",
            args.name
        )?;
    } else {
        writeln!(
            out,
            "gameruntime/{} unchanged (spec.state is already {state})",
            args.name
        )?;
    }
    out.flush()?;
    if !args.wait {
        return Ok(Outcome::Success);
    }
    let target = match state {
        DesiredState::Running => Phase::Running,
        DesiredState::Stopped => Phase::Stopped,
    };
    let mut waiter = PhaseWaiter {
        name: args.name.clone(),
        target,
        min_generation: modified.doc.metadata.generation,
        fail_op: Some(verb),
        phase: PhaseTracker::default(),
    };
    wait_for(Wait {
        client,
        name: &args.name,
        follow: Follow::default(),
        waiter: &mut waiter,
        deadline: Deadline::after(args.timeout),
        what: format!("gameruntime/{} to be {target}", args.name),
        hint: format!(
            "spec.state stays {state}: follow it with `rtctl get {} -w` or `rtctl describe {}`",
            args.name, args.name
        ),
        out,
        interrupt,
    })
    .await?;
    Ok(Outcome::Success)
}
